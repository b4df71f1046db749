"""The runner with real app processes and a fake registrar (no sidecars): replicas and pod names, env and
argument expansion seen by the running app, registration only after readiness, restart with backoff after
kill -9, scaling and template changes, and a stop that leaves no process behind.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator

import httpx
import pytest
from runner_helpers import FakeRegistrar, alive, echo_deployment, group_alive, private_nets

from mizzen.bookinfo import MANIFEST
from mizzen.runner import Backoff, LocalRunner, PodStatus
from mizzen.runner.manifests import load_manifests


@pytest.fixture
async def reg_runner() -> AsyncIterator[tuple[FakeRegistrar, LocalRunner]]:
    reg = FakeRegistrar()
    pod_net, app_net = private_nets()
    runner = LocalRunner(reg, namespace="demo", pod_net=pod_net, app_net=app_net,
                         backoff=Backoff(start_s=0.3, max_s=2.0, stable_s=30.0), grace_s=2.0)
    yield reg, runner
    await runner.stop()


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
        return await c.get(url)


async def _wait(pred: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():  # type: ignore[operator]
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.05)


async def test_bookinfo_replicas_names_registration(reg_runner: tuple[FakeRegistrar, LocalRunner]) -> None:
    reg, runner = reg_runner
    out = await runner.apply(load_manifests(MANIFEST), namespace="bookinfo")
    assert out == [f"deployment.apps/{n} created" for n in
                   ("details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3", "productpage-v1")]
    assert {s.name for s in runner.services.values()} == {"details", "ratings", "reviews", "productpage"}
    await runner.wait_ready(20)
    pods = runner.status()
    assert len(pods) == 6
    assert len({p.pod_ip for p in pods}) == 6 and len({p.app_host for p in pods}) == 6
    for p in pods:
        assert re.fullmatch(rf"{p.deployment}-[a-z0-9]{{10}}-[a-z0-9]{{5}}", p.name), p.name
        assert p.phase == "Running" and p.ready and p.registered and p.sidecar == "none"
        assert p.ready_count == "1/1"
        assert p.app_host == p.pod_ip       # no sidecar: the app listens on the pod IP itself
        w = reg.live[("bookinfo", p.name)]
        assert w.address == p.pod_ip and dict(w.labels) == p.labels
        assert w.service_account == f"bookinfo-{p.labels['app']}"
    v2 = runner.pods("bookinfo", app="reviews", version="v2")[0]
    body = (await _get(f"http://{v2.app_host}:9080/reviews/0")).json()
    assert body["podname"] == v2.name
    assert body["reviews"][0]["rating"] == {"error": "Ratings service is currently unavailable"}  # no mesh
    details = runner.pods("bookinfo", app="details")[0]
    assert (await _get(f"http://{details.app_host}:9080/details/0")).json()["pages"] == 200


async def test_env_and_args_expansion_reach_the_app(reg_runner: tuple[FakeRegistrar, LocalRunner]) -> None:
    reg, runner = reg_runner
    dep = echo_deployment(
        "echo", replicas=2, args=["--who=$(POD_NAME)", "$(GREETING)", "$$(POD_NAME)", "$(NOPE)"],
        env=[{"name": "GREETING", "value": "hello-$(POD_NAMESPACE)"},
             {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
    )
    await runner.apply([dep])
    await runner.wait_ready(15)
    pods = runner.status()
    assert [p.namespace for p in pods] == ["demo", "demo"]
    for p in pods:
        got = (await _get(f"http://{p.app_host}:8000/")).json()
        assert got["argv"] == [f"--who={p.name}", "hello-demo", "$(POD_NAME)", "$(NOPE)"]
        env = got["env"]
        assert env["HOSTNAME"] == env["POD_NAME"] == p.name
        assert env["HOST"] == env["MIZZEN_APP_HOST"] == p.app_host
        assert env["PORT"] == "8000" and env["IP"] == p.pod_ip and env["POD_NAMESPACE"] == "demo"
        assert "HTTP_PROXY" not in env      # no sidecar, no proxy
        assert reg.live[("demo", p.name)].ports == {"http-echo": 8000}
        assert reg.live[("demo", p.name)].service_account == "sa-echo"


async def test_registers_only_after_app_accepts(reg_runner: tuple[FakeRegistrar, LocalRunner]) -> None:
    reg, runner = reg_runner
    slow = echo_deployment("slow")
    slow["spec"]["template"]["spec"]["containers"][0]["command"] = [
        "$(MIZZEN_PYTHON)", "-c", "import time, runpy, sys; time.sleep(1.0); exec(sys.argv[1])"]
    from runner_helpers import ECHO_APP
    slow["spec"]["template"]["spec"]["containers"][0]["args"] = [ECHO_APP]
    await runner.apply([slow])
    (p,) = runner.status()
    assert p.phase == "Running" and not p.registered
    await asyncio.sleep(0.6)
    assert reg.events == []                   # the process runs, but does not accept yet
    await runner.wait_ready(10)
    assert [e[0] for e in reg.events] == ["register"]
    assert (await _get(f"http://{p.app_host}:8000/")).status_code == 200


async def test_kill_9_restarts_with_backoff(reg_runner: tuple[FakeRegistrar, LocalRunner]) -> None:
    reg, runner = reg_runner
    await runner.apply([echo_deployment("crashy")])
    await runner.wait_ready(10)
    (p,) = runner.status()
    pid1 = p.containers[0].pid
    assert pid1 is not None
    loop = asyncio.get_running_loop()

    def current() -> PodStatus:
        return runner.status()[0]

    t0 = loop.time()
    os.kill(pid1, signal.SIGKILL)
    await _wait(lambda: reg.count("deregister", p.name) == 1, 5)
    assert current().phase == "CrashLoopBackOff" and "exited with code -9" in current().message
    await _wait(lambda: reg.count("register", p.name) == 2, 10)
    first_gap = loop.time() - t0
    s = current()
    assert s.restarts == 1 and s.containers[0].pid not in (None, pid1) and s.registered
    assert s.containers[0].last_exit == -9
    assert first_gap >= 0.3                   # the first backoff
    t1 = loop.time()
    os.kill(s.containers[0].pid or 0, signal.SIGKILL)
    await _wait(lambda: reg.count("register", p.name) == 3, 10)
    assert loop.time() - t1 >= 0.6            # doubled
    assert current().restarts == 2
    assert (await _get(f"http://{p.app_host}:8000/")).status_code == 200


async def test_scale_and_template_change_and_delete(reg_runner: tuple[FakeRegistrar, LocalRunner]) -> None:
    reg, runner = reg_runner
    dep = echo_deployment("web", replicas=3)
    await runner.apply([dep])
    await runner.wait_ready(15)
    first = {p.name for p in runner.status()}
    assert len(first) == 3
    dep["spec"]["replicas"] = 1
    assert await runner.apply([dep]) == ["deployment.apps/web configured"]
    left = {p.name for p in runner.status()}
    assert len(left) == 1 and left < first
    assert sum(1 for a, _, _ in reg.events if a == "deregister") == 2
    assert await runner.apply([dep]) == ["deployment.apps/web unchanged"]
    dep["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "X", "value": "2"}]
    assert await runner.apply([dep]) == ["deployment.apps/web configured"]
    await runner.wait_ready(10)
    (new,) = runner.status()
    assert new.name not in first and new.name.split("-")[1] != next(iter(first)).split("-")[1]
    assert set(reg.live) == {("demo", new.name)}
    assert await runner.delete([dep]) == ["deployment.apps/web deleted"]
    assert runner.status() == [] and reg.live == {} and runner.addresses.in_use == 0


async def test_unrunnable_container_is_reported(reg_runner: tuple[FakeRegistrar, LocalRunner]) -> None:
    _reg, runner = reg_runner
    await runner.apply([{
        "kind": "Deployment", "metadata": {"name": "nginx"},
        "spec": {"template": {"metadata": {"labels": {"app": "nginx"}},
                              "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]}}},
    }])
    (p,) = runner.status()
    assert p.phase == "Failed" and "nginx:1.25" in p.message and not p.registered
    await runner.wait_ready(1)       # a Failed pod is reported, not waited for


async def test_stop_leaves_nothing_running() -> None:
    reg = FakeRegistrar()
    pod_net, app_net = private_nets()
    runner = LocalRunner(reg, pod_net=pod_net, app_net=app_net, grace_s=1.0)
    stubborn = echo_deployment("stubborn", replicas=2)
    # an app that ignores SIGTERM and leaves a child in its process group
    stubborn["spec"]["template"]["spec"]["containers"][0]["command"] = [
        "$(MIZZEN_PYTHON)", "-c",
        "import signal, subprocess, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); exec(sys.argv[1])",
    ]
    from runner_helpers import ECHO_APP
    stubborn["spec"]["template"]["spec"]["containers"][0]["args"] = [ECHO_APP]
    await runner.apply([stubborn, echo_deployment("plain")])
    await runner.wait_ready(15)
    pids = [c.pid for p in runner.status() for c in p.containers]
    assert len(pids) == 3 and all(pids)
    await runner.stop()
    for pid in pids:
        assert pid is not None
        assert not alive(pid)
        # orphans of the group (SIGKILLed too) may need a moment to be reaped by init
        await _wait(lambda pid=pid: not group_alive(pid), 3)
    assert reg.live == {}
    assert runner.status() == [] and runner.addresses.in_use == 0
    assert not runner.log_dir.exists()
