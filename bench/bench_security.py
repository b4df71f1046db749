"""Workload identity numbers: CA signing rate (in process and over gRPC) and SDS push time to a real Envoy.

* signing: a self-signed RSA 2048 root (Istio's default) signs ``--csrs`` CSRs (ECDSA P-256 and RSA 2048
  workload keys, generated beforehand, so only signing is timed); then the same over
  ``IstioCertificateService/CreateCertificate`` on a Unix socket with a pod credential, 1 and 8 calls in
  flight.
* the same through the control plane as agents use it: ``CreateCertificate`` over its TLS port (istiod's
  15012: server-authenticated TLS, the pod credential as the bearer), 1 and 8 calls in flight.
* SDS push: the pod's IdentityAgent with a ``--ttl`` seconds certificate feeds a real Envoy (an mTLS
  listener on 127.75.x.1 taking ``default``/``ROOTCA`` over SDS); per rotation, the time from the new
  certificate to the SDS response on the wire and to Envoy's ACK, for ``--rotations`` rotations.

Bounded: at most --csrs signatures per mode and --rotations rotations (plus a 60 s guard). Everything started
is stopped at the end; only loopback and Unix sockets in a temp dir are used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt_ms

from mizzen.agent.binary import envoy_binary
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.security.authn import LocalCredentialAuthenticator, LocalCredentials
from mizzen.security.ca import CAOptions, CertificateAuthority
from mizzen.security.caserver import CAService
from mizzen.security.identity import Identity
from mizzen.security.nodeagent.agent import IdentityAgent
from mizzen.security.nodeagent.cache import SecretManagerOptions
from mizzen.security.nodeagent.caclient import CAClient
from mizzen.security.nodeagent.upstream import ControlPlaneTls
from mizzen.security.pki import KeyAlgorithm, generate_key, make_csr
from mizzen.security.sdsconfig import downstream_tls_transport_socket, sds_cluster

ID = Identity("bench", "bench-sa")
HOST = f"127.75.{1 + os.getpid() % 200}.1"
ECHO_TYPE = "type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo"


def csrs(n: int, algorithm: KeyAlgorithm) -> list[bytes]:
    return [make_csr(generate_key(algorithm), ID) for _ in range(n)]


async def signing(tmp: Path, n: int) -> None:
    ca = CertificateAuthority.self_signed(tmp / "state", CAOptions())
    for algorithm in (KeyAlgorithm.ECDSA, KeyAlgorithm.RSA):
        batch = csrs(n, algorithm)
        t0 = time.perf_counter()
        for c in batch:
            ca.sign(c, [ID])
        took = time.perf_counter() - t0
        print(f"CA sign in process, {algorithm.value} workload keys: {n / took:.0f} certs/s "
              f"({took / n * 1000:.2f} ms each)")
    creds = LocalCredentials()
    service = CAService(ca, [LocalCredentialAuthenticator(creds)])
    await service.serve(f"unix:{tmp / 'ca.sock'}")
    client = CAClient(f"unix:{tmp / 'ca.sock'}", creds.issue(ID.namespace, "bench-pod", ID.service_account))
    try:
        batch = csrs(n, KeyAlgorithm.ECDSA)
        for in_flight in (1, 8):
            sem = asyncio.Semaphore(in_flight)
            lat: list[float] = []

            async def one(c: bytes, sem: asyncio.Semaphore = sem, lat: list[float] = lat) -> None:
                async with sem:
                    s = time.perf_counter()
                    await client.sign(c, 3600)
                    lat.append(time.perf_counter() - s)

            t0 = time.perf_counter()
            await asyncio.gather(*(one(c) for c in batch))
            took = time.perf_counter() - t0
            print(f"CreateCertificate over gRPC, {in_flight} in flight: {n / took:.0f} certs/s; "
                  f"{fmt_ms(lat)}")
    finally:
        await client.close()
        await service.stop()


async def tls_signing(tmp: Path, n: int) -> None:
    """CreateCertificate on a real control plane's TLS port, with a pod credential it issued."""
    cp = ControlPlane(ControlPlaneOptions(state_dir=tmp / "cp", xds_port=0, xds_tls_port=0, http_port=None))
    await cp.start()
    assert cp.identity is not None
    issued = cp.identity.issue(ID.namespace, "bench-pod", ID.service_account)
    client = CAClient("", issued.credential, tls=ControlPlaneTls(cp.xds_tls_address, issued.root_cert,
                                                                 issued.credential))
    try:
        batch = csrs(n, KeyAlgorithm.ECDSA)
        await client.sign(batch[0], 3600)           # the TLS handshake, not timed
        for in_flight in (1, 8):
            sem = asyncio.Semaphore(in_flight)
            lat: list[float] = []

            async def one(c: bytes, sem: asyncio.Semaphore = sem, lat: list[float] = lat) -> None:
                async with sem:
                    s = time.perf_counter()
                    await client.sign(c, 3600)
                    lat.append(time.perf_counter() - s)

            t0 = time.perf_counter()
            await asyncio.gather(*(one(c) for c in batch))
            took = time.perf_counter() - t0
            print(f"CreateCertificate on the control plane's TLS port, {in_flight} in flight: "
                  f"{n / took:.0f} certs/s; {fmt_ms(lat)}")
    finally:
        await client.close()
        await cp.stop()


