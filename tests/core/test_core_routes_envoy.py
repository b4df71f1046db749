"""Envoy 1.40 accepts what RDS emits: rich generated RouteConfigurations (sidecar per-port, http_proxy,
gateway, inbound) are inlined into static listeners with the fault/cors/router filters, plus a static
cluster for every referenced cluster name, and checked with ``envoy --mode validate``."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format
from routes_testkit import (
    SEED,
    bookinfo_registry,
    configs_from_file,
    configs_from_yaml,
    gateway_proxy,
    http_service,
    push_of,
    sidecar,
)

from mizzen.agent.binary import envoy_binary
from mizzen.core import names
from mizzen.core.routes import build_inbound_route, build_routes

RICH_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews, reviews.example.com]
  http:
  - name: everything
    match:
    - uri: {regex: "/r/[0-9]+"}
      ignoreUriCase: true
      method: {exact: GET}
      authority: {prefix: reviews}
      scheme: {exact: http}
      headers: {end-user: {exact: jason}, x-any: {}, x-re: {regex: "a|b"}}
      withoutHeaders: {x-skip: {prefix: "no"}, x-absent: {}}
      queryParams: {q: {exact: "1"}, r: {regex: "x.*"}, s: {}}
    - uri: {prefix: /api/}
      port: 9080
    headers:
      request: {set: {x-set: "1", host: rewritten.example}, add: {x-add: "2"}, remove: [x-del]}
      response: {set: {x-resp: "3"}, remove: [x-powered-by]}
    rewrite: {uri: /v2/}
    timeout: 2.5s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "gateway-error,503", retryRemoteLocalities: true}
    fault:
      delay: {fixedDelay: 100ms, percentage: {value: 0.5}}
      abort: {httpStatus: 503, percentage: {value: 1}}
    mirror: {host: ratings, subset: v1}
    mirrorPercentage: {value: 10}
    corsPolicy:
      allowOrigins: [{exact: "https://a.example"}, {prefix: "https://b."}, {regex: "https://.*\\\\.c"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-a]
      exposeHeaders: [x-b]
      maxAge: 24h
      allowCredentials: true
    route:
    - destination: {host: reviews, subset: v1}
      weight: 60
      headers: {request: {set: {x-dest: v1}}, response: {add: {x-from: v1}}}
    - destination: {host: reviews, subset: v2, port: {number: 9080}}
      weight: 40
  - match: [{uri: {prefix: /grpc}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: ratings}}]
  - match: [{uri: {prefix: /re}}]
    rewrite: {uriRegexRewrite: {match: "^/re/(.*)$", rewrite: "/\\\\1"}, authority: other}
    route: [{destination: {host: details}}]
  - match: [{uri: {exact: /moved}}]
    redirect: {uri: /new, authority: example.org, scheme: https, port: 8443, redirectCode: 308}
  - match: [{uri: {exact: /derive}}]
    redirect: {uri: /d, derivePort: FROM_REQUEST_PORT}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - match: [{uri: {exact: /bytes}}]
    directResponse: {status: 200, body: {bytes: BYTES}}
  - match: [{uri: {exact: /no-retry}}]
    retries: {attempts: 0}
    route: [{destination: {host: reviews, subset: v3}}]
  - route: [{destination: {host: reviews, subset: v3}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: bookinfo}
spec:
  host: ratings
  trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 10s, path: /}}}}
""".replace("BYTES", base64.b64encode(b"\x00\x01binary").decode())


def _route_configs() -> list[route_pb2.RouteConfiguration]:
    reg = bookinfo_registry(http_service("web", ports=(80, 8080)))
    gw_configs = configs_from_file(SEED / "bookinfo-gateway.yaml") + configs_from_file(
        SEED / "bookinfo-vs-redirect-rewrite.yaml", created=10)
    gw_configs = [c for c in gw_configs if not (c.kind == "VirtualService" and c.created < 10)]
    push = push_of(configs_from_yaml(RICH_VS) + gw_configs, reg)
    out = build_routes(sidecar(), push, ["9080", "80", names.HTTP_PROXY_ROUTE])
    out += build_routes(gateway_proxy(), push, ["http.8080"])
    out.append(build_inbound_route(sidecar(), push, 9080, "inbound|9080||"))
    return out


