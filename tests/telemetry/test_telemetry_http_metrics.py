"""Istio's standard HTTP metrics from real sidecars and gateways: after N requests istio_requests_total grows
by exactly N on the client (reporter=source) and the server (reporter=destination) with every label Istio
sets; versions, gateway traffic, fault aborts (FI), circuit-breaker overflow (UO), HTTP/2 and gRPC; duration
and size histograms."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from telemetry_kit import Sample, scrape, series, subset, total

from harness import Mesh, alloc_ip, eventually
from mizzen.agent.envoy import Agent
from mizzen.registry.model import Workload
from mizzen.telemetry import exchange

NS = "bookinfo"
SVC = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
"""
REQ = "istio_requests_total"
POD = "reviews-v1-7f9c4d8b6c-x2x4z"   # a ReplicaSet pod: its workload is reviews-v1
CLIENT_POD = "productpage-v1-6b746f74dc-9stvs"
PRODUCTPAGE = {"source_workload": "productpage-v1", "source_workload_namespace": NS,
               "source_app": "productpage", "source_version": "v1",
               "source_canonical_service": "productpage", "source_canonical_revision": "v1",
               "source_cluster": "Kubernetes", "source_principal": "unknown"}
REVIEWS_V1 = {"destination_workload": "reviews-v1", "destination_workload_namespace": NS,
              "destination_app": "reviews", "destination_version": "v1",
              "destination_canonical_service": "reviews", "destination_canonical_revision": "v1",
              "destination_cluster": "Kubernetes", "destination_principal": "unknown",
              "destination_service": "reviews.bookinfo.svc.cluster.local",
              "destination_service_name": "reviews", "destination_service_namespace": NS}


async def _ok(http: httpx.AsyncClient, url: str, **kw: object) -> None:
    async def check() -> None:
        r = await http.get(url, **kw)  # type: ignore[arg-type]
        assert r.status_code == 200, r.status_code
    await eventually(check, timeout=10)


def delta(after: list[Sample], before: list[Sample], name: str = REQ, **want: str) -> float:
    return total(after, name, **want) - total(before, name, **want)


async def settled(agent: Agent) -> list[Sample]:
    """A scrape whose histograms caught up with the counters (Envoy merges histograms at its stats flush,
    every 5 s)."""
    async def check() -> list[Sample]:
        now = await scrape(agent)
        assert total(now, "istio_request_duration_milliseconds_count") == total(now, REQ)
        return now
    return await eventually(check, timeout=15, interval=0.5)


async def _world(mesh: Mesh) -> tuple[Agent, Agent]:
    reviews = await mesh.backend("reviews", "v1", namespace=NS, pod=POD, sidecar=True)
    client = await mesh.sidecar(NS, CLIENT_POD, {"app": "productpage", "version": "v1"})
    await mesh.apply_yaml(SVC)
    await mesh.wait_synced()
    assert reviews.sidecar is not None
    return client, reviews.sidecar


async def test_requests_total_source_and_destination_with_every_label(mesh: Mesh) -> None:
    client, server = await _world(mesh)
    async with mesh.client_via(client) as http:
        await _ok(http, "http://reviews:9080/x")
        src0, dst0 = await settled(client), await settled(server)
        n = 7
        spoofed = {exchange.HEADER: exchange.encode({"workload": "spoofed"})}  # the sidecar replaces it
        for _ in range(n):
            r = await http.get("http://reviews:9080/x", headers=spoofed)
            assert r.status_code == 200
            # the exchange headers never reach the app nor the client
            assert not [h for h in r.headers if h.startswith("x-mizzen-peer")]
            assert not [h for h in r.json()["headers"] if h.lower().startswith("x-mizzen-peer")]
    src, dst = await scrape(client), await scrape(server)
    assert delta(src, src0, reporter="source") == n
    assert delta(dst, dst0, reporter="destination") == n
    common = PRODUCTPAGE | REVIEWS_V1 | {"request_protocol": "http", "response_code": "200",
                                         "response_flags": "-", "grpc_response_status": ""}
    [s] = series(src, REQ, reporter="source")
    assert subset(s, common | {"connection_security_policy": "unknown"}) == {}
    [d] = series(dst, REQ, reporter="destination")
    assert subset(d, common | {"connection_security_policy": "none"}) == {}
    assert len(d) == len(s) == 25      # Istio's label set, nothing more

    # histograms: one sample per request
    async def histograms() -> None:
        for agent, rep, before in ((client, "source", src0), (server, "destination", dst0)):
            now = await scrape(agent)
            for h in ("istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"):
                assert delta(now, before, f"{h}_count", reporter=rep) == n, (h, rep)
                assert delta(now, before, f"{h}_bucket", reporter=rep, le="+Inf") == n, (h, rep)
            assert delta(now, before, "istio_response_bytes_sum", reporter=rep) > 100 * n
            # headers + body, as Istio's: these GETs have no body
            assert delta(now, before, "istio_request_bytes_sum", reporter=rep) > 50 * n
    await eventually(histograms, timeout=15, interval=0.5)