def bootstrap(tmp: Path, sds_socket: Path, port: int) -> dict[str, object]:
    return {
        "node": {"id": f"sidecar~{HOST}~bench.bench~bench.svc.cluster.local", "cluster": "bench"},
        "admin": {"address": {"pipe": {"path": str(tmp / "admin.sock"), "mode": 0o600}}},
        "static_resources": {"clusters": [sds_cluster(sds_socket)], "listeners": [{
            "name": "mtls", "address": {"socket_address": {"address": HOST, "port_value": port}},
            "filter_chains": [{"transport_socket": downstream_tls_transport_socket(), "filters": [{
                "name": "envoy.filters.network.echo",
                "typed_config": {"@type": ECHO_TYPE},
            }]}],
        }]},
    }


async def sds_push(tmp: Path, ttl_s: float, rotations: int) -> None:
    ca = CertificateAuthority.self_signed(tmp / "state", CAOptions(root_key_algorithm=KeyAlgorithm.ECDSA))
    creds = LocalCredentials()
    service = CAService(ca, [LocalCredentialAuthenticator(creds)])
    sock = tmp / "sds" / "socket"
    token = creds.issue(ID.namespace, "bench-pod", ID.service_account)
    options = SecretManagerOptions(ttl=dt.timedelta(seconds=ttl_s), key_algorithm=KeyAlgorithm.ECDSA)
    agent = IdentityAgent(ID, f"unix:{tmp / 'ca2.sock'}", token, sock, options)
    cfg = tmp / "envoy.json"
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    cfg.write_text(json.dumps(bootstrap(tmp, sock, port)))
    async with contextlib.AsyncExitStack() as stack:
        await service.serve(f"unix:{tmp / 'ca2.sock'}")
        stack.push_async_callback(service.stop)
        await agent.start()
        stack.push_async_callback(agent.stop)
        log = stack.enter_context((tmp / "envoy.log").open("wb"))
        args = [str(envoy_binary()), "-c", str(cfg), "--disable-hot-restart", "-l", "warning",
                "--concurrency", "1"]
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

        def stop() -> None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        stack.callback(stop)
        deadline = time.monotonic() + min(60.0, ttl_s * rotations + 20)
        while len(agent.sds.ack_latencies_s) < rotations and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        sds = agent.sds
        print(f"SDS push ({agent.manager.stats.fetches} certificates, {len(sds.push_latencies_s)} pushes on "
              f"Envoy's default+ROOTCA streams, TTL {ttl_s:g}s):\n  new cert -> response sent: "
              f"{fmt_ms(sds.push_latencies_s)}\n  new cert -> Envoy ACK: {fmt_ms(sds.ack_latencies_s)}; "
              f"NACKs {sds.nacks}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csrs", type=int, default=300)
    ap.add_argument("--ttl", type=float, default=2.0)
    ap.add_argument("--rotations", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mizzen-bench-sec-") as tmp:
        await signing(Path(tmp), args.csrs)
        await tls_signing(Path(tmp), args.csrs)
        await sds_push(Path(tmp), args.ttl, args.rotations)


if __name__ == "__main__":
    asyncio.run(main())
