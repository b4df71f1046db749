"""p99 latency of HTTP requests between two real Envoy sidecars over Istio mTLS versus plaintext.

An in-process control plane and CA; two sidecars (productpage -> reviews), each with its workload
certificate over SDS from its own identity agent (as the demo's agents serve it), and an in-process app
behind reviews' sidecar. Rounds alternate between auto mTLS (the default) and plaintext (a DestinationRule
``tls.mode: DISABLE`` for reviews): each round sends ``--requests`` sequential keep-alive requests through the
client sidecar's outbound HTTP proxy and takes their p50/p99. The result is the median over the rounds of
each mode (interleaved, so drifting machine load hits both alike). Loopback addresses 127.75.x.y.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _common import pct
from aiohttp import web

from mizzen.agent.bootstrap import ProxySpec
from mizzen.agent.envoy import Agent, AgentOptions
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.core.proxy import Meta, ProxyType
from mizzen.registry.model import ISTIO_TLS_MODE, TLS_MODE_LABEL, Workload
from mizzen.security.authn import LocalCredentialAuthenticator, LocalCredentials
from mizzen.security.ca import CAOptions, CertificateAuthority
from mizzen.security.caserver import CAService
from mizzen.security.identity import Identity
from mizzen.security.nodeagent.agent import IdentityAgent
from mizzen.security.nodeagent.cache import SecretManagerOptions
from mizzen.security.pki import KeyAlgorithm
from mizzen.security.sdsconfig import sds_cluster

NS = "bookinfo"
SUBNET = f"127.75.{os.getpid() % 200 + 1}"
SERVICE = f"""
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: {NS}}}
spec:
  selector: {{app: reviews}}
  ports: [{{name: http, port: 9080}}]
"""
DISABLE = f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: {NS}}}
spec:
  host: reviews
  trafficPolicy: {{tls: {{mode: DISABLE}}}}
"""


async def sidecar(stack: contextlib.AsyncExitStack, cp: ControlPlane, creds: LocalCredentials, ca: str,
                  tmp: Path, ip: str, name: str, sa: str, labels: dict[str, str], app_host: str) -> Agent:
    sds = tmp / f"sds-{name}" / "socket"
    ident = IdentityAgent(Identity(NS, sa), ca, creds.issue(NS, name, sa), sds,
                          SecretManagerOptions(key_algorithm=KeyAlgorithm.ECDSA))
    await ident.start()
    stack.push_async_callback(ident.stop)
    overlay = json.dumps({"node": {"metadata": {Meta.SDS: "true"}},
                          "static_resources": {"clusters": [sds_cluster(sds)]}})
    spec = ProxySpec(type=ProxyType.SIDECAR, ip=ip, namespace=NS, name=name, xds_port=cp.xds_port,
                     labels={**labels, TLS_MODE_LABEL: ISTIO_TLS_MODE}, service_account=sa, app_host=app_host,
                     http_proxy_port=15080, stats_port=None)
    agent = Agent(spec, AgentOptions(concurrency=1, extra_args=("--config-yaml", overlay)))
    await agent.start(ready_timeout=30)
    stack.push_async_callback(agent.stop)
    return agent


async def round_latencies(http: httpx.AsyncClient, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = await http.get("http://reviews:9080/reviews/0")
        out.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise SystemExit(f"request failed: {r.status_code} {r.text[:200]}")
    return out


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="mzb-"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            ca = CertificateAuthority.self_signed(tmp / "ca", CAOptions(default_ttl=dt.timedelta(hours=1),
                                                                        root_key_algorithm=KeyAlgorithm.ECDSA))
            creds = LocalCredentials()
            service = CAService(ca, [LocalCredentialAuthenticator(creds)])
            target = f"unix:{tmp / 'ca.sock'}"
            await service.serve(target)
            stack.push_async_callback(service.stop)
            cp = ControlPlane(ControlPlaneOptions(state_dir=None, xds_port=0, http_port=None,
                                                  debounce_quiet_s=0.05, debounce_max_s=0.5))
            await cp.start()
            stack.push_async_callback(cp.stop)

            seen = {"xfcc": 0, "plain": 0}

            async def handle(request: web.Request) -> web.Response:
                seen["xfcc" if "x-forwarded-client-cert" in request.headers else "plain"] += 1
                return web.json_response({"reviews": [{"reviewer": "Reviewer1", "text": "x" * 200}]})
            app = web.Application()
            app.router.add_get("/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            app_ip, server_ip, client_ip = f"{SUBNET}.2", f"{SUBNET}.3", f"{SUBNET}.4"
            await web.TCPSite(runner, app_ip, 9080).start()
            await sidecar(stack, cp, creds, target, tmp, server_ip, "reviews-v1-a", "bookinfo-reviews",
                          {"app": "reviews"}, app_ip)
            await sidecar(stack, cp, creds, target, tmp, client_ip, "productpage-v1-a",
                                   "bookinfo-productpage", {"app": "productpage"}, "127.0.0.1")
            result = cp.api.loader(SERVICE, "bench.yaml", NS)
            cp.store.apply(result.configs)
            cp.register_workload(Workload(name="reviews-v1-a", namespace=NS, address=server_ip,
                                          labels={"app": "reviews", TLS_MODE_LABEL: ISTIO_TLS_MODE},
                                          service_account="bookinfo-reviews"))
            await cp.wait_synced(timeout=10)
            p99: dict[str, list[float]] = {"mtls": [], "plaintext": []}
            p50: dict[str, list[float]] = {"mtls": [], "plaintext": []}
            proxy = f"http://{client_ip}:15080"
            async with httpx.AsyncClient(proxy=proxy, trust_env=False, timeout=10) as http:
                await round_latencies(http, 50)              # warm-up: listeners, SDS, connections
                for k in range(args.rounds * 2):
                    mode = "mtls" if k % 2 == 0 else "plaintext"
                    if mode == "plaintext":
                        cp.store.apply(cp.api.loader(DISABLE, "bench.yaml", NS).configs)
                    elif k > 0:
                        cp.store.delete([c.key for c in cp.api.loader(DISABLE, "bench.yaml", NS).configs])
                    await cp.wait_synced(timeout=10)
                    await round_latencies(http, 20)           # new upstream connection settles
                    seen.update(xfcc=0, plain=0)
                    lat = await round_latencies(http, args.requests)
                    want = "xfcc" if mode == "mtls" else "plain"
                    if seen[want] != args.requests:
                        raise SystemExit(f"round {k + 1} ({mode}): the app saw {seen}")
                    p99[mode].append(pct(lat, 99) * 1000)
                    p50[mode].append(pct(lat, 50) * 1000)
                    print(f"round {k + 1:2d} {mode:9s}  p50 {p50[mode][-1]:.2f} ms  "
                          f"p99 {p99[mode][-1]:.2f} ms", flush=True)
            print("every mTLS request reached the app with the caller's identity (x-forwarded-client-cert), "
                  "every plaintext one without")
            for mode in ("mtls", "plaintext"):
                print(f"{mode:9s}: median of {args.rounds} rounds: p50 {statistics.median(p50[mode]):.2f} "
                      f"ms, p99 {statistics.median(p99[mode]):.2f} ms ({args.requests} requests per round)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds per mode (interleaved)")
    parser.add_argument("--requests", type=int, default=500, help="sequential requests per round")
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
