"""``convert ingress`` faithful to the class it came from, and always usable.

nginx-class Ingresses keep ingress-nginx semantics; every other class follows Istio's own Ingress conversion
(pilot/pkg/config/kube/ingress: ImplementationSpecific is exact except ``*``, ``/*``, ``.*`` and those
suffixes, routes longest first, exact first at equal length). TLS entries without ``secretName`` get no HTTPS
server. And over a grid of Ingress variants, the output always loads (validation), builds a gateway's xDS
(apply) and simulates every request without an error.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import yaml

from mizzen.config.loader import load_text
from mizzen.config.model import ConfigSnapshot
from mizzen.convert.ingress import convert
from mizzen.core.generate import generate
from mizzen.core.proxy import Proxy, ProxyType, node_id
from mizzen.core.push_context import PushContext
from mizzen.registry.model import Workload
from mizzen.registry.registry import build_snapshot
from mizzen.simulate import SimRequest, simulate

NGINX = "nginx.ingress.kubernetes.io/"
HOST = "shop.example.com"
BACKEND_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8080}]
"""


def ingress(paths: list[tuple[str, str]], klass: str | None = None, annotations: dict[str, str] | None = None,
            class_annotation: bool = False, tls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "web", "namespace": "shop", "annotations": dict(annotations or {})}
    spec: dict[str, Any] = {"rules": [{"host": HOST, "http": {"paths": [
        {"path": p, "pathType": t, "backend": {"service": {"name": "web", "port": {"number": 8080}}}}
        for p, t in paths]}}]}
    if klass and class_annotation:
        meta["annotations"]["kubernetes.io/ingress.class"] = klass
    elif klass:
        spec["ingressClassName"] = klass
    if tls is not None:
        spec["tls"] = tls
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def routes(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out, _ = convert([doc])
    [vs] = [d for d in out if d["kind"] == "VirtualService"]
    return list(vs["spec"]["http"])


def matches(doc: dict[str, Any]) -> list[list[dict[str, Any]] | None]:
    return [r.get("match") for r in routes(doc)]


# --- Istio's conversion for non-nginx classes -------------------------------------------------------------


@pytest.mark.parametrize("klass", [None, "istio", "internal"])
def test_other_classes_follow_istios_implementation_specific_rules(klass: str | None) -> None:
    doc = ingress([("/static", "ImplementationSpecific"), ("/docs/*", "ImplementationSpecific"),
                   ("/img.*", "ImplementationSpecific"), ("/*", "ImplementationSpecific")], klass)
    assert matches(doc) == [
        [{"uri": {"exact": "/static"}}],                                   # exact, not a prefix
        [{"uri": {"exact": "/docs"}}, {"uri": {"prefix": "/docs/"}}],       # "/*" suffix: a prefix
        [{"uri": {"exact": "/img"}}, {"uri": {"prefix": "/img/"}}],         # ".*" suffix: a prefix
        None,                                                               # "/*": everything
    ]
    for catch_all in ("*", ".*", "/*"):
        assert matches(ingress([(catch_all, "ImplementationSpecific")], klass)) == [None]


def test_istio_orders_routes_longest_first_exact_first() -> None:
    doc = ingress([("/", "Prefix"), ("/ab", "Prefix"), ("/abc", "Prefix"), ("/ab", "Exact"),
                   ("/x", "ImplementationSpecific"), ("/*", "ImplementationSpecific")], "istio")
    assert matches(doc) == [
        [{"uri": {"exact": "/abc"}}, {"uri": {"prefix": "/abc/"}}],
        [{"uri": {"exact": "/ab"}}],
        [{"uri": {"exact": "/ab"}}, {"uri": {"prefix": "/ab/"}}],
        [{"uri": {"exact": "/x"}}],
        [{"uri": {"prefix": "/"}}],
        None,
    ]


def test_nginx_annotations_on_another_class_are_not_applied_and_say_so() -> None:
    doc = ingress([("/api(/|$)(.*)", "ImplementationSpecific")], "istio", {NGINX + "rewrite-target": "/$2"})
    out, warnings = convert([doc])
    assert any("apply to the nginx class only" in w for w in warnings)
    http = next(d for d in out if d["kind"] == "VirtualService")["spec"]["http"]
    assert "rewrite" not in http[0]


# --- ingress-nginx semantics for the nginx class ----------------------------------------------------------


@pytest.mark.parametrize("class_annotation", [False, True])
def test_nginx_class_by_field_or_annotation_keeps_string_prefixes(class_annotation: bool) -> None:
    doc = ingress([("/static", "ImplementationSpecific"), ("/docs/*", "ImplementationSpecific"),
                   ("/img.*", "ImplementationSpecific"), ("/*", "ImplementationSpecific")], "nginx",
                  class_annotation=class_annotation)
    assert matches(doc) == [
        [{"uri": {"prefix": "/static"}}], [{"uri": {"prefix": "/docs/"}}], [{"uri": {"prefix": "/img"}}],
        [{"uri": {"prefix": "/"}}],
    ]


def test_rewrite_target_to_a_group_the_path_lacks_becomes_what_nginx_does() -> None:
    """Defect 1: ``rewrite-target: /$2`` on a path without capture groups. nginx substitutes nothing for the
    missing group, so /legacy/page goes upstream as /; the conversion says so and emits no reference to a
    group RE2 does not have."""
    doc = ingress([("/legacy", "ImplementationSpecific")], "nginx", {NGINX + "rewrite-target": "/$2"})
    out, warnings = convert([doc])
    http = routes(doc)
    rewrite = http[0]["rewrite"]["uriRegexRewrite"]
    assert "\\2" not in rewrite["rewrite"] and rewrite["rewrite"] == "/"
    assert any("refers to $2 but the path has no capture groups" in w for w in warnings)
    result = simulate_all(out, ["/legacy/page"])
    assert result["/legacy/page"]["policies"]["rewrite"]["path"] == "/"
    # groups the regex does have keep working, a missing one is dropped
    target = {NGINX + "rewrite-target": "/i/$1/$2"}
    doc = ingress([("/img/(\\d+)", "ImplementationSpecific")], "nginx", target)
    out, warnings = convert([doc])
    assert routes(doc)[0]["rewrite"]["uriRegexRewrite"]["rewrite"] == "/i/\\1/"
    result = simulate_all(out, ["/img/42"])
    assert result["/img/42"]["policies"]["rewrite"]["path"] == "/i/42/"


# --- TLS ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("klass", ["nginx", "istio"])
def test_tls_without_secret_gets_no_https_server_with_secret_a_credential(klass: str) -> None:
    doc = ingress([("/", "Prefix")], klass, tls=[{"hosts": [HOST]}])
    out, warnings = convert([doc])
    gw = out[0]
    assert [s["port"]["number"] for s in gw["spec"]["servers"]] == [80]
    assert any("no secretName" in w and "no HTTPS server" in w for w in warnings)
    doc = ingress([("/", "Prefix")], klass, tls=[{"hosts": [HOST], "secretName": "shop-cert"}, {}])
    out, warnings = convert([doc])
    servers = out[0]["spec"]["servers"]
    assert [s["port"]["number"] for s in servers] == [80, 443]
    assert servers[1]["tls"] == {"mode": "SIMPLE", "credentialName": "shop-cert"}
    assert servers[1]["hosts"] == [HOST]


# --- the property: converted output validates, applies and simulates ---------------------------------------


def gateway_proxy() -> Proxy:
    return Proxy(id=node_id(ProxyType.ROUTER, "127.0.0.1", "istio-ingressgateway-0", "istio-system"),
                 type=ProxyType.ROUTER, ip="127.0.0.1", namespace="istio-system",
                 labels={"istio": "ingressgateway"})


def simulate_all(converted: list[dict[str, Any]], paths: list[str]) -> dict[str, dict[str, Any]]:
    """Load the converted YAML (no errors allowed), build the gateway's xDS with the backend Service and one
    workload, and simulate a request to each path on HOST (no ``error`` status, no exception)."""
    text = yaml.safe_dump_all([yaml.safe_load(BACKEND_SERVICE), *converted], sort_keys=False)
    loaded = load_text(text, "converted.yaml")
    assert loaded.errors == [], [str(e) for e in loaded.errors]
    snapshot = ConfigSnapshot.of(loaded.configs)
    registry = build_snapshot(snapshot, [Workload(name="web-0", namespace="shop", address="127.0.0.2",
                                                  labels={"app": "web"}, ports={"http": 8080})])
    proxy = gateway_proxy()
    resources = generate(proxy, PushContext.build(snapshot, registry))
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        for url in (f"http://{HOST}{path}", f"https://{HOST}{path}"):
            r = simulate(resources, SimRequest(url), proxy.id)
            assert r["status"] != "error" or "no gateway HTTP listener for port(s) [443]" in r["reason"] \
                or "8443" in r["reason"], (url, r["reason"])
            if url.startswith("http:"):
                assert r["status"] in ("route", "not_found"), (url, r.get("reason"))
                out[path] = r
    return out


PATHS = ["/", "/api", "/api/", "/api/v1/x", "/apix", "/static/a.css", "/img/42/cat.png", "/legacy/page",
         "/docs", "/docs/guide", "/x%20y", "/a//b", "/.well-known/x"]
IS = "ImplementationSpecific"
VARIANT_PATHS: list[tuple[str, str]] = [
    ("/", "Prefix"), ("/api", "Prefix"), ("/api/", "Prefix"), ("/api", "Exact"), ("/static", IS),
    ("/docs/*", IS), ("/img.*", IS), ("/*", IS), ("/api(/|$)(.*)", IS), ("/img/(\\d+)/(.*)", IS),
    ("/legacy", IS), ("*", IS), ("/(unclosed", IS), ("/(?=lookahead)", IS),
]
ANNOTATIONS: list[dict[str, str]] = [
    {}, {NGINX + "use-regex": "true"}, {NGINX + "rewrite-target": "/$2"}, {NGINX + "rewrite-target": "/$1"},
    {NGINX + "rewrite-target": "/new"}, {NGINX + "rewrite-target": "/back\\slash/$1"},
]


@pytest.mark.parametrize(("klass", "annotations"),
                         list(itertools.product(["nginx", "istio", None], ANNOTATIONS)))
def test_every_variant_validates_applies_and_simulates(klass: str | None,
                                                       annotations: dict[str, str]) -> None:
    for path in VARIANT_PATHS:
        for tls in (None, [{"hosts": [HOST]}], [{"hosts": [HOST], "secretName": "c"}]):
            out, _ = convert([ingress([path], klass, annotations, tls=tls)])
            if not any(d["kind"] == "VirtualService" for d in out):
                continue    # a path the conversion skipped (with a warning)
            simulate_all(out, PATHS)
    # and all paths in one Ingress, ordered together
    out, _ = convert([ingress(VARIANT_PATHS, klass, annotations)])
    simulate_all(out, PATHS)


def test_istio_class_merges_a_shared_host_into_one_virtual_service_ordered_together() -> None:
    a = ingress([("/", "Prefix"), ("/api", "Prefix")], "istio")
    b = ingress([("/api/v2", "Prefix"), ("/api", "Exact")], "istio")
    b["metadata"]["name"] = "web-v2"
    out, warnings = convert([a, b])
    services = [d for d in out if d["kind"] == "VirtualService"]
    assert [vs["metadata"]["name"] for vs in services] == ["web"]
    assert [r["match"][0]["uri"] for r in services[0]["spec"]["http"]] == [
        {"exact": "/api/v2"}, {"exact": "/api"}, {"exact": "/api"}, {"prefix": "/"}]
    assert [r["match"] for r in services[0]["spec"]["http"]][2] == [
        {"uri": {"exact": "/api"}}, {"uri": {"prefix": "/api/"}}]
    assert any("join those of Ingress shop/web" in w for w in warnings)
    simulate_all(out, PATHS)
    # nginx keeps one VirtualService per Ingress (ingress-nginx merges into one server block, in the
    # Gateway's creation order here)
    a["spec"]["ingressClassName"] = b["spec"]["ingressClassName"] = "nginx"
    out, _ = convert([a, b])
    assert [d["metadata"]["name"] for d in out if d["kind"] == "VirtualService"] == ["web-v2", "web"]
