"""The Telemetry API changes live proxies without restarts: access logs on and off (Istio's ``envoy`` provider
writes to the proxy's stdout), a CEL filter, and a workload's trace sampling."""

from __future__ import annotations

import asyncio
import json

from harness import Mesh, eventually
from mizzen.agent.envoy import Agent

NS = "bookinfo"
SVC = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
"""
LOGS_ON = """
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: envoy}]}]
"""
LOGS_OFF = """
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging: [{disabled: true}]
"""
ERRORS_ONLY = """
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: envoy}], filter: {expression: "response.code >= 400"}}]
"""


def _lines(agent: Agent, marker: str) -> list[str]:
    return [line for line in agent.output_path.read_text(errors="replace").splitlines() if marker in line]


async def test_access_logs_on_off_and_filtered_without_restart(mesh: Mesh) -> None:
    reviews = await mesh.backend("reviews", "v1", namespace=NS, sidecar=True)
    client = await mesh.sidecar(NS, "productpage-v1", {"app": "productpage", "version": "v1"})
    await mesh.apply_yaml(SVC)
    await mesh.wait_synced()
    assert reviews.sidecar is not None
    pids = (client.pid, reviews.sidecar.pid)
    async def get(path: str) -> int:
        # a new connection per request: a listener update applies to new connections (old ones drain)
        async with mesh.client_via(client) as http:
            return (await http.get(f"http://reviews:9080{path}")).status_code

    async def settle() -> None:
        await mesh.wait_synced()
        # connections opened before a listener update keep its old chain until they drain (the agent's
        # --drain-time-s is 1 s); the client sidecar pools its upstream connections
        await asyncio.sleep(2.5)

    async def ok(path: str) -> None:
        assert await get(path) == 200

    await eventually(lambda: ok("/warmup"), timeout=10)
    await ok("/before-on")
    assert _lines(client, "/before-on") == []          # no access log by default

    await mesh.apply_yaml(LOGS_ON)
    await settle()
    await ok("/while-on")

    async def logged() -> None:
        for agent in (client, reviews.sidecar):
            assert agent is not None
            lines = _lines(agent, "/while-on")
            assert len(lines) == 1, lines
            assert '"GET /while-on HTTP/1.1" 200' in lines[0]      # Istio's default TEXT format
    await eventually(logged, timeout=20, interval=0.5)     # Envoy flushes access log files periodically

    await mesh.apply_yaml(LOGS_OFF)
    await settle()
    await ok("/while-off")
    await ok("/marker")
    await mesh.apply_yaml(ERRORS_ONLY)
    await settle()
    reviews.fail(404, times=1)
    assert await get("/failed") == 404
    await ok("/fine")

    async def filtered() -> None:
        assert len(_lines(client, "/failed")) == 1
    await eventually(filtered, timeout=20, interval=0.5)
    assert _lines(client, "/while-off") == [] and _lines(client, "/fine") == []
    assert (client.pid, reviews.sidecar.pid) == pids and client.restarts == reviews.sidecar.restarts == 0


def _hcm_tracing(dump: str) -> list[float]:
    """random_sampling of every HCM in the dynamic listeners of a config_dump."""
    out: list[float] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if str(node.get("@type", "")).endswith("HttpConnectionManager"):
                out.append(float(((node.get("tracing") or {}).get("random_sampling") or {}).get("value", -1)))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    for cfg in json.loads(dump)["configs"]:
        if cfg.get("@type", "").endswith("ListenersConfigDump"):
            walk(cfg.get("dynamic_listeners"))
    return out


async def test_workload_sampling_changes_without_restart(mesh: Mesh) -> None:
    reviews = await mesh.backend("reviews", "v1", namespace=NS, sidecar=True)
    other = await mesh.sidecar(NS, "ratings-v1", {"app": "ratings", "version": "v1"})
    await mesh.apply_yaml(SVC)
    await mesh.wait_synced()
    assert reviews.sidecar is not None
    sidecar = reviews.sidecar
    pid = sidecar.pid

    async def sampling(agent: Agent, want: float) -> None:
        got = _hcm_tracing(await agent.admin_get("/config_dump"))
        assert got and all(v == want for v in got), got

    await sampling(sidecar, -1)          # no Telemetry: no tracing settings from telemetry
    for pct in (37.5, 2.0):
        await mesh.apply_yaml(f"""
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: reviews-tracing, namespace: bookinfo}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  tracing: [{{randomSamplingPercentage: {pct}}}]
""")
        await mesh.wait_synced()
        await eventually(lambda: sampling(sidecar, pct), timeout=10)   # noqa: B023
    await sampling(other, -1)            # another workload keeps its own
    assert sidecar.pid == pid and sidecar.restarts == 0
