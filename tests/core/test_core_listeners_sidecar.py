"""LDS for sidecars: local mode (inbound per port, http_proxy, Sidecar ingress/egress), REDIRECT mode
(virtualOutbound/virtualInbound, per-port listeners, VS tcp/tls routes), sidecar_allows and
route_config_names."""

from __future__ import annotations

from listeners_testkit import (
    NS,
    by_name,
    configs,
    fqdn,
    hcm_of,
    push_of,
    service,
    sidecar,
    tcp_of,
)

from mizzen.core import filters, names
from mizzen.core.listeners import build_listeners, generation_warnings, inbound_ports, route_config_names
from mizzen.core.mesh import MeshConfig, OutboundPolicy
from mizzen.core.sidecar_scope import sidecar_allows
from mizzen.registry.model import Endpoint, Protocol

REVIEWS = service("reviews", [(9080, Protocol.HTTP)])
RATINGS = service("ratings", [(9080, Protocol.HTTP)])
MONGO = service("mongodb", [(27017, Protocol.MONGO)], addresses=("10.0.0.7",))
MYSQL = service("mysqldb", [(3306, Protocol.TCP)], addresses=("10.0.0.8",))


# --- local mode ---------------------------------------------------------------------------------------------
def test_local_inbound_http_port_gets_hcm_with_inline_route_to_inbound_cluster() -> None:
    proxy = sidecar(ip="127.0.10.1")
    lds = build_listeners(proxy, push_of([REVIEWS, RATINGS]))
    assert [lis.name for lis in lds] == ["127.0.10.1_9080"]
    lis = lds[0]
    assert lis.address.socket_address.address == "127.0.10.1"
    assert lis.address.socket_address.port_value == 9080
    assert lis.traffic_direction == 1  # INBOUND
    hcm = hcm_of(lis.filter_chains[0].filters[0])
    assert hcm.stat_prefix == "inbound_127.0.10.1_9080"
    assert hcm.HasField("route_config") and not hcm.HasField("rds")
    clusters = {r.route.cluster for vh in hcm.route_config.virtual_hosts for r in vh.routes}
    assert clusters == {"inbound|9080||"}
    assert not hcm.use_remote_address.value
    assert [f.name for f in hcm.http_filters] == [filters.FAULT, filters.CORS, filters.ROUTER]
    assert hcm.codec_type == hcm.AUTO
    assert [u.upgrade_type for u in hcm.upgrade_configs] == ["websocket"]
    assert hcm.server_name == "istio-envoy"
    assert hcm.normalize_path.value and hcm.merge_slashes
    assert hcm.generate_request_id.value
    assert not hcm.access_log  # no accessLogFile in the mesh config


def test_local_inbound_tcp_port_and_target_port() -> None:
    svc = service("reviews", [(9080, Protocol.HTTP, 19080), (5000, Protocol.TCP)])
    lds = by_name(build_listeners(sidecar(), push_of([svc])))
    assert set(lds) == {"127.0.10.1_19080", "127.0.10.1_5000"}
    hcm = hcm_of(lds["127.0.10.1_19080"].filter_chains[0].filters[0])
    assert {r.route.cluster for vh in hcm.route_config.virtual_hosts for r in vh.routes} == {
        "inbound|19080||"
    }
    tp = tcp_of(lds["127.0.10.1_5000"].filter_chains[0].filters[0])
    assert tp.cluster == "inbound|5000||"


def test_local_inbound_target_port_from_endpoint_of_this_proxy() -> None:
    ep = Endpoint(hostname=fqdn("reviews"), service_port=9080, address="127.0.10.1", port=7777)
    other = Endpoint(hostname=fqdn("reviews"), service_port=9080, address="127.0.10.2", port=8888)
    push = push_of([REVIEWS], endpoints={(fqdn("reviews"), 9080): (ep, other)})
    assert [p.port for p in inbound_ports(sidecar(ip="127.0.10.1"), push)] == [7777]


def test_local_inbound_only_for_selecting_services_in_own_namespace() -> None:
    other_ns = service("reviews", [(9081, Protocol.HTTP)], ns="other")
    not_selecting = service("ratings", [(9082, Protocol.HTTP)])
    lds = build_listeners(sidecar(), push_of([REVIEWS, other_ns, not_selecting]))
    assert [lis.name for lis in lds] == ["127.0.10.1_9080"]


