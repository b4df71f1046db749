"""RDS for sidecars: per-port outbound configs, default routes, catch-all vhosts, Istio's bookinfo samples,
VS selection (oldest wins, non-registry hosts), the http_proxy config and the inbound route."""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2
from routes_testkit import (
    BOOKINFO_NET,
    NS,
    bookinfo_registry,
    configs_from_file,
    configs_from_yaml,
    fqdn,
    http_service,
    push_of,
    route_config,
    sidecar,
    single_route,
    vhost,
    vs_yaml,
)

from mizzen.core import names
from mizzen.core.mesh import MeshConfig, OutboundPolicy
from mizzen.core.routes import build_inbound_route, build_routes

REVIEWS = fqdn("reviews")
RATINGS = fqdn("ratings")
DETAILS = fqdn("details")


def _fault(route: rc.Route) -> fault_pb2.HTTPFault:
    f = fault_pb2.HTTPFault()
    assert route.typed_per_filter_config["envoy.filters.http.fault"].Unpack(f)
    return f


def test_default_routes_without_virtual_services() -> None:
    cfg = route_config(sidecar(), push_of([]), "9080")
    assert [v.name for v in cfg.virtual_hosts] == [
        f"{fqdn(n)}:9080" for n in ("details", "productpage", "ratings", "reviews")] + ["allow_any"]
    vh = vhost(cfg, f"{REVIEWS}:9080")
    assert {"reviews", "reviews:9080", REVIEWS, f"{REVIEWS}:9080", "reviews.bookinfo"} <= set(vh.domains)
    [r] = vh.routes
    assert r.name == "default"
    assert r.match.prefix == "/"
    assert r.route.cluster == f"outbound|9080||{REVIEWS}"
    assert r.route.timeout.ToSeconds() == 0 and r.route.HasField("timeout")
    rp = r.route.retry_policy
    assert rp.num_retries.value == 2
    assert rp.retry_on == "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    assert list(rp.retriable_status_codes) == [503]
    assert [p.name for p in rp.retry_host_predicate] == ["envoy.retry_host_predicates.previous_hosts"]
    assert rp.host_selection_retry_max_attempts == 5
    assert not cfg.validate_clusters.value


def test_other_namespace_service_has_no_short_name() -> None:
    reg = bookinfo_registry(http_service("echo", ns="other"))
    vh = vhost(route_config(sidecar(), push_of([], reg), "9080"), f"{fqdn('echo', 'other')}:9080")
    assert "echo" not in vh.domains
    assert "echo.other" in vh.domains and "echo.other:9080" in vh.domains


def test_catch_all_follows_outbound_policy() -> None:
    allow = route_config(sidecar(), push_of([]), "9080").virtual_hosts[-1]
    assert allow.name == "allow_any" and list(allow.domains) == ["*"]
    assert allow.routes[0].route.cluster == names.PASSTHROUGH_CLUSTER
    assert allow.routes[0].route.HasField("timeout") and allow.routes[0].route.timeout.seconds == 0
    mesh = MeshConfig(outbound_policy=OutboundPolicy.REGISTRY_ONLY)
    block = route_config(sidecar(), push_of([], mesh=mesh), "9080").virtual_hosts[-1]
    assert block.name == "block_all" and list(block.domains) == ["*"]
    assert block.routes[0].direct_response.status == 502


def test_ports_only_carry_services_on_that_port() -> None:
    reg = bookinfo_registry(http_service("web", ports=(80, 8080)))
    cfg = route_config(sidecar(), push_of([], reg), "8080")
    assert [v.name for v in cfg.virtual_hosts] == [f"{fqdn('web')}:8080", "allow_any"]
    unknown = build_routes(sidecar(), push_of([], reg), ["not-a-route"])[0]
    assert unknown.name == "not-a-route" and not unknown.virtual_hosts


def test_bookinfo_virtual_service_all_v1() -> None:
    push = push_of(configs_from_file(BOOKINFO_NET / "virtual-service-all-v1.yaml"))
    cfg = route_config(sidecar(), push, "9080")
    for svc in ("productpage", "reviews", "ratings", "details"):
        [r] = vhost(cfg, f"{fqdn(svc)}:9080").routes
        assert r.route.cluster == f"outbound|9080|v1|{fqdn(svc)}"
        assert r.metadata.filter_metadata["istio"]["config"] == \
            f"/apis/networking.istio.io/v1/namespaces/{NS}/virtual-service/{svc}"
        assert r.route.retry_policy.num_retries.value == 2
        assert r.route.timeout.seconds == 0
        assert r.decorator.operation == f"{fqdn(svc)}:9080/*"


