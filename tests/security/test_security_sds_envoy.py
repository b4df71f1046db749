"""A real Envoy takes its workload certificate over SDS from the agent's Unix socket: its bootstrap has the
``sds-grpc`` cluster on that socket and a listener whose mTLS context takes ``default`` and ``ROOTCA`` from
SDS. A real TLS client (Python's OpenSSL) connects and sees the SPIFFE certificate; rotation with a TTL of a
few seconds changes the served serial with no failed handshake; a three-step root rotation fails none either.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from security_kit import FAST

from harness import alloc_ip, free_port
from mizzen.agent.binary import envoy_binary
from mizzen.security.authn import LocalCredentialAuthenticator, LocalCredentials
from mizzen.security.ca import CertificateAuthority
from mizzen.security.caserver import CAService
from mizzen.security.identity import Identity
from mizzen.security.nodeagent.agent import IdentityAgent
from mizzen.security.nodeagent.cache import SecretManager, SecretManagerOptions
from mizzen.security.nodeagent.sds import SdsServer
from mizzen.security.pki import KeyAlgorithm, cert_info, generate_key, make_csr, private_key_pem
from mizzen.security.sdsconfig import downstream_tls_transport_socket, sds_cluster

pytestmark = pytest.mark.e2e

SERVER = Identity("bookinfo", "bookinfo-reviews")
CLIENT = Identity("bookinfo", "bookinfo-productpage")
HELLO = b"hello over mTLS\n"
HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")


def bootstrap(tmp: Path, sds_socket: Path, ip: str, port: int) -> dict[str, object]:
    return {
        "node": {"id": f"sidecar~{ip}~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local",
                 "cluster": "reviews"},
        "admin": {"address": {"pipe": {"path": str(tmp / "admin.sock"), "mode": 0o600}}},
        "static_resources": {
            "clusters": [sds_cluster(sds_socket)],
            "listeners": [{
                "name": "mtls",
                "address": {"socket_address": {"address": ip, "port_value": port}},
                "filter_chains": [{
                    "transport_socket": downstream_tls_transport_socket(match_sans=[CLIENT.uri]),
                    "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                        "@type": HCM_TYPE,
                        "stat_prefix": "mtls",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{
                            "match": {"prefix": "/"},
                            "direct_response": {"status": 200, "body": {"inline_string": HELLO.decode()}},
                        }]}]},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    }}],
                }],
            }],
        },
    }


@dataclass
class Probe:
    serial: str
    uris: tuple[str, ...]


def tls_probe(ip: str, port: int, ctx: ssl.SSLContext) -> Probe:
    """One real mTLS connection and HTTP request; the server certificate seen. Envoy must answer."""
    with socket.create_connection((ip, port), timeout=5) as raw, ctx.wrap_socket(raw) as s:
        der = s.getpeercert(binary_form=True)
        s.sendall(b"GET / HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n")
        data = b""
        while not data.endswith(HELLO):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(HELLO), data
    from cryptography import x509
    info = cert_info(x509.load_der_x509_certificate(der or b""))
    return Probe(info.serial, info.uris)


@dataclass
class Rig:
    ca: CertificateAuthority
    service: CAService
    agent: IdentityAgent
    manager: SecretManager
    sds: SdsServer
    ip: str
    port: int
    tmp: Path
    client_files: tuple[Path, Path]

    def client_context(self, roots_pem: str | None = None, with_cert: bool = True) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False                   # SPIFFE certificates carry no DNS name: check the URI
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=roots_pem or self.ca.trust_bundle.pem)
        if with_cert:
            ctx.load_cert_chain(str(self.client_files[0]), str(self.client_files[1]))
        return ctx

    async def probe(self, ctx: ssl.SSLContext | None = None) -> Probe:
        return await asyncio.to_thread(tls_probe, self.ip, self.port, ctx or self.client_context())


def client_cert(ca: CertificateAuthority, tmp: Path) -> tuple[Path, Path]:
    key = generate_key(KeyAlgorithm.ECDSA)
    chain = ca.sign(make_csr(key, CLIENT), [CLIENT], dt.timedelta(hours=1))
    cert_path, key_path = tmp / "client.pem", tmp / "client-key.pem"
    cert_path.write_text("".join(chain[:-1]))
    key_path.write_bytes(private_key_pem(key))
    key_path.chmod(0o600)
    return cert_path, key_path


@contextlib.asynccontextmanager
async def rig(tmp: Path, ttl_s: float) -> AsyncIterator[Rig]:
    """CA (gRPC, Unix socket) + the pod's IdentityAgent (SDS socket) + a real Envoy; all stopped on exit."""
    ca = CertificateAuthority.self_signed(tmp / "state", FAST)
    creds = LocalCredentials()
    service = CAService(ca, [LocalCredentialAuthenticator(creds)])
    token = creds.issue("bookinfo", "reviews-v1-abc", "bookinfo-reviews")
    sds_socket = tmp / "sds" / "socket"
    agent = IdentityAgent(SERVER, f"unix:{tmp / 'ca.sock'}", token, sds_socket, SecretManagerOptions(
        ttl=dt.timedelta(seconds=ttl_s), key_algorithm=KeyAlgorithm.ECDSA, backoff_start_s=0.1))
    ip = alloc_ip()
    port = free_port(ip)
    cfg = tmp / "envoy.json"
    cfg.write_text(json.dumps(bootstrap(tmp, sds_socket, ip, port)))
    async with contextlib.AsyncExitStack() as stack:
        await service.serve(f"unix:{tmp / 'ca.sock'}")
        stack.push_async_callback(service.stop)
        await agent.start()
        stack.push_async_callback(agent.stop)
        log = stack.enter_context((tmp / "envoy.log").open("wb"))
        args = [str(envoy_binary()), "-c", str(cfg), "--disable-hot-restart", "-l", "warning",
                "--concurrency", "1"]
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        stack.callback(stop_process, proc)
        r = Rig(ca, service, agent, agent.manager, agent.sds, ip, port, tmp, client_cert(ca, tmp))
        deadline = time.monotonic() + 20
        while True:                              # the listener warms until SDS delivered both secrets
            try:
                await r.probe()
                break
            except (OSError, AssertionError) as e:
                if time.monotonic() > deadline or proc.poll() is not None:
                    tail = (tmp / "envoy.log").read_text()[-3000:]
                    raise AssertionError(f"Envoy never served mTLS:\n{tail}") from e
                await asyncio.sleep(0.1)
        yield r


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


