"""Cross-check: for deterministic requests (header matches, single destinations, faults at 100%, redirects,
unknown hosts, TLS filter chains by SNI, httpsRedirect) the simulator's prediction, asked over the control
plane's ``/debug/simulate``, is what a real Envoy fed by the same control plane actually does: same
version, same endpoint, same status, same Location, same rewritten path."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from simulate_kit import NET, SEED

from harness import Backend, Mesh, eventually, mesh  # noqa: F401  (mesh is a fixture)

pytestmark = pytest.mark.e2e
NS = "bookinfo"

SERVICES = "\n---\n".join(f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec: {{ports: [{{port: 9080, name: http}}], selector: {{app: {name}}}}}
""" for name in ("productpage", "reviews", "ratings", "details"))


async def _predict(api: httpx.AsyncClient, proxy: str, url: str, headers: dict[str, str],
                   port: int | None = None) -> dict[str, Any]:
    params: list[tuple[str, str | int | float | bool | None]] = [("proxyID", proxy), ("url", url)]
    params += [("header", f"{k}: {v}") for k, v in headers.items()]
    if port is not None:
        params.append(("port", port))
    r = await api.get("/debug/simulate", params=params)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _predicted_version(sim: dict[str, Any]) -> str:
    [dest] = sim["destinations"]
    return str(dest["subset"])


async def test_sidecar_routing_matches_the_prediction(mesh: Mesh) -> None:  # noqa: F811
    await mesh.apply_yaml(SERVICES, namespace=NS)
    client = await mesh.sidecar(NS, "productpage-v1-sim", {"app": "productpage", "version": "v1"})
    backends: dict[str, Backend] = {}
    for svc, versions in (("reviews", ("v1", "v2", "v3")), ("ratings", ("v1",)), ("details", ("v1",))):
        for v in versions:
            backends[f"{svc}-{v}"] = await mesh.backend(svc, v, namespace=NS, port=9080)
    for f in (NET / "destination-rule-all.yaml", NET / "virtual-service-reviews-jason-v2-v3.yaml",
              NET / "virtual-service-ratings-test-abort.yaml", SEED / "details-abort.yaml"):
        await mesh.apply_yaml(f.read_text(), namespace=NS, file=str(f))
    await mesh.wait_synced()

    cases = [
        ("http://reviews:9080/reviews/0", {"end-user": "jason"}),
        ("http://reviews:9080/reviews/1", {"end-user": "mary"}),
        ("http://reviews:9080/reviews/2", {}),
        ("http://ratings:9080/ratings/0", {}),
        ("http://ratings:9080/ratings/0", {"end-user": "jason"}),     # fault abort 500, 100%
        ("http://details:9080/details/0", {}),                        # the seed's abort 400, 100%
    ]
    checked_versions = set()
    async with mesh.api_client() as api, mesh.client_via(client) as http:
        for url, headers in cases:
            sim = await _predict(api, "productpage-v1-sim", url, headers)
            assert sim["proxy"] == client.node_id and sim["status"] == "route", sim["why"]
            real = await http.get(url, headers=headers)
            if sim["http_status"] is not None:     # the fault filter answers, no upstream is involved
                assert real.status_code == sim["http_status"], (url, headers, real.text, sim["why"])
                continue
            assert real.status_code == 200, (url, headers, real.text)
            body = real.json()
            version = _predicted_version(sim)
            assert body["version"] == version, (url, headers, sim["why"])
            predicted = {e["address"] for e in sim["destinations"][0]["endpoints"]}
            assert predicted == {f"{body['ip']}:9080"}
            checked_versions.add(f"{body['service']}-{version}")
    assert checked_versions == {"reviews-v2", "reviews-v3", "ratings-v1"}


