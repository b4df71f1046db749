"""CDS: outbound clusters per visible service port and DestinationRule subset (EDS over ADS, STRICT_DNS or
LOGICAL_DNS for DNS, ORIGINAL_DST for NONE/PASSTHROUGH, as Istio), inbound clusters for a sidecar's own ports,
and the fixed BlackHole/Passthrough clusters. Local-mode (no iptables) equivalents are documented where they
differ: ORIGINAL_DST reads the destination from ``:authority``; PASSTHROUGH keeps endpoints with RANDOM.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Mapping
from functools import partial
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ep_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2
from google.protobuf import struct_pb2

from mizzen.config.labels import selects
from mizzen.config.model import Config
from mizzen.core import names, sidecar_scope
from mizzen.core.cluster_policy import (
    apply_connection_pool,
    apply_load_balancer,
    apply_outlier_detection,
    set_http_protocol_options,
)
from mizzen.core.endpoints import endpoints_for_cluster
from mizzen.core.mtls import apply_cluster_tls
from mizzen.core.policy import duration, effective_policy, locality_lb_setting, port_level_policy
from mizzen.core.proxy import Proxy
from mizzen.core.proxy_keys import cluster_inputs, outbound_clusters_key
from mizzen.core.push_context import PushContext
from mizzen.core.workload_labels import PEER_METADATA, SERVICE_KEY, encode_service
from mizzen.registry.model import Protocol, Resolution, Service, ServicePort, Workload

__all__ = [
    "blackhole_cluster",
    "build_clusters",
    "config_path",
    "inbound_clusters",
    "load_assignment_for",
    "local_clusters",
    "outbound_cluster_map",
    "outbound_clusters",
    "passthrough_cluster",
    "uses_eds",
]

PASSTHROUGH_IDLE_TIMEOUT_S = 300.0


def uses_eds(cluster: cluster_pb2.Cluster) -> bool:
    return bool(cluster.type == cluster_pb2.Cluster.EDS)


def config_path(c: Config) -> str:
    """Istio's config reference: ``/apis/networking.istio.io/v1/namespaces/ns/destination-rule/name``."""
    resource = "".join(f"-{ch.lower()}" if ch.isupper() else ch for ch in c.kind).lstrip("-")
    return f"/apis/{c.api_version}/namespaces/{c.namespace}/{resource}/{c.name}"


def _set_metadata(c: cluster_pb2.Cluster, services: list[Service], dr: Config | None = None, subset: str = "",
                  external: bool = False) -> None:
    fields: dict[str, Any] = {
        "services": [{"host": s.hostname, "name": s.name, "namespace": s.namespace} for s in services],
    }
    if dr is not None:
        fields["config"] = config_path(dr)
    if subset:
        fields["subset"] = subset
    if external:
        fields["external"] = True
    istio = struct_pb2.Struct()
    istio.update(fields)
    c.metadata.filter_metadata["istio"].CopyFrom(istio)
    if len(services) == 1:   # what telemetry reports as destination_service* (%CLUSTER_METADATA%)
        s = services[0]
        c.metadata.filter_metadata[PEER_METADATA].update(
            {"service": s.hostname, "service_name": s.name, "service_namespace": s.namespace,
             SERVICE_KEY: encode_service(s.hostname, s.name, s.namespace)})


def _socket(address: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=address, port_value=port))


def _local_original_dst(c: cluster_pb2.Cluster, proxy: Proxy) -> None:
    """Local mode (no iptables): outbound traffic reaches the sidecar through its HTTP proxy listener, so
    there is no original destination on the connection. ORIGINAL_DST clusters take it from the request's
    authority instead (works for ``ip:port`` authorities; a host name gets a 503, as it would without)."""
    if c.type == cluster_pb2.Cluster.ORIGINAL_DST and proxy.interception_mode.upper() == "NONE":
        c.original_dst_lb_config.use_http_header = True
        c.original_dst_lb_config.http_header_name = ":authority"


def _discovery_type(svc: Service, push: PushContext, port: ServicePort) -> cluster_pb2.Cluster.DiscoveryType:
    if svc.resolution is Resolution.STATIC:
        return cluster_pb2.Cluster.EDS
    if svc.resolution is Resolution.NONE:
        return cluster_pb2.Cluster.ORIGINAL_DST
    if svc.resolution is Resolution.DNS_ROUND_ROBIN and len(push.registry.endpoints_for(svc.hostname,
                                                                                          port.port)) == 1:
        return cluster_pb2.Cluster.LOGICAL_DNS
    return cluster_pb2.Cluster.STRICT_DNS


