"""CDS translation: cluster names and types, DestinationRule policies (LB, circuit breakers, outlier
detection, HTTP/2, TLS, locality), metadata, inbound and fixed clusters, and route hash policies."""

from __future__ import annotations

from typing import Any

import pytest
from _clusters_fixtures import (
    BOOKINFO_NET,
    NS,
    REPO,
    ROUTING,
    bookinfo_configs,
    bookinfo_push,
    bookinfo_workloads,
    by_name,
    configs_from_file,
    configs_from_yaml,
    dr,
    fqdn,
    gateway,
    http_options,
    istio_metadata,
    kube_service,
    push_of,
    sidecar,
    workload,
)
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2

from mizzen.core import names
from mizzen.core.clusters import build_clusters, uses_eds
from mizzen.core.mesh import MeshConfig
from mizzen.core.policy import consistent_hash_policy, effective_policy, parse_duration

C = cluster_pb2.Cluster
MAX = 4294967295
REVIEWS = fqdn("reviews")
RATINGS = fqdn("ratings")


def clusters_for(*configs: Any, proxy: Any = None) -> dict[str, cluster_pb2.Cluster]:
    return by_name(build_clusters(proxy or sidecar(), bookinfo_push(*configs)))


def reviews_with(traffic_policy: dict[str, Any], **spec: Any) -> dict[str, cluster_pb2.Cluster]:
    return clusters_for(dr("reviews", {"host": "reviews", "trafficPolicy": traffic_policy, **spec}))


def test_bookinfo_destination_rule_all_subsets() -> None:
    cs = clusters_for(*configs_from_file(BOOKINFO_NET / "destination-rule-all.yaml"))
    subsets = {"productpage": ["", "v1"], "reviews": ["", "v1", "v2", "v3"],
               "ratings": ["", "v1", "v2", "v2-mysql", "v2-mysql-vm"], "details": ["", "v1", "v2"]}
    expected = {names.outbound_cluster(9080, s, fqdn(h)) for h, subs in subsets.items() for s in subs}
    outbound = {n for n in cs if n.startswith("outbound|")}
    assert outbound == expected
    assert list(cs) == sorted(cs)
    for n in outbound:
        c = cs[n]
        assert c.type == C.EDS and uses_eds(c)
        assert c.eds_cluster_config.service_name == n
        assert c.eds_cluster_config.eds_config.HasField("ads")
        assert c.eds_cluster_config.eds_config.resource_api_version == config_source_pb2.V3
        assert c.lb_policy == C.LEAST_REQUEST
        assert c.connect_timeout.seconds == 10
        opts = http_options(c)
        assert opts is not None and opts.explicit_http_config.HasField("http_protocol_options")
    md = istio_metadata(cs[names.outbound_cluster(9080, "v2", REVIEWS)])
    assert md == {"config": "/apis/networking.istio.io/v1/namespaces/bookinfo/destination-rule/reviews",
                  "services": [{"host": REVIEWS, "name": "reviews", "namespace": NS}], "subset": "v2"}
    # no DestinationRule -> metadata has services but no config
    plain = clusters_for()
    assert "config" not in istio_metadata(plain[names.outbound_cluster(9080, "", REVIEWS)])


