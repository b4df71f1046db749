"""Gateway ``credentialName`` end to end: Kubernetes Secrets applied to the real control plane, served
over SDS on the ADS stream to a real gateway Envoy, checked with real TLS clients (Python ssl; the served
certificate's serial is compared with the Secret's). SIMPLE from a ``kubernetes.io/tls`` Secret, MUTUAL
from a generic one (``cert``/``key``/``cacert``) and from a ``<name>-cacert`` Secret, rotation without a
restart (an SDS-only push), a Secret in another namespace is not served, and no Secret value appears in
any output or log.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import re
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness import Mesh, eventually
from mizzen.agent.envoy import Agent
from mizzen.core import generate, sds
from mizzen.xds.resources import LISTENER, SECRET

pytestmark = pytest.mark.e2e

generate.register(sds.SecretGenerator())   # as the control plane does when it starts (idempotent)

NS = "tls"
GW_NS = "istio-system"
HOST = "bookinfo.example.com"
SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 9080, name: http}], selector: {app: web}}
"""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Issued:
    cert: x509.Certificate
    cert_pem: bytes
    key_pem: bytes


class CA:
    """A throwaway CA issuing PEM certificates in memory."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = self._builder(name, self.key.public_key(), ca=True).sign(self.key, hashes.SHA256())
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def _builder(self, cn: str, public: ec.EllipticCurvePublicKey, ca: bool) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(self.name))
                .public_key(public).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))

    def issue(self, cn: str) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (self._builder(cn, key.public_key(), ca=False)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
                .sign(self.key, hashes.SHA256()))
        return Issued(cert, cert.public_bytes(serialization.Encoding.PEM),
                      key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tls_secret(name: str, namespace: str, leaf: Issued, ca: bytes = b"") -> str:
    extra = f"\n  ca.crt: {b64(ca)}" if ca else ""
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: {namespace}}}
type: kubernetes.io/tls
data:
  tls.crt: {b64(leaf.cert_pem)}
  tls.key: {b64(leaf.key_pem)}{extra}
"""


def generic_secret(name: str, namespace: str, data: dict[str, bytes]) -> str:
    body = "".join(f"\n  {k}: {json.dumps(v.decode())}" for k, v in data.items())
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: {namespace}}}
type: Opaque
stringData:{body}
"""


def gateway(mode: str, credential: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: secure}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{mode: {mode}, credentialName: {credential}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: secure}}
spec:
  hosts: [{HOST}]
  gateways: [secure]
  http:
  - route: [{{destination: {{host: web}}}}]
"""