def test_local_http_proxy_listener() -> None:
    lds = by_name(build_listeners(sidecar(http_proxy_port=15080), push_of([REVIEWS, RATINGS])))
    lis = lds["127.0.10.1_15080"]
    assert lis.traffic_direction == 2  # OUTBOUND
    hcm = hcm_of(lis.filter_chains[0].filters[0])
    assert hcm.rds.route_config_name == names.HTTP_PROXY_ROUTE
    assert hcm.rds.config_source.HasField("ads")
    assert hcm.http_protocol_options.allow_absolute_url.value
    assert route_config_names(list(lds.values())) == ["http_proxy"]


def test_no_outbound_tcp_listeners_in_local_mode_by_default() -> None:
    lds = build_listeners(sidecar(labels={"app": "productpage"}), push_of([REVIEWS, MONGO, MYSQL]))
    assert lds == []


def test_sidecar_ingress_overrides_inbound_in_local_mode() -> None:
    sc = configs("""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  ingress:
  - port: {number: 9443, protocol: HTTP, name: http-custom}
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 7000, protocol: TCP, name: tcp}
    bind: 127.0.10.9
""")
    lds = by_name(build_listeners(sidecar(), push_of([REVIEWS], sc)))
    assert set(lds) == {"127.0.10.1_9443", "127.0.10.9_7000"}
    assert tcp_of(lds["127.0.10.9_7000"].filter_chains[0].filters[0]).cluster == "inbound|7000||"


def test_sidecar_egress_listener_with_bind_in_local_mode() -> None:
    sc = configs("""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: 127.0.10.50
    hosts: ["./*"]
  - port: {number: 3306, protocol: TCP, name: tcp}
    bind: 127.0.10.50
    hosts: ["bookinfo/mysqldb.bookinfo.svc.cluster.local"]
  - hosts: ["istio-system/*"]
""")
    proxy = sidecar(labels={"app": "productpage"})
    lds = by_name(build_listeners(proxy, push_of([REVIEWS, MYSQL, MONGO], sc)))
    assert set(lds) == {"127.0.10.50_9080", "127.0.10.50_3306"}
    assert hcm_of(lds["127.0.10.50_9080"].filter_chains[0].filters[0]).rds.route_config_name == "9080"
    tp = tcp_of(lds["127.0.10.50_3306"].filter_chains[0].filters[0])
    assert tp.cluster == "outbound|3306||mysqldb.bookinfo.svc.cluster.local"


# --- sidecar_allows -----------------------------------------------------------------------------------------
def test_sidecar_allows_egress_host_forms() -> None:
    proxy = sidecar(labels={"app": "productpage"})
    ext = service("httpbin", [(80, Protocol.HTTP)], ns="external", hostname="httpbin.org", selector={})
    sys_svc = service("istiod", [(15010, Protocol.GRPC)], ns="istio-system")

    def allows(hosts: list[str]) -> dict[str, bool]:
        doc = (
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default}\nspec:\n"
            f"  egress:\n  - hosts: {hosts}\n"
        )
        push = push_of([REVIEWS, ext, sys_svc], configs(doc))
        return {s.name: sidecar_allows(proxy, push, s) for s in (REVIEWS, ext, sys_svc)}

    assert allows(["./*"]) == {"reviews": True, "httpbin": False, "istiod": False}
    assert allows(["*/httpbin.org"]) == {"reviews": False, "httpbin": True, "istiod": False}
    assert allows(["istio-system/*", "./reviews.bookinfo.svc.cluster.local"]) == {
        "reviews": True,
        "httpbin": False,
        "istiod": True,
    }
    assert allows(["~/*"]) == {"reviews": False, "httpbin": False, "istiod": False}
    assert allows(["*/*.bookinfo.svc.cluster.local"]) == {"reviews": True, "httpbin": False, "istiod": False}
    # no Sidecar resource: everything exported to the namespace
    private = service("secret", [(80, Protocol.HTTP)], ns="other")
    private = type(private)(**{**private.__dict__, "export_to": (".",)})
    push = push_of([REVIEWS, private])
    assert sidecar_allows(proxy, push, REVIEWS) and not sidecar_allows(proxy, push, private)