def _clusters_of(cfg: route_pb2.RouteConfiguration) -> set[str]:
    out: set[str] = set()
    for vh in cfg.virtual_hosts:
        for r in vh.routes:
            if r.WhichOneof("action") != "route":
                continue
            if r.route.cluster:
                out.add(r.route.cluster)
            out.update(c.name for c in r.route.weighted_clusters.clusters)
            out.update(m.cluster for m in r.route.request_mirror_policies)
    return out


def _bootstrap(configs: list[route_pb2.RouteConfiguration]) -> bootstrap_pb2.Bootstrap:
    b = bootstrap_pb2.Bootstrap()
    b.admin.address.socket_address.address = "127.0.0.1"
    b.admin.address.socket_address.port_value = 0
    clusters: set[str] = set()
    for i, cfg in enumerate(configs):
        clusters |= _clusters_of(cfg)
        hcm = hcm_pb2.HttpConnectionManager(stat_prefix=f"rds_{i}", route_config=cfg)
        for name, msg in (("envoy.filters.http.fault", fault_pb2.HTTPFault()),
                          ("envoy.filters.http.cors", cors_pb2.Cors()),
                          ("envoy.filters.http.router", router_pb2.Router())):
            f = hcm.http_filters.add(name=name)
            f.typed_config.Pack(msg)
        lis = listener_pb2.Listener(name=f"listener_{i}")
        lis.address.socket_address.address = "127.0.0.1"
        lis.address.socket_address.port_value = 0
        chain = listener_components_pb2.FilterChain()
        nf = chain.filters.add(name="envoy.filters.network.http_connection_manager")
        nf.typed_config.Pack(hcm)
        lis.filter_chains.append(chain)
        b.static_resources.listeners.append(lis)
    for name in sorted(clusters):
        c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC)
        c.connect_timeout.seconds = 1
        ep = endpoint_components_pb2.LbEndpoint()
        ep.endpoint.address.CopyFrom(address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=1)))
        c.load_assignment.CopyFrom(endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name, endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[ep])]))
        b.static_resources.clusters.append(c)
    return b


def test_generated_route_configs_pass_envoy_validation(tmp_path: Path) -> None:
    configs = _route_configs()
    sidecar_cfg = configs[0]
    # the rich VS really is in there (so validation covers every feature)
    rich = [r for vh in sidecar_cfg.virtual_hosts for r in vh.routes if r.name == "everything"]
    assert len(rich) == 4 and rich[0].typed_per_filter_config and rich[0].route.weighted_clusters.clusters
    assert any(r.route.hash_policy for vh in sidecar_cfg.virtual_hosts for r in vh.routes)
    assert {"outbound|9080|v1|ratings.bookinfo.svc.cluster.local",
            names.PASSTHROUGH_CLUSTER, "inbound|9080||"} <= set().union(*map(_clusters_of, configs))

    path = tmp_path / "bootstrap.json"
    path.write_text(json_format.MessageToJson(_bootstrap(configs)))
    proc = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
         "--log-level", "warn"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "OK" in proc.stdout + proc.stderr


def test_envoy_rejects_a_broken_route_config(tmp_path: Path) -> None:
    """The validation harness itself can fail: an invalid regex in a generated route is caught by Envoy."""
    configs = _route_configs()[:1]
    configs[0].virtual_hosts[0].routes[0].match.safe_regex.regex = "(unclosed"
    path = tmp_path / "bootstrap.json"
    path.write_text(json_format.MessageToJson(_bootstrap(configs)))
    cmd = [str(envoy_binary()), "--mode", "validate", "-c", str(path), "--disable-hot-restart"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
