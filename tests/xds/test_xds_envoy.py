"""The ADS server driving real Envoy 1.40 processes: sync, updates, NACKs, control-plane restarts; every test
runs on state-of-the-world and on delta ADS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from xds_harness import HOST, Harness
from xds_testlib import (
    NODE,
    Envoy,
    eds_cluster,
    free_port,
    listener,
    load_assignment,
    resources,
    route_config,
)

from mizzen.xds import NACKED, SYNCED, AdsServer, SnapshotCache, serve
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, ResourceSet

pytestmark = pytest.mark.e2e

ENVOY_HOST = "127.71.0.2"     # Envoy admin + listeners
BACKEND_HOST = "127.71.0.3"   # the upstream app
METADATA = {"NAMESPACE": "default", "LABELS": {"app": "t1"}}


@pytest.fixture
async def backend() -> AsyncIterator[tuple[str, int]]:
    async def hello(_req: web.Request) -> web.Response:
        return web.Response(text="hello from backend")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port(BACKEND_HOST)
    await web.TCPSite(runner, BACKEND_HOST, port).start()
    try:
        yield BACKEND_HOST, port
    finally:
        await runner.cleanup()


def mesh_config(backend: tuple[str, int], listen_port: int, *, body: str | None = None,
                regex: str | None = None) -> ResourceSet:
    """Listener -> RDS r1 -> EDS cluster "backend"; plus an orphan route and assignment nobody asks for."""
    r1 = route_config("r1", cluster=None if body else "backend", body=body, regex=regex)
    return resources(
        clusters=[eds_cluster("backend")],
        endpoints=[load_assignment("backend", [backend]), load_assignment("orphan", [backend])],
        listeners=[listener("http", ENVOY_HOST, listen_port, "r1")],
        routes=[r1, route_config("orphan", body="never")],
    )


async def get(url: str) -> str:
    async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
        r = await client.get(url)
        r.raise_for_status()
        return r.text


@pytest.fixture(params=["sotw", "delta"])
def delta(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "delta")


async def start_envoy(xds_port: int, delta: bool) -> Envoy:
    envoy = Envoy(NODE, HOST, xds_port, ENVOY_HOST, METADATA, delta=delta)
    envoy.start()
    await envoy.admin()
    return envoy


async def config_dump(envoy: Envoy) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
        r = await client.get(await envoy.admin() + "/config_dump?include_eds")
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out


async def envoy_stats(envoy: Envoy) -> dict[str, int]:
    async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
        r = await client.get(await envoy.admin() + "/stats?format=json&filter=^cluster\\.backend")
        r.raise_for_status()
        return {s["name"]: s["value"] for s in r.json()["stats"] if "value" in s}


async def wait_status(harness: Harness, type_url: str, want: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while harness.ads.status.type_state(NODE, type_url) != want:
        assert time.monotonic() < deadline, harness.ads.status.to_dict()
        await asyncio.sleep(0.02)


async def test_envoy_initial_sync_update_and_named_subscriptions(
        harness: Harness, backend: tuple[str, int], delta: bool) -> None:
    port = free_port(ENVOY_HOST)
    url = f"http://{ENVOY_HOST}:{port}/"
    harness.on_connect_snapshot = lambda _n: mesh_config(backend, port)
    assert harness.ads.port is not None
    envoy = await start_envoy(harness.ads.port, delta)
    try:
        await harness.ads.status.wait_synced([NODE], timeout=10)
        assert harness.connects == [(NODE, METADATA)]
        assert await get(url) == "hello from backend"
        doc = harness.ads.status.to_dict()
        assert {t: v["status"] for t, v in doc[0]["types"].items()} == {
            "CDS": SYNCED, "EDS": SYNCED, "LDS": SYNCED, "RDS": SYNCED}

        # named subscriptions: Envoy only got what it asked for
        dump = await config_dump(envoy)
        text = str(dump)
        assert "'r1'" in text and "orphan" not in text
        snap = harness.cache.get(NODE)
        assert snap is not None
        ps = harness.ads.status.proxy(NODE)
        assert ps is not None and ps.of(ENDPOINT).acked_version == snap.version(ENDPOINT)

        # an update is served within a second of set_snapshot
        t0 = time.monotonic()
        harness.cache.set_snapshot(NODE, mesh_config(backend, port, body="version two"))
        body = ""
        while time.monotonic() - t0 < 2.0:
            body = await get(url)
            if body == "version two":
                break
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - t0
        assert body == "version two" and elapsed < 1.0, (body, elapsed)
        await harness.ads.status.wait_synced([NODE], timeout=2)

        # a new EDS cluster: Envoy asks for its endpoints while warming it (a new name on the EDS stream)
        new = resources(
            clusters=[eds_cluster("backend"), eds_cluster("backend2")],
            endpoints=[load_assignment("backend", [backend]), load_assignment("backend2", [backend])],
            listeners=[listener("http", ENVOY_HOST, port, "r1")],
            routes=[route_config("r1", cluster="backend2")],
        )
        t0 = time.monotonic()
        harness.cache.set_snapshot(NODE, new)
        await harness.ads.status.wait_synced([NODE], timeout=2)
        assert time.monotonic() - t0 < 1.0
        assert await get(url) == "hello from backend"
        stats = await envoy_stats(envoy)
        assert stats.get("cluster.backend2.upstream_rq_total", 0) >= 1, stats
    finally:
        envoy.stop()
    for _ in range(100):
        if harness.disconnects:
            break
        await asyncio.sleep(0.02)
    assert harness.disconnects == [NODE]


async def test_envoy_nack_keeps_old_config(harness: Harness, backend: tuple[str, int], delta: bool) -> None:
    port = free_port(ENVOY_HOST)
    url = f"http://{ENVOY_HOST}:{port}/"
    harness.on_connect_snapshot = lambda _n: mesh_config(backend, port)
    assert harness.ads.port is not None
    envoy = await start_envoy(harness.ads.port, delta)
    try:
        await harness.ads.status.wait_synced([NODE], timeout=10)
        good = harness.cache.get(NODE)
        assert good is not None
        harness.cache.set_snapshot(NODE, mesh_config(backend, port, regex="(("))   # invalid RE2
        await wait_status(harness, ROUTE, NACKED)
        rds = harness.ads.status.to_dict()[0]["types"]["RDS"]
        assert rds["acked"] == good.version(ROUTE)
        assert "((" in rds["nack"]["message"] or "regex" in rds["nack"]["message"].lower(), rds["nack"]
        assert rds["nack"]["version"] == rds["sent"] != rds["acked"]
        assert harness.ads.status.type_state(NODE, CLUSTER) == SYNCED
        # Envoy keeps serving its last good route config
        for _ in range(5):
            assert await get(url) == "hello from backend"
        # the rejected config is not re-sent; a good one is
        nonce = rds["nonce"]
        await asyncio.sleep(0.3)
        assert harness.ads.status.to_dict()[0]["types"]["RDS"]["nonce"] == nonce
        harness.cache.set_snapshot(NODE, mesh_config(backend, port, body="fixed"))
        await harness.ads.status.wait_synced([NODE], timeout=3)
        assert await get(url) == "fixed"
        assert harness.ads.status.to_dict()[0]["types"]["RDS"]["nack"] is None
    finally:
        envoy.stop()


async def test_envoy_survives_control_plane_restart(backend: tuple[str, int], delta: bool) -> None:
    port = free_port(ENVOY_HOST)
    url = f"http://{ENVOY_HOST}:{port}/"
    cache1 = SnapshotCache()
    ads1 = AdsServer(cache1)
    gs1 = await serve(ads1, HOST, 0)
    assert ads1.port is not None
    xds_port = ads1.port
    cache1.set_snapshot(NODE, mesh_config(backend, port))
    envoy = await start_envoy(xds_port, delta)
    gs2 = None
    stop = asyncio.Event()
    results: list[tuple[float, str]] = []     # (when, outcome)

    async def request_loop() -> None:
        async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
            deadline = time.monotonic() + 30
            while not stop.is_set() and len(results) < 3000 and time.monotonic() < deadline:
                try:
                    r = await client.get(url)
                    outcome = r.text if r.status_code == 200 else f"HTTP {r.status_code}"
                    results.append((time.monotonic(), outcome))
                except httpx.HTTPError as e:
                    results.append((time.monotonic(), f"error {e!r}"))
                await asyncio.sleep(0.005)

    async def answered_since(t: float, n: int = 5) -> None:
        """Until ``n`` requests were answered after ``t`` (however slowly a loaded machine answers them)."""
        deadline = time.monotonic() + 15
        while sum(1 for when, _ in results if when > t) < n:
            assert time.monotonic() < deadline and not loop_task.done(), (len(results), t)
            await asyncio.sleep(0.02)

    try:
        await ads1.status.wait_synced([NODE], timeout=10)
        versions = cache1.get(NODE).versions()  # type: ignore[union-attr]
        started = time.monotonic()
        loop_task = asyncio.create_task(request_loop())
        await answered_since(started)                     # traffic before the restart
        await gs1.stop(0)
        down = time.monotonic()
        await answered_since(down)                        # and while no control plane is there
        # a new control plane with a fresh cache generating the same config (new objects) on the same port
        cache2 = SnapshotCache()
        ads2 = AdsServer(cache2)
        cache2.set_snapshot(NODE, mesh_config(backend, port))
        gs2 = await serve(ads2, HOST, xds_port)
        await ads2.status.wait_synced([NODE], timeout=10)
        assert cache2.get(NODE).versions() == versions  # type: ignore[union-attr]
        ps = ads2.status.proxy(NODE)
        assert ps is not None and ps.of(LISTENER).acked_version == versions[LISTENER]
        synced = time.monotonic()
        await answered_since(synced)                      # and after it resynced
        stop.set()
        await loop_task
        failures = [r for _, r in results if r != "hello from backend"]
        assert not failures, (len(results), failures[:5])
        assert await get(url) == "hello from backend"
    finally:
        stop.set()
        envoy.stop()
        await gs1.stop(0)
        if gs2 is not None:
            await gs2.stop(0)


async def test_two_envoys_share_nonces_and_flip_back_and_forth(
        harness: Harness, backend: tuple[str, int], delta: bool) -> None:
    """Two real Envoys sent the same content get the same nonce (one byte string written to both streams);
    content flipped A -> B -> A gets a new nonce each time and both proxies ACK every step."""
    other = NODE.replace("t1.default", "t2.default")
    ports = {NODE: free_port(ENVOY_HOST), other: free_port(ENVOY_HOST)}
    harness.on_connect_snapshot = lambda n: mesh_config(backend, ports[n])
    assert harness.ads.port is not None
    envoys = [await start_envoy(harness.ads.port, delta)]
    second = Envoy(other, HOST, harness.ads.port, ENVOY_HOST, METADATA, delta=delta)
    second.start()
    envoys.append(second)
    try:
        await second.admin()
        await harness.ads.status.wait_synced([NODE, other], timeout=10)
        seen: list[str] = []
        for body in ("A", "B", "A"):
            for node in (NODE, other):
                harness.cache.set_snapshot(node, mesh_config(backend, ports[node], body=body))
            await harness.ads.status.wait_synced([NODE, other], timeout=5)
            for node in (NODE, other):
                assert await get(f"http://{ENVOY_HOST}:{ports[node]}/") == body
            rds = [harness.ads.status.to_dict()[i]["types"]["RDS"] for i in (0, 1)]
            assert rds[0]["nonce"] == rds[1]["nonce"] and rds[0]["status"] == rds[1]["status"] == SYNCED
            seen.append(rds[0]["nonce"])
        assert len(set(seen)) == 3   # A again: a new nonce, not A's first one
    finally:
        for e in envoys:
            e.stop()
