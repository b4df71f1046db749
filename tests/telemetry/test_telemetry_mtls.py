"""Istio's mTLS labels on the standard metrics, with real sidecars holding real workload certificates
(``Mesh(identities=True)``: the control plane's CA, SDS from each agent, auto mTLS between the sidecars):
``connection_security_policy`` is ``mutual_tls`` at the server when its caller presented a certificate,
``none`` for plaintext from outside the mesh (PERMISSIVE), ``unknown`` at the client (as Istio's source
reporter); ``source_principal`` / ``destination_principal`` are the certificates' SPIFFE IDs, ``unknown``
without a certificate."""

from __future__ import annotations

import httpx
import pytest
from telemetry_kit import Sample, scrape, series, subset, total

from harness import Mesh, eventually
from mizzen.agent.envoy import Agent
from mizzen.registry.model import TLS_MODE_LABEL
from mizzen.security.identity import Identity

pytestmark = pytest.mark.e2e

NS = "bookinfo"
SVC = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
"""
REQ = "istio_requests_total"
POD = "reviews-v1-7f9c4d8b6c-x2x4z"
CLIENT_POD = "productpage-v1-6b746f74dc-9stvs"
PRINCIPAL = Identity(NS, "default").uri      # both harness pods run as the namespace's default account


async def _ready(mesh: Mesh, *agents: Agent) -> None:
    for agent in agents:
        assert agent.identity is not None and agent.identity.agent is not None
        await agent.identity.agent.manager.wait_ready(20)


async def _counted(agent: Agent, before: list[Sample], n: int, **want: str) -> list[Sample]:
    async def check() -> list[Sample]:
        now = await scrape(agent)
        assert total(now, REQ, **want) - total(before, REQ, **want) == n, want
        return now
    return await eventually(check, timeout=15, interval=0.3)


async def test_mutual_tls_and_principals_between_sidecars_and_none_for_plaintext() -> None:
    assert PRINCIPAL == "spiffe://cluster.local/ns/bookinfo/sa/default"
    async with Mesh(identities=True) as mesh:
        await mesh.apply_yaml(SVC)
        # the endpoint label an injected pod carries: auto mTLS towards it
        reviews = await mesh.backend("reviews", "v1", namespace=NS, pod=POD, sidecar=True,
                                     labels={"app": "reviews", "version": "v1", TLS_MODE_LABEL: "istio"})
        client = await mesh.sidecar(NS, CLIENT_POD, {"app": "productpage", "version": "v1"})
        assert reviews.sidecar is not None
        server = reviews.sidecar
        await mesh.wait_synced(timeout=20)
        await _ready(mesh, client, server)
        async with mesh.client_via(client) as http:
            async def first() -> None:
                r = await http.get("http://reviews:9080/x")
                assert r.status_code == 200
                # the hop really is mTLS: the app sees the caller's SPIFFE ID (forward_client_cert_details)
                xfcc = {k.lower(): v for k, v in r.json()["headers"].items()}.get("x-forwarded-client-cert")
                assert xfcc is not None and f"URI={PRINCIPAL}" in xfcc, xfcc
            await eventually(first, timeout=20, interval=0.2)
            src0, dst0 = await scrape(client), await scrape(server)
            n = 5
            for _ in range(n):
                assert (await http.get("http://reviews:9080/x")).status_code == 200
        src = await _counted(client, src0, n, reporter="source")
        dst = await _counted(server, dst0, n, reporter="destination")
        want = {"source_workload": "productpage-v1", "destination_workload": "reviews-v1",
                "source_principal": PRINCIPAL, "destination_principal": PRINCIPAL, "response_code": "200"}
        [s] = series(src, REQ, reporter="source")
        assert subset(s, want | {"connection_security_policy": "unknown"}) == {}
        [d] = series(dst, REQ, reporter="destination")
        assert subset(d, want | {"connection_security_policy": "mutual_tls"}) == {}

        # plaintext from outside the mesh straight to the server sidecar (PERMISSIVE, the default)
        async with httpx.AsyncClient(trust_env=False, timeout=10) as plain:
            for _ in range(3):
                r = await plain.get(f"http://{server.spec.ip}:9080/x")
                assert r.status_code == 200
        plain_want = {"reporter": "destination", "connection_security_policy": "none"}
        dst2 = await _counted(server, dst, 3, **plain_want)
        [p] = series(dst2, REQ, **plain_want)
        assert subset(p, {"source_workload": "unknown", "source_principal": "unknown",
                          "destination_principal": "unknown", "destination_workload": "reviews-v1"}) == {}
