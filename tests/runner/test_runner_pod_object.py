"""Pods as Kubernetes sees them (and the machine-wide address reservation that keeps concurrent runners'
pods apart): real runner pods (real processes, a fake registrar) reported as ``v1 Pod``
objects with kubectl's STATUS reasons (ErrNoCommand, RunContainerError, CrashLoopBackOff), served by the pod
API on a real socket, whose log endpoint names the pod's containers; and the watcher's per-pod events."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from runner_helpers import FakeRegistrar, echo_deployment, private_nets

from mizzen.runner import Backoff, LocalRunner
from mizzen.runner.addresses import AddressPool
from mizzen.runner.api import PodsApi
from mizzen.runner.pod import ContainerStatus, PodStatus
from mizzen.runner.pod_object import pod_object
from mizzen.runner.watch import PodWatcher


def deployment(name: str, container: dict[str, Any]) -> dict[str, Any]:
    template = {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}}
    return {"kind": "Deployment", "metadata": {"name": name}, "spec": {"template": template}}


@pytest.fixture
async def runner() -> AsyncIterator[LocalRunner]:
    pod_net, app_net = private_nets()
    r = LocalRunner(FakeRegistrar(), namespace="demo", pod_net=pod_net, app_net=app_net,
                    backoff=Backoff(start_s=5.0, max_s=5.0), grace_s=1.0)
    yield r
    await r.stop()


@pytest.fixture
async def api(runner: LocalRunner) -> AsyncIterator[str]:
    app = web.Application()
    app.add_routes(PodsApi(lambda: runner).routes())
    app_runner = web.AppRunner(app)
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await app_runner.cleanup()


async def _eventually(check: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_pods_that_cannot_start_say_why_like_kubectl(runner: LocalRunner, api: str) -> None:
    crash = echo_deployment("crash")
    crash["spec"]["template"]["spec"]["containers"][0]["command"] = ["$(MIZZEN_PYTHON)", "-c", "exit(3)"]
    await runner.apply([
        deployment("nginx", {"name": "nginx", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}),
        deployment("missing", {"name": "app", "image": "x", "command": ["/nonexistent/mizzen-bin"]}),
        crash,
    ])
    await _eventually(lambda: any(p.status_text == "CrashLoopBackOff" for p in runner.status()))
    async with httpx.AsyncClient(base_url=api, trust_env=False, timeout=10) as c:
        items = {p["deployment"]: p for p in (await c.get("/apis/pods")).json()["items"]}
        assert {d: (p["status"], p["ready"]) for d, p in items.items()} == {
            "nginx": ("ErrNoCommand", "0/1"), "missing": ("RunContainerError", "0/1"),
            "crash": ("CrashLoopBackOff", "0/1")}
        nginx = items["nginx"]["object"]
        assert (nginx["apiVersion"], nginx["kind"], nginx["status"]["phase"]) == ("v1", "Pod", "Failed")
        assert nginx["metadata"]["labels"]["app"] == "nginx" and nginx["metadata"]["creationTimestamp"]
        assert nginx["spec"]["containers"] == [{"name": "nginx", "image": "nginx:1.25",
                                                "ports": [{"containerPort": 80, "protocol": "TCP"}]}]
        (cs,) = nginx["status"]["containerStatuses"]
        assert cs["state"]["waiting"]["reason"] == "ErrNoCommand" and "nginx:1.25" in cs["state"]["waiting"][
            "message"] and cs["restartCount"] == 0 and cs["ready"] is False
        (cs,) = items["missing"]["object"]["status"]["containerStatuses"]
        assert cs["state"]["waiting"]["reason"] == "RunContainerError", cs
        assert "No such file" in cs["state"]["waiting"]["message"], cs
        (cs,) = items["crash"]["object"]["status"]["containerStatuses"]
        assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff", cs
        assert cs["lastState"] == {"terminated": {"exitCode": 3, "reason": "Error"}}, cs
        assert items["crash"]["object"]["status"]["phase"] == "Running"
        # logs: the containers that exist, and why one has no log
        name = items["nginx"]["name"]
        r = await c.get(f"/apis/pods/demo/{name}/logs", params={"container": "web"})
        assert r.status_code == 400
        assert r.json()["error"] == f'container "web" not found in pod "{name}"; choose one of: [nginx]'
        r = await c.get(f"/apis/pods/demo/{name}/logs")
        assert r.status_code == 400 and r.json()["error"].startswith(
            f'container "nginx" in pod "{name}" is waiting to start: ErrNoCommand: '), r.json()


def test_pod_object_of_a_running_meshed_pod() -> None:
    c = ContainerStatus("web", "Running", 1, 4242, (8000,), -9, "", "/x/web.log", 1_800_000_000.0)
    s = PodStatus(name="web-abcdefghij-xyz12", namespace="demo", deployment="web", pod_ip="127.20.0.9",
                  app_host="127.21.0.9", phase="Running", ready=True, registered=True, restarts=1,
                  sidecar="running", sidecar_restarts=0, labels={"app": "web"}, containers=(c,),
                  sidecar_pid=4243, created_at=1_800_000_000.0, annotations={"a": "b"})
    obj = pod_object(s)
    assert obj["metadata"]["ownerReferences"][0]["name"] == "web-abcdefghij"
    assert obj["metadata"]["labels"] == {"app": "web", "pod-template-hash": "abcdefghij"}
    assert obj["metadata"]["annotations"] == {"a": "b", "mizzen.io/app-host": "127.21.0.9"}
    assert obj["metadata"]["creationTimestamp"] == "2027-01-15T08:00:00Z"
    web_status, proxy = obj["status"]["containerStatuses"]
    assert web_status["containerID"] == "local://4242" and web_status["state"] == {
        "running": {"startedAt": "2027-01-15T08:00:00Z"}}
    assert web_status["lastState"] == {"terminated": {"exitCode": 137, "reason": "Error (SIGKILL)"}}
    assert proxy["name"] == "istio-proxy" and proxy["ready"] and proxy["containerID"] == "local://4243"
    assert obj["status"]["podIP"] == "127.20.0.9" and obj["status"]["phase"] == "Running"
    assert {c["type"]: c["status"] for c in obj["status"]["conditions"]}["Ready"] == "True"


class _Pods:
    def __init__(self) -> None:
        self.pods: list[PodStatus] = []

    def status(self) -> list[PodStatus]:
        return list(self.pods)


def test_watcher_keeps_recent_events_per_pod_even_when_not_reporting_them() -> None:
    def pod(ready: bool, restarts: int = 0, state: str = "Running") -> PodStatus:
        c = ContainerStatus("app", state, restarts, 1, (80,), 1 if state != "Running" else None,
                            "exited with code 1; restarting in 0.5s" if state != "Running" else "", "/x")
        return PodStatus(name="p", namespace="ns", deployment="d", pod_ip="127.20.0.1", app_host="",
                         phase="Running", ready=ready, registered=ready, restarts=restarts, sidecar="none",
                         sidecar_restarts=0, containers=(c,))

    src = _Pods()
    w = PodWatcher(src, lambda _l: None, lifecycle=False)
    src.pods = [pod(False)]
    assert w.poll() == []                                   # startup: nothing reported...
    src.pods = [pod(True)]
    w.poll()
    src.pods = [pod(False, 0, "CrashLoopBackOff")]
    w.poll()
    events = w.events("ns", "p")                             # ...but every change is an event of the pod
    assert [(e["type"], e["message"]) for e in events] == [
        ("Normal", "created (127.20.0.1)"), ("Normal", "ready (1/1)"),
        ("Warning", "container app exited with code 1, restarting in 0.5s (restart 1)"),
        ("Warning", "not ready (0/1 Running)")], events
    src.pods = []
    w.poll()
    assert w.events("ns", "p") == []


def test_an_address_is_reserved_from_allocation_until_release_across_runners() -> None:
    """Two runners starting at once (a test beside a demo) must not both take an address whose ports are
    still free: the first allocation reserves it before anything binds there."""
    pod_net, app_net = private_nets()
    a, b = AddressPool(pod_net, app_net), AddressPool(pod_net, app_net)
    first = a.allocate([9080])
    second = b.allocate([9080])                  # nothing is bound on `first` yet: still not handed out twice
    assert first.pod_ip != second.pod_ip
    out = subprocess.run([sys.executable, "-c", RESERVE, first.pod_ip, second.pod_ip], capture_output=True,
                         text=True, timeout=30)
    assert out.stdout.split() == ["taken", "taken"], out          # machine-wide, not only in this process
    a.release(first)
    out = subprocess.run([sys.executable, "-c", RESERVE, first.pod_ip], capture_output=True, text=True,
                         timeout=30)
    assert out.stdout.split() == ["free"], out
    b.release(second)
    assert a.in_use == b.in_use == 0


RESERVE = """
import sys
from mizzen.runner.addresses import reserve
print(*["free" if reserve(ip) else "taken" for ip in sys.argv[1:]])
"""
