"""The README's walk of Istio's authorization and JWT tasks, with the same policy files
(tests/fixtures/authz), through a real ingress gateway and sidecars that have workload identities from the
control plane's CA and talk auto mTLS, as the demo's (``Mesh(identities=True)``, Bookinfo's service
accounts): deny-all, allow productpage GET, details/reviews by the caller's principal (productpage's GET
passes, its POST and another workload's GET are denied), ratings by reviews' principal, deny by header,
ipBlocks at the ingress gateway, JWT at the ingress gateway with Istio's sample JWKS served locally."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from authz_kit import DEMO_JWT, JWKS
from test_authz_jwt import TAMPERED

from harness import Mesh, eventually, free_port
from mizzen.agent.envoy import Agent
from mizzen.registry.model import ISTIO_TLS_MODE, TLS_MODE_LABEL

pytestmark = pytest.mark.e2e

NS = "bookinfo"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
AUTHZ = FIXTURES / "authz"
GATEWAY = FIXTURES / "istio" / "samples" / "bookinfo" / "networking" / "bookinfo-gateway.yaml"
SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: productpage, labels: {app: productpage}}
spec: {ports: [{port: 9080, name: http}], selector: {app: productpage}}
---
apiVersion: v1
kind: Service
metadata: {name: details, labels: {app: details}}
spec: {ports: [{port: 9080, name: http}], selector: {app: details}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, labels: {app: reviews}}
spec: {ports: [{port: 9080, name: http}], selector: {app: reviews}}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, labels: {app: ratings}}
spec: {ports: [{port: 9080, name: http}], selector: {app: ratings}}
"""


def fixture(name: str) -> str:
    return (AUTHZ / name).read_text()


@pytest.fixture
async def jwks_port() -> AsyncIterator[int]:
    """``python3 -m http.server 8000`` of the README, on a free port of 127.0.0.1."""
    port = free_port()
    app = web.Application()

    async def jwks(_: web.Request) -> web.Response:
        return web.Response(text=JWKS, content_type="application/json")
    app.router.add_get("/jwks.json", jwks)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    """A mesh whose proxies have identities (CA, SDS, auto mTLS), as ``mizzen demo`` runs them."""
    async with Mesh(identities=True) as m:
        yield m


async def test_istio_authorization_tasks_on_bookinfo(mesh: Mesh, jwks_port: int) -> None:
    await mesh.apply_yaml(SERVICES, namespace=NS)
    await mesh.apply_yaml(GATEWAY.read_text(), namespace=NS)
    for app in ("productpage", "details", "reviews", "ratings"):   # injected pods, Bookinfo's accounts
        await mesh.backend(app, namespace=NS, sidecar=True, service_account=f"bookinfo-{app}",
                           labels={"app": app, "version": "v1", TLS_MODE_LABEL: ISTIO_TLS_MODE})
    caller = await mesh.sidecar(NS, "productpage-v1-caller", {"app": "productpage", "version": "v1"},
                                service_account="bookinfo-productpage")
    reviewer = await mesh.sidecar(NS, "reviews-v1-caller", {"app": "reviews", "version": "v1"},
                                  service_account="bookinfo-reviews")
    sleep = await mesh.sidecar(NS, "sleep-v1-caller", {"app": "sleep"}, service_account="sleep")
    gw = await mesh.gateway()
    await mesh.wait_synced(timeout=15)

    async def expect(status: int, path: str = "/productpage", method: str = "GET", body: str | None = None,
                     **headers: str) -> None:
        async def once() -> None:
            async with mesh.gateway_client(gw) as c:
                hs = {k.replace("_", "-"): v for k, v in headers.items()}
                r = await c.request(method, path, headers=hs)
            assert r.status_code == status, (path, method, headers, r.status_code, r.text)
            if body is not None:
                assert r.text == body
        await eventually(once, timeout=10, interval=0.2)

    def ns_of(text: str) -> str | None:     # the README: -n bookinfo, except for istio-system's files
        return None if "namespace: istio-system" in text else NS

    async def apply(name: str, text: str | None = None) -> None:
        text = text or fixture(name)
        await mesh.apply_yaml(text, namespace=ns_of(text))
        await mesh.wait_synced(timeout=15)

    async def delete(name: str, text: str | None = None) -> None:
        text = text or fixture(name)
        await mesh.delete_yaml(text, namespace=ns_of(text))
        await mesh.wait_synced(timeout=15)

    await expect(200)
    # 1. deny all, 2. allow GET on productpage
    await apply("allow-nothing.yaml")
    await expect(403, body="RBAC: access denied")
    await apply("productpage-viewer.yaml")
    await expect(200)
    await expect(403, method="POST")

    async def call(who: Agent, url: str, status: int, method: str = "GET") -> None:
        async def once() -> None:
            async with mesh.client_via(who) as c:
                r = await c.request(method, url)
            assert r.status_code == status, (url, method, r.status_code, r.text)
            if status == 403:
                assert r.text == "RBAC: access denied"
        await eventually(once, timeout=10, interval=0.2)

    await call(caller, "http://details:9080/details/0", 403)     # allow-nothing still covers details
    # 3. details/reviews by the caller's principal, which productpage's sidecar proves over mTLS
    await apply("details-reviews-viewer.yaml")
    for url in ("http://details:9080/details/0", "http://reviews:9080/reviews/0"):
        await call(caller, url, 200)
        await call(caller, url, 403, method="POST")
        await call(sleep, url, 403)                                # another principal
    # 4. ratings by reviews' principal
    ratings = "http://ratings:9080/ratings/0"
    await call(reviewer, ratings, 403)
    await apply("ratings-viewer.yaml")
    await call(reviewer, ratings, 200)
    await call(caller, ratings, 403)
    for name in ("ratings-viewer.yaml", "details-reviews-viewer.yaml", "productpage-viewer.yaml",
                 "allow-nothing.yaml"):
        await delete(name)

    # deny by header
    await apply("deny-header.yaml")
    await expect(403)
    await expect(200, x_token="admin")
    await delete("deny-header.yaml")

    # ipBlocks at the ingress gateway: 1.2.3.4 and 5.6.7.0/24 only, then the local client too
    await apply("ingress-ipblocks.yaml")
    await expect(403, body="RBAC: access denied")
    await apply("", fixture("ingress-ipblocks.yaml").replace('"5.6.7.0/24"', '"5.6.7.0/24", "127.0.0.1"'))
    await expect(200)
    await delete("ingress-ipblocks.yaml")

    # JWT at the ingress gateway, the sample JWKS served on 127.0.0.1
    local = {name: fixture(name).replace("8000", str(jwks_port)) for name in ("jwks-server.yaml",
                                                                               "ingress-jwt.yaml")}
    await apply("", local["jwks-server.yaml"])
    await apply("", local["ingress-jwt.yaml"])
    await expect(403)
    await expect(200, authorization=f"Bearer {DEMO_JWT}")
    await expect(401, authorization=f"Bearer {TAMPERED}")
