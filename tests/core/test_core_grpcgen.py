"""core.grpcgen: the proxyless gRPC form of a proxy's config (api_listener LDS, host:port RDS, plain CDS)."""

from __future__ import annotations

from dataclasses import replace

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from routes_testkit import BOOKINFO_NET, bookinfo_registry, configs_from_file, fqdn, push_of, sidecar

from mizzen.core.generate import generate
from mizzen.core.grpcgen import is_proxyless
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

REVIEWS = f"{fqdn('reviews')}:9080"


def proxyless_push():  # type: ignore[no-untyped-def]
    configs = (configs_from_file(BOOKINFO_NET / "destination-rule-all.yaml")
               + configs_from_file(BOOKINFO_NET / "virtual-service-reviews-jason-v2-v3.yaml"))
    proxy = replace(sidecar(), metadata={"GENERATOR": "grpc"})
    return proxy, push_of(configs, bookinfo_registry())


def test_a_proxyless_node_gets_api_listeners_and_host_port_routes() -> None:
    proxy, push = proxyless_push()
    assert is_proxyless(proxy) and not is_proxyless(sidecar())
    rs = generate(proxy, push)
    services = ("productpage", "reviews", "ratings", "details")
    assert set(rs.of(LISTENER)) == {f"{fqdn(n)}:9080" for n in services}
    lis = rs.of(LISTENER)[REVIEWS]
    assert not lis.HasField("address")   # type: ignore[attr-defined]
    hcm = hcm_pb2.HttpConnectionManager()
    assert lis.api_listener.api_listener.Unpack(hcm)   # type: ignore[attr-defined]
    assert hcm.rds.route_config_name == REVIEWS and [f.name for f in hcm.http_filters] == [
        "envoy.filters.http.router"]
    route = rs.of(ROUTE)[REVIEWS]
    (vhost,) = route.virtual_hosts   # type: ignore[attr-defined]
    first, second = vhost.routes
    assert first.match.headers[0].name == "end-user"
    assert first.route.cluster == f"outbound|9080|v2|{fqdn('reviews')}"
    assert second.route.cluster == f"outbound|9080|v3|{fqdn('reviews')}"
    assert not any(r.route.HasField("retry_policy") or r.typed_per_filter_config for r in vhost.routes)


def test_proxyless_clusters_are_plain_eds_with_endpoints() -> None:
    proxy, push = proxyless_push()
    rs = generate(proxy, push)
    name = f"outbound|9080|v2|{fqdn('reviews')}"
    c = rs.of(CLUSTER)[name]
    assert c.type == cluster_pb2.Cluster.EDS and c.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN  # type: ignore
    assert c.eds_cluster_config.eds_config.HasField("ads")   # type: ignore[attr-defined]
    assert name in rs.of(ENDPOINT)
    assert not any(n.startswith(("inbound|", "Passthrough", "BlackHole")) for n in rs.of(CLUSTER))
