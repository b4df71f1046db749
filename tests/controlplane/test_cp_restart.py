"""A control plane that dies and comes back (issue 8, item 1), with ``python -m mizzen.controlplane`` as a
real process and real Envoys: proxies reconnect within a second of its return (the bootstrap's short ADS
retry backoff), a restarted control plane holds xDS until the runner's complete workload set arrives (never
serving restored endpoints it has not reconciled), and the pieces a runner in another process relies on:
``PUT /apis/workloads``, the ``/apis/events`` feed, and ``/apis/pods`` forwarded to the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from harness import alloc_ip, free_port
from mizzen.agent.bootstrap import ProxySpec
from mizzen.agent.envoy import Agent, AgentOptions
from mizzen.auth.token import TOKEN_ENV, new_token
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.core.proxy import ProxyType

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: bookinfo}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: ratings}
"""
CLUSTER = "outbound|9080||ratings.bookinfo.svc.cluster.local"
TOKEN = new_token()                  # the control plane processes get it as $MIZZEN_TOKEN
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def workload(name: str, address: str) -> dict[str, Any]:
    return {"name": name, "namespace": "bookinfo", "address": address, "labels": {"app": "ratings"},
            "ports": {"http": 9080}}


class CpProcess:
    """``python -m mizzen.controlplane`` on fixed ports; its log goes to ``log``."""

    def __init__(self, state: Path, xds_port: int, http_port: int, *extra: str) -> None:
        self.argv = [sys.executable, "-m", "mizzen.controlplane", "--state-dir", str(state),
                     "--xds-port", str(xds_port), "--http-port", str(http_port), "--log-level", "INFO",
                     "--debounce-quiet", "0.01", *extra]
        self.log = state.parent / f"cp-{state.name}.log"
        self.url = f"http://127.0.0.1:{http_port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> float:
        """Start it; returns the monotonic time its ports were bound (its announce line)."""
        with self.log.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdout=asyncio.subprocess.PIPE, stderr=err, stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, TOKEN_ENV: TOKEN})
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        assert line.startswith(b"mizzen control plane:"), (line, self.log.read_text())
        return time.monotonic()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            await self.proc.wait()


@contextlib.asynccontextmanager
async def agents(xds_port: int, n: int) -> AsyncIterator[list[Agent]]:
    started: list[Agent] = []
    try:
        for i in range(n):
            ip = alloc_ip()
            spec = ProxySpec(ProxyType.SIDECAR, ip, "bookinfo", f"productpage-v1-{i}",
                             admin_port=free_port(ip), xds_port=xds_port,
                             labels={"app": "productpage", "version": "v1"})
            agent = Agent(spec, AgentOptions(concurrency=1))
            await agent.start(ready_timeout=None)
            started.append(agent)
        yield started
    finally:
        await asyncio.gather(*(a.stop() for a in started))


async def synced(api: httpx.AsyncClient, url: str, n: int) -> list[dict[str, Any]] | None:
    """The syncz entries once no push is pending (a debounced change) and all ``n`` proxies ACKed."""
    try:
        if (await api.get(f"{url}/debug/push_status")).json()["pending"]:
            return None
        syncz: list[dict[str, Any]] = (await api.get(f"{url}/debug/syncz")).json()
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return syncz if len(syncz) == n and all(p["synced"] for p in syncz) else None


async def until(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.01)


async def has_endpoints(agent: Agent, want: set[str]) -> bool:
    return await endpoints(agent) == want


async def endpoints(agent: Agent) -> set[str]:
    """The addresses Envoy has for the ratings cluster (admin /clusters)."""
    text = await agent.admin_get("/clusters")
    return {line.split("::")[1].rsplit(":", 1)[0] for line in text.splitlines()
            if line.startswith(f"{CLUSTER}::") and line.split("::")[2] == "cx_active"}