# --- REDIRECT mode ------------------------------------------------------------------------------------------
def test_redirect_mode_virtual_listeners_and_per_port_outbound() -> None:
    proxy = sidecar(mode="REDIRECT")
    lds = by_name(build_listeners(proxy, push_of([REVIEWS, RATINGS, MONGO])))
    assert set(lds) == {"0.0.0.0_9080", "0.0.0.0_27017", "virtualOutbound", "virtualInbound"}
    vo = lds["virtualOutbound"]
    assert vo.address.socket_address.port_value == 15001 and vo.use_original_dst.value
    catch_all = vo.filter_chains[-1]
    assert tcp_of(catch_all.filters[0]).cluster == names.PASSTHROUGH_CLUSTER
    assert tcp_of(vo.filter_chains[0].filters[0]).cluster == names.BLACKHOLE_CLUSTER
    assert vo.filter_chains[0].filter_chain_match.destination_port.value == 15001

    http = lds["0.0.0.0_9080"]
    assert http.HasField("bind_to_port") and not http.bind_to_port.value
    assert hcm_of(http.filter_chains[0].filters[0]).rds.route_config_name == "9080"
    assert (
        tcp_of(lds["0.0.0.0_27017"].filter_chains[0].filters[0]).cluster
        == "outbound|27017||mongodb.bookinfo.svc.cluster.local"
    )

    vi = lds["virtualInbound"]
    assert vi.address.socket_address.port_value == 15006
    assert [f.name for f in vi.listener_filters] == [filters.ORIGINAL_DST]
    ports = {c.filter_chain_match.destination_port.value: c for c in vi.filter_chains}
    assert set(ports) == {15006, 9080, 0}
    hcm = hcm_of(ports[9080].filters[0])
    assert {r.route.cluster for vh in hcm.route_config.virtual_hosts for r in vh.routes} == {"inbound|9080||"}
    assert tcp_of(ports[0].filters[0]).cluster == names.INBOUND_PASSTHROUGH_CLUSTER
    assert route_config_names(list(lds.values())) == ["9080"]


def test_redirect_registry_only_uses_blackhole() -> None:
    mesh = MeshConfig(outbound_policy=OutboundPolicy.REGISTRY_ONLY)
    lds = by_name(build_listeners(sidecar(mode="REDIRECT"), push_of([REVIEWS], mesh=mesh)))
    assert tcp_of(lds["virtualOutbound"].filter_chains[-1].filters[0]).cluster == names.BLACKHOLE_CLUSTER
    sc = configs("""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  outboundTrafficPolicy: {mode: ALLOW_ANY}
""")
    lds = by_name(build_listeners(sidecar(mode="REDIRECT"), push_of([REVIEWS], sc, mesh=mesh)))
    assert tcp_of(lds["virtualOutbound"].filter_chains[-1].filters[0]).cluster == names.PASSTHROUGH_CLUSTER


def test_redirect_tcp_services_sharing_a_port_match_on_addresses() -> None:
    a = service("db-a", [(3306, Protocol.TCP)], addresses=("10.0.1.1",))
    b = service("db-b", [(3306, Protocol.TCP)], addresses=("10.0.1.2",))
    lis = by_name(build_listeners(sidecar(mode="REDIRECT"), push_of([a, b])))["0.0.0.0_3306"]
    got = {
        c.filter_chain_match.prefix_ranges[0].address_prefix: tcp_of(c.filters[0]).cluster
        for c in lis.filter_chains
    }
    assert got == {
        "10.0.1.1": "outbound|3306||db-a.bookinfo.svc.cluster.local",
        "10.0.1.2": "outbound|3306||db-b.bookinfo.svc.cluster.local",
    }
    assert all(c.filter_chain_match.prefix_ranges[0].prefix_len.value == 32 for c in lis.filter_chains)
    # unknown destinations on that port fall through to the passthrough cluster
    assert tcp_of(lis.default_filter_chain.filters[0]).cluster == names.PASSTHROUGH_CLUSTER


