"""Envoy's Zipkin tracer from the tracing plugin, with real Envoys: one request from a client sidecar to a
backend's sidecar is one trace with a client span (the caller's proxy, service ``sleep.default``) and a server
span (``reviews.default``) under it, reported as Zipkin v2 JSON to the mesh's collector; sampling 0 reports
nothing. The collector is a Zipkin-API endpoint of the test's own (the HTTP seam a Jaeger sits behind)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from harness import Mesh, alloc_ip, free_port
from mizzen.core.mesh import MeshConfig

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: reviews}
"""


class Collector:
    """Receives POST /api/v2/spans (Envoy's JSON v2 reporter)."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.host = alloc_ip()
        self.port = free_port(self.host)
        self._runner: web.AppRunner | None = None

    async def _spans(self, request: web.Request) -> web.Response:
        self.spans.extend(json.loads(await request.read()))
        return web.Response(status=202)

    async def __aenter__(self) -> Collector:
        app = web.Application()
        app.router.add_post("/api/v2/spans", self._spans)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def traced(sampling: float) -> list[dict[str, Any]]:
    async with Collector() as collector:
        mesh_config = MeshConfig(tracing_zipkin_address=f"{collector.host}:{collector.port}",
                                 tracing_sampling=sampling)
        async with Mesh(mesh_config=mesh_config) as mesh:
            await mesh.apply_yaml(SERVICE)
            await mesh.backend("reviews", sidecar=True)
            client = await mesh.sidecar("default", "sleep-1", {"app": "sleep"})
            await mesh.wait_synced()
            async with mesh.client_via(client) as http:
                r = await http.get("http://reviews:9080/reviews/0")
                assert r.status_code == 200, r.text
            # Envoy's Zipkin reporter flushes every 5 s
            for _ in range(100):
                if len(collector.spans) >= 2 or (sampling == 0 and _ > 70):
                    break
                await asyncio.sleep(0.1)
        return collector.spans


async def test_one_request_is_one_trace_with_client_and_server_spans() -> None:
    spans = await traced(100.0)
    assert len(spans) == 2, spans
    assert len({s["traceId"] for s in spans}) == 1 and len(spans[0]["traceId"]) == 32   # 128-bit ids
    by_kind = {s["kind"]: s for s in spans}
    client, server = by_kind["CLIENT"], by_kind["SERVER"]
    assert client["localEndpoint"]["serviceName"] == "sleep.default"
    assert server["localEndpoint"]["serviceName"] == "reviews.default"
    assert server["parentId"] == client["id"]            # one span per hop: no shared span context
    assert client["tags"]["http.status_code"] == "200"
    # Istio's span tags from each proxy's own labels
    tags = server["tags"]
    assert (tags["istio.canonical_service"], tags["istio.canonical_revision"]) == ("reviews", "v1")
    assert client["tags"]["istio.canonical_service"] == "sleep"
    assert tags["istio.namespace"] == "default" and tags["istio.mesh_id"] == "cluster.local"


async def test_sampling_zero_reports_nothing() -> None:
    assert await traced(0.0) == []