async def test_envoy_serves_the_spiffe_certificate_from_sds(tmp_path: Path) -> None:
    async with rig(tmp_path, ttl_s=3600) as r:
        probe = await r.probe()
        assert probe.uris == (SERVER.uri,)
        assert r.manager.current is not None and probe.serial == r.manager.current.leaf.serial
        assert r.sds.pushes >= 1 and r.sds.nacks == 0
        rows = {row.resource_name: row for row in r.agent.secret_items()}
        assert rows["default"].serial_number == probe.serial and rows["default"].identity == SERVER.uri
        assert rows["ROOTCA"].serial_number == format(r.ca.material.cert.serial_number, "x")
        # Envoy requires a client certificate from the mesh
        with pytest.raises((ssl.SSLError, OSError, AssertionError)):
            await r.probe(r.client_context(with_cert=False))
        # a client that trusts another root refuses Envoy's certificate
        other = CertificateAuthority.self_signed(tmp_path / "other", FAST)
        with pytest.raises(ssl.SSLCertVerificationError):
            await r.probe(r.client_context(roots_pem=other.trust_bundle.pem))
        assert oct((tmp_path / "sds" / "socket").stat().st_mode & 0o777) == "0o600"
        assert oct((tmp_path / "sds").stat().st_mode & 0o777) == "0o700"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
async def test_another_user_cannot_reach_the_sds_socket() -> None:
    """The SDS socket hands out the pod's private key: a different user must not connect (0600, dir 0700).
    A world-open socket beside it is the control: nobody does reach that one."""
    base = Path(tempfile.mkdtemp(prefix="mizzen-sds-test-"))   # /tmp/...: every parent is traversable
    base.chmod(0o755)
    code = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
            "try:\n s.connect(sys.argv[1])\nexcept PermissionError:\n sys.exit(13)\nsys.exit(0)")

    def as_nobody(path: Path) -> int:
        args = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c", code,
                str(path)]
        return subprocess.run(args, capture_output=True, timeout=30).returncode

    control = socket.socket(socket.AF_UNIX)
    try:
        control.bind(str(base / "open.sock"))
        control.listen(1)
        (base / "open.sock").chmod(0o777)
        async with rig(base, ttl_s=3600) as r:
            assert r.sds.socket_path is not None
            assert await asyncio.to_thread(as_nobody, base / "open.sock") == 0
            assert await asyncio.to_thread(as_nobody, r.sds.socket_path) == 13
    finally:
        control.close()
        shutil.rmtree(base, ignore_errors=True)