@pytest.mark.e2e
async def test_proxies_reconnect_within_a_second_of_the_return(tmp_path: Path) -> None:
    xds, http = free_port(), free_port()
    first = CpProcess(tmp_path / "state", xds, http)
    second = CpProcess(tmp_path / "state", xds, http)
    try:
        await first.start()
        async with httpx.AsyncClient(trust_env=False, timeout=5, headers=AUTH) as api, \
                agents(xds, 3) as proxies:
            r = await api.post(f"{first.url}/apis/apply", json={"documents": [{"text": SERVICE}]})
            assert r.status_code == 200, r.text
            await until("synced", lambda: synced(api, first.url, len(proxies)), 20)
            first.kill()
            await first.proc.wait()   # type: ignore[union-attr]
            # long enough for Envoy's default backoff (0.5 s doubling to 30 s) to be waiting seconds
            await asyncio.sleep(4)
            up = await second.start()
            await until("every proxy back and SYNCED", lambda: synced(api, second.url, len(proxies)), 10)
            took = time.monotonic() - up
    finally:
        await first.stop()
        await second.stop()
    print(f"3 Envoys reconnected and SYNCED {took:.2f} s after the control plane's return")
    assert took < 1.0, f"{took:.2f} s"


@pytest.mark.e2e
async def test_restarted_control_plane_serves_only_a_reconciled_registry(tmp_path: Path) -> None:
    xds, http = free_port(), free_port()
    a, b, c = alloc_ip(), alloc_ip(), alloc_ip()
    first = CpProcess(tmp_path / "state", xds, http)
    second = CpProcess(tmp_path / "state", xds, http, "--await-workload-sync", "30")
    try:
        await first.start()
        async with httpx.AsyncClient(trust_env=False, timeout=5, headers=AUTH) as api, \
                agents(xds, 1) as (proxy,):
            assert (await api.post(f"{first.url}/apis/apply",
                                   json={"documents": [{"text": SERVICE}]})).status_code == 200
            for name, ip in (("ratings-a", a), ("ratings-b", b)):
                r = await api.post(f"{first.url}/apis/workloads", json=workload(name, ip))
                assert r.status_code == 200, r.text
            await until("synced", lambda: synced(api, first.url, 1), 20)
            await until("a and b on the proxy", lambda: has_endpoints(proxy, {a, b}), 5)
            first.kill()
            await first.proc.wait()   # type: ignore[union-attr]
            await second.start()      # restores a and b from the state dir; the runner now runs a and c

            async def held() -> list[dict[str, Any]] | None:
                syncz: list[dict[str, Any]] = (await api.get(f"{second.url}/debug/syncz")).json()
                return syncz or None

            (entry,) = await until("the proxy reconnected", held, 5)
            await asyncio.sleep(0.5)
            (entry,) = (await api.get(f"{second.url}/debug/syncz")).json()
            assert not entry["synced"] and all(t["sent"] is None for t in entry["types"].values()), entry
            ready = await api.get(f"{second.url}/ready")
            assert ready.status_code == 503 and ready.json()["workloads_synced"] is False
            assert await endpoints(proxy) == {a, b}          # the last good config keeps serving meanwhile

            r = await api.put(f"{second.url}/apis/workloads",
                              json={"items": [workload("ratings-a", a), workload("ratings-c", c)]})
            assert r.json() == {"workloads": 2, "registered": 1, "removed": 1}, r.text
            await until("synced after the workload sync", lambda: synced(api, second.url, 1), 5)
            await until("a and c on the proxy", lambda: has_endpoints(proxy, {a, c}), 5)
            assert (await api.get(f"{second.url}/ready")).status_code == 200
            registered = {w["name"] for w in (await api.get(f"{second.url}/apis/workloads")).json()["items"]}
            assert registered == {"ratings-a", "ratings-c"}
            files = {p.stem for p in (tmp_path / "state" / "workloads" / "bookinfo").glob("*.json")}
            assert files == {"ratings-a", "ratings-c"}        # the next restart restores the reconciled set
    finally:
        await first.stop()
        await second.stop()


