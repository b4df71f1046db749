"""The control plane as the runner's supervised pod (``mizzen.runner.istiod``), with real processes: up means
its API answers and ``on_up`` (the workload resync) ran; a SIGKILLed control plane is replaced by the warm
spare after the backoff delay, or started cold when there is none; stop leaves no process."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from harness import free_port
from mizzen.auth.token import new_token
from mizzen.runner.istiod import ControlPlaneArgs, ControlPlanePod
from mizzen.runner.registrar import HttpRegistrar

pytestmark = pytest.mark.e2e


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def until(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():    # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.02)


async def test_control_plane_pod_restarts_from_its_spare_or_cold(tmp_path: Path) -> None:
    token = new_token()
    args = ControlPlaneArgs(tmp_path / "state", free_port(), free_port(), await_workload_sync_s=30,
                            token=token)
    registrar = HttpRegistrar(args.http_url, token=token)
    syncs: list[int] = []

    async def on_up() -> None:
        syncs.append(await registrar.resync(list))

    pod = ControlPlanePod(args, tmp_path / "logs" / "discovery.log", on_up)
    pids: list[int] = []
    try:
        await pod.start(ready_timeout=30)
        first = pod.pid
        assert first is not None and pod.ready and pod.ups == 1 and syncs == [0]
        pids.append(first)
        # the token travels in the environment, never on the command line (other users can read that)
        cmdline = Path(f"/proc/{first}/cmdline").read_bytes()
        assert token.encode() not in cmdline and token not in repr(args)
        assert f"MIZZEN_TOKEN={token}".encode() in Path(f"/proc/{first}/environ").read_bytes().split(b"\0")
        async with httpx.AsyncClient(trust_env=False, timeout=2) as api:
            # the resync opened its xDS gate
            ready = (await api.get(f"{args.http_url}/ready")).json()
            assert ready == {"ready": True, "workloads_synced": True}
        status = pod.status()
        assert (status.namespace, status.deployment, status.phase, status.ready_count) == (
            "istio-system", "istiod", "Running", "1/1")
        await until("a warm spare", lambda: pod.spare_pid is not None, 20)
        spare = pod.spare_pid
        assert spare is not None
        pids.append(spare)

        os.kill(first, signal.SIGKILL)
        await pod.wait_up(after=1, timeout=10)
        assert pod.pid == spare and pod.restarts == 1 and pod.last_exit == -signal.SIGKILL and syncs == [0, 0]
        container = pod.status().containers[0]
        assert (container.restarts, container.last_exit, container.state) == (1, -9, "Running")

        # no spare yet (it starts a few seconds after a take-over): a cold start, after a longer backoff
        assert pod.spare_pid is None
        os.kill(spare, signal.SIGKILL)
        await until("backing off", lambda: pod.state == "CrashLoopBackOff", 5)
        assert pod.message == "exited with code -9; restarting in 0.2s", pod.message
        await pod.wait_up(after=2, timeout=30)
        third = pod.pid
        assert third is not None and third not in pids and pod.restarts == 2
        pids.append(third)
        await until("a new spare", lambda: pod.spare_pid is not None, 20)
        pids.append(pod.spare_pid)      # type: ignore[arg-type]
    finally:
        await pod.stop()
    assert not [p for p in pids if alive(p)]
    assert pod.status().phase == "Terminated"
