"""Benchmark: gateway credentialName rotation -> a real gateway Envoy serves the new certificate.

    .venv/bin/python bench/bench_gateway_sds.py                 # 20 rotations, production debounce
    .venv/bin/python bench/bench_gateway_sds.py --rounds 50 --debounce 0.005

An in-process ControlPlane serves one Gateway (HTTPS 443 -> 8443, ``credentialName``) to one real gateway
Envoy on 127.75.<pid>.2. Each round applies the Secret with a new certificate (store.apply, as the API does
after validation) and measures: apply -> the gateway ACKed the SDS push (control-plane status), and apply ->
a TLS handshake to the gateway presents the new serial (polled every 2 ms). Also checks that each rotation
was an SDS-only change (the listeners' version is unchanged). The Envoy is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import logging
import os
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fmt_ms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mizzen.agent.bootstrap import ProxySpec
from mizzen.agent.envoy import Agent, AgentOptions
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.core.proxy import ProxyType
from mizzen.xds.resources import LISTENER, SECRET

HOST = "bench.example.com"
PROD = ControlPlaneOptions()
IP = f"127.75.{1 + os.getpid() % 250}.2"
GATEWAY = f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bench, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{mode: SIMPLE, credentialName: bench-cert}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bench, namespace: istio-system}}
spec:
  hosts: [{HOST}]
  gateways: [bench]
  http: [{{directResponse: {{status: 200}}}}]
"""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def new_secret(ca_key: ec.EllipticCurvePrivateKey) -> tuple[str, int]:
    """A Secret manifest with a fresh certificate for HOST, and that certificate's serial."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(HOST)).issuer_name(_name("bench CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    crt = base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return (f"apiVersion: v1\nkind: Secret\nmetadata: {{name: bench-cert, namespace: istio-system}}\n"
            f"type: kubernetes.io/tls\ndata: {{tls.crt: {crt}, tls.key: {base64.b64encode(pem).decode()}}}\n",
            cert.serial_number)


def served_serial() -> int | None:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((IP, 8443), timeout=1) as raw, \
                ctx.wrap_socket(raw, server_hostname=HOST) as s:
            der = s.getpeercert(binary_form=True)
    except OSError:
        return None
    return x509.load_der_x509_certificate(der).serial_number if der else None


def apply(cp: ControlPlane, text: str) -> None:
    result = cp.api.loader(text, "bench.yaml", None)
    if result.errors:
        raise SystemExit(f"bench config invalid: {[str(e) for e in result.errors]}")
    cp.store.apply(result.configs)


async def run(args: argparse.Namespace) -> None:
    quiet = PROD.debounce_quiet_s if args.debounce == "prod" else float(args.debounce)
    maximum = PROD.debounce_max_s if args.debounce == "prod" else max(float(args.debounce) * 10, 0.05)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    with tempfile.TemporaryDirectory(prefix="mizzen-bench-sds-") as tmp:
        cp = ControlPlane(ControlPlaneOptions(state_dir=Path(tmp) / "state", xds_port=0, http_port=0,
                                              debounce_quiet_s=quiet, debounce_max_s=maximum))
        await cp.start()
        agent: Agent | None = None
        try:
            text, serial = new_secret(ca_key)
            apply(cp, text)
            apply(cp, GATEWAY)
            spec = ProxySpec(type=ProxyType.ROUTER, ip=IP, namespace="istio-system",
                             name="istio-ingressgateway", xds_port=cp.xds_port,
                             labels={"istio": "ingressgateway"}, gateway_ports={443: 8443})
            agent = Agent(spec, AgentOptions(log_level="warning", concurrency=1, admin_token=cp.token))
            await agent.start(ready_timeout=30)
            await cp.wait_synced(timeout=30)
            while await asyncio.to_thread(served_serial) != serial:
                await asyncio.sleep(0.05)
            node = next(iter(cp.pusher.proxies))
            snap = cp.cache.get(node)
            assert snap is not None
            lds = snap.version(LISTENER)
            acked: list[float] = []
            served: list[float] = []
            probes: list[float] = []
            lds_changed = 0
            for _ in range(args.rounds):
                text, serial = new_secret(ca_key)
                t0 = time.perf_counter()
                apply(cp, text)
                await cp.wait_synced(timeout=30)
                while True:
                    snap = cp.cache.get(node)
                    st = cp.status.proxy(node)
                    ts = st.types.get(SECRET) if st is not None else None
                    if snap is not None and ts is not None and ts.acked_version == snap.version(SECRET):
                        break
                    await asyncio.sleep(0.001)
                acked.append(time.perf_counter() - t0)
                while True:
                    t1 = time.perf_counter()
                    got = await asyncio.to_thread(served_serial)
                    probes.append(time.perf_counter() - t1)
                    if got == serial:
                        break
                    await asyncio.sleep(0.002)
                served.append(time.perf_counter() - t0)
                snap = cp.cache.get(node)
                lds_changed += snap is not None and snap.version(LISTENER) != lds
                await asyncio.sleep(args.gap)
            print(f"gateway credential rotation, {args.rounds} rounds, debounce {args.debounce} "
                  f"({quiet:g} s quiet):")
            print(f"  apply -> SDS ACKed by the gateway: {fmt_ms(acked)}")
            print(f"  apply -> new serial served:        {fmt_ms(served)}")
            print(f"  one probe (TCP + TLS handshake from this process): {fmt_ms(probes)}")
            print(f"  rounds that changed the listeners: {lds_changed} (0: SDS-only pushes); Envoy restarts: "
                  f"{agent.restarts}")
        finally:
            if agent is not None:
                await agent.stop()
            await cp.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--debounce", default="prod", help="quiet period in seconds, or 'prod' (default)")
    ap.add_argument("--gap", type=float, default=0.2, help="seconds between rounds (default %(default)s)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