def test_bookinfo_reviews_80_20() -> None:
    push = push_of(configs_from_file(BOOKINFO_NET / "virtual-service-reviews-80-20.yaml"))
    r = single_route(sidecar(), push, REVIEWS)
    clusters = [(c.name, c.weight.value) for c in r.route.weighted_clusters.clusters]
    assert clusters == [(f"outbound|9080|v1|{REVIEWS}", 80), (f"outbound|9080|v2|{REVIEWS}", 20)]


def test_bookinfo_reviews_jason_v2_v3() -> None:
    push = push_of(configs_from_file(BOOKINFO_NET / "virtual-service-reviews-jason-v2-v3.yaml"))
    jason, rest = vhost(route_config(sidecar(), push, "9080"), f"{REVIEWS}:9080").routes
    [h] = jason.match.headers
    assert h.name == "end-user" and h.string_match.exact == "jason"
    assert jason.route.cluster == f"outbound|9080|v2|{REVIEWS}"
    assert rest.match.prefix == "/" and not rest.match.headers
    assert rest.route.cluster == f"outbound|9080|v3|{REVIEWS}"


def test_bookinfo_ratings_test_delay() -> None:
    push = push_of(configs_from_file(BOOKINFO_NET / "virtual-service-ratings-test-delay.yaml"))
    jason, rest = vhost(route_config(sidecar(), push, "9080"), f"{RATINGS}:9080").routes
    f = _fault(jason)
    assert f.delay.fixed_delay.seconds == 7
    assert (f.delay.percentage.numerator, f.delay.percentage.denominator) == \
        (1_000_000, percent_pb2.FractionalPercent.MILLION)
    assert not f.HasField("abort")
    assert "envoy.filters.http.fault" not in rest.typed_per_filter_config


def test_bookinfo_ratings_test_abort() -> None:
    push = push_of(configs_from_file(BOOKINFO_NET / "virtual-service-ratings-test-abort.yaml"))
    jason, _ = vhost(route_config(sidecar(), push, "9080"), f"{RATINGS}:9080").routes
    f = _fault(jason)
    assert f.abort.http_status == 500 and f.abort.percentage.numerator == 1_000_000
    assert jason.route.cluster == f"outbound|9080|v1|{RATINGS}"


def test_bookinfo_fault_injection_details_v1() -> None:
    push = push_of(configs_from_file(BOOKINFO_NET / "fault-injection-details-v1.yaml"))
    # the first rule has no match: it is a catch-all, so the second rule is never emitted (as in Istio)
    r = single_route(sidecar(), push, DETAILS)
    assert _fault(r).abort.http_status == 555
    assert r.route.cluster == f"outbound|9080|v1|{DETAILS}"


def test_oldest_virtual_service_wins_for_a_host() -> None:
    def rule(subset: str) -> list[dict[str, Any]]:
        return [{"route": [{"destination": {"host": "reviews", "subset": subset}}]}]
    old = vs_yaml("reviews-old", ["reviews"], rule("v1"), created=1)
    new = vs_yaml("reviews-new", ["reviews"], rule("v2"), created=2)
    r = single_route(sidecar(), push_of([new, old]), REVIEWS)
    assert r.route.cluster == f"outbound|9080|v1|{REVIEWS}"


def test_non_registry_host_gets_a_vhost_on_port_80() -> None:
    dest = {"destination": {"host": "reviews", "port": {"number": 9080}}}
    vs = vs_yaml("ext", ["example.com"], [{"route": [dest], "timeout": "3s"}])
    cfg = route_config(sidecar(), push_of([vs]), "80")
    vh = vhost(cfg, "example.com:80")
    assert list(vh.domains) == ["example.com", "example.com:80"]
    assert vh.routes[0].route.cluster == f"outbound|9080||{REVIEWS}"
    assert vh.routes[0].route.timeout.seconds == 3
    on_9080 = route_config(sidecar(), push_of([vs]), "9080")
    assert "example.com:80" not in [v.name for v in on_9080.virtual_hosts]


