"""Gateway TLS end to end through the real control plane and a real gateway Envoy: SIMPLE termination with
certificate files and httpsRedirect on the HTTP server, one certificate per SNI host on a shared port, and
MUTUAL (client certificates checked against caCertificates). Certificates are generated per test.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness import Backend, Mesh, eventually
from mizzen.agent.envoy import Agent

pytestmark = pytest.mark.e2e

NS = "tls"
SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 9080, name: http}], selector: {app: web}}
"""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class CA:
    """A throwaway certificate authority writing PEM files under ``dir``."""

    dir: Path
    name: str = "mizzen test CA"

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = self._build(self.name, self.key, ca=True).sign(self.key, hashes.SHA256())
        self.pem = self.dir / f"{self.name.replace(' ', '-')}.pem"
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _build(self, cn: str, key: ec.EllipticCurvePrivateKey, ca: bool) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(self.name))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))

    def issue(self, cn: str, client: bool = False) -> tuple[Path, Path]:
        """A leaf for ``cn`` (also its DNS SAN) signed by this CA: (cert.pem, key.pem)."""
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        cert = (self._build(cn, key, ca=False)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .sign(self.key, hashes.SHA256()))
        cert_path, key_path = self.dir / f"{cn}.crt", self.dir / f"{cn}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path


def https_server(host: str, cert: Path, key: Path, extra: str = "") -> str:
    return f"""
  - port: {{number: 443, name: https-{host.split('.')[0]}, protocol: HTTPS}}
    hosts: [{host}]
    tls: {{mode: {"MUTUAL" if extra else "SIMPLE"}, serverCertificate: {cert}, privateKey: {key}{extra}}}"""


def gateway(servers: str, hosts: list[str]) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: secure}}
spec:
  selector: {{istio: ingressgateway}}
  servers:{servers}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: secure}}
spec:
  hosts: [{", ".join(hosts)}]
  gateways: [secure]
  http:
  - route: [{{destination: {{host: web}}}}]
"""


async def setup(mesh: Mesh) -> tuple[Agent, Backend]:
    await mesh.apply_yaml(SERVICE, namespace=NS)
    web = await mesh.backend("web", namespace=NS, port=9080)
    gw = await mesh.gateway(gateway_ports={80: 8080, 443: 8443})
    return gw, web


def client(ca: Path | None, cert: tuple[Path, Path] | None = None) -> httpx.AsyncClient:
    ctx = ssl.create_default_context(cafile=str(ca)) if ca else ssl.create_default_context()
    if ca is None:
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return httpx.AsyncClient(verify=ctx, trust_env=False, timeout=5)


async def get(c: httpx.AsyncClient, gw: Agent, host: str, path: str = "/") -> httpx.Response:
    """GET ``https://<host><path>`` sent to the gateway's address, with ``host`` as SNI and Host."""
    return await c.get(f"https://{gw.spec.ip}:8443{path}", headers={"Host": host},
                       extensions={"sni_hostname": host})


async def test_simple_termination_and_https_redirect(mesh: Mesh, tmp_path: Path) -> None:
    gw, web = await setup(mesh)
    ca = CA(tmp_path / "ca")
    cert, key = ca.issue("bookinfo.example.com")
    redirect = """
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [bookinfo.example.com]
    tls: {httpsRedirect: true}"""
    await mesh.apply_yaml(gateway(https_server("bookinfo.example.com", cert, key) + redirect,
                                  ["bookinfo.example.com"]), namespace=NS)
    await mesh.wait_synced()

    async with client(ca.pem) as c:
        async def served() -> None:
            r = await get(c, gw, "bookinfo.example.com", "/secure?q=1")
            assert r.status_code == 200, r.status_code
            seen = {k.lower(): v for k, v in r.json()["headers"].items()}
            assert r.json()["path"] == "/secure?q=1" and seen["x-forwarded-proto"] == "https"
        await eventually(served)
    # the certificate really is the one from the files: a client trusting another CA refuses it
    async with client(CA(tmp_path / "other").pem) as bad:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await get(bad, gw, "bookinfo.example.com")
    # an SNI no server declares matches no filter chain: the handshake fails
    async with client(None) as c:
        with pytest.raises(httpx.ConnectError):
            await get(c, gw, "other.example.com")

    async with mesh.gateway_client(gw) as c:
        r = await c.get("/secure?q=1", headers={"Host": "bookinfo.example.com"})
    assert r.status_code == 301 and r.headers["location"] == "https://bookinfo.example.com/secure?q=1"
    assert web.paths and all(p == "/secure?q=1" for p in web.paths)


async def test_one_certificate_per_sni_host_on_a_shared_port(mesh: Mesh, tmp_path: Path) -> None:
    gw, web = await setup(mesh)
    ca = CA(tmp_path / "ca")
    hosts = ["shop.example.com", "blog.example.com"]
    servers = "".join(https_server(h, *ca.issue(h)) for h in hosts)
    await mesh.apply_yaml(gateway(servers, hosts), namespace=NS)
    await mesh.wait_synced()
    # a client per host: a pooled connection keeps the SNI it was opened with (see the end of the test)
    async def both() -> None:
        for h in hosts:
            async with client(ca.pem) as c:      # check_hostname: each SNI gets the certificate naming it
                r = await get(c, gw, h, f"/{h}")
            assert r.status_code == 200 and r.json()["path"] == f"/{h}", (h, r.status_code)
    await eventually(both)
    # routing follows the SNI's server: a request for blog on a connection opened for shop gets shop's
    # routes (a 404), as in Istio when a client reuses a connection across hosts with different certificates
    async with client(ca.pem) as c:
        r = await c.get(f"https://{gw.spec.ip}:8443/", headers={"Host": "blog.example.com"},
                        extensions={"sni_hostname": "shop.example.com"})
    assert r.status_code == 404
    assert set(web.paths) == {f"/{h}" for h in hosts}


async def test_mutual_tls_requires_a_client_certificate_from_the_ca(mesh: Mesh, tmp_path: Path) -> None:
    gw, web = await setup(mesh)
    ca, rogue_ca = CA(tmp_path / "ca"), CA(tmp_path / "rogue")
    clients_ca = CA(tmp_path / "clients", "clients CA")
    cert, key = ca.issue("api.example.com")
    mutual = f", caCertificates: {clients_ca.pem}"
    await mesh.apply_yaml(gateway(https_server("api.example.com", cert, key, mutual), ["api.example.com"]),
                          namespace=NS)
    await mesh.wait_synced()
    good = clients_ca.issue("alice", client=True)
    async with client(ca.pem, good) as c:
        async def served() -> None:
            r = await get(c, gw, "api.example.com", "/mtls")
            assert r.status_code == 200 and r.json()["path"] == "/mtls", r.status_code
        await eventually(served)
    served_before = web.requests
    for who in (None, rogue_ca.issue("mallory", client=True)):
        async with client(ca.pem, who) as c:
            # TLS 1.3: the alert may arrive after the client finished its side of the handshake
            with pytest.raises((httpx.TransportError, ssl.SSLError)):
                await get(c, gw, "api.example.com", "/mtls")
    assert web.requests == served_before
