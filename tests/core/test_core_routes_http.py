"""RDS: HTTPMatchRequest and HTTPRoute action translation (matches, redirect, rewrite, retries, timeouts,
mirrors, CORS, headers, direct responses, delegation) checked on generated sidecar routes."""

from __future__ import annotations

import base64
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from routes_testkit import NS, fqdn, push_of, route_config, sidecar, single_route, vhost, vs_yaml

from mizzen.config.model import Config
from mizzen.core.proxy import Proxy

REVIEWS = fqdn("reviews")
DEST = {"destination": {"host": "reviews", "subset": "v1"}}


def routes_for(http: list[dict[str, Any]], proxy: Proxy | None = None, port: int = 9080,
               extra: list[Config] | None = None) -> list[rc.Route]:
    vs = vs_yaml("reviews", ["reviews"], http)
    cfg = route_config(proxy or sidecar(), push_of([vs, *(extra or [])]), str(port))
    return list(vhost(cfg, f"{REVIEWS}:{port}").routes)


def one(rule: dict[str, Any]) -> rc.Route:
    rule.setdefault("route", [DEST])
    [r] = routes_for([rule])
    return r


# --- matches ---
def test_uri_matches_and_ignore_case() -> None:
    exact, prefix, regex = routes_for([{"match": [{"uri": {"exact": "/a"}}, {"uri": {"prefix": "/b/"}},
                                                  {"uri": {"regex": "/c/[0-9]+"}, "ignoreUriCase": True}],
                                        "route": [DEST]}])
    assert exact.match.path == "/a" and exact.match.case_sensitive.value is True
    assert prefix.match.prefix == "/b/"
    assert regex.match.safe_regex.regex == "/c/[0-9]+"
    assert regex.match.case_sensitive.value is False


def test_method_authority_scheme_headers() -> None:
    r = one({"match": [{"method": {"exact": "GET"}, "authority": {"prefix": "rev"},
                        "scheme": {"exact": "http"},
                        "headers": {"x-b": {"regex": "v[12]"}, "x-a": {}, "x-c": {"prefix": "p"}}}]})
    by_name = {h.name: h for h in r.match.headers}
    assert [h.name for h in r.match.headers][:3] == ["x-a", "x-b", "x-c"]
    assert by_name["x-a"].present_match is True
    assert by_name["x-b"].string_match.safe_regex.regex == "v[12]"
    assert by_name["x-c"].string_match.prefix == "p"
    assert by_name[":method"].string_match.exact == "GET"
    assert by_name[":authority"].string_match.prefix == "rev"
    assert by_name[":scheme"].string_match.exact == "http"


def test_without_headers_and_query_params() -> None:
    r = one({"match": [{"withoutHeaders": {"x-test": {"exact": "1"}, "x-any": {}},
                        "queryParams": {"debug": {"exact": "true"}, "q": {"regex": "a.*"}, "p": {}}}]})
    h = {m.name: m for m in r.match.headers}
    assert h["x-test"].invert_match and h["x-test"].treat_missing_header_as_empty
    assert h["x-test"].string_match.exact == "1"
    assert h["x-any"].invert_match and h["x-any"].present_match
    assert not h["x-any"].treat_missing_header_as_empty
    q = {m.name: m for m in r.match.query_parameters}
    assert q["debug"].string_match.exact == "true"
    assert q["q"].string_match.safe_regex.regex == "a.*"
    assert q["p"].present_match


