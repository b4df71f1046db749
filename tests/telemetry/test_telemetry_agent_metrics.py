"""Where the metrics are served: Envoy's ``:15090`` and the agent's merged ``:15020`` with Istio's names (no
``envoy_istiocustom_``), the app's own metrics merged when the pod is annotated ``prometheus.io/scrape``,
``proxyStatsMatcher`` narrowing Envoy's own stats but never Istio's; the runner reads both from pod
annotations."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from aiohttp import web
from telemetry_kit import parse, total

from harness import Mesh, alloc_ip, eventually
from mizzen.agent.bootstrap import AGENT_ADMIN_PORT, ProxySpec
from mizzen.agent.envoy import Agent, AgentOptions
from mizzen.core.proxy import ProxyType
from mizzen.runner.sidecar import AgentSidecars, SidecarRequest

SVC = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
"""


@contextlib.asynccontextmanager
async def app_metrics(ip: str, port: int) -> AsyncIterator[None]:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text="# TYPE my_app_orders_total counter\nmy_app_orders_total 5\n")
    app = web.Application()
    app.router.add_get("/custom/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, ip, port).start()
    try:
        yield
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def agent(mesh: Mesh, spec: ProxySpec) -> AsyncIterator[Agent]:
    a = Agent(spec, AgentOptions(concurrency=1))
    await a.start(ready_timeout=20)
    try:
        yield a
    finally:
        await a.stop()


async def _get(url: str) -> str:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
        r = await c.get(url)
        assert r.status_code == 200, r.status_code
        return r.text


async def test_15090_and_merged_15020_with_app_metrics_and_stats_matcher(mesh: Mesh) -> None:
    await mesh.backend("reviews", "v1", namespace="bookinfo", sidecar=True)
    await mesh.apply_yaml(SVC)
    ip, app_ip = alloc_ip(), alloc_ip()
    # the runner's translation of the pod's annotations
    spec = AgentSidecars(xds_port=mesh.cp.xds_port).spec(SidecarRequest(
        pod_name="productpage-v1-6b746f74dc-9stvs", namespace="bookinfo", pod_ip=ip, app_host=app_ip,
        labels={"app": "productpage", "version": "v1"},
        annotations={"prometheus.io/scrape": "true", "prometheus.io/port": "9100",
                     "prometheus.io/path": "/custom/metrics",
                     "proxy.istio.io/config":
                         "proxyStatsMatcher:\n  inclusionSuffixes: [downstream_rq_total]\n"}))
    assert spec.app_metrics_port == 9100 and spec.proxy_stats_matcher == {
        "inclusionSuffixes": ["downstream_rq_total"]}
    async with app_metrics(app_ip, 9100), agent(mesh, spec) as a:
        await mesh.wait_synced()
        async with mesh.client_via(a) as http:
            async def ok() -> None:
                assert (await http.get("http://reviews:9080/")).status_code == 200
            await eventually(ok, timeout=10)
        envoy = await _get(f"http://{ip}:15090/stats/prometheus")
        merged = await _get(f"http://{ip}:15020/stats/prometheus")
        for text in (envoy, merged):
            assert "envoy_istiocustom_" not in text
            assert "# TYPE istio_requests_total counter" in text
            assert total(parse(text), "istio_requests_total", reporter="source",
                         destination_app="reviews") >= 1
            names = {n for n, _, _ in parse(text)}
            # proxyStatsMatcher: Istio's defaults and the suffix stay, everything else of Envoy's goes
            assert "envoy_http_downstream_rq_total" in names and "envoy_server_live" in names
            clusters = {lb.get("envoy_cluster_name") for n, lb, _ in parse(text)
                        if n == "envoy_cluster_upstream_rq_total"}
            assert clusters == {"xds-grpc"}          # Istio keeps cluster.xds-grpc, drops the others
            assert "envoy_http_downstream_cx_total" not in names
        assert "my_app_orders_total 5" in merged and "my_app_orders_total" not in envoy
        # :15090 still serves only GET /stats/prometheus
        async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
            assert (await c.get(f"http://{ip}:15090/stats")).status_code == 404
            assert (await c.post(f"http://{ip}:15090/stats/prometheus")).status_code == 404


async def test_no_matcher_keeps_every_stat_and_app_down_is_skipped(mesh: Mesh) -> None:
    ip = alloc_ip()
    spec = ProxySpec(type=ProxyType.SIDECAR, ip=ip, namespace="default", name="plain",
                     admin_port=AGENT_ADMIN_PORT, xds_port=mesh.cp.xds_port, app_host=alloc_ip(),
                     app_metrics_port=9100)
    async with agent(mesh, spec):
        merged = await _get(f"http://{ip}:15020/stats/prometheus")   # the app does not answer: Envoy's only
        names = {n for n, _, _ in parse(merged)}
        assert "envoy_cluster_upstream_rq_total" in names and "envoy_server_live" in names