async def test_workload_sync_gate_opens_after_its_timeout() -> None:
    cp = ControlPlane(ControlPlaneOptions(xds_port=0, http_port=None, await_workload_sync_s=0.3))
    await cp.start()
    try:
        assert not cp.workloads_synced.is_set()
        t0 = time.monotonic()
        await asyncio.wait_for(cp.workloads_synced.wait(), 5)
        assert time.monotonic() - t0 >= 0.2
    finally:
        await cp.stop()


def client(cp: ControlPlane) -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, base_url=cp.http_url,
                             headers={"Authorization": f"Bearer {cp.token}"})


@contextlib.asynccontextmanager
async def control_plane(**kw: Any) -> AsyncIterator[ControlPlane]:
    cp = ControlPlane(ControlPlaneOptions(xds_port=0, http_port=0, debounce_quiet_s=0.01, **kw))
    await cp.start()
    try:
        yield cp
    finally:
        await cp.stop()


async def test_workload_sync_rejects_bad_bodies() -> None:
    async with control_plane() as cp, client(cp) as api:
        for body, want in (({"items": "x"}, "'items' must be a list"), ({"items": [1]}, "items[0] must be"),
                           ({"items": [{"name": "a"}]}, "items[0]: workload field 'namespace'")):
            r = await api.put("/apis/workloads", json=body)
            assert r.status_code == 400 and want in r.json()["error"], (body, r.text)
        assert cp.registry.workloads() == []


async def test_events_feed_long_polls_and_resets_on_another_epoch() -> None:
    async with control_plane() as cp, client(cp) as api:
        first = (await api.get("/apis/events")).json()
        assert first["reset"] and first["seq"] == 0 and first["events"] == []
        epoch = first["epoch"]
        t0 = time.monotonic()
        waiting = asyncio.create_task(api.get("/apis/events", params={"epoch": epoch, "since": 0,
                                                                       "timeout": 10}))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        r = await api.post("/apis/apply", json={"documents": [{"text": SERVICE}]})
        assert r.status_code == 200
        got = (await waiting).json()
        assert time.monotonic() - t0 < 5
        assert not got["reset"] and got["seq"] == 1
        assert got["events"] == [{"seq": 1, "kind": "Service", "namespace": "bookinfo", "name": "ratings",
                                  "action": "created"}]
        # unchanged objects make no event; a client of another control-plane process must list again
        await api.post("/apis/apply", json={"documents": [{"text": SERVICE}]})
        quiet = (await api.get("/apis/events", params={"epoch": epoch, "since": 1, "timeout": 0.2})).json()
        assert quiet == {"epoch": epoch, "seq": 1, "events": [], "reset": False}
        other = (await api.get("/apis/events", params={"epoch": "gone", "since": 1})).json()
        assert other["reset"] and other["epoch"] == epoch
        bad = await api.get("/apis/events", params={"timeout": "nan"})
        assert bad.status_code == 400


async def test_pods_are_forwarded_to_the_runner_api() -> None:
    seen: list[str] = []

    auth: list[str | None] = []

    async def pods(request: web.Request) -> web.Response:
        seen.append(str(request.rel_url))
        auth.append(request.headers.get("Authorization"))
        return web.json_response({"items": [{"name": "ratings-v1-abc", "namespace": "bookinfo"}]})

    app = web.Application()
    app.router.add_get("/apis/pods", pods)
    app.router.add_get("/apis/pods/{tail:.*}", pods)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with control_plane(pods_url=f"http://127.0.0.1:{port}") as cp, \
                client(cp) as api:
            r = await api.get("/apis/pods", params={"namespace": "bookinfo"})
            assert r.status_code == 200 and r.json()["items"][0]["name"] == "ratings-v1-abc"
            r = await api.get("/apis/pods/bookinfo/ratings-v1-abc/logs", params={"tail": "5"})
            assert r.status_code == 200
            assert seen == ["/apis/pods?namespace=bookinfo", "/apis/pods/bookinfo/ratings-v1-abc/logs?tail=5"]
            assert auth == [f"Bearer {cp.token}"] * 2          # the runner's API is guarded by the same token
    finally:
        await runner.cleanup()
    # the runner gone: a clear 503, not a traceback
    async with control_plane(pods_url=f"http://127.0.0.1:{port}") as cp, \
            client(cp) as api:
        r = await api.get("/apis/pods")
        assert r.status_code == 503 and "is not reachable" in r.json()["error"], r.text