def test_seed_ratings_circuit_breaker() -> None:
    rules = configs_from_file(REPO / "tests" / "fixtures" / "seed" / "ratings-dr.yaml")
    assert [r.kind for r in rules] == ["DestinationRule"]
    cs = clusters_for(*rules)
    for name in (names.outbound_cluster(9080, "", RATINGS), names.outbound_cluster(9080, "v1", RATINGS)):
        c = cs[name]
        (t,) = c.circuit_breakers.thresholds
        assert t.priority == 0  # DEFAULT
        assert t.max_connections.value == 3
        assert t.max_pending_requests.value == 1
        assert t.max_requests.value == MAX and t.max_retries.value == MAX
        od = c.outlier_detection
        assert od.consecutive_5xx.value == 1 and od.enforcing_consecutive_5xx.value == 100
        assert od.interval.seconds == 10
        assert od.base_ejection_time.seconds == 180
        assert od.max_ejection_percent.value == 100
        assert od.enforcing_success_rate.value == 0
        assert c.common_lb_config.HasField("healthy_panic_threshold")
        assert c.common_lb_config.healthy_panic_threshold.value == 0
    # the reviews clusters are untouched: Istio's default thresholds, no outlier detection
    other = cs[names.outbound_cluster(9080, "", REVIEWS)]
    assert other.circuit_breakers.thresholds[0].max_connections.value == MAX
    assert not other.HasField("outlier_detection")
    assert other.common_lb_config.HasField("healthy_panic_threshold")   # panic mode off everywhere
    assert other.common_lb_config.healthy_panic_threshold.value == 0
    # the ratings sidecar's inbound cluster gets the connection pool too (server-side circuit breaking)
    ratings = by_name(build_clusters(sidecar({"app": "ratings", "version": "v1"}, "ratings-v1-a",
                                             ip="127.0.20.3"), bookinfo_push(*rules)))
    inbound = ratings["inbound|9080||"]
    assert inbound.circuit_breakers.thresholds[0].max_connections.value == 3
    assert not inbound.HasField("outlier_detection")


def test_istio_routing_destination_rule_all_fields() -> None:
    push = push_of(configs_from_file(ROUTING / "destination-rule-all.yaml", "testns"))
    cs = by_name(build_clusters(sidecar(ns="testns", labels={}), push))
    host = "destall.default.svc.cluster.local"
    top = cs[names.outbound_cluster(81, "", host)]
    t = top.circuit_breakers.thresholds[0]
    assert (t.max_connections.value, t.max_requests.value, t.max_retries.value,
            t.max_pending_requests.value) == (99, 33, 4, 14)
    assert top.connect_timeout.seconds == 6
    opts = http_options(top)
    assert opts is not None and opts.common_http_protocol_options.max_requests_per_connection.value == 65
    assert top.outlier_detection.interval.nanos == 8_000_000
    assert top.outlier_detection.base_ejection_time.seconds == 60
    assert top.outlier_detection.max_ejection_percent.value == 11
    assert not top.outlier_detection.HasField("consecutive_5xx")
    assert top.lb_policy == C.ROUND_ROBIN
    v2 = cs[names.outbound_cluster(81, "v2", host)]
    assert v2.lb_policy == C.RING_HASH and v2.ring_hash_lb_config.minimum_ring_size.value == 42
    assert v2.circuit_breakers.thresholds[0].max_connections.value == 99   # inherited connectionPool
    assert cs[names.outbound_cluster(81, "v1", host)].lb_policy == C.ROUND_ROBIN
    assert not top.HasField("transport_socket")   # tls DISABLE


@pytest.mark.parametrize(("lb", "policy"), [
    ({"simple": "LEAST_REQUEST"}, C.LEAST_REQUEST),
    ({"simple": "LEAST_CONN"}, C.LEAST_REQUEST),
    ({"simple": "RANDOM"}, C.RANDOM),
    ({"simple": "ROUND_ROBIN"}, C.ROUND_ROBIN),
    ({"simple": "UNSPECIFIED"}, C.LEAST_REQUEST),
    ({"consistentHash": {"httpHeaderName": "x-user", "ringHash": {"minimumRingSize": 2048}}}, C.RING_HASH),
    ({"consistentHash": {"useSourceIp": True, "maglev": {"tableSize": 65537}}}, C.MAGLEV),
    ({"consistentHash": {"httpQueryParameterName": "u", "minimumRingSize": 64}}, C.RING_HASH),
])
def test_load_balancer_policies(lb: dict[str, Any], policy: int) -> None:
    c = reviews_with({"loadBalancer": lb})[names.outbound_cluster(9080, "", REVIEWS)]
    assert c.lb_policy == policy
    assert c.type == C.EDS
    ch = lb.get("consistentHash") or {}
    if "ringHash" in ch:
        assert c.ring_hash_lb_config.minimum_ring_size.value == 2048
    if "maglev" in ch:
        assert c.maglev_lb_config.table_size.value == 65537
    if "minimumRingSize" in ch:
        assert c.ring_hash_lb_config.minimum_ring_size.value == 64


