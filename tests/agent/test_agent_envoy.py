"""Agent process supervision with real Envoy against a real control plane: LIVE, restart after kill -9 with
exponential backoff, clean stop leaving no process behind."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import pytest

from harness import Mesh, alloc_ip, free_port, mesh  # noqa: F401  (mesh is a fixture)
from mizzen.agent.bootstrap import ProxySpec
from mizzen.agent.envoy import Agent, AgentError, AgentEvent, AgentOptions
from mizzen.core.proxy import ProxyType

pytestmark = pytest.mark.e2e

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: ratings}
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is gone for our purposes once reaped, which asyncio does
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def spec_for(m: Mesh, name: str = "reviews-v1") -> ProxySpec:
    ip = alloc_ip()
    return ProxySpec(ProxyType.SIDECAR, ip, "bookinfo", name, admin_port=free_port(ip),
                     xds_port=m.cp.xds_port, labels={"app": "reviews", "version": "v1"})


async def test_envoy_reaches_live_and_syncs(mesh: Mesh) -> None:  # noqa: F811
    agent = await mesh.sidecar("bookinfo", "productpage-v1", {"app": "productpage"})
    assert (await agent.admin_get("/ready")).strip() == "LIVE"
    await mesh.wait_synced()
    async with mesh.api_client() as api:
        syncz = (await api.get("/debug/syncz")).json()
    (entry,) = syncz
    assert entry["proxy"] == agent.node_id
    assert {t: s["status"] for t, s in entry["types"].items() if t in ("CDS", "LDS")} == {
        "CDS": "SYNCED", "LDS": "SYNCED"}
    # Envoy's own view has the listener the control plane generated for the http proxy port
    dump = await agent.admin_get("/listeners")
    assert f"{agent.spec.ip}:15080" in dump


async def test_restarted_after_kill_with_backoff(mesh: Mesh) -> None:  # noqa: F811
    events: list[tuple[float, AgentEvent]] = []
    opts = AgentOptions(backoff_start_s=0.3, backoff_max_s=10.0)
    agent = Agent(spec_for(mesh), opts, on_event=lambda e: events.append((time.monotonic(), e)))
    await agent.start()
    try:
        first = agent.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await agent.wait_restarted(1, timeout=10)
        await agent.wait_ready(10)
        second = agent.pid
        assert second is not None and second != first and not alive(first)
        os.kill(second, signal.SIGKILL)
        await agent.wait_restarted(2, timeout=10)
        await agent.wait_ready(10)
        assert agent.restarts == 2
        kinds = [e.kind for _, e in events]
        assert kinds == ["exited", "restarted", "exited", "restarted"]
        assert events[0][1].returncode == -signal.SIGKILL
        gap1 = events[1][0] - events[0][0]
        gap2 = events[3][0] - events[2][0]
        assert 0.3 <= gap1 < 2.0
        assert gap2 >= 0.6 and gap2 > gap1      # doubled
        # the restarted Envoy reconnects and is synced again
        await mesh.cp.wait_synced([agent.node_id], timeout=5)
    finally:
        await agent.stop()


async def test_stop_leaves_no_process(mesh: Mesh) -> None:  # noqa: F811
    agent = Agent(spec_for(mesh, "ratings-v1"))
    await agent.start()
    pid, work_dir = agent.pid, agent.work_dir
    assert pid is not None and alive(pid) and (work_dir / "envoy.json").is_file()
    t = time.monotonic()
    await agent.stop()
    assert time.monotonic() - t < 5
    assert not alive(pid) and agent.pid is None and not work_dir.exists()
    assert [e.kind for e in agent.events] == []            # a requested stop is not reported as a crash
    await agent.stop()                                     # idempotent


async def test_start_fails_clearly_when_envoy_cannot_start(mesh: Mesh) -> None:  # noqa: F811
    events: list[AgentEvent] = []
    bad = Agent(spec_for(mesh), AgentOptions(max_restarts=1, backoff_start_s=0.05,
                                             extra_args=("--no-such-flag",)), on_event=events.append)
    t = time.monotonic()
    with pytest.raises(AgentError, match="no-such-flag"):
        await bad.start(ready_timeout=10)
    assert time.monotonic() - t < 5                     # fails fast once the supervisor gives up
    assert [e.kind for e in events] == ["exited", "restarted", "exited", "gave_up"]
    assert bad.pid is None and bad.restarts == 1


async def test_stop_lets_an_in_flight_request_finish(mesh: Mesh) -> None:  # noqa: F811
    backend = await mesh.backend("ratings", "v1", namespace="bookinfo", port=9080)
    client = await mesh.sidecar("bookinfo", "reviews-v1", {"app": "reviews"})
    await mesh.apply_yaml(SERVICE, namespace="bookinfo")
    await mesh.wait_synced()
    backend.delay_s = 0.5
    async with mesh.client_via(client) as http:
        request = asyncio.create_task(http.get("http://ratings:9080/ratings/0"))
        while backend.requests == 0:          # bounded by the request's own timeout below
            await asyncio.sleep(0.01)
            assert not request.done(), request
        pid = client.pid
        assert pid is not None
        await client.stop()
        r = await asyncio.wait_for(request, 5)
    assert r.status_code == 200 and r.json()["service"] == "ratings"
    assert not alive(pid)


async def test_module_entry_point_runs_until_sigterm(mesh: Mesh) -> None:  # noqa: F811
    ip = alloc_ip()
    admin = free_port(ip)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mizzen.agent", "--type", "sidecar", "--ip", ip, "--namespace", "bookinfo",
        "--labels", "app=details,version=v1", "--xds", f"127.0.0.1:{mesh.cp.xds_port}",
        "--admin-port", str(admin), "--log-level", "WARNING", stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith(f"mizzen agent: node=sidecar~{ip}~details.bookinfo~"), line
        envoy_pid = int(line.rsplit("pid=", 1)[1])
        node = line.split("node=")[1].split()[0]
        await mesh.cp.wait_synced([node], timeout=10)
        assert mesh.cp.pusher.proxies[node].labels == {"app": "details", "version": "v1"}
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert not alive(envoy_pid)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_stop_kills_an_envoy_that_ignores_sigterm(mesh: Mesh) -> None:  # noqa: F811
    agent = Agent(spec_for(mesh, "details-v1"))
    await agent.start()
    pid = agent.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)       # a hung Envoy: no admin answers, SIGTERM stays pending
    t = time.monotonic()
    await agent.stop(timeout=0.5)
    elapsed = time.monotonic() - t
    assert not alive(pid) and 0.5 <= elapsed < 5
    assert agent.events == []