async def test_rotation_changes_the_serial_with_no_failed_handshake(tmp_path: Path) -> None:
    async with rig(tmp_path, ttl_s=3) as r:
        serials: list[str] = []
        failures: list[str] = []
        attempts = 0
        deadline = time.monotonic() + 20
        while len(set(serials)) < 3 and time.monotonic() < deadline and attempts < 2000:
            attempts += 1
            try:
                serials.append((await r.probe()).serial)
            except (OSError, AssertionError) as e:
                failures.append(f"{type(e).__name__}: {e}")
            await asyncio.sleep(0.02)
        assert failures == [], failures[:5]
        assert len(set(serials)) >= 3, f"{len(set(serials))} serials in {attempts} handshakes"
        assert r.sds.nacks == 0 and len(r.sds.push_latencies_s) >= 2 and len(r.sds.ack_latencies_s) >= 2


async def test_root_rotation_in_three_steps_fails_no_handshake(tmp_path: Path) -> None:
    async with rig(tmp_path, ttl_s=3) as r:
        old_root = r.ca.material.cert
        failures: list[str] = []
        attempts = 0

        async def traffic_until(done: object, limit_s: float) -> None:
            nonlocal attempts
            deadline = time.monotonic() + limit_s
            while time.monotonic() < deadline and attempts < 3000:
                attempts += 1
                try:
                    # the client trusts what its own agent would have now: the CA's current bundle
                    await r.probe()
                except (OSError, AssertionError) as e:
                    failures.append(f"{type(e).__name__}: {e}")
                if callable(done) and done():
                    return
                await asyncio.sleep(0.02)
            raise AssertionError("the step did not complete in time")

        def served_roots() -> int:
            cur = r.manager.current
            return len(cur.roots) if cur is not None else 0

        new_root = r.ca.stage_root()
        await traffic_until(lambda: served_roots() == 2, 10)          # Envoy's ROOTCA now has both roots
        r.ca.activate_root()

        def signed_by_new() -> bool:
            cur = r.manager.current
            return cur is not None and cur.leaf.issuer == new_root.subject.rfc4514_string() \
                and cur.leaf.issuer != "" and cur.roots.roots[0] == new_root

        await traffic_until(signed_by_new, 10)
        # the client certificate was signed by the old root: still accepted by Envoy (both roots trusted)
        probe = await r.probe()
        assert probe.uris == (SERVER.uri,)
        assert failures == [], failures[:5]
        assert attempts > 10
        assert old_root != new_root


async def test_ca_outage_longer_than_a_rotation_fails_no_handshake(tmp_path: Path) -> None:
    async with rig(tmp_path, ttl_s=8) as r:
        first = r.manager.current
        assert first is not None
        await r.service.stop(grace=0)
        failures: list[str] = []
        serials: set[str] = set()
        attempts = 0

        async def traffic(seconds: float, until_new: bool = False) -> None:
            nonlocal attempts
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and attempts < 3000:
                attempts += 1
                try:
                    serials.add((await r.probe()).serial)
                except (OSError, AssertionError) as e:
                    failures.append(f"{type(e).__name__}: {e}")
                if until_new and len(serials) > 1:
                    return
                await asyncio.sleep(0.02)

        # the renewal point (about 4 s) passes while the CA is away; the certificate is valid until 8 s, and
        # the backoff (doubling from 0.1 s) must not carry the next retry past that
        await traffic(5.0)
        assert r.manager.current is first and r.manager.stats.failures >= 1
        assert serials == {first.leaf.serial}
        await r.service.serve(f"unix:{tmp_path / 'ca.sock'}")
        await traffic(6.0, until_new=True)
        assert failures == [], failures[:5]
        assert len(serials) == 2, "a new certificate once the CA is back"
