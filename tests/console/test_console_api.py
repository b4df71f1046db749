"""The console's login and its place behind the API guard, on a real control plane over real HTTP: a
ticket minted with the token opens a session cookie (HttpOnly, SameSite=Strict) that reads the API; without
it everything but the login is refused; a session cannot mint tickets or write cross-site; a ticket works
once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mizzen.console.sessions import COOKIE
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions

HOST = "127.0.97.1"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def cp(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    opts = ControlPlaneOptions(state_dir=tmp_path, xds_host=HOST, xds_port=0, http_host=HOST, http_port=0)
    c = ControlPlane(opts)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


def ck(session: str, **headers: str) -> dict[str, str]:
    """Request headers presenting the session cookie (and ``headers``)."""
    return {"Cookie": f"{COOKIE}={session}", **headers}


def _client(cp: ControlPlane) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=cp.http_url, trust_env=False, timeout=10)


async def _login(cp: ControlPlane, c: httpx.AsyncClient) -> str:
    r = await c.post("/apis/login-tickets", json={}, headers={"Authorization": f"Bearer {cp.token}"})
    assert r.status_code == 200, r.text
    r = await c.get(r.json()["path"])
    assert r.status_code == 303 and r.headers["location"] == "/console/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    return str(r.cookies[COOKIE])


async def test_ticket_opens_a_session_that_reads_the_api(cp: ControlPlane) -> None:
    async with _client(cp) as c:
        session = await _login(cp, c)
        r = await c.get("/console/", headers=ck(session))
        assert r.status_code == 200 and "cytoscape" in r.text
        assert r.headers["x-frame-options"] == "DENY"
        r = await c.get("/apis/objects", headers=ck(session))
        assert r.status_code == 200 and "items" in r.json()
        r = await c.get("/console/api/status", headers=ck(session))
        assert r.json()["prometheus"] is None and "Prometheus" in r.json()["hint"]
        r = await c.get("/console/api/graph", headers=ck(session))
        assert r.status_code == 503 and "Prometheus" in r.json()["error"]


async def test_without_a_session_the_console_is_refused(cp: ControlPlane) -> None:
    async with _client(cp) as c:
        for path in ("/console/", "/console/static/console.js", "/console/api/graph", "/apis/objects"):
            r = await c.get(path)
            assert r.status_code == 401, path
        r = await c.get("/apis/objects", headers=ck("forged"))
        assert r.status_code == 401
        r = await c.get("/console/login?ticket=forged")
        assert r.status_code == 401 and "mizzen dashboard" in r.text
        assert COOKIE not in r.cookies


async def test_ticket_is_single_use(cp: ControlPlane) -> None:
    async with _client(cp) as c:
        r = await c.post("/apis/login-tickets", json={}, headers={"Authorization": f"Bearer {cp.token}"})
        path = r.json()["path"]
        assert (await c.get(path)).status_code == 303
        assert (await c.get(path)).status_code == 401


async def test_a_session_cannot_mint_tickets_or_write_cross_site(cp: ControlPlane) -> None:
    async with _client(cp) as c:
        session = await _login(cp, c)
        r = await c.post("/apis/login-tickets", json={}, headers=ck(session))
        assert r.status_code == 401
        ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n"
        body = {"documents": [{"file": "x.yaml", "text": ns}]}
        r = await c.post("/apis/apply", json=body, headers=ck(session, Origin="http://evil.example"))
        assert r.status_code == 403
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        r = await c.post("/apis/apply", content="x=1", headers=ck(session, **form))
        assert r.status_code == 415
        r = await c.post("/console/logout", json={}, headers=ck(session))
        assert r.status_code == 200
        assert (await c.get("/apis/objects", headers=ck(session))).status_code == 401


async def test_static_paths_cannot_escape(cp: ControlPlane) -> None:
    async with _client(cp) as c:
        session = await _login(cp, c)
        for path in ("/console/static/../app.py", "/console/static/%2e%2e/app.py", "/console/static/nope.js"):
            r = await c.get(path, headers=ck(session))
            assert r.status_code == 404, path
