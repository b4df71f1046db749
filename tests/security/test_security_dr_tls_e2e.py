"""DestinationRule ``trafficPolicy.tls`` through a real sidecar Envoy: DISABLE, SIMPLE and MUTUAL (files)
against a real TLS server (Python's OpenSSL, certificates made here), SAN and SNI checks, insecureSkipVerify,
and ISTIO_MUTUAL with explicit subjectAltNames overriding auto mTLS.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mtls_kit import MtlsMesh, mtls_mesh, spiffe

from harness import Mesh, alloc_ip, eventually
from mizzen.agent.envoy import Agent
from mizzen.registry.model import Workload

pytestmark = pytest.mark.e2e

NS = "bookinfo"
HOST = "secure.example.com"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_leaf(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], cn: str, dns: str,
              directory: Path, stem: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca[1].subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
            .sign(ca[0], hashes.SHA256()))
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def write_ca(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], path: Path) -> Path:
    path.write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    return path


@dataclass
class TlsServer:
    """A real HTTPS server; records the SNI and the client certificate's CN of each request."""

    ip: str
    port: int
    context: ssl.SSLContext
    snis: list[str | None] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        ssl_obj = request.transport.get_extra_info("ssl_object") if request.transport else None
        peer = ssl_obj.getpeercert() if ssl_obj is not None else None
        cn = ""
        for rdn in (peer or {}).get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    cn = v
        self.clients.append(cn)
        return web.json_response({"client": cn, "sni": self.snis[-1] if self.snis else None})

    async def start(self) -> None:
        def sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            self.snis.append(name)
        self.context.sni_callback = sni   # type: ignore[assignment]
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.ip, self.port, ssl_context=self.context).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class World:
    m: MtlsMesh
    http: httpx.AsyncClient
    server: TlsServer
    files: dict[str, Path]
    client: Agent

    async def dr(self, tls: dict[str, object]) -> None:
        doc = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
               "metadata": {"name": "secure", "namespace": NS},
               "spec": {"host": f"secure.{NS}.svc.cluster.local", "trafficPolicy": {"tls": tls}}}
        await self.m.mesh.apply_yaml(json.dumps(doc))
        await self.m.mesh.wait_synced()

    async def status(self, expect: int) -> httpx.Response:
        async def check() -> httpx.Response:
            r = await self.http.get(f"http://secure.{NS}:9443/")
            assert r.status_code == expect, r.text
            return r
        return await eventually(check, timeout=10)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    directory = Path(tempfile.mkdtemp(prefix="mzdr-"))
    server_ca, client_ca, other_ca = make_ca("server-ca"), make_ca("client-ca"), make_ca("other-ca")
    files = {"server_ca": write_ca(server_ca, directory / "server-ca.pem"),
             "client_ca": write_ca(client_ca, directory / "client-ca.pem"),
             "other_ca": write_ca(other_ca, directory / "other-ca.pem")}
    files["server"], files["server_key"] = make_leaf(server_ca, "server", HOST, directory, "server")
    files["client"], files["client_key"] = make_leaf(client_ca, "sleep-client", "client.local", directory,
                                                     "client")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(files["server"]), str(files["server_key"]))
    ctx.load_verify_locations(str(files["client_ca"]))
    ctx.verify_mode = ssl.CERT_OPTIONAL          # MUTUAL tests look at whether a client certificate came
    ip = alloc_ip()
    server = TlsServer(ip, 9443, ctx)
    await server.start()
    try:
        async with Mesh() as mesh, mtls_mesh(mesh) as m:
            await mesh.apply_yaml(f"""
apiVersion: v1
kind: Service
metadata: {{name: secure, namespace: {NS}}}
spec:
  selector: {{app: secure}}
  ports: [{{name: http, port: 9443}}]
""")
            mesh.cp.register_workload(Workload(name="secure-1", namespace=NS, address=ip,
                                               labels={"app": "secure"}))
            client = await m.identity_sidecar(NS, "sleep-abc", {"app": "sleep"}, "sleep")
            await mesh.wait_synced()
            async with mesh.client_via(client) as http:
                yield World(m, http, server, files, client)
    finally:
        await server.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def test_simple_checks_the_server_with_its_ca_sni_and_san(world: World) -> None:
    # no DestinationRule: the endpoint has no sidecar, so auto mTLS sends plaintext to a TLS port: it fails
    await world.status(503)
    await world.dr({"mode": "SIMPLE", "caCertificates": str(world.files["server_ca"]), "sni": HOST,
                    "subjectAltNames": [HOST]})
    r = await world.status(200)
    assert r.json() == {"client": "", "sni": HOST}
    await world.dr({"mode": "SIMPLE", "caCertificates": str(world.files["server_ca"]), "sni": HOST,
                    "subjectAltNames": ["wrong.example.com"]})
    await world.status(503)
    await world.dr({"mode": "SIMPLE", "caCertificates": str(world.files["other_ca"]), "sni": HOST})
    await world.status(503)
    await world.dr({"mode": "SIMPLE", "sni": HOST, "insecureSkipVerify": True})
    r = await world.status(200)
    assert world.server.snis[-1] == HOST


async def test_mutual_presents_the_client_certificate_from_files(world: World) -> None:
    await world.dr({"mode": "MUTUAL", "caCertificates": str(world.files["server_ca"]), "sni": HOST,
                    "clientCertificate": str(world.files["client"]),
                    "privateKey": str(world.files["client_key"])})
    r = await world.status(200)
    assert r.json()["client"] == "sleep-client"
    await world.dr({"mode": "SIMPLE", "caCertificates": str(world.files["server_ca"]), "sni": HOST})
    r = await world.status(200)
    assert r.json()["client"] == ""


async def test_disable_overrides_auto_mtls_and_istio_mutual_checks_its_sans(world: World) -> None:
    m = world.m
    reviews = await m.backend("reviews")
    await m.mesh.apply_yaml("""
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
""")
    await m.mesh.wait_synced()

    async def xfcc(expect: int = 200) -> str:
        async def check() -> str:
            r = await world.http.get("http://reviews.bookinfo:9080/")
            assert r.status_code == expect, r.text
            if expect != 200:
                return ""
            return next((str(v) for k, v in r.json()["headers"].items()
                         if k.lower() == "x-forwarded-client-cert"), "")
        return await eventually(check, timeout=10)

    assert f"URI={spiffe(NS, 'sleep')}" in await xfcc()           # auto mTLS
    rule = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "reviews", "namespace": NS},
            "spec": {"host": "reviews", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}}
    await m.mesh.apply_yaml(json.dumps(rule))
    await m.mesh.wait_synced()
    async def plaintext() -> None:
        assert await xfcc() == ""                                 # plaintext (the server is PERMISSIVE)
    await eventually(plaintext, timeout=10)
    rule["spec"]["trafficPolicy"]["tls"] = {"mode": "ISTIO_MUTUAL",  # type: ignore[index]
                                            "subjectAltNames": [spiffe(NS, "someone-else")]}
    await m.mesh.apply_yaml(json.dumps(rule))
    await m.mesh.wait_synced()
    await xfcc(503)                                               # the server's identity is not accepted
    rule["spec"]["trafficPolicy"]["tls"] = {"mode": "ISTIO_MUTUAL",  # type: ignore[index]
                                            "subjectAltNames": [spiffe(NS, "bookinfo-reviews")]}
    await m.mesh.apply_yaml(json.dumps(rule))
    await m.mesh.wait_synced()
    assert f"URI={spiffe(NS, 'sleep')}" in await xfcc()
    assert reviews.requests >= 2