def _fetch(ip: str, cafile_pem: bytes, client: Issued | None, tmp: Path) -> tuple[int, int]:
    """One HTTPS request to the gateway with SNI/Host ``HOST``: (served certificate serial, status code)."""
    ctx = ssl.create_default_context(cadata=cafile_pem.decode())
    if client is not None:
        cert, key = tmp / "client.crt", tmp / "client.key"
        cert.write_bytes(client.cert_pem)
        key.write_bytes(client.key_pem)
        key.chmod(0o600)
        ctx.load_cert_chain(str(cert), str(key))
    with socket.create_connection((ip, 8443), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=HOST) as s:
        der = s.getpeercert(binary_form=True)
        assert der is not None
        s.sendall(f"GET /sds HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return x509.load_der_x509_certificate(der).serial_number, status


async def fetch(gw: Agent, ca: bytes, tmp: Path, client: Issued | None = None) -> tuple[int, int]:
    return await asyncio.to_thread(_fetch, gw.spec.ip, ca, client, tmp)


MIZZEN = str(Path(sys.executable).parent / "mizzen")


async def cli(mesh: Mesh, *args: str) -> str:
    """The real ``mizzen`` command against this mesh's control plane (its token in the environment)."""
    env = {**os.environ, "MIZZEN_SERVER": mesh.cp.http_url, "MIZZEN_TOKEN": mesh.cp.token}
    proc = await asyncio.create_subprocess_exec(MIZZEN, *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    return out.decode()


async def secret_rows(mesh: Mesh, gw: Agent) -> list[list[str]]:
    """``mizzen proxy-config secret`` rows for the gateway, asked of its agent's admin proxy."""
    out = await cli(mesh, "proxy-config", "secret", node_of(mesh, gw), "--admin", f"{gw.spec.ip}:15004")
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[0].split() == ["RESOURCE", "NAME", "TYPE", "STATUS", "VALID", "CERT", "SERIAL", "NUMBER",
                                "NOT", "AFTER", "NOT", "BEFORE"], out
    return [line.split() for line in lines[1:]]


async def setup(mesh: Mesh, sidecar: bool = False) -> Agent:
    await mesh.apply_yaml(SERVICE, namespace=NS)
    await mesh.backend("web", namespace=NS, port=9080, sidecar=sidecar)
    return await mesh.gateway(namespace=GW_NS, gateway_ports={80: 8080, 443: 8443})


def node_of(mesh: Mesh, gw: Agent) -> str:
    return next(n for n in mesh.cp.pusher.proxies if gw.spec.ip in n)


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
async def test_simple_from_a_tls_secret_rotates_without_restart(mesh: Mesh, tmp_path: Path, delta: bool,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTIO_DELTA_XDS", "true" if delta else "false")   # the gateway's ADS flavour
    gw = await setup(mesh)
    assert gw.spec.delta_xds is delta
    # a sidecar in the Secret's namespace and a gateway elsewhere: a Secret change is none of their business
    await mesh.sidecar(GW_NS, "sleep-v1", {"app": "sleep"})
    await mesh.gateway(namespace="edge", name="edge-gateway", gateway_ports={443: 9443})
    ca = CA("gateway CA")
    first = ca.issue(HOST)
    await mesh.apply_yaml(tls_secret("bookinfo-cert", GW_NS, first))
    await mesh.apply_yaml(gateway("SIMPLE", "bookinfo-cert"), namespace=NS)
    await mesh.wait_synced()

    async def serves(serial: int) -> None:
        got = await fetch(gw, ca.pem, tmp_path)
        assert got == (serial, 200), (got, serial)
    await eventually(lambda: serves(first.cert.serial_number), timeout=10)

    node = node_of(mesh, gw)
    snap = mesh.cp.cache.get(node)
    assert snap is not None
    assert sorted(snap.of(SECRET).resources) == ["kubernetes://bookinfo-cert"]
    lds_version = snap.version(LISTENER)
    pid, restarts = gw.pid, gw.restarts

    second = ca.issue(HOST)
    assert second.cert.serial_number != first.cert.serial_number
    await mesh.apply_yaml(tls_secret("bookinfo-cert", GW_NS, second))
    await mesh.wait_synced()
    stats = mesh.cp.pusher.stats
    assert (stats.proxies_pushed, stats.proxies_changed) == (1, 1), stats   # only the istio-system gateway
    await eventually(lambda: serves(second.cert.serial_number), timeout=10)
    snap = mesh.cp.cache.get(node)
    assert snap is not None and snap.version(LISTENER) == lds_version   # an SDS-only change
    assert (gw.pid, gw.restarts) == (pid, restarts)                       # no restart, no drain
    # what Envoy holds, as istioctl proxy-config secret shows it
    [row] = [r for r in await secret_rows(mesh, gw) if r[0] == "kubernetes://bookinfo-cert"]
    assert row[1:6] == ["Cert", "Chain", "ACTIVE", "true", format(second.cert.serial_number, "x")], row
    assert row[6] == second.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_mutual_from_a_generic_secret_with_cacert(mesh: Mesh, tmp_path: Path) -> None:
    gw = await setup(mesh)
    server_ca, client_ca, rogue = CA("server CA"), CA("client CA"), CA("rogue CA")
    leaf = server_ca.issue(HOST)
    await mesh.apply_yaml(generic_secret("api-cred", GW_NS, {"cert": leaf.cert_pem, "key": leaf.key_pem,
                                                             "cacert": client_ca.pem}))
    await mesh.apply_yaml(gateway("MUTUAL", "api-cred"), namespace=NS)
    await mesh.wait_synced()
    alice = client_ca.issue("alice")

    async def served() -> None:
        assert await fetch(gw, server_ca.pem, tmp_path, alice) == (leaf.cert.serial_number, 200)
    await eventually(served, timeout=10)
    snap = mesh.cp.cache.get(node_of(mesh, gw))
    assert snap is not None
    assert sorted(snap.of(SECRET).resources) == ["kubernetes://api-cred", "kubernetes://api-cred-cacert"]
    rows = {r[0]: r for r in await secret_rows(mesh, gw)}
    assert rows["kubernetes://api-cred-cacert"][1:5] == ["CA", "ACTIVE", "true",
                                                          format(client_ca.cert.serial_number, "x")]
    for who in (None, rogue.issue("mallory")):
        # TLS 1.3: the server's alert may arrive only when the client reads
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            await fetch(gw, server_ca.pem, tmp_path, who)

    # the CA from its own "<name>-cacert" Secret wins over the cacert key (istiod's GetCaCert)
    other_clients = CA("other client CA")
    await mesh.apply_yaml(generic_secret("api-cred-cacert", GW_NS, {"cacert": other_clients.pem}))
    await mesh.wait_synced()
    bob = other_clients.issue("bob")

    async def bob_served() -> None:
        assert await fetch(gw, server_ca.pem, tmp_path, bob) == (leaf.cert.serial_number, 200)
    await eventually(bob_served, timeout=10)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        await fetch(gw, server_ca.pem, tmp_path, alice)


async def test_a_secret_in_another_namespace_is_not_served(mesh: Mesh, tmp_path: Path) -> None:
    gw = await setup(mesh)
    ca = CA("gateway CA")
    leaf = ca.issue(HOST)
    # the Secret sits next to the Gateway (namespace tls), not in the gateway workload's namespace
    results = await mesh.apply_yaml(tls_secret("bookinfo-cert", NS, leaf) + "---"
                                    + gateway("SIMPLE", "bookinfo-cert"), namespace=NS)
    assert results
    await mesh.wait_synced()
    node = node_of(mesh, gw)
    snap = mesh.cp.cache.get(node)
    assert snap is not None and not snap.of(SECRET).resources
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        await fetch(gw, ca.pem, tmp_path)
    # the same Secret in the gateway's namespace is served
    await mesh.apply_yaml(tls_secret("bookinfo-cert", GW_NS, leaf))
    await mesh.wait_synced()
    await eventually(lambda: _expect(fetch(gw, ca.pem, tmp_path), (leaf.cert.serial_number, 200)), timeout=10)
    # deleting it takes the server out again; the gateway keeps running
    await mesh.delete_yaml(tls_secret("bookinfo-cert", GW_NS, leaf))
    await mesh.wait_synced()

    async def refused() -> None:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            await fetch(gw, ca.pem, tmp_path)
    await eventually(refused, timeout=10)
    snap = mesh.cp.cache.get(node)
    assert snap is not None and not snap.of(SECRET).resources
    assert gw.running and gw.restarts == 0


async def _expect(got: object, want: tuple[int, int]) -> None:
    value = await got  # type: ignore[misc]
    assert value == want, value


async def test_secret_values_never_appear_in_outputs_or_logs(mesh: Mesh, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    gw = await setup(mesh, sidecar=True)
    ca = CA("gateway CA")
    leaf = ca.issue(HOST)
    await mesh.apply_yaml(tls_secret("bookinfo-cert", GW_NS, leaf))
    await mesh.apply_yaml(gateway("SIMPLE", "bookinfo-cert"), namespace=NS)
    await mesh.wait_synced()
    await eventually(lambda: _expect(fetch(gw, ca.pem, tmp_path), (leaf.cert.serial_number, 200)), timeout=10)
    key_body = leaf.key_pem.decode().splitlines()[1]   # a line of the key's base64 body
    forbidden = [key_body, b64(leaf.key_pem), b64(leaf.key_pem)[:40]]
    node = node_of(mesh, gw)
    outputs: list[str] = []
    async with mesh.api_client() as api:
        for path in ("/apis/objects?kind=Secret", "/apis/objects", "/debug/configz",
                     f"/debug/config_dump?proxyID={node}"):
            r = await api.get(path)
            assert r.status_code == 200, (path, r.text)
            outputs.append(r.text)
    secret_item = next(i for i in json.loads(outputs[0])["items"] if i["metadata"]["name"] == "bookinfo-cert")
    assert secret_item["type"] == "kubernetes.io/tls"
    assert secret_item["data"] == {"tls.crt": f"[redacted: {len(leaf.cert_pem)} bytes]",
                                   "tls.key": f"[redacted: {len(leaf.key_pem)} bytes]"}
    dump = json.loads(outputs[3])
    assert [s["name"] for s in dump["SDS"]] == ["kubernetes://bookinfo-cert"]
    # the proxy's own config dump, through its agent's admin proxy (the path proxy-config takes)
    import httpx
    async with httpx.AsyncClient(trust_env=False, timeout=10,
                                 headers={"Authorization": f"Bearer {mesh.cp.token}"}) as c:
        r = await c.get(f"http://{gw.spec.ip}:15004/config_dump")
        assert r.status_code == 200
        outputs.append(r.text)
    assert "kubernetes://bookinfo-cert" in outputs[-1]
    # the CLI: proxy-config secret (table and json), proxy-config all -o json, get/describe secret
    admin = ("--admin", f"{gw.spec.ip}:15004")
    for args in (("proxy-config", "secret", node, *admin),
                 ("proxy-config", "secret", node, "-o", "json", *admin),
                 ("proxy-config", "all", node, "-o", "json", *admin), ("get", "secret", "-A", "-o", "yaml"),
                 ("describe", "secret", "bookinfo-cert", "-n", GW_NS), ("proxy-status",)):
        outputs.append(await cli(mesh, *args))
    assert "[redacted]" in outputs[-5]   # the private key's place in the SecretsConfigDump
    # the MTLS column: the web sidecar's inbound is plaintext (no mTLS sent yet), a gateway has no inbound
    rows = [re.split(r" {2,}", line.strip()) for line in outputs[-1].splitlines()[1:] if line.strip()]
    mtls = {r[0].split("-")[0]: r[5] for r in rows}
    assert mtls == {"istio": "-", "web": "DISABLE"}, outputs[-1]
    # stored state: files are private
    state = mesh.state_dir / "state"
    for p in state.rglob("*"):
        if p.is_file():
            assert p.stat().st_mode & 0o077 == 0, p
    logs = caplog.text
    envoy_log = gw.work_dir / "envoy.log"
    if envoy_log.exists():
        logs += envoy_log.read_text(errors="replace")
    for text in [*outputs, logs]:
        for f in forbidden:
            assert f not in text