def test_consistent_hash_default_ring_size_and_warmup() -> None:
    c = reviews_with({"loadBalancer": {"consistentHash": {"httpHeaderName": "x"}}})[
        names.outbound_cluster(9080, "", REVIEWS)]
    assert c.lb_policy == C.RING_HASH and c.ring_hash_lb_config.minimum_ring_size.value == 1024
    w = reviews_with({"loadBalancer": {"simple": "LEAST_REQUEST", "warmupDurationSecs": "30s"}})[
        names.outbound_cluster(9080, "", REVIEWS)]
    assert w.least_request_lb_config.slow_start_config.slow_start_window.seconds == 30


def test_passthrough_load_balancer() -> None:
    rules = [*configs_from_file(REPO / "tests" / "fixtures" / "seed" / "reviews-dr.yaml"),
             dr("ratings", {"host": "ratings", "trafficPolicy": {"loadBalancer": {"simple": "PASSTHROUGH"}},
                            "subsets": [{"name": "v1", "labels": {"version": "v1"}}]})]
    redirect = sidecar()
    redirect = type(redirect)(**{**redirect.__dict__, "interception_mode": "REDIRECT"})
    cs = clusters_for(*rules, proxy=redirect)
    for s in ("", "v1"):   # Istio: the original destination (with iptables interception)
        c = cs[names.outbound_cluster(9080, s, RATINGS)]
        assert c.type == C.ORIGINAL_DST and c.lb_policy == C.CLUSTER_PROVIDED
        assert not c.HasField("eds_cluster_config") and not uses_eds(c)
    assert cs[names.outbound_cluster(9080, "v1", REVIEWS)].type == C.EDS
    local = clusters_for(*rules)
    for s in ("", "v1"):   # local mode: no VIP behind the destination; endpoints picked at random
        c = local[names.outbound_cluster(9080, s, RATINGS)]
        assert c.type == C.EDS and c.lb_policy == C.RANDOM


