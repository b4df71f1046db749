"""xDS for proxyless gRPC clients (Istio's ``pilot/pkg/networking/grpcgen``): what a grpcio channel dialing
``xds:///host:port`` needs.

A proxyless node (metadata ``GENERATOR: grpc``, as Istio's gRPC bootstrap sets it) gets, for every HTTP-family
port of every service it can see:

- LDS: a Listener named ``host:port`` in the ``api_listener`` form (an HTTP connection manager with RDS
  ``host:port`` and only the router filter), which gRPC's xDS resolver asks for by the dial target;
- RDS: ``host:port``, that service's virtual host as a sidecar has it (VirtualService matches, weights,
  timeouts), minus what gRPC does not take (per-filter configs, retry policies);
- CDS: the outbound EDS clusters in the plain form gRPC accepts (EDS over ADS, ROUND_ROBIN or RING_HASH);
- EDS: the same load assignments a sidecar gets.

Pure: proxy + PushContext -> ResourceSet; nothing here knows about sockets or the agent.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from mizzen.core import clusters, endpoints, routes
from mizzen.core.filters import ROUTER, ads_config_source, pack
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, ResourceSet

__all__ = ["GENERATOR_GRPC", "api_listener", "generate_proxyless", "is_proxyless"]

GENERATOR_GRPC = "grpc"   # node metadata GENERATOR, as in Istio's gRPC bootstrap
_GRPC_LB = (cluster_pb2.Cluster.ROUND_ROBIN, cluster_pb2.Cluster.RING_HASH)


def is_proxyless(proxy: Proxy) -> bool:
    return str(proxy.metadata.get("GENERATOR", "")) == GENERATOR_GRPC


def listener_names(proxy: Proxy, push: PushContext) -> list[str]:
    """``host:port`` of every HTTP-family service port the proxy can see."""
    names = {f"{svc.hostname}:{port.port}" for svc in routes.visible_services(proxy, push)
             for port in svc.ports if port.protocol.is_http}
    return sorted(names)


def api_listener(name: str) -> listener_pb2.Listener:
    """gRPC's client listener: no address, an HTTP connection manager as ``api_listener``."""
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        rds=hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=name),
        http_filters=[hcm_pb2.HttpFilter(name=ROUTER, typed_config=pack(router_pb2.Router()))])
    lis = listener_pb2.Listener(name=name)
    lis.api_listener.api_listener.CopyFrom(pack(hcm))
    return lis


def _route_config(shared: route_pb2.RouteConfiguration) -> route_pb2.RouteConfiguration:
    """A copy of a sidecar route config without what gRPC rejects or cannot use."""
    cfg = route_pb2.RouteConfiguration()
    cfg.CopyFrom(shared)   # shared (memoized) messages are never mutated
    cfg.ClearField("validate_clusters")
    cfg.ClearField("max_direct_response_body_size_bytes")
    for vhost in cfg.virtual_hosts:
        vhost.ClearField("typed_per_filter_config")
        vhost.ClearField("retry_policy")
        for r in vhost.routes:
            r.ClearField("typed_per_filter_config")
            if r.HasField("route"):
                r.route.ClearField("retry_policy")
    return cfg


def _cluster(shared: cluster_pb2.Cluster) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=shared.name, type=cluster_pb2.Cluster.EDS)
    c.eds_cluster_config.eds_config.CopyFrom(ads_config_source())
    if shared.eds_cluster_config.service_name:
        c.eds_cluster_config.service_name = shared.eds_cluster_config.service_name
    c.lb_policy = shared.lb_policy if shared.lb_policy in _GRPC_LB else cluster_pb2.Cluster.ROUND_ROBIN
    if c.lb_policy == cluster_pb2.Cluster.RING_HASH and shared.HasField("ring_hash_lb_config"):
        c.ring_hash_lb_config.CopyFrom(shared.ring_hash_lb_config)
    return c


def generate_proxyless(proxy: Proxy, push: PushContext) -> ResourceSet:
    names = listener_names(proxy, push)
    rds = [_route_config(r) for r in routes.build_routes(proxy, push, names)]
    cds = [_cluster(c) for c in clusters.build_clusters(proxy, push)
           if c.name.startswith("outbound|") and clusters.uses_eds(c)]
    eds = endpoints.build_endpoints(proxy, push, [c.name for c in cds])
    return ResourceSet({
        CLUSTER: {c.name: c for c in cds},
        ENDPOINT: {e.cluster_name: e for e in eds},
        LISTENER: {n: api_listener(n) for n in names},
        ROUTE: {r.name: r for r in rds},
    })