async def test_registrations_need_an_address_the_runner_allocated() -> None:
    """The control plane in its own process asks the runner's API (``GET /apis/addresses/{ip}``, with the
    token) before it accepts a workload: POST and every item of PUT; an unreachable runner refuses."""
    allocated = {"127.96.0.1"}
    asked: list[tuple[str, str | None]] = []

    async def address(request: web.Request) -> web.Response:
        asked.append((request.match_info["address"], request.headers.get("Authorization")))
        return web.json_response({"allocated": request.match_info["address"] in allocated})

    app = web.Application()
    app.router.add_get("/apis/addresses/{address}", address)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with control_plane(pods_url=f"http://127.0.0.1:{port}") as cp, client(cp) as api:
            r = await api.post("/apis/workloads", json=workload("ratings-a", "127.96.0.1"))
            assert r.status_code == 200, r.text
            r = await api.post("/apis/workloads", json=workload("thief", "127.96.0.2"))
            assert r.status_code == 403, r.text
            assert "127.96.0.2 was not allocated by this demo's runner" in r.json()["error"]
            # a full sync is all or nothing: one foreign address refuses the whole set
            r = await api.put("/apis/workloads", json={"items": [workload("ratings-a", "127.96.0.1"),
                                                                 workload("thief", "127.96.0.2")]})
            assert r.status_code == 403 and "thief" in r.json()["error"], r.text
            assert [(w.name, w.address) for w in cp.registry.workloads()] == [("ratings-a", "127.96.0.1")]
            assert {a for _, a in asked} == {f"Bearer {cp.token}"}
    finally:
        await runner.cleanup()
    async with control_plane(pods_url=f"http://127.0.0.1:{port}") as cp, client(cp) as api:
        r = await api.post("/apis/workloads", json=workload("ratings-a", "127.96.0.1"))
        assert r.status_code == 403 and "could not confirm address 127.96.0.1" in r.json()["error"], r.text
        assert cp.registry.workloads() == []


@pytest.mark.e2e
async def test_standby_starts_only_when_told_and_exits_at_end_of_input(tmp_path: Path) -> None:
    http = free_port()
    argv = [sys.executable, "-m", "mizzen.controlplane", "--state-dir", str(tmp_path / "state"),
            "--xds-port", str(free_port()), "--http-port", str(http), "--standby"]
    pipe, null = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
    spare = await asyncio.create_subprocess_exec(*argv, stdin=pipe, stdout=pipe, stderr=null)
    idle = await asyncio.create_subprocess_exec(*argv, stdin=pipe, stdout=null, stderr=null)
    try:
        assert spare.stdin is not None and spare.stdout is not None and idle.stdin is not None
        await asyncio.sleep(1.0)
        assert spare.returncode is None and not (tmp_path / "state").exists()   # nothing read, nothing bound
        async with httpx.AsyncClient(trust_env=False, timeout=1) as api:
            with pytest.raises(httpx.ConnectError):
                await api.get(f"http://127.0.0.1:{http}/version")
            spare.stdin.write(b"start\n")
            await spare.stdin.drain()
            line = await asyncio.wait_for(spare.stdout.readline(), 20)
            assert line.startswith(b"mizzen control plane:"), line
            assert (await api.get(f"http://127.0.0.1:{http}/version")).status_code == 200
        idle.stdin.close()                      # not needed any more: it exits by itself
        assert await asyncio.wait_for(idle.wait(), 20) == 0
    finally:
        for p in (spare, idle):
            if p.returncode is None:
                p.kill()
            await p.wait()