async def test_gateway_redirect_rewrite_and_wrong_host_match_the_prediction(mesh: Mesh) -> None:  # noqa: F811
    await mesh.apply_yaml(SERVICES, namespace=NS)
    gw = await mesh.gateway()
    page = await mesh.backend("productpage", "v1", namespace=NS, port=9080)
    for f in (SEED / "bookinfo-gateway.yaml", SEED / "bookinfo-vs-redirect-rewrite.yaml"):
        await mesh.apply_yaml(f.read_text(), namespace=NS, file=str(f))
    await mesh.wait_synced()
    host = {"Host": "bookinfo.kubeasy.com"}
    async with mesh.api_client() as api, mesh.gateway_client(gw) as http:
        sim = await _predict(api, "istio-ingressgateway", "/yunwei", host, port=8080)
        real = await http.get("/yunwei", headers=host)
        assert real.status_code == sim["http_status"] == 301
        assert real.headers["location"] == sim["redirect"]["location"]
        assert sim["redirect"]["location"] == "http://blog.csdn.net/weixin_43279138?type=blog"

        sim = await _predict(api, "istio-ingressgateway", "/", host, port=8080)
        real = await http.get("/", headers=host)
        assert real.status_code == 200 and real.json()["path"] == sim["policies"]["rewrite"]["path"]
        assert page.paths[-1] == "/productpage"

        sim = await _predict(api, "istio-ingressgateway", f"http://{gw.spec.ip}:8080/productpage", {})
        real = await http.get("/productpage")
        assert (sim["status"], sim["http_status"]) == ("not_found", 404)
        assert real.status_code == 404

        sim = await _predict(api, "istio-ingressgateway", "/admin", host, port=8080)
        real = await http.get("/admin", headers=host)
        assert sim["http_status"] == real.status_code == 404


def _self_signed(dir_: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mizzen simulate test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = dir_ / "gw.crt", dir_ / "gw.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _tls_gateway(cert: Path, key: Path) -> str:
    tls = f"{{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}"
    return f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: tls-gw}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*.secure.test"]
    tls: {{httpsRedirect: true}}
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: ["*.secure.test"]
    tls: {tls}
  - port: {{number: 443, name: https-b, protocol: HTTPS}}
    hosts: ["b.other.test"]
    tls: {tls}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: secure}}
spec:
  hosts: ["*.secure.test", "b.other.test"]
  gateways: [tls-gw]
  http:
  - match: [{{authority: {{exact: b.other.test}}}}]
    route: [{{destination: {{host: details}}}}]
  - route: [{{destination: {{host: productpage}}}}]
"""


async def test_https_gateway_sni_and_https_redirect_match_the_prediction(
        mesh: Mesh, tmp_path: Path) -> None:  # noqa: F811
    await mesh.apply_yaml(SERVICES, namespace=NS)
    gw = await mesh.gateway(gateway_ports={80: 8080, 443: 8443})
    await mesh.backend("productpage", "v1", namespace=NS, port=9080)
    await mesh.backend("details", "v1", namespace=NS, port=9080)
    await mesh.apply_yaml(_tls_gateway(*_self_signed(tmp_path)), namespace=NS)
    await mesh.wait_synced()
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    # no kept-alive connections: a reused TLS connection keeps its first SNI (and filter chain) whatever the
    # next request's Host is, which the simulator, taking SNI = Host, does not model
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    async with mesh.api_client() as api, httpx.AsyncClient(verify=ctx, trust_env=False, timeout=5,
                                                           limits=no_reuse) as http:
        for host, service in (("www.secure.test", "productpage"), ("b.other.test", "details")):
            sim = await _predict(api, "istio-ingressgateway", f"https://{host}/x", {})
            assert sim["listener"]["port"] == 8443 and sim["status"] == "route", sim["why"]
            assert sim["destinations"][0]["cluster"] == f"outbound|9080||{service}.{NS}.svc.cluster.local"

            async def served(host: str = host) -> httpx.Response:
                return await http.get(f"https://{gw.spec.ip}:8443/x", headers={"Host": host},
                                      extensions={"sni_hostname": host})

            real = await eventually(served, timeout=10)   # the TLS listener warms after the secrets load
            assert real.status_code == 200 and real.json()["service"] == service, (host, sim["why"])

        sim = await _predict(api, "istio-ingressgateway", "http://www.secure.test/x?y=1", {})
        real = await http.get(f"http://{gw.spec.ip}:8080/x?y=1", headers={"Host": "www.secure.test"})
        assert real.status_code == sim["http_status"] == 301
        assert real.headers["location"] == sim["redirect"]["location"] == "https://www.secure.test/x?y=1"

        sim = await _predict(api, "istio-ingressgateway", "https://nope.test/", {})
        assert sim["status"] == "connection_closed"
        with pytest.raises(httpx.TransportError):
            await http.get(f"https://{gw.spec.ip}:8443/", headers={"Host": "nope.test"},
                           extensions={"sni_hostname": "nope.test"})
