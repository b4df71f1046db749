"""North-south end to end through a real gateway Envoy: the seed's 4.2 publishing (exact/prefix matches,
host matching), 4.3 redirect and rewrite, and section 5's nginx Ingress rules as Gateway + VirtualServices.
"""

from __future__ import annotations

import pytest
from e2e_world import NS, bookinfo_world, seed

import seed_checks
from harness import Mesh, eventually

pytestmark = pytest.mark.e2e

HOST = {"Host": "bookinfo.kubeasy.com"}


async def test_seed_gateway_publishing_and_host_matching(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh)
    gw = await mesh.gateway()
    await mesh.apply_yaml(seed("bookinfo-gateway.yaml"), namespace=NS)     # Gateway for port 80 -> 8080
    await mesh.wait_synced()
    page = world.backends["productpage-v1"]

    async def published() -> None:
        async with mesh.gateway_client(gw) as c:
            for path in seed_checks.PUBLISHED_PATHS:
                r = await c.get(path, headers=HOST)
                assert r.status_code == 200, (path, r.status_code)
                assert r.json()["service"] == "productpage" and r.json()["path"] == path
    await eventually(published)

    async with mesh.gateway_client(gw) as c:
        assert (await c.get("/productpage/extra", headers=HOST)).status_code == 404   # exact, not prefix
        assert (await c.get("/details/0", headers=HOST)).status_code == 404           # no rule
        assert (await c.get("/productpage", headers={"Host": "other.example.com"})).status_code == 404
        assert (await c.get("/productpage", headers={"Host": "bookinfo.kubeasy.com:8080"})).status_code == 200
    assert page.requests >= 6


async def test_seed_redirect_and_rewrite(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh)
    gw = await mesh.gateway()
    await mesh.apply_yaml(seed("bookinfo-gateway.yaml"), namespace=NS)
    await mesh.apply_yaml(seed("bookinfo-vs-redirect-rewrite.yaml"), namespace=NS)
    await mesh.wait_synced()

    async def redirected() -> None:
        async with mesh.gateway_client(gw) as c:
            r = await c.get("/yunwei", headers=HOST)
            seed_checks.redirected(r.status_code, r.headers.get("location"))
            r = await c.get("/yunwei/anything", headers=HOST)      # prefix match
            assert r.status_code == 301
    await eventually(redirected)

    async with mesh.gateway_client(gw) as c:
        r = await c.get("/", headers=HOST)
    assert r.status_code == 200 and r.json()["path"] == "/productpage"     # rewrite exact / -> /productpage
    assert world.backends["productpage-v1"].paths[-1] == "/productpage"


DEMO_SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: order}
spec: {ports: [{port: 80, name: http, targetPort: 8080}], selector: {app: demo-order}}
---
apiVersion: v1
kind: Service
metadata: {name: demo-receive}
spec: {ports: [{port: 8080, name: http}], selector: {app: demo-receive}}
---
apiVersion: v1
kind: Service
metadata: {name: demo-ui}
spec: {ports: [{port: 80, name: http}], selector: {app: demo-ui}}
"""


async def test_seed_section5_ingress_rewritten_as_gateway(mesh: Mesh) -> None:
    await mesh.apply_yaml(DEMO_SERVICES, namespace="demo")
    order = await mesh.backend("order", namespace="demo", port=8080,
                               labels={"app": "demo-order", "version": "v1"})
    receive = await mesh.backend("demo-receive", namespace="demo", port=8080,
                                 labels={"app": "demo-receive", "version": "v1"})
    ui = await mesh.backend("demo-ui", namespace="demo", port=80, labels={"app": "demo-ui", "version": "v1"})
    gw = await mesh.gateway()
    for f in ("demo-gateway.yaml", "demo-order-vs.yaml", "demo-receive-vs.yaml", "demo-ui-vs.yaml"):
        await mesh.apply_yaml(seed(f), namespace="demo", file=f)
    await mesh.wait_synced()
    host = {"Host": "demo.test.com"}

    async def routed() -> None:
        async with mesh.gateway_client(gw) as c:
            r = await c.get("/orders", headers=host)
            assert r.status_code == 200 and r.json()["service"] == "order", r.text
    await eventually(routed)
    async with mesh.gateway_client(gw) as c:
        r = await c.get("/orders/7", headers=host)
        assert r.json()["service"] == "order" and r.json()["path"] == "/orders/7"
        r = await c.get("/receiveapi/messages?x=1", headers=host)        # prefix /receiveapi/ rewritten to /
        assert r.json()["service"] == "demo-receive" and r.json()["path"] == "/messages?x=1"
        r = await c.get("/", headers=host)
        assert r.json()["service"] == "demo-ui" and r.json()["path"] == "/"
        r = await c.get("/index.html", headers=host)
        assert r.json()["service"] == "demo-ui"
        assert (await c.get("/orders", headers={"Host": "nope.test.com"})).status_code == 404
    assert order.requests >= 2 and receive.paths == ["/messages?x=1"] and ui.requests == 2
