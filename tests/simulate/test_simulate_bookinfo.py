"""The route simulator on resources generated from Istio's Bookinfo samples and the seed's listings: which
route, subset, endpoints, redirect Location, rewrite, fault and weights each request meets, and why."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from simulate_kit import NET, SEED, ingress_gateway, productpage_sidecar, resources

from mizzen.simulate import SimRequest, render, simulate

REVIEWS = "reviews.bookinfo.svc.cluster.local"


def _outbound(url: str, *paths: Any, headers: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    p = productpage_sidecar()
    return simulate(resources(p, *paths), SimRequest(url, headers=headers or []), p.id)


def _gateway(url: str, *paths: Any, headers: list[tuple[str, str]] | None = None,
             port: int | None = None) -> dict[str, Any]:
    g = ingress_gateway()
    return simulate(resources(g, *paths), SimRequest(url, headers=headers or [], port=port), g.id)


def test_jason_goes_to_v2_everyone_else_to_v3() -> None:
    files = (NET / "destination-rule-all.yaml", NET / "virtual-service-reviews-jason-v2-v3.yaml")
    jason = _outbound("http://reviews:9080/reviews/0", *files, headers=[("end-user", "jason")])
    assert jason["status"] == "route"
    assert jason["virtual_host"]["name"] == f"{REVIEWS}:9080"
    assert jason["route"]["index"] == 0
    assert jason["route"]["virtual_service"].endswith("/namespaces/bookinfo/virtual-service/reviews")
    [d] = jason["destinations"]
    assert (d["cluster"], d["subset"], d["percent"]) == (f"outbound|9080|v2|{REVIEWS}", "v2", 100.0)
    assert d["cluster_info"]["destination_rule"].endswith("/destination-rule/reviews")
    assert [e["address"] for e in d["endpoints"]] == ["127.0.20.5:9080"]
    assert "matched domain reviews:9080 exactly" in " ".join(jason["why"])

    other = _outbound("http://reviews:9080/reviews/0", *files, headers=[("end-user", "mary")])
    [d] = other["destinations"]
    assert (other["route"]["index"], d["subset"]) == (1, "v3")
    assert d["endpoints"] == [{"address": "127.0.20.6:9080", "health": "HEALTHY",
                               "locality": "region1/zone1/sub1"}]
    skipped = [w for w in other["why"] if w.startswith("route 0 skipped")]
    assert skipped and "end-user exact 'jason'" in skipped[0] and "'mary'" in skipped[0]

    anonymous = _outbound("http://reviews:9080/reviews/0", *files)
    assert anonymous["destinations"][0]["subset"] == "v3"
    assert any("header not present" in w for w in anonymous["why"])


def test_weights_are_reported_with_percentages() -> None:
    for vs in (SEED / "reviews-80v1-20v2.yaml", NET / "virtual-service-reviews-80-20.yaml"):
        r = _outbound("http://reviews:9080/", NET / "destination-rule-all.yaml", vs)
        got = [(d["subset"], d["weight"], d["percent"]) for d in r["destinations"]]
        assert got == [("v1", 80, 80.0), ("v2", 20, 20.0)], vs
        assert [e["address"] for e in r["destinations"][0]["endpoints"]] == ["127.0.20.4:9080"]
        assert r["probabilistic"] and "80%" in r["probabilistic"][0]


def test_endpoints_are_listed_per_subset() -> None:
    r = _outbound("http://reviews:9080/", NET / "destination-rule-all.yaml",
                  NET / "virtual-service-all-v1.yaml")
    [d] = r["destinations"]
    assert d["subset"] == "v1" and [e["address"] for e in d["endpoints"]] == ["127.0.20.4:9080"]
    assert d["endpoints"][0]["health"] == "HEALTHY"
    # no VirtualService: the default route to the whole service, every version's endpoint
    r = _outbound("http://reviews:9080/")
    [d] = r["destinations"]
    assert d["cluster"] == f"outbound|9080||{REVIEWS}" and d["subset"] == ""
    assert sorted(e["address"] for e in d["endpoints"]) == ["127.0.20.4:9080", "127.0.20.5:9080",
                                                            "127.0.20.6:9080"]


def test_seed_redirect_location_and_rewrite() -> None:
    files = (SEED / "bookinfo-gateway.yaml", SEED / "bookinfo-vs-redirect-rewrite.yaml")
    host = [("Host", "bookinfo.kubeasy.com")]
    r = _gateway("http://127.0.0.1:8080/yunwei", *files, headers=host)
    assert r["status"] == "redirect" and r["http_status"] == 301
    assert r["redirect"]["location"] == "http://blog.csdn.net/weixin_43279138?type=blog"
    assert r["listener"]["port"] == 8080 and r["route_config"] == "http.8080"

    r = _gateway("http://127.0.0.1:8080/", *files, headers=host)
    assert r["status"] == "route" and r["route"]["index"] == 1
    assert r["policies"]["rewrite"]["path"] == "/productpage"
    assert r["destinations"][0]["cluster"] == "outbound|9080||productpage.bookinfo.svc.cluster.local"
    assert [e["address"] for e in r["destinations"][0]["endpoints"]] == ["127.0.20.1:9080"]
    text = render(r)
    assert "rewrite: /productpage" in text and "VirtualService bookinfo/bookinfo" in text


def test_gateway_wrong_host_is_404_and_port_is_ignored_in_host_matching() -> None:
    files = (SEED / "bookinfo-gateway.yaml",)
    wrong = _gateway("http://127.0.0.1:8080/productpage", *files)
    assert (wrong["status"], wrong["http_status"], wrong["response_flags"]) == ("not_found", 404, "NR")
    assert "no virtual host has a domain matching '127.0.0.1'" in wrong["reason"]
    text = render(wrong)      # a 404 always shows its why-trail, with the domains there are
    assert text.splitlines()[1] == "404 NOT FOUND (NR: no route)"
    assert "(domains: bookinfo.kubeasy.com, bookinfo.kubeasy.com:*)" in text
    right = _gateway("http://bookinfo.kubeasy.com:8080/productpage", *files)
    assert right["status"] == "route" and right["virtual_host"]["name"] == "bookinfo.kubeasy.com:80"
    # without an explicit port the URL's port 80 maps to the gateway's 8080 listener
    bare = _gateway("http://bookinfo.kubeasy.com/productpage", *files)
    assert bare["listener"]["port"] == 8080 and bare["status"] == "route"
    # a path the VirtualService does not list: the vhost matches, no route does
    nr = _gateway("http://bookinfo.kubeasy.com/admin", *files)
    assert nr["status"] == "not_found" and nr["virtual_host"] is not None
    assert "no route of vhost bookinfo.kubeasy.com:80 matches GET /admin" in nr["reason"]
    # no listener on that port at all
    err = _gateway("http://bookinfo.kubeasy.com/productpage", *files, port=9999)
    assert err["status"] == "error" and "9999" in err["reason"]


def test_istio_gateway_any_host() -> None:
    r = _gateway("http://127.0.0.1:8080/productpage", NET / "bookinfo-gateway.yaml")
    assert r["status"] == "route"
    assert "catch-all domain *" in " ".join(r["why"])
    r = _gateway("http://127.0.0.1:8080/nothing-here", NET / "bookinfo-gateway.yaml")
    assert r["http_status"] == 404


def test_faults_are_reported() -> None:
    files = (NET / "destination-rule-all.yaml",)
    r = _outbound("http://ratings:9080/ratings/0", *files, NET / "virtual-service-ratings-test-abort.yaml",
                  headers=[("end-user", "jason")])
    assert r["policies"]["fault"] == {"abort": {"http_status": 500, "percent": 100.0}}
    assert r["http_status"] == 500 and r["destinations"][0]["subset"] == "v1"
    r = _outbound("http://ratings:9080/ratings/0", *files, NET / "virtual-service-ratings-test-abort.yaml")
    assert "fault" not in r["policies"] and r["http_status"] is None
    r = _outbound("http://ratings:9080/ratings/0", *files, NET / "virtual-service-ratings-test-delay.yaml",
                  headers=[("end-user", "jason")])
    assert r["policies"]["fault"] == {"delay": {"fixed_delay": "7s", "percent": 100.0}}

    r = _outbound("http://details:9080/details/0", SEED / "details-delay.yaml")
    assert r["policies"]["fault"]["delay"]["fixed_delay"] == "5s"
    r = _outbound("http://details:9080/details/0", SEED / "details-abort.yaml")
    assert r["policies"]["fault"]["abort"]["http_status"] == 400 and r["http_status"] == 400
    assert "fault abort: 400 for 100% of requests" in render(r)


def test_circuit_breakers_and_lb_policy_of_the_destination_rule() -> None:
    r = _outbound("http://ratings:9080/ratings/0", SEED / "ratings-dr.yaml")
    ci = r["destinations"][0]["cluster_info"]
    assert ci["circuit_breakers"] == {"max_connections": 3, "max_pending_requests": 1}
    assert ci["outlier_detection"] == {"consecutive_5xx": 1, "max_ejection_percent": 100, "interval": "10s",
                                       "base_ejection_time": "180s"}
    assert ci["destination_rule"].endswith("/destination-rule/ratings")
    r = _outbound("http://reviews:9080/", SEED / "reviews-dr-random.yaml")
    assert r["destinations"][0]["cluster_info"]["lb_policy"] == "RANDOM"


def test_forward_proxy_takes_authority_from_the_url_and_unknown_hosts_pass_through() -> None:
    r = _outbound("http://reviews:9080/", headers=[("Host", "ratings:9080")])
    assert r["virtual_host"]["name"] == f"{REVIEWS}:9080"
    assert any("Host header 'ratings:9080' ignored" in w for w in r["why"])
    r = _outbound("http://nowhere.example.com/")    # outboundTrafficPolicy ALLOW_ANY
    assert r["virtual_host"]["name"] == "allow_any"
    [d] = r["destinations"]
    assert d["cluster"] == "PassthroughCluster" and d["cluster_info"]["type"] == "ORIGINAL_DST"
    assert "forwards to the original destination" in render(r)


def test_result_is_json_and_render_has_the_why_trail() -> None:
    r = _outbound("http://reviews:9080/", NET / "destination-rule-all.yaml",
                  NET / "virtual-service-reviews-v3.yaml")
    json.dumps(r)
    text = render(r, verbose=True)
    assert "subset v3" in text and "endpoint 127.0.20.6:9080  HEALTHY region1/zone1/sub1" in text
    assert "why:" in text and "1. listener 127.0.20.1_15080" in text
    assert "why:" not in render(r)


def test_inbound_request_reaches_the_app() -> None:
    p = productpage_sidecar()
    r = simulate(resources(p), SimRequest("http://127.0.20.1:9080/productpage", direction="inbound"), p.id)
    assert r["status"] == "route"
    [d] = r["destinations"]
    assert d["cluster"] == "inbound|9080||"
    assert [e["address"] for e in d["endpoints"]] == ["127.0.0.1:9080"]


def test_redirect_mode_sidecar_uses_the_per_port_listener_and_virtual_inbound() -> None:
    p = replace(productpage_sidecar(), interception_mode="REDIRECT", http_proxy_port=0)
    rs = resources(p, NET / "destination-rule-all.yaml", NET / "virtual-service-reviews-jason-v2-v3.yaml")
    r = simulate(rs, SimRequest("http://reviews:9080/", headers=[("end-user", "jason")]), p.id)
    assert (r["listener"]["name"], r["route_config"]) == ("0.0.0.0_9080", "9080")
    assert r["destinations"][0]["subset"] == "v2"
    r = simulate(rs, SimRequest("http://reviews:7777/"), p.id)
    assert r["status"] == "passthrough" and "virtualOutbound" in r["reason"]
    assert render(r).splitlines()[1].startswith("TCP PASSTHROUGH")
    r = simulate(rs, SimRequest("http://127.0.20.1:9080/productpage", direction="inbound"), p.id)
    assert (r["listener"]["name"], r["route_config"]) == ("virtualInbound", "inbound|9080||")
    assert r["destinations"][0]["cluster"] == "inbound|9080||"


TLS_GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tls-gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*.secure.test"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*.secure.test"]
    tls: {mode: SIMPLE, serverCertificate: /certs/a.pem, privateKey: /certs/a.key}
  - port: {number: 443, name: https-b, protocol: HTTPS}
    hosts: ["b.other.test"]
    tls: {mode: SIMPLE, serverCertificate: /certs/b.pem, privateKey: /certs/b.key}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure}
spec:
  hosts: ["*.secure.test", "b.other.test"]
  gateways: [tls-gw]
  http:
  - match: [{authority: {exact: b.other.test}}]
    route: [{destination: {host: details}}]
  - route: [{destination: {host: productpage}}]
"""