async def test_versions_by_header_route(mesh: Mesh) -> None:
    v1 = await mesh.backend("reviews", "v1", namespace=NS, pod=POD, sidecar=True)
    v2 = await mesh.backend("reviews", "v2", namespace=NS, pod="reviews-v2-5b64d4c9f7-k2mpl", sidecar=True)
    client = await mesh.sidecar(NS, CLIENT_POD, {"app": "productpage", "version": "v1"})
    await mesh.apply_yaml(SVC + """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
""")
    await mesh.wait_synced()
    assert v1.sidecar is not None and v2.sidecar is not None
    async with mesh.client_via(client) as http:
        await _ok(http, "http://reviews:9080/", headers={"end-user": "jason"})
        await _ok(http, "http://reviews:9080/")
        before = {a: await scrape(a) for a in (client, v1.sidecar, v2.sidecar)}
        for i in range(8):
            r = await http.get("http://reviews:9080/", headers={"end-user": "jason"} if i % 4 == 0 else {})
            assert r.status_code == 200
    after = {a: await scrape(a) for a in (client, v1.sidecar, v2.sidecar)}
    d = {a: (after[a], before[a]) for a in after}
    assert delta(*d[client], reporter="source", destination_version="v2",
                 destination_workload="reviews-v2") == 2
    assert delta(*d[client], reporter="source", destination_version="v1",
                 destination_workload="reviews-v1") == 6
    assert delta(*d[v2.sidecar], reporter="destination", destination_version="v2",
                 source_workload="productpage-v1") == 2
    assert delta(*d[v1.sidecar], reporter="destination", destination_version="v1",
                 source_workload="productpage-v1") == 6


GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge, namespace: bookinfo}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{route: [{destination: {host: reviews, port: {number: 9080}}}]}]
"""


async def test_gateway_reports_source(mesh: Mesh) -> None:
    reviews = await mesh.backend("reviews", "v1", namespace=NS, pod=POD, sidecar=True)
    gw = await mesh.gateway()
    await mesh.apply_yaml(SVC + "---\n" + GATEWAY)
    await mesh.wait_synced()
    assert reviews.sidecar is not None
    async with mesh.gateway_client(gw) as http:
        await _ok(http, "/p")
        g0, d0 = await scrape(gw), await scrape(reviews.sidecar)
        for _ in range(5):
            assert (await http.get("/p")).status_code == 200
    g, d = await scrape(gw), await scrape(reviews.sidecar)
    ingress = {"source_workload": "istio-ingressgateway", "source_workload_namespace": "istio-system",
               "source_app": "istio-ingressgateway", "source_canonical_service": "istio-ingressgateway"}
    assert delta(g, g0, reporter="source", **ingress, **REVIEWS_V1) == 5
    assert delta(g, g0, reporter="destination") == 0       # gateways report as the source only
    assert delta(d, d0, reporter="destination", **ingress, **REVIEWS_V1) == 5


async def test_fault_abort_is_FI_at_the_source(mesh: Mesh) -> None:
    client, server = await _world(mesh)
    async with mesh.client_via(client) as http:
        await _ok(http, "http://reviews:9080/")
        await mesh.apply_yaml("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: reviews}}]
""")
        await mesh.wait_synced()

        async def aborted() -> None:
            assert (await http.get("http://reviews:9080/")).status_code == 503
        await eventually(aborted, timeout=10)
        s0, d0 = await scrape(client), await scrape(server)
        for _ in range(4):
            assert (await http.get("http://reviews:9080/")).status_code == 503
    s, d = await scrape(client), await scrape(server)
    fi = series(s, REQ, reporter="source", response_flags="FI")
    assert len(fi) == 1 and subset(fi[0], PRODUCTPAGE | {
        "response_code": "503", "destination_workload": "unknown", "destination_app": "unknown",
        "destination_service": "reviews.bookinfo.svc.cluster.local", "destination_service_name": "reviews",
        "destination_service_namespace": NS}) == {}
    assert delta(s, s0, reporter="source", response_flags="FI", response_code="503") == 4
    assert delta(d, d0) == 0            # nothing reached the server