def test_redirect_vs_tcp_route_weighted() -> None:
    vs = configs("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mongo}
spec:
  hosts: [mongodb]
  tcp:
  - match: [{port: 27017}]
    route:
    - destination: {host: mongodb, subset: v1}
      weight: 80
    - destination: {host: mongodb, subset: v2}
      weight: 20
""")
    lis = by_name(build_listeners(sidecar(mode="REDIRECT"), push_of([MONGO], vs)))["0.0.0.0_27017"]
    assert len(lis.filter_chains) == 1
    tp = tcp_of(lis.filter_chains[0].filters[0])
    assert tp.stat_prefix == "mongo.bookinfo"
    assert [(w.name, w.weight) for w in tp.weighted_clusters.clusters] == [
        ("outbound|27017|v1|mongodb.bookinfo.svc.cluster.local", 80),
        ("outbound|27017|v2|mongodb.bookinfo.svc.cluster.local", 20),
    ]


def test_redirect_vs_tcp_route_source_labels_and_subnets() -> None:
    vs = configs("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mysql}
spec:
  hosts: [mysqldb]
  tcp:
  - match: [{sourceLabels: {app: other}}]
    route: [{destination: {host: mysqldb, subset: v2}}]
  - match: [{destinationSubnets: [10.9.0.0/16]}]
    route: [{destination: {host: mysqldb, subset: v3}}]
""")
    lis = by_name(build_listeners(sidecar(mode="REDIRECT"), push_of([MYSQL], vs)))["0.0.0.0_3306"]
    got = [
        (
            tuple(f"{p.address_prefix}/{p.prefix_len.value}" for p in c.filter_chain_match.prefix_ranges),
            tcp_of(c.filters[0]).cluster,
        )
        for c in lis.filter_chains
    ]
    assert got == [
        (("10.9.0.0/16",), "outbound|3306|v3|mysqldb.bookinfo.svc.cluster.local"),
        ((), "outbound|3306||mysqldb.bookinfo.svc.cluster.local"),
    ]


def test_redirect_vs_tls_routes_get_sni_chains() -> None:
    ext = service("api", [(443, Protocol.TLS)], hostname="api.example.com", selector={})
    vs = configs("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api.example.com]
  tls:
  - match: [{port: 443, sniHosts: [api.example.com]}]
    route: [{destination: {host: api.example.com}}]
""")
    lis = by_name(build_listeners(sidecar(mode="REDIRECT"), push_of([ext], vs)))["0.0.0.0_443"]
    assert [f.name for f in lis.listener_filters] == [filters.TLS_INSPECTOR]
    sni = [c for c in lis.filter_chains if c.filter_chain_match.server_names]
    assert list(sni[0].filter_chain_match.server_names) == ["api.example.com"]
    assert tcp_of(sni[0].filters[0]).cluster == "outbound|443||api.example.com"


def test_redirect_http_and_tcp_on_same_port_and_conflict_warning() -> None:
    tcp_a = service("legacy", [(9080, Protocol.TCP)], addresses=("10.0.2.1",))
    tcp_noaddr = service("legacy2", [(9080, Protocol.TCP)])
    proxy = sidecar(mode="REDIRECT")
    push = push_of([REVIEWS, tcp_a, tcp_noaddr])
    lis = by_name(build_listeners(proxy, push))["0.0.0.0_9080"]
    kinds = [
        (c.filters[0].name, [p.address_prefix for p in c.filter_chain_match.prefix_ranges])
        for c in lis.filter_chains
    ]
    assert kinds == [(filters.TCP_PROXY, ["10.0.2.1"]), (filters.HCM, [])]
    assert not lis.HasField("default_filter_chain")
    warnings = generation_warnings(proxy, push)
    assert any("legacy2" in w for w in warnings), warnings


def test_route_config_names_walks_every_chain() -> None:
    lds = build_listeners(
        sidecar(mode="REDIRECT", http_proxy_port=15080),
        push_of([REVIEWS, service("web", [(80, Protocol.HTTP)]), MONGO]),
    )
    assert route_config_names(lds) == ["80", "9080", "http_proxy"]
    assert route_config_names([]) == []
    assert NS == "bookinfo"


def test_redirect_per_port_egress_listener_hosts() -> None:
    sc = configs("""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  egress:
  - port: {number: 3306, protocol: TCP, name: tcp}
    hosts: ["./db-a.bookinfo.svc.cluster.local"]
  - hosts: ["./*"]
""")
    a = service("db-a", [(3306, Protocol.TCP)], addresses=("10.0.1.1",))
    b = service("db-b", [(3306, Protocol.TCP)], addresses=("10.0.1.2",))
    lds = by_name(build_listeners(sidecar(mode="REDIRECT"), push_of([a, b, REVIEWS], sc)))
    chains = lds["0.0.0.0_3306"].filter_chains
    assert [tcp_of(c.filters[0]).cluster for c in chains] == [
        "outbound|3306||db-a.bookinfo.svc.cluster.local"
    ]
    assert "0.0.0.0_9080" in lds