def test_https_gateway_picks_the_filter_chain_by_sni(tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").write_text(TLS_GATEWAY)
    g = ingress_gateway()
    rs = resources(g, tmp_path / "gw.yaml")
    r = simulate(rs, SimRequest("https://www.secure.test/x"), g.id)
    assert r["listener"]["port"] == 8443 and "server names *.secure.test" in r["listener"]["filter_chain"]
    assert r["virtual_host"]["name"] == "*.secure.test:443" and r["route"]["index"] == 1
    assert r["destinations"][0]["cluster"] == "outbound|9080||productpage.bookinfo.svc.cluster.local"
    r = simulate(rs, SimRequest("https://b.other.test/"), g.id)
    assert "server names b.other.test" in r["listener"]["filter_chain"]
    assert r["destinations"][0]["cluster"] == "outbound|9080||details.bookinfo.svc.cluster.local"
    r = simulate(rs, SimRequest("http://www.secure.test/x?y=1"), g.id)     # httpsRedirect: require_tls
    assert (r["status"], r["http_status"]) == ("redirect", 301) and r["route"] is None
    assert r["redirect"]["location"] == "https://www.secure.test/x?y=1"
    r = simulate(rs, SimRequest("https://nope.test/"), g.id)
    assert r["status"] == "connection_closed" and "SNI 'nope.test'" in r["reason"]
    r = simulate(rs, SimRequest("http://www.secure.test:8443/"), g.id)
    assert r["status"] == "connection_closed" and "plaintext" in r["reason"]

POLICY_VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - match: [{uri: {regex: "/r/[0-9]+"}, queryParams: {debug: {exact: "1"}}}]
    rewrite: {uriRegexRewrite: {match: "^/r/([0-9]+)$", rewrite: "/ratings/\\\\1"}}
    timeout: 3s
    retries: {attempts: 4, perTryTimeout: 1s, retryOn: 5xx}
    fault: {abort: {percentage: {value: 50}, httpStatus: 503}}
    mirror: {host: details}
    mirrorPercentage: {value: 25}
    headers: {request: {set: {x-sim: "yes"}}}
    route: [{destination: {host: ratings}}]
"""


def test_route_policies_are_summarised(tmp_path: Path) -> None:
    (tmp_path / "vs.yaml").write_text(POLICY_VS)
    r = _outbound("http://ratings:9080/r/7?debug=1", tmp_path / "vs.yaml")
    p = r["policies"]
    assert p["rewrite"]["path"] == "/ratings/7?debug=1"
    assert p["timeout"] == "3s"
    assert (p["retries"]["attempts"], p["retries"]["per_try_timeout"]) == (4, "1s")
    assert "5xx" in p["retries"]["retry_on"]
    assert p["fault"] == {"abort": {"http_status": 503, "percent": 50.0}}
    assert p["mirrors"] == [{"cluster": "outbound|9080||details.bookinfo.svc.cluster.local", "percent": 25.0}]
    assert p["headers"]["request_add"] == ["x-sim: yes"]
    assert r["http_status"] is None          # a 50% abort is not a prediction, it is a probability
    assert "fault abort applies to 50% of requests" in r["probabilistic"]
    text = render(r)
    assert "mirror: outbound|9080||details.bookinfo.svc.cluster.local (25%)" in text
    assert "retries: 4 on " in text and "per try 1s" in text
    # without the query parameter the only rule does not match, and a VirtualService has no default route
    r = _outbound("http://ratings:9080/r/7", tmp_path / "vs.yaml")
    assert r["status"] == "not_found"
    assert "query debug exact '1': fails (parameter not present)" in r["why"][-2]