def test_several_match_blocks_are_or_one_route_each() -> None:
    routes = routes_for([{"name": "r1", "match": [{"uri": {"prefix": "/x"}, "name": "m1"},
                                                  {"headers": {"end-user": {"exact": "jason"}}}],
                          "route": [DEST]},
                         {"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}])
    assert [r.name for r in routes] == ["r1.m1", "r1", ""]
    assert routes[0].match.prefix == "/x"
    assert routes[1].match.headers[0].string_match.exact == "jason"
    assert routes[2].route.cluster.endswith("|v2|" + REVIEWS)


def test_port_match_applies_only_on_that_port() -> None:
    rule = {"match": [{"port": 9999, "uri": {"prefix": "/p"}}, {"uri": {"prefix": "/q"}}], "route": [DEST]}
    assert [r.match.prefix for r in routes_for([rule])] == ["/q"]


def test_source_labels_namespace_and_gateways() -> None:
    rules: list[dict[str, Any]] = [
        {"match": [{"sourceLabels": {"app": "productpage"}, "uri": {"prefix": "/labels"}}], "route": [DEST]},
        {"match": [{"sourceLabels": {"app": "other"}, "uri": {"prefix": "/other"}}], "route": [DEST]},
        {"match": [{"sourceNamespace": NS, "uri": {"prefix": "/ns"}}], "route": [DEST]},
        {"match": [{"sourceNamespace": "elsewhere", "uri": {"prefix": "/elsewhere"}}], "route": [DEST]},
        {"match": [{"gateways": ["mesh"], "uri": {"prefix": "/mesh"}}], "route": [DEST]},
        {"match": [{"gateways": ["bookinfo-gateway"], "uri": {"prefix": "/gw"}}], "route": [DEST]},
    ]
    vs = vs_yaml("reviews", ["reviews"], rules, gateways=["mesh", "bookinfo-gateway"])
    cfg = route_config(sidecar(), push_of([vs]), "9080")
    assert [r.match.prefix for r in vhost(cfg, f"{REVIEWS}:9080").routes] == ["/labels", "/ns", "/mesh"]


# --- actions ---
def test_redirect() -> None:
    r = one({"match": [{"uri": {"prefix": "/old"}}], "route": None,
             "redirect": {"uri": "/new?x=1", "authority": "example.com", "redirectCode": 302,
                          "scheme": "https", "port": 8443}})
    assert not r.HasField("route")
    assert r.redirect.path_redirect == "/new?x=1" and r.redirect.host_redirect == "example.com"
    assert r.redirect.response_code == rc.RedirectAction.FOUND
    assert r.redirect.scheme_redirect == "https" and r.redirect.port_redirect == 8443
    d = one({"route": None, "redirect": {"uri": "/d", "derivePort": "FROM_REQUEST_PORT"}})
    assert d.redirect.port_redirect == 9080
    assert d.redirect.response_code == rc.RedirectAction.MOVED_PERMANENTLY
    default_port = one({"route": None, "redirect": {"scheme": "https", "port": 443}})
    assert default_port.redirect.port_redirect == 0


def test_rewrite_uri_authority_and_regex() -> None:
    r = one({"match": [{"uri": {"prefix": "/api/"}}], "rewrite": {"uri": "/", "authority": "backend"}})
    assert r.route.prefix_rewrite == "/" and r.route.host_rewrite_literal == "backend"
    x = one({"match": [{"uri": {"exact": "/"}}], "rewrite": {"uri": "/productpage"}})
    assert x.match.path == "/" and x.route.prefix_rewrite == "/productpage"
    g = one({"rewrite": {"uriRegexRewrite": {"match": "^/v1/(.*)$", "rewrite": "/v2/\\1"}}})
    assert g.route.regex_rewrite.pattern.regex == "^/v1/(.*)$"
    assert g.route.regex_rewrite.substitution == "/v2/\\1"


def test_timeout_and_retries() -> None:
    r = one({"timeout": "1.5s", "retries": {"attempts": 4, "perTryTimeout": "250ms",
                                            "retryOn": "gateway-error,connect-failure,502",
                                            "retryRemoteLocalities": True}})
    assert (r.route.timeout.seconds, r.route.timeout.nanos) == (1, 500_000_000)
    rp = r.route.retry_policy
    assert rp.num_retries.value == 4
    assert rp.per_try_timeout.ToMilliseconds() == 250
    assert rp.retry_on == "gateway-error,connect-failure,retriable-status-codes"
    assert list(rp.retriable_status_codes) == [502]
    assert rp.retry_priority.name == "envoy.retry_priorities.previous_priorities"
    off = one({"retries": {"attempts": 0}})
    assert not off.route.HasField("retry_policy")
    assert one({"timeout": "2m"}).route.timeout.seconds == 120


def test_fault_grpc_abort_and_fractional_percent() -> None:
    r = one({"fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 0.1}},
                       "delay": {"fixedDelay": "100ms", "percentage": {"value": 12.5}}}})
    f = fault_pb2.HTTPFault()
    r.typed_per_filter_config["envoy.filters.http.fault"].Unpack(f)
    assert f.abort.grpc_status == 14 and f.abort.percentage.numerator == 1000
    assert f.delay.fixed_delay.ToMilliseconds() == 100 and f.delay.percentage.numerator == 125000


def test_mirror_and_percentage() -> None:
    r = one({"mirror": {"host": "ratings", "subset": "v2"}})
    [mp] = r.route.request_mirror_policies
    assert mp.cluster == f"outbound|9080|v2|{fqdn('ratings')}"
    assert mp.runtime_fraction.default_value.numerator == 100
    p = one({"mirror": {"host": "ratings", "port": {"number": 9080}}, "mirrorPercentage": {"value": 25.5}})
    assert p.route.request_mirror_policies[0].runtime_fraction.default_value.numerator == 255000
    zero = one({"mirror": {"host": "ratings"}, "mirrorPercentage": {"value": 0}})
    assert not zero.route.request_mirror_policies


def test_cors_policy() -> None:
    r = one({"corsPolicy": {"allowOrigins": [{"exact": "https://a.example"}, {"regex": "https://.*\\.b"}],
                            "allowMethods": ["GET", "POST"], "allowHeaders": ["x-a", "x-b"],
                            "exposeHeaders": ["x-c"], "maxAge": "24h", "allowCredentials": True}})
    c = cors_pb2.CorsPolicy()
    assert r.typed_per_filter_config["envoy.filters.http.cors"].Unpack(c)
    assert [m.exact or m.safe_regex.regex for m in c.allow_origin_string_match] == \
        ["https://a.example", "https://.*\\.b"]
    assert (c.allow_methods, c.allow_headers, c.expose_headers, c.max_age) == \
        ("GET,POST", "x-a,x-b", "x-c", "86400")
    assert c.allow_credentials.value is True
    assert c.filter_enabled.default_value.numerator == 100


def test_header_operations_route_and_weighted_destinations() -> None:
    r = one({"headers": {"request": {"set": {"x-b": "1", "x-a": "2"}, "add": {"x-c": "3"}, "remove": ["x-d"]},
                         "response": {"set": {"x-e": "5"}, "remove": ["server"]}},
             "route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 70,
                        "headers": {"request": {"set": {"x-dest": "v1"}}}},
                       {"destination": {"host": "reviews", "subset": "v2"}, "weight": 30},
                       {"destination": {"host": "reviews", "subset": "v3"}, "weight": 0}]})
    ow = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    ap = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
    assert [(h.header.key, h.header.value, h.append_action) for h in r.request_headers_to_add] == \
        [("x-a", "2", ow), ("x-b", "1", ow), ("x-c", "3", ap)]
    assert list(r.request_headers_to_remove) == ["x-d"]
    assert [h.header.key for h in r.response_headers_to_add] == ["x-e"]
    assert list(r.response_headers_to_remove) == ["server"]
    v1, v2 = r.route.weighted_clusters.clusters  # the weight-0 destination is dropped
    assert [h.header.key for h in v1.request_headers_to_add] == ["x-dest"]
    assert not v2.request_headers_to_add


