"""The sidecar seam with a fake sidecar (what the runner asks for, readiness gating registration, restarts in
status, stop), injection decisions like Istio's, and the HTTP registrar against a real control plane API.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from runner_helpers import FakeRegistrar, echo_deployment, private_nets

from harness import Mesh, eventually
from mizzen.registry.model import Workload
from mizzen.runner import HttpRegistrar, LocalRunner, SidecarRequest


@dataclass
class FakeSidecar:
    req: SidecarRequest
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    restarts: int = 0
    started: bool = False
    stopped: bool = False

    @property
    def running(self) -> bool:
        return self.started and not self.stopped

    async def start(self, ready_timeout: float | None = 30.0) -> None:
        self.started = True

    async def wait_ready(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(self.ready.wait(), timeout)

    async def stop(self, timeout: float = 5.0) -> None:
        self.stopped = True


@dataclass
class FakeSidecars:
    made: list[FakeSidecar] = field(default_factory=list)

    def __call__(self, req: SidecarRequest) -> FakeSidecar:
        sc = FakeSidecar(req)
        self.made.append(sc)
        return sc


@pytest.fixture
async def setup() -> AsyncIterator[tuple[FakeRegistrar, FakeSidecars, LocalRunner]]:
    reg, sidecars = FakeRegistrar(), FakeSidecars()
    pod_net, app_net = private_nets()
    runner = LocalRunner(reg, sidecars=sidecars, namespace="shop", pod_net=pod_net, app_net=app_net,
                         grace_s=2.0)
    yield reg, sidecars, runner
    await runner.stop()


async def test_registration_waits_for_sidecar(setup: tuple[FakeRegistrar, FakeSidecars, LocalRunner]) -> None:
    reg, sidecars, runner = setup
    await runner.apply([echo_deployment("cart", labels={"app": "cart", "version": "v7"})])
    (sc,) = sidecars.made
    (pod,) = runner.status()
    assert sc.started and pod.sidecar == "starting"
    assert sc.req == SidecarRequest(
        pod_name=pod.name, namespace="shop", pod_ip=pod.pod_ip, app_host=pod.app_host,
        labels={"app": "cart", "version": "v7", "security.istio.io/tlsMode": "istio"},   # as Istio injects
        service_account="sa-cart", workload="cart", http_proxy_port=15080,
    )
    async def app_env() -> dict[str, str]:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
            env: dict[str, str] = (await c.get(f"http://{pod.app_host}:8000/")).json()["env"]
            return env

    env = await eventually(app_env, timeout=10)
    assert env["HTTP_PROXY"] == env["http_proxy"] == f"http://{pod.pod_ip}:15080"
    await asyncio.sleep(0.6)
    assert reg.events == []                      # the app accepts, but the sidecar is not ready
    sc.ready.set()
    await runner.wait_ready(5)
    (pod,) = runner.status()
    assert pod.sidecar == "running" and pod.ready_count == "2/2" and pod.registered
    sc.restarts = 2
    assert runner.status()[0].sidecar_restarts == 2
    await runner.delete([echo_deployment("cart")])
    assert sc.stopped and reg.live == {}


async def test_injection_rules(setup: tuple[FakeRegistrar, FakeSidecars, LocalRunner]) -> None:
    _reg, sidecars, runner = setup
    opted_out = echo_deployment("legacy", port=8001)
    opted_out["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] = "false"
    await runner.apply([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "plain",
                                                               "labels": {"istio-injection": "disabled"}}},
        opted_out,
        {**echo_deployment("tool", port=8002), "metadata": {"name": "tool", "namespace": "plain"}},
        echo_deployment("meshed", port=8003),
    ])
    by_dep = {p.deployment: p for p in runner.status()}
    assert by_dep["legacy"].sidecar == "none"
    assert by_dep["tool"].sidecar == "none" and by_dep["tool"].namespace == "plain"
    assert by_dep["meshed"].sidecar == "starting"
    assert [s.req.workload for s in sidecars.made] == ["meshed"]

    pod_net, app_net = private_nets()
    strict = LocalRunner(FakeRegistrar(), sidecars=sidecars, pod_net=pod_net, app_net=app_net,
                         injection="istio")
    try:
        strict.set_namespace_labels("on", {"istio-injection": "enabled"})
        await strict.apply([echo_deployment("a", port=8004)])
        await strict.apply([echo_deployment("b", port=8005)], namespace="on")
        assert {p.deployment: p.sidecar for p in strict.status()} == {"a": "none", "b": "starting"}
    finally:
        await strict.stop()


async def test_http_registrar_against_control_plane_api() -> None:
    async with Mesh() as mesh:
        reg = HttpRegistrar(mesh.cp.http_url, token=mesh.cp.token)
        w = Workload(name="cart-v1-bcdfghjklm-x2x4x", namespace="shop", address="127.20.9.9",
                     labels={"app": "cart"}, service_account="sa-cart", ports={"http": 8000})
        await reg.register(w)
        assert any(x.name == w.name and x.address == w.address for x in mesh.cp.registry.workloads())
        await reg.deregister("shop", w.name)
        assert all(x.name != w.name for x in mesh.cp.registry.workloads())
        await reg.deregister("shop", w.name)      # already gone: not an error
