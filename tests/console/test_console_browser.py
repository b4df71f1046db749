"""The console in real Chromium against a real control plane: it loads with a one-time login link minted
with the token, its session cookie is invisible to scripts, an object with an analyzer finding shows it, the
YAML view opens; without a ticket the console is refused; a page on another origin cannot change anything."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from browser import browser_page, needs_chromium, screenshot

from mizzen.client import Document
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions

pytestmark = needs_chromium

HOST = "127.0.97.11"
EVIL = "127.0.97.12"
CONFIG = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v9}
"""


@pytest.fixture
async def cp(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    opts = ControlPlaneOptions(state_dir=tmp_path, xds_host=HOST, xds_port=0, http_host=HOST, http_port=0)
    c = ControlPlane(opts)
    await c.start()
    try:
        async with httpx.AsyncClient(base_url=c.http_url, trust_env=False, timeout=10) as h:
            r = await h.post("/apis/apply", json={"documents": [Document("reviews.yaml", CONFIG).to_json()]},
                             headers={"Authorization": f"Bearer {c.token}"})
            assert r.status_code == 200, r.text
        yield c
    finally:
        await c.stop()


async def login_url(cp: ControlPlane) -> str:
    async with httpx.AsyncClient(base_url=cp.http_url, trust_env=False, timeout=10) as h:
        r = await h.post("/apis/login-tickets", json={}, headers={"Authorization": f"Bearer {cp.token}"})
        assert r.status_code == 200
        return f"{cp.http_url}{r.json()['path']}"


async def test_console_loads_with_its_ticket_and_shows_findings(cp: ControlPlane) -> None:
    async with browser_page() as page:
        await page.goto(await login_url(cp))
        assert page.url == f"{cp.http_url}/console/"
        assert "mizzen-console" not in await page.evaluate("document.cookie")   # HttpOnly
        await page.click("a[data-page=config]")
        row = page.locator('tr[data-object="VirtualService/bookinfo/reviews"]')
        await row.wait_for()
        assert "IST0101" in await row.locator("td.findings").inner_text()
        await row.click()
        assert "subset: v9" in await page.locator("#config-yaml").inner_text()
        await screenshot(page, "config-findings")
        await page.click("a[data-page=graph]")
        # no Prometheus configured here: the graph says so instead of showing nothing
        await page.wait_for_function(
            "document.querySelector('#graph-message').textContent.includes('Prometheus')")
        await screenshot(page, "graph-without-prometheus")


async def test_console_without_a_ticket_is_refused(cp: ControlPlane) -> None:
    async with browser_page() as page:
        resp = await page.goto(f"{cp.http_url}/console/")
        assert resp is not None and resp.status == 401
        resp = await page.goto(f"{cp.http_url}/console/login?ticket=guess")
        assert resp is not None and resp.status == 401
        assert "mizzen dashboard" in await page.inner_text("body")


async def test_a_page_on_another_origin_cannot_change_anything(cp: ControlPlane) -> None:
    target = cp.http_url
    attack = f"""<!doctype html><script>
      const body = JSON.stringify({{documents: [{{file: "x.yaml",
        text: "apiVersion: v1\\nkind: Namespace\\nmetadata: {{name: pwned}}\\n"}}]}});
      Promise.allSettled([
        fetch("{target}/apis/apply", {{method: "POST", credentials: "include", body,
                                        headers: {{"Content-Type": "application/json"}}}}),
        fetch("{target}/apis/apply", {{method: "POST", credentials: "include", mode: "no-cors", body,
                                        headers: {{"Content-Type": "text/plain"}}}}),
      ]).then(() => {{ document.title = "done"; }});
    </script>"""
    async def serve(_request: web.Request) -> web.Response:
        return web.Response(text=attack, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, EVIL, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with browser_page() as page:
            await page.goto(await login_url(cp))          # the victim is logged in to the console
            await page.goto(f"http://{EVIL}:{port}/")
            await page.wait_for_function("document.title === 'done'")
        async with httpx.AsyncClient(base_url=cp.http_url, trust_env=False, timeout=10) as h:
            r = await h.get("/apis/objects?kind=Namespace", headers={"Authorization": f"Bearer {cp.token}"})
            assert "pwned" not in r.text
    finally:
        await runner.cleanup()
