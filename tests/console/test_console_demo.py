"""The console on a real ``mizzen demo`` (real Envoys, real Prometheus scraping them, real Jaeger) in real
Chromium: opened with ``mizzen dashboard``'s one-time link, the graph shows Bookinfo's nodes and edges after
traffic, the seed's 80/20 canary reads about 80%/20% on the edges to reviews v1 and v2 (over mTLS), and a
trace of a ``/productpage`` request opens as a span tree through every proxy. Screenshots are kept."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator

import httpx
import pytest
from browser import browser_page, needs_chromium, screenshot
from demo_helpers import ROOT, Demo, free_port, run_demo, wait_all_targets_up

from mizzen.observe.jaeger import find_binary as find_jaeger
from mizzen.observe.prometheus import find_binary as find_prometheus

pytestmark = [pytest.mark.e2e, needs_chromium,
              pytest.mark.skipif(find_prometheus() is None, reason="needs Debian's prometheus (./run test "
                                                                   "installs it as root)"),
              pytest.mark.skipif(find_jaeger() is None, reason="no Jaeger build (tools/jaeger/build.sh)")]

NET = ROOT / "tests" / "fixtures" / "istio" / "samples" / "bookinfo" / "networking"
PAGES = 300


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    jaeger = f"127.0.{16 + secrets.randbelow(200)}.{2 + secrets.randbelow(250)}"
    with run_demo(tmp_path_factory.mktemp("demo-console-state"), "--prometheus-port", str(free_port()),
                  "--scrape-interval", "1", "--jaeger-host", jaeger, "--trace-sampling", "100") as d:
        d.mizzen("apply", "-n", "bookinfo", "-f", str(NET / "destination-rule-all.yaml"))
        d.mizzen("apply", "-n", "bookinfo", "-f", str(NET / "virtual-service-reviews-80-20.yaml"))
        wait_all_synced(d)   # no page before the split is in force: the graph's window sees only 80/20
        with httpx.Client(trust_env=False, timeout=10) as c:   # traffic before a first scrape would not show
            wait_all_targets_up(c, d.mizzen("dashboard", "prometheus").stdout.strip())
        with httpx.Client(trust_env=False, timeout=20) as c:
            for _ in range(PAGES):
                assert c.get(f"{d.url}/productpage").status_code == 200
        yield d


def wait_all_synced(demo: Demo, timeout: float = 30) -> None:
    """Until every proxy has ACKed what it was last sent (the config just applied is in force)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=10,
                      headers={"Authorization": f"Bearer {demo.token}"}) as c:
        while True:
            time.sleep(0.5)      # past the push debounce
            sync = c.get(f"{demo.api}/debug/syncz").json()
            states = {t.get("status") for p in sync for t in (p.get("types") or {}).values()}
            if sync and states <= {"SYNCED", "NOT SENT"}:
                return
            assert time.monotonic() < deadline, states


def console_link(demo: Demo) -> str:
    out = demo.mizzen("dashboard", "--no-browser").stdout
    m = re.search(r"Console: (http://\S+/console/login\?ticket=\S+)", out)
    assert m, out
    return m.group(1)


async def test_graph_shows_bookinfo_and_the_canary_split(demo: Demo) -> None:
    async with browser_page() as page:
        await page.goto(console_link(demo))
        assert page.url.endswith("/console/")
        await page.select_option("#graph-view", "versionedApp")
        await page.select_option("#graph-window", "5m")
        v1 = 'tr[data-edge="va:bookinfo/productpage/v1->va:bookinfo/reviews/v1"]'
        v2 = 'tr[data-edge="va:bookinfo/productpage/v1->va:bookinfo/reviews/v2"]'
        expected = {"va:bookinfo/productpage/v1", "va:bookinfo/details/v1", "va:bookinfo/reviews/v1",
                    "va:bookinfo/reviews/v2", "va:bookinfo/ratings/v1"}

        async def graph_nodes() -> set[str]:
            if not await page.evaluate("!!window.mizzenGraph"):
                return set()
            return set(await page.evaluate("window.mizzenGraph.nodes().map(n => n.id())"))

        # Prometheus scrapes every second; the page refreshes every 5 s, and the table and the graph come from
        # one answer (test_console_graph_refresh): until they show the view and window just selected
        deadline = time.monotonic() + 60
        while not (await page.locator(v1).count() and await page.locator(v2).count()
                   and expected <= await graph_nodes()):
            assert time.monotonic() < deadline, (await page.inner_text("#page-graph"), await graph_nodes())
            await page.wait_for_timeout(1000)
        edges = set(await page.evaluate("window.mizzenGraph.edges().map(e => e.id())"))
        assert "va:bookinfo/reviews/v2->va:bookinfo/ratings/v1" in edges, edges
        share1 = float((await page.locator(f"{v1} td.share").inner_text()).rstrip("%"))
        share2 = float((await page.locator(f"{v2} td.share").inner_text()).rstrip("%"))
        assert 70 <= share1 <= 90 and 10 <= share2 <= 30, (share1, share2)
        assert abs(share1 + share2 - 100) < 0.5
        # sidecar to sidecar is mutual TLS in the demo: the edge carries the lock
        assert "\U0001F512" in await page.locator(f"{v1} td").nth(6).inner_text()
        await screenshot(page, "graph-canary")


async def test_a_trace_opens_as_a_span_tree(demo: Demo) -> None:
    async with browser_page() as page:
        await page.goto(console_link(demo))
        await page.click("a[data-page=traces]")
        deadline = time.monotonic() + 60     # Envoy's Zipkin reporter flushes every few seconds
        service = ""
        while not service:
            options = await page.evaluate(
                "[...document.querySelectorAll('#trace-service option')].map(o => o.value)")
            service = next((o for o in options if o.startswith("productpage")), "")
            if not service:
                assert time.monotonic() < deadline, options
                await page.reload()
                await page.click("a[data-page=traces]")
                await page.wait_for_timeout(1000)
        await page.select_option("#trace-service", service)
        # the newest traces may still miss spans Envoy has not flushed yet: open the fullest one
        while True:
            await page.click("#trace-find")
            await page.locator("#traces-table tbody tr").first.wait_for()
            counts = await page.evaluate(
                "[...document.querySelectorAll('#traces-table tbody tr')].map(r => +r.cells[2].textContent)")
            if max(counts) >= 5:
                break
            assert time.monotonic() < deadline, counts
            await page.wait_for_timeout(2000)
        await page.locator("#traces-table tbody tr").nth(counts.index(max(counts))).click()
        spans = page.locator("#trace-detail .span-row")
        await spans.first.wait_for()
        services = set(await page.evaluate(
            "[...document.querySelectorAll('#trace-detail .span-row')].map(r => r.dataset.service)"))
        assert any(s.startswith("productpage") for s in services), services
        assert any(s.startswith(("details", "reviews")) for s in services), services
        await screenshot(page, "trace")