def test_host_header_set_becomes_host_rewrite() -> None:
    r = one({"headers": {"request": {"set": {"host": "other.example"}}}})
    assert r.route.host_rewrite_literal == "other.example" and not r.request_headers_to_add


def test_direct_response_string_and_bytes() -> None:
    s = one({"route": None, "directResponse": {"status": 418, "body": {"string": "teapot"}}})
    assert s.direct_response.status == 418 and s.direct_response.body.inline_string == "teapot"
    raw = base64.b64encode(b"\x00hi").decode()
    b = one({"route": None, "directResponse": {"status": 200, "body": {"bytes": raw}}})
    assert b.direct_response.body.inline_bytes == b"\x00hi"


def test_destination_port_defaults_to_the_only_service_port() -> None:
    from routes_testkit import bookinfo_registry, http_service
    reg = bookinfo_registry(http_service("web", ports=(8000,)))
    vs = vs_yaml("reviews", ["reviews"], [{"route": [{"destination": {"host": "web"}}]}])
    cfg = route_config(sidecar(), push_of([vs], reg), "9080")
    assert vhost(cfg, f"{REVIEWS}:9080").routes[0].route.cluster == f"outbound|8000||{fqdn('web')}"


def test_websocket_upgrades_allowed() -> None:
    assert [u.upgrade_type for u in one({}).route.upgrade_configs] == ["websocket"]