def test_subset_traffic_policy_overrides_top_level_as_units() -> None:
    cs = reviews_with(
        {"loadBalancer": {"simple": "RANDOM"},
         "connectionPool": {"tcp": {"maxConnections": 7}, "http": {"http1MaxPendingRequests": 2}}},
        subsets=[{"name": "v1", "labels": {"version": "v1"},
                  "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 50}}}},
                 {"name": "v2", "labels": {"version": "v2"},
                  "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}}}])
    v1 = cs[names.outbound_cluster(9080, "v1", REVIEWS)]
    t = v1.circuit_breakers.thresholds[0]
    # the subset's connectionPool replaces the top-level one as a whole: pending requests back to default
    assert t.max_connections.value == 50 and t.max_pending_requests.value == MAX
    assert v1.lb_policy == C.RANDOM
    v2 = cs[names.outbound_cluster(9080, "v2", REVIEWS)]
    assert v2.lb_policy == C.LEAST_REQUEST
    assert v2.circuit_breakers.thresholds[0].max_connections.value == 7


def test_port_level_settings() -> None:
    svc = kube_service("reviews", ports=[{"port": 9080, "name": "http"}, {"port": 9090, "name": "grpc-api"}])
    rule = dr("reviews", {"host": "reviews", "trafficPolicy": {
        "loadBalancer": {"simple": "RANDOM"},
        "outlierDetection": {"consecutive5xxErrors": 3},
        "portLevelSettings": [{"port": {"number": 9090}, "loadBalancer": {"simple": "LEAST_REQUEST"}}]},
        "subsets": [{"name": "v1", "labels": {"version": "v1"}, "trafficPolicy": {
            "portLevelSettings": [{"port": {"number": 9080},
                                   "connectionPool": {"tcp": {"maxConnections": 5}}}]}}]})
    push = push_of([svc, rule])
    cs = by_name(build_clusters(sidecar(), push))
    p9080 = cs[names.outbound_cluster(9080, "", REVIEWS)]
    p9090 = cs[names.outbound_cluster(9090, "", REVIEWS)]
    assert p9080.lb_policy == C.RANDOM and p9080.outlier_detection.consecutive_5xx.value == 3
    # port-level settings do not inherit: no outlier detection on 9090
    assert p9090.lb_policy == C.LEAST_REQUEST and not p9090.HasField("outlier_detection")
    sub = cs[names.outbound_cluster(9080, "v1", REVIEWS)]
    assert sub.circuit_breakers.thresholds[0].max_connections.value == 5
    assert sub.lb_policy == C.LEAST_REQUEST and not sub.HasField("outlier_detection")
    assert effective_policy(rule, "v1", 9090) == {"loadBalancer": {"simple": "LEAST_REQUEST"}}


def test_upstream_http_protocols() -> None:
    svc = kube_service("svc", ports=[{"port": 80, "name": "http-web"}, {"port": 81, "name": "grpc"},
                                     {"port": 82, "name": "http2"}, {"port": 83, "name": "tcp-db"},
                                     {"port": 84, "name": "x", "appProtocol": "kubernetes.io/h2c"}])
    cs = by_name(build_clusters(sidecar(), push_of([svc])))
    h = fqdn("svc")

    def opts(port: int) -> Any:
        return http_options(cs[names.outbound_cluster(port, "", h)])

    assert opts(80).explicit_http_config.HasField("http_protocol_options")
    for p in (81, 82, 84):
        assert opts(p).explicit_http_config.HasField("http2_protocol_options"), p
    assert opts(83) is None
    up = by_name(build_clusters(sidecar(), push_of([svc, dr("svc", {"host": "svc", "trafficPolicy": {
        "connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE", "idleTimeout": "15s",
                                    "maxConcurrentStreams": 9},
                           "tcp": {"maxConnectionDuration": "1h",
                                   "tcpKeepalive": {"probes": 3, "time": "7200s", "interval": "75s"}}}}})])))
    c80 = up[names.outbound_cluster(80, "", h)]
    o = http_options(c80)
    assert o is not None and o.explicit_http_config.http2_protocol_options.max_concurrent_streams.value == 9
    assert o.common_http_protocol_options.idle_timeout.seconds == 15
    assert o.common_http_protocol_options.max_connection_duration.seconds == 3600
    ka = c80.upstream_connection_options.tcp_keepalive
    assert (ka.keepalive_probes.value, ka.keepalive_time.value, ka.keepalive_interval.value) == (3, 7200, 75)
    client = by_name(build_clusters(sidecar(), push_of([svc, dr("svc", {"host": "svc", "trafficPolicy": {
        "connectionPool": {"http": {"useClientProtocol": True}}}})])))
    co = http_options(client[names.outbound_cluster(80, "", h)])
    assert co is not None and co.HasField("use_downstream_protocol_config")
    co81 = http_options(client[names.outbound_cluster(81, "", h)])   # gRPC port: the client's protocol too
    assert co81 is not None and co81.HasField("use_downstream_protocol_config")
    both = by_name(build_clusters(sidecar(), push_of([svc, dr("svc", {"host": "svc", "trafficPolicy": {
        "connectionPool": {"http": {"useClientProtocol": True, "h2UpgradePolicy": "UPGRADE"}}}})])))
    bo = http_options(both[names.outbound_cluster(83, "", h)])     # an explicit upgrade wins, even on TCP
    assert bo is not None and bo.explicit_http_config.HasField("http2_protocol_options")


def test_outlier_detection_zero_errors_and_local_origin() -> None:
    c = reviews_with({"outlierDetection": {"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 4,
                                           "minHealthPercent": 30, "splitExternalLocalOriginErrors": True,
                                           "consecutiveLocalOriginFailures": 6}})[
        names.outbound_cluster(9080, "", REVIEWS)]
    od = c.outlier_detection
    assert od.HasField("consecutive_5xx") and od.consecutive_5xx.value == 0
    assert od.enforcing_consecutive_5xx.value == 0 and od.HasField("enforcing_consecutive_5xx")
    assert od.consecutive_gateway_failure.value == 4 and od.enforcing_consecutive_gateway_failure.value == 100
    assert od.split_external_local_origin_errors
    assert od.consecutive_local_origin_failure.value == 6
    assert od.enforcing_consecutive_local_origin_failure.value == 100
    assert c.common_lb_config.healthy_panic_threshold.value == 30


def test_locality_weighted_config_only_when_istio_sets_it() -> None:
    failover = {"loadBalancer": {"localityLbSetting": {"enabled": True,
                                                       "failover": [{"from": "us-east", "to": "us-west"}]}}}
    key = names.outbound_cluster(9080, "", REVIEWS)
    # failover without outlier detection: Istio ignores it
    assert not reviews_with(failover)[key].common_lb_config.HasField("locality_weighted_lb_config")
    with_od = {**failover, "outlierDetection": {"consecutive5xxErrors": 1}}
    assert reviews_with(with_od)[key].common_lb_config.HasField("locality_weighted_lb_config")
    distribute = {"loadBalancer": {"localityLbSetting": {
        "distribute": [{"from": "us-east/*", "to": {"us-east/*": 80, "us-west/*": 20}}]}}}
    assert reviews_with(distribute)[key].common_lb_config.HasField("locality_weighted_lb_config")


def test_tls_origination_simple() -> None:
    tls = {"mode": "SIMPLE", "sni": "reviews.example", "caCertificates": "/etc/ca.pem",
           "subjectAltNames": ["reviews.example"]}
    c = reviews_with({"tls": tls})[names.outbound_cluster(9080, "", REVIEWS)]
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
    ctx = tls_pb2.UpstreamTlsContext()
    assert c.transport_socket.name == "envoy.transport_sockets.tls"
    assert c.transport_socket.typed_config.Unpack(ctx)
    assert ctx.sni == "reviews.example"
    assert ctx.common_tls_context.validation_context.trusted_ca.filename == "/etc/ca.pem"
    assert ctx.common_tls_context.validation_context.match_typed_subject_alt_names[0].matcher.exact == \
        "reviews.example"


SERVICE_ENTRIES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin-ext, namespace: bookinfo}
spec:
  hosts: [httpbin.org]
  location: MESH_EXTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: passthrough, namespace: bookinfo}
