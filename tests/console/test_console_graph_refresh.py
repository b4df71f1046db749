"""The console's refreshing pages in real Chromium against a real control plane, with Prometheus' HTTP API
faked at the console's seam (answers held and released by the test): the graph and its edge table always
show the same answer (switching the view once emptied the graph while the table kept the previous view's
rows, the demo test's flake); an answer that comes late for an earlier selection is dropped, the latest
selection's stays; the services page, too, drops a late answer for the namespace chosen before."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from browser import browser_page, needs_chromium
from test_console_browser import login_url

from mizzen.client import Document
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions

pytestmark = needs_chromium

HOST = "127.0.97.21"
# per window, the request rates (rps) productpage v1 sends to reviews v1 and v2: a window's answer is
# recognisable in the table
RATES = {"1m": (0.8, 0.2), "5m": (2.5, 2.5), "10m": (3.0, 7.0)}


def _sample(version: str, rate: float) -> dict[str, Any]:
    return {"metric": {
        "source_workload_namespace": "bookinfo", "source_workload": "productpage-v1",
        "source_app": "productpage", "source_version": "v1", "destination_service_namespace": "bookinfo",
        "destination_service_name": "reviews", "destination_workload_namespace": "bookinfo",
        "destination_workload": f"reviews-{version}", "destination_app": "reviews",
        "destination_version": version, "response_code": "200", "connection_security_policy": "mutual_tls"},
        "value": [time.time(), str(rate)]}


class FakePrometheus:
    """``/api/v1/query``: the destination-reported request rates of :data:`RATES` for the query's window,
    nothing for the other queries; a query containing a key of :attr:`held` waits until it is released."""

    def __init__(self) -> None:
        self.held: dict[str, asyncio.Event] = {}
        self.answered: list[str] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def query(self, request: web.Request) -> web.Response:
        q = request.query.get("query", "")
        for key, gate in list(self.held.items()):
            if key in q:
                await gate.wait()
        m = re.search(r"\[(\d+m)\]", q)
        result = []
        if m and q.startswith("sum") and 'reporter="destination",destination_workload_namespace' in q:
            v1, v2 = RATES[m.group(1)]
            result = [_sample("v1", v1), _sample("v2", v2)]
        self.answered.append(q)
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})

    def answered_with(self, key: str) -> int:
        return sum(key in q for q in self.answered)

    def hold(self, key: str) -> None:
        self.held[key] = asyncio.Event()

    def release(self, key: str) -> None:
        self.held.pop(key).set()

    def release_all(self) -> None:
        for key in list(self.held):
            self.release(key)

    async def __aenter__(self) -> FakePrometheus:
        app = web.Application()
        app.router.add_get("/api/v1/query", self.query)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, HOST, 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://{HOST}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release_all()
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
async def prometheus() -> AsyncIterator[FakePrometheus]:
    async with FakePrometheus() as p:
        yield p


@pytest.fixture
async def cp(tmp_path: Path, prometheus: FakePrometheus) -> AsyncIterator[ControlPlane]:
    c = ControlPlane(ControlPlaneOptions(state_dir=tmp_path, xds_host=HOST, xds_port=0, http_host=HOST,
                                         http_port=0, prometheus_url=prometheus.url))
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


async def shown(page: Any) -> tuple[set[str], set[str], dict[str, str]]:
    """The graph's edges and the table's rows (edge id -> requests/s cell)."""
    graph = set(await page.evaluate("window.mizzenGraph ? window.mizzenGraph.edges().map(e => e.id()) : []"))
    rows = await page.evaluate("[...document.querySelectorAll('#graph-edges tbody tr')]"
                               ".map(r => [r.dataset.edge, r.cells[2].textContent])")
    return graph, {e for e, _ in rows}, dict(rows)


async def until(page: Any, check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, await shown(page)
        await page.wait_for_timeout(100)


async def test_graph_and_table_change_together_and_a_late_answer_is_dropped(
        cp: ControlPlane, prometheus: FakePrometheus) -> None:
    va = {f"va:bookinfo/productpage/v1->va:bookinfo/reviews/{v}" for v in ("v1", "v2")}
    app = "app:bookinfo/productpage->app:bookinfo/reviews"
    async with browser_page() as page:
        try:
            await page.goto(await login_url(cp))

            async def versioned_shown() -> bool:
                graph, table, _ = await shown(page)
                return graph == table == va
            await until(page, versioned_shown)

            # another view, its answer held: the graph and the table both still show the answer they came from
            prometheus.hold("[1m]")
            answered = prometheus.answered_with("[1m]")
            await page.select_option("#graph-view", "app")
            await page.wait_for_timeout(1000)
            assert prometheus.answered_with("[1m]") == answered   # still held
            graph, table, _ = await shown(page)
            assert graph == table == va, (graph, table)

            # two more selections, the last answered first: the earlier answers, released after, are dropped
            prometheus.hold("[5m]")
            await page.select_option("#graph-window", "5m")
            await page.select_option("#graph-window", "10m")

            async def ten_minutes_shown() -> bool:
                graph, table, rates = await shown(page)
                return graph == table == {app} and rates[app] == "10.00"
            await until(page, ten_minutes_shown)
            before = {w: prometheus.answered_with(w) for w in ("[1m]", "[5m]")}
            prometheus.release("[1m]")
            prometheus.release("[5m]")

            async def late_answers_sent() -> bool:
                # a graph is 4 queries
                return all(prometheus.answered_with(w) >= before[w] + 4 for w in before)
            await until(page, late_answers_sent)
            await page.wait_for_timeout(500)
            graph, table, rates = await shown(page)
            assert graph == table == {app} and rates[app] == "10.00", (graph, rates)
            assert await page.input_value("#graph-window") == "10m"
        finally:
            prometheus.release_all()   # nothing left waiting on an answer when the control plane stops


SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop-a}
spec: {selector: {app: web}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop-b}
spec: {selector: {app: api}, ports: [{name: http, port: 80}]}
"""


async def test_a_late_answer_for_another_namespace_is_dropped_on_the_services_page(
        cp: ControlPlane, prometheus: FakePrometheus) -> None:
    async with httpx.AsyncClient(base_url=cp.http_url, trust_env=False, timeout=10) as h:
        r = await h.post("/apis/apply", json={"documents": [Document("svc.yaml", SERVICES).to_json()]},
                         headers={"Authorization": f"Bearer {cp.token}"})
        assert r.status_code == 200, r.text
    a = 'destination_workload_namespace="shop-a"'

    async def rows() -> list[list[str]]:
        return list(await page.evaluate("[...document.querySelectorAll('#services-table tbody tr')]"
                                        ".map(r => [r.cells[0].textContent, r.cells[1].textContent])"))

    async def choose(namespace: str) -> None:
        await page.fill("#namespace", namespace)
        await page.dispatch_event("#namespace", "change")

    async with browser_page() as page:
        try:
            await page.goto(await login_url(cp))
            await page.click("a[data-page=services]")
            prometheus.hold(a)               # shop-a's health answer held
            await choose("shop-a")
            await choose("shop-b")           # answered at once

            async def shop_b_shown() -> bool:
                return await rows() == [["api", "shop-b"]]
            await until(page, shop_b_shown)
            assert prometheus.answered_with(a) == 0
            prometheus.release(a)

            async def late_answer_sent() -> bool:
                return prometheus.answered_with(a) >= 2      # the request total and the errors
            await until(page, late_answer_sent)
            await page.wait_for_timeout(500)
            assert await rows() == [["api", "shop-b"]]
        finally:
            prometheus.release_all()
