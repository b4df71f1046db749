"""Validation webhook latency: ``--reviews`` AdmissionReviews of a VirtualService (an 80/20 split), one
after another over one keep-alive HTTPS connection to the admission server (real TLS with a mesh-CA
certificate, the request's validation run off the event loop), after one warm-up review (the CRD schema
load). Prints p50, p99 and the rate. Bounded by ``--reviews`` (at most 100,000) and a 120 s guard; only
loopback; the CA lives in a temp dir removed at the end.

    .venv/bin/python bench/bench_webhook.py --reviews 300
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from mizzen.kube.webhooks.server import AdmissionServer, webhook_dns_names
from mizzen.kube.webhooks.validation import ValidationHandler
from mizzen.security.ca import CAOptions, CertificateAuthority
from mizzen.security.serving import ServingCertificate

HOST = "127.0.0.1"
VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews"},
      "spec": {"hosts": ["reviews"], "http": [{"match": [{"uri": {"prefix": "/a"}}], "route": [
          {"destination": {"host": "reviews", "subset": "v1"}, "weight": 80},
          {"destination": {"host": "reviews", "subset": "v2"}, "weight": 20}]}]}}


async def run(reviews: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        ca = CertificateAuthority.self_signed(Path(d), CAOptions())
        serving = ServingCertificate(ca, webhook_dns_names(extra=(HOST,)))
        server = AdmissionServer(serving, {"/validate": ValidationHandler()})
        await server.start(HOST, 0)
        try:
            verify = ssl.create_default_context(cadata=ca.trust_bundle.pem)
            body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "request": {"uid": "u", "operation": "CREATE", "namespace": "default", "object": VS}}
            async with httpx.AsyncClient(verify=verify, base_url=f"https://{HOST}:{server.port}") as http:
                await http.post("/validate", json=body)
                times = []
                for _ in range(reviews):
                    t = time.perf_counter()
                    r = await http.post("/validate", json=body)
                    times.append(time.perf_counter() - t)
                    if not r.json()["response"]["allowed"]:
                        raise SystemExit(f"refused: {r.text}")
        finally:
            await server.stop()
    times.sort()
    p99 = times[max(0, int(len(times) * 0.99) - 1)]
    print(f"{reviews} reviews: p50 {statistics.median(times) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, "
          f"{reviews / sum(times):.0f} reviews/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reviews", type=int, default=300)
    args = ap.parse_args()
    if not 1 <= args.reviews <= 100_000:
        raise SystemExit("--reviews: want 1..100000")
    asyncio.run(asyncio.wait_for(run(args.reviews), 120))


if __name__ == "__main__":
    main()