spec:
  hosts: [any.example.com]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: static-vm, namespace: bookinfo}
spec:
  hosts: [vm.internal]
  location: MESH_INTERNAL
  ports: [{number: 3306, name: tcp-mysql, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.0.30.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: udp, namespace: bookinfo}
spec:
  hosts: [dns.internal]
  ports: [{number: 53, name: udp-dns, protocol: UDP}]
  resolution: STATIC
"""


def test_service_entry_cluster_types() -> None:
    cs = by_name(build_clusters(sidecar(), bookinfo_push(*configs_from_yaml(SERVICE_ENTRIES))))
    dns = cs[names.outbound_cluster(80, "", "httpbin.org")]
    assert dns.type == C.STRICT_DNS and dns.dns_lookup_family == C.V4_ONLY
    (group,) = dns.load_assignment.endpoints
    sa = group.lb_endpoints[0].endpoint.address.socket_address
    assert (sa.address, sa.port_value) == ("httpbin.org", 80)
    assert dns.load_assignment.cluster_name == dns.name
    assert istio_metadata(dns)["external"] is True
    none = cs[names.outbound_cluster(8080, "", "any.example.com")]
    assert none.type == C.ORIGINAL_DST and none.lb_policy == C.CLUSTER_PROVIDED
    static = cs[names.outbound_cluster(3306, "", "vm.internal")]
    assert static.type == C.EDS and http_options(static) is None
    assert "external" not in istio_metadata(static)
    assert not any("dns.internal" in n for n in cs)   # UDP ports get no cluster


def test_fixed_inbound_and_gateway_clusters() -> None:
    push = bookinfo_push()
    side = by_name(build_clusters(sidecar({"app": "reviews", "version": "v2"}, "reviews-v2-a",
                                          ip="127.0.20.5", app_host="127.0.20.5"), push))
    fixed = {names.BLACKHOLE_CLUSTER, names.PASSTHROUGH_CLUSTER, names.INBOUND_PASSTHROUGH_CLUSTER}
    assert fixed <= set(side)
    bh = side[names.BLACKHOLE_CLUSTER]
    assert bh.type == C.STATIC and not bh.load_assignment.endpoints
    pt = side[names.PASSTHROUGH_CLUSTER]
    assert pt.type == C.ORIGINAL_DST and pt.lb_policy == C.CLUSTER_PROVIDED
    opts = http_options(pt)
    assert opts is not None and opts.HasField("use_downstream_protocol_config")
    inbound = [n for n in side if n.startswith("inbound|")]
    assert inbound == ["inbound|9080||"]
    sa = side["inbound|9080||"].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (sa.address, sa.port_value) == ("127.0.20.5", 9080)
    assert istio_metadata(side["inbound|9080||"])["services"][0]["host"] == REVIEWS
    gw = by_name(build_clusters(gateway(), push))
    assert not any(n.startswith("inbound|") for n in gw)
    assert names.PASSTHROUGH_CLUSTER not in gw and names.INBOUND_PASSTHROUGH_CLUSTER not in gw
    assert names.outbound_cluster(9080, "", REVIEWS) in gw
    assert list(gw) == sorted(gw)


def test_inbound_named_target_port_and_connect_timeout() -> None:
    svc = kube_service("web", ports=[{"port": 80, "name": "http", "targetPort": "web-port"}])
    w = workload("web-1", "127.0.20.9", {"app": "web"}, ports={"web-port": 8081})
    push = push_of([svc], [w], MeshConfig(connect_timeout_s=2.5))
    cs = by_name(build_clusters(sidecar({"app": "web"}, "web-1", ip="127.0.20.9"), push))
    assert "inbound|8081||" in cs
    out = cs[names.outbound_cluster(80, "", fqdn("web"))]
    assert (out.connect_timeout.seconds, out.connect_timeout.nanos) == (2, 500_000_000)


def test_export_to_hides_services() -> None:
    hidden = kube_service("secret", ns="other")
    hidden = type(hidden)(kind=hidden.kind, api_version=hidden.api_version, name=hidden.name,
                          namespace=hidden.namespace, spec=hidden.spec,
                          annotations={"networking.istio.io/exportTo": "."})
    cs = by_name(build_clusters(sidecar(), bookinfo_push(hidden)))
    assert not any("secret.other" in n for n in cs)


def test_consistent_hash_policy_for_routes() -> None:
    from envoy.config.route.v3 import route_components_pb2 as rc
    push = bookinfo_push(dr("reviews", {"host": "reviews", "trafficPolicy": {
        "loadBalancer": {"consistentHash": {"httpCookie": {"name": "user", "path": "/", "ttl": "0s"}}}},
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"},
             "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}}},
            {"name": "v2", "labels": {"version": "v2"},
             "trafficPolicy": {"loadBalancer": {"consistentHash": {"useSourceIp": True}}}},
            {"name": "v3", "labels": {"version": "v3"},
             "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpQueryParameterName": "uid"}}}}]}))
    p = sidecar()
    (cookie,) = consistent_hash_policy(p, push, REVIEWS, "", 9080)
    assert cookie.cookie.name == "user" and cookie.cookie.path == "/" and cookie.cookie.HasField("ttl")
    (header,) = consistent_hash_policy(p, push, REVIEWS, "v1", 9080)
    assert header.header.header_name == "x-user"
    (src,) = consistent_hash_policy(p, push, REVIEWS, "v2", 9080)
    assert src.connection_properties.source_ip
    (query,) = consistent_hash_policy(p, push, REVIEWS, "v3", 9080)
    assert query.query_parameter.name == "uid"
    assert isinstance(query, rc.RouteAction.HashPolicy)
    assert consistent_hash_policy(p, push, RATINGS, "", 9080) == []


@pytest.mark.parametrize(("text", "seconds"), [
    ("10s", 10.0), ("3m", 180.0), ("1h30m", 5400.0), ("100ms", 0.1), ("1.5s", 1.5), ("8ms", 0.008),
    ("abc", None), ("", None), ("5", None), (7, 7.0)])
def test_parse_duration(text: Any, seconds: float | None) -> None:
    got = parse_duration(text)
    assert got == pytest.approx(seconds) if seconds is not None else got is None


@pytest.mark.e2e
def test_envoy_validates_generated_clusters(tmp_path: Any) -> None:
    """Envoy 1.40 accepts every generated cluster (EDS ones inlined as STATIC with their assignments)."""
    import subprocess

    from envoy.config.bootstrap.v3 import bootstrap_pb2
    from google.protobuf import json_format

    from mizzen.agent.binary import envoy_binary
    from mizzen.core.clusters import load_assignment_for
    from mizzen.core.endpoints import build_endpoints

    rules = [*configs_from_file(BOOKINFO_NET / "destination-rule-all.yaml"),
             *configs_from_file(REPO / "tests" / "fixtures" / "seed" / "ratings-dr.yaml")]
    rules = [r for r in rules if r.name != "ratings" or "trafficPolicy" in r.spec]
    extra = kube_service("edge", ports=[{"port": 80, "name": "http"}, {"port": 81, "name": "grpc"},
                                        {"port": 82, "name": "tcp-raw"}])
    edge_dr = dr("edge", {"host": "edge", "trafficPolicy": {
        "connectionPool": {"tcp": {"connectTimeout": "250ms", "maxConnectionDuration": "10m",
                                   "tcpKeepalive": {"probes": 3, "time": "60s", "interval": "10s"}},
                           "http": {"idleTimeout": "30s", "maxRequestsPerConnection": 10,
                                    "h2UpgradePolicy": "UPGRADE", "maxConcurrentStreams": 100}},
        "outlierDetection": {"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 2, "interval": "1s",
                             "splitExternalLocalOriginErrors": True, "consecutiveLocalOriginFailures": 3},
        "loadBalancer": {"localityLbSetting": {"failover": [{"from": "us-east", "to": "us-west"}]}},
        "portLevelSettings": [{"port": {"number": 81},
                               "loadBalancer": {"consistentHash": {"maglev": {"tableSize": 65537}}}}]},
        "subsets": [{"name": "hash", "labels": {"app": "edge"}, "trafficPolicy": {
            "loadBalancer": {"consistentHash": {"httpCookie": {"name": "c", "ttl": "60s"},
                                                "ringHash": {"minimumRingSize": 512}}}}},
                    {"name": "pt", "labels": {"app": "edge"},
                     "trafficPolicy": {"loadBalancer": {"simple": "PASSTHROUGH"}}}]})
    ws = [*bookinfo_workloads(),
          workload("edge-1", "127.0.24.1", {"app": "edge"}, locality="us-east/a", weight=2),
          workload("edge-2", "127.0.24.2", {"app": "edge"}, locality="us-west/b", healthy=False)]
    push = push_of([*bookinfo_configs(), *rules, extra, edge_dr,
                    *configs_from_yaml(SERVICE_ENTRIES)], ws)
    proxy = sidecar({"app": "ratings", "version": "v1"}, "ratings-v1-a", ip="127.0.20.3",
                    locality="us-east/a")
    clusters = build_clusters(proxy, push)
    eds = {a.cluster_name: a for a in build_endpoints(proxy, push, [c.name for c in clusters if uses_eds(c)])}
    assert len(eds) > 10 and any(a.endpoints for a in eds.values())
    kinds = {c.type for c in clusters}
    assert {C.EDS, C.STRICT_DNS, C.ORIGINAL_DST, C.STATIC} <= kinds
    boot = bootstrap_pb2.Bootstrap()
    boot.node.id = proxy.id
    boot.node.cluster = "ratings.bookinfo"
    boot.admin.address.socket_address.address = "127.0.77.41"
    boot.admin.address.socket_address.port_value = 0
    for c in clusters:
        if uses_eds(c):
            load_assignment_for(c, eds[c.name])
        boot.static_resources.clusters.append(c)
    path = tmp_path / "bootstrap.json"
    path.write_text(json_format.MessageToJson(boot))
    cmd = [str(envoy_binary()), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
           "--log-level", "warn"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout + proc.stderr


SIDECARS = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: bookinfo}
spec:
  egress:
  - hosts: ["./reviews.bookinfo.svc.cluster.local", "istio-system/*"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ratings-ingress, namespace: bookinfo}
spec:
  workloadSelector: {labels: {app: ratings}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 9443, protocol: TCP, name: tcp}
"""


def test_sidecar_resource_scopes_outbound_and_defines_inbound() -> None:
    push = bookinfo_push(*configs_from_yaml(SIDECARS))
    cs = by_name(build_clusters(sidecar(), push))
    outbound = sorted(n for n in cs if n.startswith("outbound|"))
    assert outbound == [names.outbound_cluster(9080, "", REVIEWS)]
    assert "inbound|9080||" in cs   # productpage keeps its service-derived inbound cluster
    # gateways ignore Sidecar resources
    gw = by_name(build_clusters(gateway(), push))
    assert names.outbound_cluster(9080, "", RATINGS) in gw
    ratings = by_name(build_clusters(sidecar({"app": "ratings", "version": "v1"}, "ratings-v1-a",
                                             ip="127.0.20.3", app_host="127.0.20.3"), push))
    inbound = {n: c for n, c in ratings.items() if n.startswith("inbound|")}
    assert sorted(inbound) == ["inbound|9080||", "inbound|9443||"]

    def target(c: cluster_pb2.Cluster) -> tuple[str, int]:
        sa = c.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
        return sa.address, sa.port_value

    assert target(inbound["inbound|9080||"]) == ("127.0.20.3", 8080)
    assert target(inbound["inbound|9443||"]) == ("127.0.20.3", 9443)


def test_dns_round_robin_uses_logical_dns_only_with_one_host() -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: one, namespace: bookinfo}
spec:
  hosts: [one.example]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS_ROUND_ROBIN
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: two, namespace: bookinfo}
spec:
  hosts: [two.example]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS_ROUND_ROBIN
  endpoints: [{address: a.two.example, labels: {v: a}}, {address: b.two.example, labels: {v: b}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: one, namespace: bookinfo}
spec:
  host: one.example
  subsets: [{name: none, labels: {v: nothing}}]
"""
    cs = by_name(build_clusters(sidecar(), bookinfo_push(*configs_from_yaml(text))))
    assert cs[names.outbound_cluster(80, "", "one.example")].type == C.LOGICAL_DNS
    assert cs[names.outbound_cluster(80, "none", "one.example")].type == C.STRICT_DNS   # no host left
    assert cs[names.outbound_cluster(80, "", "two.example")].type == C.STRICT_DNS


def test_original_dst_uses_authority_only_in_local_mode() -> None:
    push = bookinfo_push(*configs_from_yaml(SERVICE_ENTRIES))
    local = by_name(build_clusters(sidecar(), push))
    for name in (names.PASSTHROUGH_CLUSTER, names.outbound_cluster(8080, "", "any.example.com")):
        cfg = local[name].original_dst_lb_config
        assert cfg.use_http_header and cfg.http_header_name == ":authority"
    redirect = sidecar()
    redirect = type(redirect)(**{**redirect.__dict__, "interception_mode": "REDIRECT"})
    iptables = by_name(build_clusters(redirect, push))
    assert not iptables[names.PASSTHROUGH_CLUSTER].HasField("original_dst_lb_config")
    assert not local[names.INBOUND_PASSTHROUGH_CLUSTER].HasField("original_dst_lb_config")


def test_unsupported_protocol_port_uses_downstream_protocol() -> None:
    from mizzen.config.model import ConfigSnapshot
    from mizzen.core.push_context import PushContext
    from mizzen.registry.model import Protocol, RegistrySnapshot, Service, ServicePort

    svc = Service(hostname=fqdn("sniffed"), namespace=NS, name="sniffed",
                  ports=(ServicePort("", 7000, Protocol.UNSUPPORTED),), selector={"app": "sniffed"})
    push = PushContext.build(ConfigSnapshot.of([]), RegistrySnapshot(services=(svc,)))
    cs = by_name(build_clusters(sidecar(), push))
    opts = http_options(cs[names.outbound_cluster(7000, "", svc.hostname)])
    assert opts is not None and opts.HasField("use_downstream_protocol_config")