async def test_circuit_breaker_overflow_is_UO(mesh: Mesh) -> None:
    reviews = await mesh.backend("reviews", "v1", namespace=NS, pod=POD, sidecar=True)
    reviews.delay_s = 0.3
    client = await mesh.sidecar(NS, CLIENT_POD, {"app": "productpage", "version": "v1"})
    await mesh.apply_yaml(SVC + """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}
""")
    await mesh.wait_synced()
    async with mesh.client_via(client) as http:
        await _ok(http, "http://reviews:9080/")
        s0 = await scrape(client)
        n = 12
        rs = await asyncio.gather(*(http.get("http://reviews:9080/") for _ in range(n)))
    codes = [r.status_code for r in rs]
    overflow = codes.count(503)
    assert overflow > 0 and codes.count(200) + overflow == n, codes
    s = await scrape(client)
    assert delta(s, s0, reporter="source") == n
    assert delta(s, s0, reporter="source", response_flags="UO", response_code="503") == overflow
    assert delta(s, s0, reporter="source", response_flags="-", response_code="200") == n - overflow


async def test_http2_prior_knowledge_is_http(mesh: Mesh) -> None:
    client, server = await _world(mesh)
    async with httpx.AsyncClient(http1=False, http2=True, trust_env=False, timeout=5) as c:
        url = f"http://{client.spec.ip}:15080/h2"

        async def first() -> None:
            assert (await c.get(url, headers={"Host": "reviews:9080"})).status_code == 200
        await eventually(first, timeout=10)
        s0, d0 = await scrape(client), await scrape(server)
        for _ in range(3):
            r = await c.get(url, headers={"Host": "reviews:9080"})
            assert r.status_code == 200 and r.http_version == "HTTP/2"
    s, d = await scrape(client), await scrape(server)
    assert delta(s, s0, reporter="source", request_protocol="http", **REVIEWS_V1) == 3
    assert delta(d, d0, reporter="destination", request_protocol="http", **PRODUCTPAGE) == 3


@contextlib.asynccontextmanager
async def _grpc_server(ip: str, port: int) -> AsyncIterator[None]:
    async def say(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        if request == b"fail":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no")
        return request

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "mizzen.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}),))
    assert server.add_insecure_port(f"{ip}:{port}") == port
    await server.start()
    try:
        yield
    finally:
        await server.stop(None)


async def test_grpc_protocol_and_status(mesh: Mesh) -> None:
    app_ip, pod_ip = alloc_ip(), alloc_ip()
    async with _grpc_server(app_ip, 50051):
        echo = await mesh.sidecar(NS, "echo-v1-6d9f8c7b5d-abcde", {"app": "echo", "version": "v1"}, ip=pod_ip,
                                  app_host=app_ip)
        mesh.cp.register_workload(Workload(name="echo-v1-6d9f8c7b5d-abcde", namespace=NS, address=pod_ip,
                                           labels={"app": "echo", "version": "v1"}))
        client = await mesh.sidecar(NS, CLIENT_POD, {"app": "productpage", "version": "v1"})
        await mesh.apply_yaml("""
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: bookinfo}
spec: {ports: [{port: 50051, name: grpc}], selector: {app: echo}}
""")
        await mesh.wait_synced()
        target = f"{client.spec.ip}:15080"
        opts = [("grpc.default_authority", "echo:50051"), ("grpc.enable_http_proxy", 0)]
        async with grpc.aio.insecure_channel(target, options=opts) as ch:
            say = ch.unary_unary("/mizzen.Echo/Say")

            async def first() -> None:
                try:
                    assert await say(b"hi", timeout=3) == b"hi"
                except grpc.aio.AioRpcError as e:
                    raise AssertionError(e) from None
            await eventually(first, timeout=10)
            s0, d0 = await scrape(client), await scrape(echo)
            for _ in range(3):
                assert await say(b"hi", timeout=3) == b"hi"
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await say(b"fail", timeout=3)
                assert e.value.code() is grpc.StatusCode.NOT_FOUND
        s, d = await scrape(client), await scrape(echo)
        for after, before, rep in ((s, s0, "source"), (d, d0, "destination")):
            ok = dict(reporter=rep, request_protocol="grpc", response_code="200",
                      destination_workload="echo-v1")
            assert delta(after, before, grpc_response_status="0", **ok) == 3, rep
            assert delta(after, before, grpc_response_status="5", **ok) == 2, rep
            assert delta(after, before, reporter=rep, request_protocol="http") == 0