def test_wildcard_virtual_service_host_claims_services() -> None:
    vs = vs_yaml("all", ["*.bookinfo.svc.cluster.local"],
                 [{"route": [{"destination": {"host": "details"}}], "timeout": "1s"}])
    cfg = route_config(sidecar(), push_of([vs]), "9080")
    for svc in ("reviews", "ratings"):
        [r] = vhost(cfg, f"{fqdn(svc)}:9080").routes
        assert r.route.cluster == f"outbound|9080||{DETAILS}" and r.route.timeout.seconds == 1


def test_source_filtered_rules_fall_back_to_default_route() -> None:
    vs = vs_yaml("reviews", ["reviews"], [{"match": [{"sourceLabels": {"app": "other"}}],
                                           "route": [{"destination": {"host": "reviews", "subset": "v3"}}]}])
    r = single_route(sidecar(), push_of([vs]), REVIEWS)
    assert r.name == "default" and r.route.cluster == f"outbound|9080||{REVIEWS}"


def test_exported_to_other_namespace_only() -> None:
    vs = vs_yaml("reviews", ["reviews"], [{"route": [{"destination": {"host": "reviews", "subset": "v3"}}]}])
    vs = type(vs)(**{**vs.__dict__, "spec": {**vs.spec, "exportTo": ["elsewhere"]}})
    assert single_route(sidecar(), push_of([vs]), REVIEWS).name == "default"


def test_http_proxy_route_covers_every_http_port() -> None:
    reg = bookinfo_registry(http_service("web", ports=(80,)))
    vs = vs_yaml("reviews", ["reviews"], [{"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}])
    cfg = route_config(sidecar(), push_of([vs], reg), names.HTTP_PROXY_ROUTE)
    rv = vhost(cfg, f"{REVIEWS}:9080")
    assert all(":" in d for d in rv.domains) and "reviews:9080" in rv.domains and "reviews" not in rv.domains
    assert rv.routes[0].route.cluster == f"outbound|9080|v2|{REVIEWS}"
    web = vhost(cfg, f"{fqdn('web')}:80")
    assert {"web", "web:80", fqdn("web")} <= set(web.domains)
    assert cfg.virtual_hosts[-1].name == "allow_any"
    all_domains = [d for v in cfg.virtual_hosts for d in v.domains]
    assert len(all_domains) == len(set(all_domains))


def test_consistent_hash_from_destination_rule() -> None:
    dr = configs_from_yaml("""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
""")
    r = single_route(sidecar(), push_of(dr), RATINGS)
    assert [h.header.header_name for h in r.route.hash_policy] == ["x-user"]
    # consistent hashing pins the host: no previous-hosts retry predicate
    assert not r.route.retry_policy.retry_host_predicate
    vs = vs_yaml("ratings", ["ratings"], [{"route": [{"destination": {"host": "ratings"}}]}])
    r = single_route(sidecar(), push_of([*dr, vs]), RATINGS)
    assert [h.header.header_name for h in r.route.hash_policy] == ["x-user"]


def test_inbound_route() -> None:
    cfg = build_inbound_route(sidecar(), push_of([]), 9080, "inbound|9080||")
    assert cfg.name == "inbound|9080||"
    [vh] = cfg.virtual_hosts
    assert vh.name == "inbound|http|9080" and list(vh.domains) == ["*"]
    [r] = vh.routes
    assert r.route.cluster == "inbound|9080||"
    assert r.route.HasField("timeout") and r.route.timeout.seconds == 0
    assert r.route.max_stream_duration.HasField("max_stream_duration")
    assert r.route.max_stream_duration.grpc_timeout_header_max.seconds == 0


def test_sidecar_resource_scopes_vhosts_and_outbound_policy() -> None:
    sc = configs_from_yaml("""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: bookinfo}
spec:
  egress:
  - hosts: ["./reviews", "./ratings.bookinfo.svc.cluster.local"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
""")
    cfg = route_config(sidecar(), push_of(sc), "9080")
    assert [v.name for v in cfg.virtual_hosts] == [f"{RATINGS}:9080", f"{REVIEWS}:9080", "block_all"]