def _outbound(proxy: Proxy, push: PushContext, svc: Service, port: ServicePort, dr: Config | None,
              subset: str) -> cluster_pb2.Cluster:
    name = names.outbound_cluster(port.port, subset, svc.hostname)
    policy = effective_policy(dr, subset, port.port)
    c = cluster_pb2.Cluster(name=name, type=_discovery_type(svc, push, port))
    # Unready workloads are sent as UNHEALTHY (Istio's PILOT_SEND_UNHEALTHY_ENDPOINTS mode), so, as Istio does
    # then, the panic threshold is off: Envoy never falls back to unhealthy hosts. minHealthPercent (with
    # outlier detection) sets it explicitly.
    c.common_lb_config.healthy_panic_threshold.value = 0.0
    if c.type in (cluster_pb2.Cluster.STRICT_DNS, cluster_pb2.Cluster.LOGICAL_DNS):
        c.dns_lookup_family = cluster_pb2.Cluster.V4_ONLY
        c.respect_dns_ttl = True
    apply_connection_pool(c, policy.get("connectionPool") or {}, push.mesh.connect_timeout_s, port.protocol)
    od = policy.get("outlierDetection")
    apply_outlier_detection(c, od)
    local = proxy.interception_mode.upper() == "NONE"
    apply_load_balancer(c, policy.get("loadBalancer"), locality_lb_setting(policy), od is not None,
                        passthrough_as_random=local and svc.resolution is Resolution.STATIC)
    if c.type == cluster_pb2.Cluster.EDS:
        eds = c.eds_cluster_config
        eds.service_name = name
        eds.eds_config.ads.SetInParent()
        eds.eds_config.initial_fetch_timeout.CopyFrom(duration(0))
        eds.eds_config.resource_api_version = config_source_pb2.V3
    elif c.type in (cluster_pb2.Cluster.STRICT_DNS, cluster_pb2.Cluster.LOGICAL_DNS):
        c.load_assignment.cluster_name = name
        c.load_assignment.endpoints.extend(
            endpoints_for_cluster(proxy, push, svc.hostname, port.port, subset))
        if c.type == cluster_pb2.Cluster.LOGICAL_DNS and [len(g.lb_endpoints) for g in
                                                          c.load_assignment.endpoints] != [1]:
            c.type = cluster_pb2.Cluster.STRICT_DNS   # Envoy rejects LOGICAL_DNS without exactly one host
    _local_original_dst(c, proxy)
    apply_cluster_tls(c, proxy, push, svc, port.port, port.protocol, subset, policy.get("tls"))
    _set_metadata(c, [svc], dr, subset, svc.mesh_external)
    return c


def outbound_clusters(proxy: Proxy, push: PushContext, svc: Service,
                      port: ServicePort) -> list[cluster_pb2.Cluster]:
    """``outbound|port||host`` and one ``outbound|port|subset|host`` per DestinationRule subset.

    They depend on the proxy only through :func:`proxy_keys.cluster_inputs`: proxies alike share them."""
    dr = push.destination_rule(proxy.namespace, svc.hostname)

    def build() -> list[cluster_pb2.Cluster]:
        out = [_outbound(proxy, push, svc, port, dr, "")]
        for sub in (dr.spec.get("subsets") or ()) if dr is not None else ():
            if sub.get("name"):
                out.append(_outbound(proxy, push, svc, port, dr, str(sub["name"])))
        return out

    key = ("CDS", svc.hostname, svc.namespace, port.port,
           cluster_inputs(proxy, push, dr, svc.resolution is not Resolution.STATIC))
    return list(push.memoized(key, build))


def _own_workload(proxy: Proxy, push: PushContext) -> Workload | None:
    for w in push.workloads_in(proxy.namespace):
        if w.name == proxy.workload_name or w.address == proxy.ip:
            return w
    return None


def _inbound_target(proxy: Proxy, push: PushContext, svc: Service, port: ServicePort,
                    workload: Workload | None) -> int | None:
    """The workload port behind a service port (same rule as the inbound listeners): this proxy's own
    endpoint, else numeric targetPort, else the named port of its workload, else the service port."""
    for ep in push.registry.endpoints_for(svc.hostname, port.port):
        if ep.address == proxy.ip:
            return ep.port
    if isinstance(port.target_port, int):
        return port.target_port
    if isinstance(port.target_port, str):
        return workload.ports.get(port.target_port) if workload is not None else None
    return port.port


