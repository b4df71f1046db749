"""Ingress -> Gateway + VirtualService conversion: the seed's three Ingresses (section 5) and the edge cases.

Outputs are compared with the seed's hand-written Gateway/VirtualServices, validated with the real loader, and
checked for behaviour: a small model of nginx's and of Istio's path matching and rewriting must agree.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import FIXTURES, SEED, run_cli
from typer.testing import CliRunner

from mizzen.cli.main import app
from mizzen.convert.ingress import convert

SEED_INGRESSES = ["demo-order-ingress.yaml", "demo-receive-ingress.yaml", "demo-ui-ingress.yaml"]


def _docs(*names: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n in names:
        out.extend(d for d in yaml.safe_load_all((FIXTURES / n).read_text()) if d)
    return out


def _seed(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((SEED / name).read_text())
    assert isinstance(doc, dict)
    return doc


def _by_name(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_seed_ingresses_convert_to_the_seeds_gateway_and_virtual_services() -> None:
    out, warnings = convert(_docs(*SEED_INGRESSES))
    assert warnings == []
    gateways, services = _by_name(out, "Gateway"), _by_name(out, "VirtualService")
    assert list(gateways) == ["demo-gateway"]
    assert gateways["demo-gateway"]["spec"] == _seed("demo-gateway.yaml")["spec"]
    assert gateways["demo-gateway"]["metadata"]["namespace"] == "demo"
    # the catch-all "/" comes last, so creation order cannot let it shadow /orders and /receiveapi
    assert list(services) == ["demo-order", "demo-receive", "demo-ui"]
    for name, vs in services.items():
        want = _seed(f"{name}-vs.yaml")["spec"]
        got = vs["spec"]
        assert got["hosts"] == want["hosts"] and got["gateways"] == want["gateways"]
        assert len(got["http"]) == len(want["http"]) == 1
        g, w = got["http"][0], want["http"][0]
        assert g["route"] == w["route"], name
        assert g.get("rewrite") == w.get("rewrite"), name
        # the seed's matches are all there; receive also matches "/receiveapi" itself like nginx does
        assert all(m in g["match"] for m in w["match"]), name
        extra = [m for m in g["match"] if m not in w["match"]]
        assert extra == ([{"uri": {"exact": "/receiveapi"}}] if name == "demo-receive" else []), name


def test_converted_output_passes_the_loader() -> None:
    from mizzen.config.loader import load_text

    out, _ = convert(_docs(*SEED_INGRESSES))
    text = yaml.safe_dump_all(out, sort_keys=False)
    result = load_text(text, "converted.yaml")
    assert result.errors == []
    assert sorted((c.kind, c.namespace, c.name) for c in result.configs) == [
        ("Gateway", "demo", "demo-gateway"),
        ("VirtualService", "demo", "demo-order"),
        ("VirtualService", "demo", "demo-receive"),
        ("VirtualService", "demo", "demo-ui"),
    ]


def test_cli_convert_prints_yaml_in_process_and_as_subprocess() -> None:
    want, _ = convert(_docs(*SEED_INGRESSES))
    args = ["convert", "ingress", *[a for n in SEED_INGRESSES for a in ("-f", str(FIXTURES / n))]]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert list(yaml.safe_load_all(res.stdout)) == want
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert list(yaml.safe_load_all(proc.stdout)) == want
    assert proc.stderr == ""


def test_cli_convert_reports_bad_yaml_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Ingress\nmetadata: [\n")
    res = CliRunner().invoke(app, ["convert", "ingress", "-f", str(bad)])
    assert res.exit_code == 1
    assert res.stderr.startswith(f"error: {bad}:")
    res = CliRunner().invoke(app, ["convert", "ingress", "-f", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 1
    assert res.stderr == f'error: the path "{tmp_path / "nope.yaml"}" does not exist\n'


def _ingress(paths: list[dict[str, Any]], annotations: dict[str, str] | None = None,
             **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web", "annotations": annotations or {}},
        "spec": {"rules": [{"host": "example.com", "http": {"paths": paths}}], **spec},
    }


def _path(path: str, path_type: str, svc: str = "web", port: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"path": path, "pathType": path_type,
            "backend": {"service": {"name": svc, "port": port or {"number": 8080}}}}


def test_path_types_follow_the_ingress_spec_and_precedence() -> None:
    out, warnings = convert([_ingress([
        _path("/", "Prefix", "root"), _path("/api", "Prefix", "api"), _path("/api/v1/exact", "Exact", "ex"),
        _path("/static", "ImplementationSpecific", "static"),
    ])], namespace="shop")
    assert warnings == []
    gw, vs = out
    assert gw["metadata"] == {"name": "shop-gateway", "namespace": "shop"}
    http = vs["spec"]["http"]
    assert [r["route"][0]["destination"]["host"] for r in http] == ["ex", "static", "api", "root"]
    assert http[0]["match"] == [{"uri": {"exact": "/api/v1/exact"}}]
    assert http[2]["match"] == [{"uri": {"exact": "/api"}}, {"uri": {"prefix": "/api/"}}]
    assert http[3]["match"] == [{"uri": {"prefix": "/"}}]


def test_default_backend_tls_port_names_and_unsupported_annotations() -> None:
    ing = _ingress(
        [_path("/app", "Prefix", "app", {"name": "http"})],
        {"nginx.ingress.kubernetes.io/ssl-redirect": "true"},
        defaultBackend={"service": {"name": "fallback", "port": {"number": 80}}},
        tls=[{"hosts": ["example.com"], "secretName": "example-cert"}],
    )
    out, warnings = convert([ing])
    gw = out[0]
    assert gw["metadata"]["name"] == "ingress-gateway"
    assert gw["spec"]["servers"][0]["hosts"] == ["example.com", "*"]
    assert gw["spec"]["servers"][1] == {
        "port": {"number": 443, "name": "https-1", "protocol": "HTTPS"}, "hosts": ["example.com"],
        "tls": {"mode": "SIMPLE", "credentialName": "example-cert"},
    }
    services = _by_name(out, "VirtualService")
    assert sorted(services) == ["web-default-backend", "web-example-com"]
    http = services["web-example-com"]["spec"]["http"]
    assert http[0]["route"] == [{"destination": {"host": "app"}}]          # named port: no port number
    assert http[-1] == {"route": [{"destination": {"host": "fallback", "port": {"number": 80}}}]}
    assert services["web-default-backend"]["spec"]["hosts"] == ["*"]
    assert any("ssl-redirect" in w for w in warnings)
    assert any("port name 'http'" in w for w in warnings)
    assert any("example-cert" in w for w in warnings)


def test_classes_split_gateways_and_non_ingresses_are_skipped() -> None:
    a = _ingress([_path("/", "Prefix")], ingressClassName="nginx")
    b = _ingress([_path("/", "Prefix")], ingressClassName="internal")
    b["metadata"]["name"] = "web2"
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}
    out, warnings = convert([a, b, svc], namespace="ns1")
    assert [d["metadata"]["name"] for d in out if d["kind"] == "Gateway"] == [
        "ns1-nginx-gateway", "ns1-internal-gateway"]
    assert {d["metadata"]["name"]: d["spec"]["gateways"] for d in out if d["kind"] == "VirtualService"} == {
        "web": ["ns1-nginx-gateway"], "web2": ["ns1-internal-gateway"]}
    assert warnings == ["skipped Service/web: not an Ingress (v1)"]


# --- behaviour: nginx's regex locations + rewrite vs the converted Istio routes ---------------------------


def _nginx(path_regex: str, target: str | None, uri: str) -> str | None:
    """ingress-nginx: ``location ~* "^<path>"``; ``rewrite (?i)<path> <target> break`` replaces the URI."""
    m = re.match(path_regex if path_regex.startswith("^") else "^" + path_regex, uri, re.IGNORECASE)
    if m is None:
        return None
    if target is None:
        return uri
    return re.sub(r"\$(\d)", lambda g: m.group(int(g.group(1))) or "", target)


def _istio(http: list[dict[str, Any]], uri: str) -> str | None:
    """Istio/Envoy: first route whose match applies; ``rewrite.uri`` replaces the matched prefix or path."""
    for route in http:
        for match in route.get("match") or [{}]:
            u = match.get("uri", {})
            if "exact" in u:
                hit, matched = uri == u["exact"], u.get("exact", "")
            elif "prefix" in u:
                hit, matched = uri.startswith(u["prefix"]), u.get("prefix", "")
            elif "regex" in u:
                hit, matched = re.fullmatch(u["regex"], uri) is not None, ""
            else:
                hit, matched = True, ""
            if not hit:
                continue
            rw = route.get("rewrite") or {}
            if "uri" in rw:
                return str(rw["uri"]) + uri[len(matched):]
            if "uriRegexRewrite" in rw:
                rr = rw["uriRegexRewrite"]
                return re.sub(rr["match"], rr["rewrite"], uri, count=1)
            return uri
    return None


@pytest.mark.parametrize(("path", "target"), [
    ("/receiveapi(/|$)(.*)", "/$2"),
    ("/api(/|$)(.*)", "/v2/$2"),
    ("/something(/|$)(.*)", None),
    ("/img/(\\d+)/(.*)", "/images/$2?id=$1"),
    ("/legacy", "/new"),
])
def test_regex_paths_and_rewrites_behave_like_nginx(path: str, target: str | None) -> None:
    annotations = {"nginx.ingress.kubernetes.io/use-regex": "true"}
    if target is not None:
        annotations["nginx.ingress.kubernetes.io/rewrite-target"] = target
    doc = _ingress([_path(path, "ImplementationSpecific")], annotations, ingressClassName="nginx")
    out, _ = convert([doc])
    http = out[1]["spec"]["http"]
    uris = ["/receiveapi", "/receiveapi/", "/receiveapi/user/1", "/receiveapix", "/api", "/api/a/b",
            "/apix", "/something", "/something/else", "/img/42/cat.png", "/img/x/y", "/legacy",
            "/legacy/page", "/other", "/"]
    for uri in uris:
        assert _istio(http, uri) == _nginx(path, target, uri), (path, target, uri)
