"""End to end: the runner starts Bookinfo from bookinfo.yaml with real Envoy sidecars (mizzen.agent) against
an in-process ControlPlane; productpage, reached through its own sidecar and through another pod's http_proxy
listener, renders details and reviews from a reviews version (which called ratings through the mesh).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from runner_helpers import private_nets

from harness import Mesh, eventually
from mizzen.agent.envoy import AgentOptions
from mizzen.bookinfo import MANIFEST
from mizzen.runner import AgentSidecars, InProcessRegistrar, LocalRunner

pytestmark = pytest.mark.e2e


@pytest.fixture
async def bookinfo() -> AsyncIterator[tuple[Mesh, LocalRunner]]:
    async with Mesh() as mesh:
        result = mesh.cp.api.loader(MANIFEST.read_text(), str(MANIFEST), "bookinfo")
        assert not result.errors
        mesh.cp.store.apply(result.configs)
        pod_net, app_net = private_nets()
        runner = LocalRunner(
            InProcessRegistrar(mesh.cp),
            sidecars=AgentSidecars("127.0.0.1", mesh.cp.xds_port, AgentOptions(concurrency=1)),
            pod_net=pod_net, app_net=app_net, grace_s=2.0,
        )
        try:
            await runner.apply(result.configs)
            await runner.wait_ready(60)
            await mesh.wait_synced(10)
            yield mesh, runner
        finally:
            await runner.stop()


async def test_productpage_through_sidecars(bookinfo: tuple[Mesh, LocalRunner]) -> None:
    mesh, runner = bookinfo
    pods = runner.status()
    assert len(pods) == 6
    assert all(p.sidecar == "running" and p.ready_count == "2/2" for p in pods), pods
    workloads = {w.name for w in mesh.cp.registry.workloads()}
    assert {p.name for p in pods} <= workloads
    pp = runner.pods("bookinfo", app="productpage")[0]

    async def page_with_reviews() -> str:
        # inbound: the sidecar's listener on <pod ip>:9080 forwards to the app on its app host
        async with httpx.AsyncClient(trust_env=False, timeout=10) as c:
            r = await c.get(f"http://{pp.pod_ip}:9080/productpage")
        assert r.status_code == 200, r.text
        assert "Book Details" in r.text and "Book Reviews" in r.text, r.text
        return r.text

    html = await eventually(page_with_reviews, timeout=20)
    served_by = re.search(r"<u>(reviews-v[123]-[a-z0-9]+-[a-z0-9]+)</u>", html)
    assert served_by, html
    version = served_by.group(1).split("-")[1]
    if version == "v1":
        assert "glyphicon-star" not in html
    else:
        color = "black" if version == "v2" else "red"
        assert f'<font color="{color}">' in html and "glyphicon glyphicon-star" in html

    # outbound: from the details pod's sidecar http_proxy, by service name, like an app would
    details = runner.pods("bookinfo", app="details")[0]
    async with httpx.AsyncClient(proxy=f"http://{details.pod_ip}:15080", trust_env=False, timeout=10) as c:
        seen = set()
        for _ in range(60):
            r = await c.get("http://reviews:9080/reviews/0")
            assert r.status_code == 200
            seen.add(r.json()["podname"].split("-")[1])
            if len(seen) == 3:
                break
    assert seen == {"v1", "v2", "v3"}      # load balanced (LEAST_REQUEST) over the three reviews pods
    async with httpx.AsyncClient(proxy=f"http://{details.pod_ip}:15080", trust_env=False, timeout=10) as c:
        v3 = runner.pods("bookinfo", app="reviews", version="v3")[0]
        for _ in range(60):
            body = (await c.get("http://reviews:9080/reviews/0")).json()
            if body["podname"] == v3.name:
                # reviews-v3 reached ratings through its own sidecar
                assert body["reviews"][0]["rating"] == {"stars": 5, "color": "red"}
                break
        else:
            raise AssertionError("reviews-v3 never answered")


async def test_envoy_crash_is_restarted_and_surfaced(bookinfo: tuple[Mesh, LocalRunner]) -> None:
    mesh, runner = bookinfo
    ratings = runner.pods("bookinfo", app="ratings")[0]
    assert ratings.sidecar_pid is not None
    before = ratings.sidecar_restarts
    os.kill(ratings.sidecar_pid, signal.SIGKILL)

    async def restarted() -> None:
        (s,) = [p for p in runner.status() if p.name == ratings.name]
        assert s.sidecar_restarts == before + 1 and s.sidecar == "running" and s.registered
        assert s.sidecar_pid not in (None, ratings.sidecar_pid)

    await eventually(restarted, timeout=20)
    await mesh.wait_synced(10)

    async def serves() -> None:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
            r = await c.get(f"http://{ratings.pod_ip}:9080/ratings/0")
        assert r.json()["ratings"] == {"Reviewer1": 5, "Reviewer2": 4}

    await eventually(serves, timeout=20)


async def test_ingress_gateway_serves_bookinfo(bookinfo: tuple[Mesh, LocalRunner]) -> None:
    mesh, runner = bookinfo
    gateway_yaml = Path("tests/fixtures/istio/samples/bookinfo/networking/bookinfo-gateway.yaml").read_text()
    await mesh.apply_yaml(gateway_yaml, namespace="bookinfo")      # Gateway server port 8080
    host = runner.addresses.allocate((18080,), sidecar=False).pod_ip
    gw = await runner.start_gateway(host, 18080, tls_port=18443, xds_port=mesh.cp.xds_port)
    assert gw.spec.labels["istio"] == "ingressgateway" and gw.spec.namespace == "istio-system"
    assert any(s.deployment == "istio-ingressgateway" and s.ready for s in runner.status())
    await mesh.wait_synced(10)

    async def page() -> str:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as c:
            r = await c.get(f"http://{host}:18080/productpage")
        assert r.status_code == 200 and "Book Reviews" in r.text, r.text
        return r.text

    await eventually(page, timeout=20)
    async with httpx.AsyncClient(trust_env=False, timeout=10) as c:
        # /details is not routed by the VirtualService
        assert (await c.get(f"http://{host}:18080/details/0")).status_code == 404
        assert (await c.get(f"http://{host}:18080/api/v1/products")).json()[0]["id"] == 0


NETWORKING = Path("tests/fixtures/istio/samples/bookinfo/networking")


async def test_istio_tasks_request_routing_and_fault_injection(bookinfo: tuple[Mesh, LocalRunner]) -> None:
    """Istio's request-routing task (jason -> reviews v2 black stars, others v3 red) and its fault-injection
    task (7 s ratings delay for jason: productpage's 3 s timeout, tried twice, shows the reviews error)."""
    mesh, runner = bookinfo
    for f in ("destination-rule-all.yaml", "virtual-service-reviews-jason-v2-v3.yaml"):
        await mesh.apply_yaml((NETWORKING / f).read_text(), namespace="bookinfo")
    await mesh.wait_synced(10)
    pp = runner.pods("bookinfo", app="productpage")[0]
    base = f"http://{pp.pod_ip}:9080"
    async with httpx.AsyncClient(trust_env=False, timeout=15) as anon, \
            httpx.AsyncClient(trust_env=False, timeout=15) as jason:
        r = await jason.post(f"{base}/login", data={"username": "jason"},
                             headers={"Referer": f"{base}/productpage"})
        assert r.status_code == 302

        async def routed() -> None:
            for _ in range(3):
                a = (await anon.get(f"{base}/productpage")).text
                assert '<font color="red">' in a and "black" not in a, a
                j = (await jason.get(f"{base}/productpage")).text
                assert '<font color="black">' in j and "jason" in j, j

        await eventually(routed, timeout=20)

        await mesh.apply_yaml((NETWORKING / "virtual-service-ratings-test-delay.yaml").read_text(),
                              namespace="bookinfo")
        await mesh.wait_synced(10)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        j = (await jason.get(f"{base}/productpage")).text
        took = loop.time() - t0
        assert "Sorry, product reviews are currently unavailable for this book." in j
        assert 5.5 < took < 9.0                 # two 3 s attempts, like Istio's documented outcome
        a = (await anon.get(f"{base}/productpage")).text
        assert '<font color="red">' in a        # only jason is delayed