def inbound_clusters(proxy: Proxy, push: PushContext) -> list[cluster_pb2.Cluster]:
    """``inbound|<targetPort>||`` STATIC to ``proxy.app_host:<targetPort>`` for every port of every service
    in the proxy's namespace whose selector matches its labels; the DestinationRule's connection pool
    applies (as in Istio, circuit breakers are enforced on the server side too)."""
    ingress = sidecar_scope.ingress_listeners(proxy, push)
    if ingress:
        return [_inbound_cluster(proxy, push, i.port, *_default_endpoint(proxy, i.default_endpoint, i.port),
                                 i.protocol, i.port, []) for i in sorted(ingress, key=lambda i: i.port)]
    workload = _own_workload(proxy, push)
    by_port: dict[int, tuple[ServicePort, list[Service]]] = {}
    for svc in push.services_in(proxy.namespace):
        if not selects(svc.selector, proxy.labels):
            continue
        for port in svc.ports:
            target = _inbound_target(proxy, push, svc, port, workload)
            if target is None or port.protocol is Protocol.UDP:
                continue
            entry = by_port.setdefault(target, (port, []))
            entry[1].append(svc)
    return [_inbound_cluster(proxy, push, target, proxy.app_host, target, port.protocol, port.port, services)
            for target, (port, services) in sorted(by_port.items())]


def _default_endpoint(proxy: Proxy, endpoint: str, port: int) -> tuple[str, int]:
    """A Sidecar ingress ``defaultEndpoint`` (``127.0.0.1:8080``, ``0.0.0.0:8080``, ``[::1]:8080``) as the
    (host, port) the app is reached at in local mode: always ``proxy.app_host``; empty -> the same port."""
    if not endpoint or endpoint.startswith("unix://"):
        return proxy.app_host, port
    _host, _, text = endpoint.rpartition(":")
    return proxy.app_host, int(text) if text.isdigit() else port


def _inbound_cluster(proxy: Proxy, push: PushContext, cluster_port: int, host: str, target: int,
                     protocol: Protocol, service_port: int, services: list[Service]) -> cluster_pb2.Cluster:
    name = names.inbound_cluster(cluster_port)
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC,
                            lb_policy=cluster_pb2.Cluster.ROUND_ROBIN)
    c.common_lb_config.SetInParent()
    c.load_assignment.cluster_name = name
    c.load_assignment.endpoints.append(ep_pb2.LocalityLbEndpoints(
        locality=base_pb2.Locality(),
        lb_endpoints=[ep_pb2.LbEndpoint(endpoint=ep_pb2.Endpoint(address=_socket(host, target)))]))
    dr = push.destination_rule(proxy.namespace, services[0].hostname) if services else None
    pool: Mapping[str, Any] = {}
    if dr is not None and dr.spec.get("trafficPolicy"):
        pool = port_level_policy(dr.spec["trafficPolicy"], service_port).get("connectionPool") or {}
    apply_connection_pool(c, pool, push.mesh.connect_timeout_s, protocol)
    _set_metadata(c, services, dr if pool else None)
    return c


def blackhole_cluster(push: PushContext) -> cluster_pb2.Cluster:
    """STATIC with no endpoints: where unresolved routes and REGISTRY_ONLY traffic go."""
    c = cluster_pb2.Cluster(name=names.BLACKHOLE_CLUSTER, type=cluster_pb2.Cluster.STATIC,
                            lb_policy=cluster_pb2.Cluster.ROUND_ROBIN)
    c.connect_timeout.CopyFrom(duration(push.mesh.connect_timeout_s))
    _catch_all_metadata(c)
    return c


ZIPKIN_CLUSTER = "zipkin"


def zipkin_cluster(push: PushContext) -> cluster_pb2.Cluster | None:
    """Istio's bootstrap ``zipkin`` cluster: the collector of ``defaultConfig.tracing.zipkin.address``
    (None when tracing is off)."""
    address = push.mesh.tracing_zipkin_address
    if not address:
        return None
    host, _, port = address.rpartition(":")
    try:
        ipaddress.ip_address(host)
        kind = cluster_pb2.Cluster.STATIC
    except ValueError:
        kind = cluster_pb2.Cluster.STRICT_DNS
    c = cluster_pb2.Cluster(name=ZIPKIN_CLUSTER, type=kind, lb_policy=cluster_pb2.Cluster.ROUND_ROBIN)
    c.connect_timeout.CopyFrom(duration(1.0))
    c.load_assignment.cluster_name = ZIPKIN_CLUSTER
    ep = c.load_assignment.endpoints.add().lb_endpoints.add().endpoint
    ep.address.socket_address.address = host
    ep.address.socket_address.port_value = int(port)
    return c