# --- delegation ---
def test_delegate_rules_are_inlined_with_parent_match() -> None:
    root = vs_yaml("root", ["reviews"], [
        {"name": "api", "match": [{"uri": {"prefix": "/api"}}], "timeout": "5s",
         "delegate": {"name": "child", "namespace": "team"}},
        {"route": [{"destination": {"host": "reviews", "subset": "v3"}}]},
    ])
    child_http = [
        {"name": "v2", "match": [{"uri": {"prefix": "/api/v2"}, "headers": {"x": {"exact": "1"}}}],
         "route": [{"destination": {"host": REVIEWS, "subset": "v2"}}]},
        {"name": "bad", "match": [{"uri": {"prefix": "/other"}}],
         "route": [{"destination": {"host": REVIEWS}}]},
        {"route": [{"destination": {"host": REVIEWS, "subset": "v1"}}]},
    ]
    child = Config(kind="VirtualService", api_version="networking.istio.io/v1", name="child",
                   namespace="team", spec={"http": child_http})
    cfg = route_config(sidecar(), push_of([root, child]), "9080")
    routes = vhost(cfg, f"{REVIEWS}:9080").routes
    assert [r.name for r in routes] == ["api-v2", "api", ""]
    v2, api_default, rest = routes
    assert v2.match.prefix == "/api/v2" and v2.match.headers[0].name == "x"
    assert v2.route.cluster == f"outbound|9080|v2|{REVIEWS}" and v2.route.timeout.seconds == 5
    assert api_default.match.prefix == "/api" and api_default.route.cluster.endswith("|v1|" + REVIEWS)
    assert rest.route.cluster.endswith("|v3|" + REVIEWS)
    assert v2.metadata.filter_metadata["istio"]["config"].endswith("/bookinfo/virtual-service/root")


def test_missing_delegate_drops_only_that_rule() -> None:
    root = vs_yaml("root", ["reviews"], [{"delegate": {"name": "nope"}},
                                          {"route": [{"destination": {"host": "reviews", "subset": "v3"}}]}])
    [r] = vhost(route_config(sidecar(), push_of([root]), "9080"), f"{REVIEWS}:9080").routes
    assert r.route.cluster.endswith("|v3|" + REVIEWS)


def test_rule_without_route_redirect_or_response_is_skipped() -> None:
    assert single_route(sidecar(), push_of([vs_yaml("reviews", ["reviews"], [{"timeout": "1s"}])]),
                        REVIEWS).name == "default"


def test_malformed_rule_is_skipped_not_fatal() -> None:
    routes = routes_for([{"match": [{"uri": {"prefix": "/bad"}}], "timeout": "soon", "route": [DEST]},
                         {"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}])
    assert [r.route.cluster for r in routes] == [f"outbound|9080|v2|{REVIEWS}"]


def test_mirror_percent_in_either_spelling() -> None:
    # ``mirror_percent`` is the proto name of ``mirrorPercent``; Istio's CRD accepts both
    for key in ("mirrorPercent", "mirror_percent"):
        r = one({"mirror": {"host": "ratings"}, key: 30})
        frac = r.route.request_mirror_policies[0].runtime_fraction.default_value
        assert (frac.numerator, frac.denominator) == (30, frac.HUNDRED)
    assert not one({"mirror": {"host": "ratings"}, "mirror_percent": 0}).route.request_mirror_policies