def _catch_all_metadata(c: cluster_pb2.Cluster) -> None:
    """What telemetry reports for traffic to no service: Istio's ``destination_service_name`` is the
    cluster's name (PassthroughCluster, BlackHoleCluster)."""
    c.metadata.filter_metadata[PEER_METADATA].update(
        {"service": "unknown", "service_name": c.name, "service_namespace": "unknown",
         SERVICE_KEY: encode_service("unknown", c.name, "unknown")})


def passthrough_cluster(push: PushContext, name: str = names.PASSTHROUGH_CLUSTER,
                        proxy: Proxy | None = None) -> cluster_pb2.Cluster:
    """ORIGINAL_DST / CLUSTER_PROVIDED, using the downstream HTTP protocol (ALLOW_ANY traffic)."""
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.ORIGINAL_DST,
                            lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED)
    apply_connection_pool(c, {}, push.mesh.connect_timeout_s, None)
    opts = hpo_pb2.HttpProtocolOptions()
    opts.common_http_protocol_options.idle_timeout.CopyFrom(duration(PASSTHROUGH_IDLE_TIMEOUT_S))
    opts.use_downstream_protocol_config.http_protocol_options.SetInParent()
    opts.use_downstream_protocol_config.http2_protocol_options.SetInParent()
    set_http_protocol_options(c, opts)
    if proxy is not None:
        _local_original_dst(c, proxy)
    _catch_all_metadata(c)
    return c


def _outbound_for(proxy: Proxy, push: PushContext) -> tuple[dict[str, cluster_pb2.Cluster], tuple[str, ...]]:
    out: dict[str, cluster_pb2.Cluster] = {}
    services = push.services_visible_to(proxy)
    if not proxy.is_gateway:   # a sidecar sees what its Sidecar resource's egress hosts admit (Istio scoping)
        services = [s for s in services if sidecar_scope.sidecar_allows(proxy, push, s)]
    for svc in services:
        for port in svc.ports:
            if port.protocol is Protocol.UDP:
                continue
            for c in outbound_clusters(proxy, push, svc, port):
                out.setdefault(c.name, c)   # same host in two registries: the first one wins, like Istio
    ordered = {k: out[k] for k in sorted(out)}
    return ordered, tuple(k for k, c in ordered.items() if uses_eds(c))


def outbound_cluster_map(proxy: Proxy, push: PushContext, key: Hashable | None = None) -> tuple[
        dict[str, cluster_pb2.Cluster], tuple[str, ...]]:
    """The proxy's outbound clusters by name (sorted) and the names of those using EDS, shared by every
    proxy with the same ``key`` (default :func:`proxy_keys.outbound_clusters_key`); never mutate them."""
    if key is None:
        key = outbound_clusters_key(proxy, push)
    return push.memoized(("CDS*", key), partial(_outbound_for, proxy, push))


def local_clusters(proxy: Proxy, push: PushContext) -> list[cluster_pb2.Cluster]:
    """The proxy's own clusters: BlackHoleCluster, and for sidecars Passthrough, InboundPassthrough and the
    inbound clusters."""
    out = [blackhole_cluster(push)]
    if (zipkin := zipkin_cluster(push)) is not None:
        out.append(zipkin)
    if not proxy.is_gateway:
        out.append(passthrough_cluster(push, proxy=proxy))
        out.append(passthrough_cluster(push, names.INBOUND_PASSTHROUGH_CLUSTER))
        out.extend(inbound_clusters(proxy, push))
    return out


def build_clusters(proxy: Proxy, push: PushContext, key: Hashable | None = None) -> list[cluster_pb2.Cluster]:
    """Every cluster for ``proxy``, sorted by name. Sidecars: outbound clusters for the services their
    Sidecar resource admits, inbound, BlackHole and Passthrough clusters. Gateways: outbound clusters for
    every service exported to their namespace, and BlackHoleCluster."""
    out = dict(outbound_cluster_map(proxy, push, key)[0])
    for c in local_clusters(proxy, push):
        if c.name in (names.BLACKHOLE_CLUSTER, names.PASSTHROUGH_CLUSTER, names.INBOUND_PASSTHROUGH_CLUSTER):
            out[c.name] = c
        else:
            out.setdefault(c.name, c)
    return [out[k] for k in sorted(out)]


def load_assignment_for(c: cluster_pb2.Cluster, assignment: endpoint_pb2.ClusterLoadAssignment) -> None:
    """Inline an EDS assignment into a cluster (turning it STATIC), e.g. to validate a bootstrap offline."""
    c.type = cluster_pb2.Cluster.STATIC
    c.ClearField("eds_cluster_config")
    c.load_assignment.CopyFrom(assignment)
