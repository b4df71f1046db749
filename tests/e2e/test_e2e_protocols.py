"""Protocols end to end through the real control plane and real Envoys: HTTP/2 (h2c prior knowledge), gRPC
(grpcio backend on a ``grpc`` Service port, unary and streaming, via the gateway and via a client sidecar into
the backend's sidecar), WebSocket upgrades (gateway and sidecar proxy) and HTTP/1.1 keepalive. Gateway TLS is
in test_e2e_gateway_tls.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import grpc
import httpx
import pytest
from aiohttp import web

from harness import Mesh, alloc_ip, eventually
from mizzen.agent.envoy import Agent
from mizzen.registry.model import Workload

pytestmark = pytest.mark.e2e

NS = "proto"
SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: echo}
spec: {ports: [{port: 50051, name: grpc}], selector: {app: echo}}
---
apiVersion: v1
kind: Service
metadata: {name: ws}
spec: {ports: [{port: 8080, name: http}], selector: {app: ws}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 9080, name: http}], selector: {app: web}}
"""
GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge}
spec:
  hosts: [grpc.example.com, ws.example.com, web.example.com]
  gateways: [gw]
  http:
  - match: [{authority: {exact: grpc.example.com}}]
    route: [{destination: {host: echo, port: {number: 50051}}}]
  - match: [{authority: {exact: ws.example.com}}]
    route: [{destination: {host: ws}}]
  - route: [{destination: {host: web}}]
"""


async def world(mesh: Mesh) -> None:
    await mesh.apply_yaml(SERVICES, namespace=NS, file="services.yaml")
    await mesh.apply_yaml(GATEWAY, namespace=NS, file="gateway.yaml")


@pytest.fixture
async def stack(mesh: Mesh) -> AsyncIterator[contextlib.AsyncExitStack]:
    """Servers and registrations a test adds besides the harness's; closed before the mesh stops."""
    async with contextlib.AsyncExitStack() as s:
        yield s


def register(mesh: Mesh, stack: contextlib.AsyncExitStack, pod: str, address: str,
             labels: dict[str, str]) -> None:
    mesh.cp.register_workload(Workload(name=pod, namespace=NS, address=address, labels=labels))
    stack.callback(mesh.cp.remove_workload, NS, pod)


# --- gRPC ---------------------------------------------------------------------------------------------------
@dataclass
class GrpcEcho:
    """A grpcio server with raw-bytes methods ``/mizzen.Echo/Say`` (unary), ``/mizzen.Echo/Count`` (server
    streaming), ``Flaky`` (UNAVAILABLE while ``flaky_left`` > 0) and ``Slow`` (answers after 2 s); records the
    metadata each ``Say`` arrived with and counts ``Flaky`` calls."""

    pod: str
    metadata: list[dict[str, str]] = field(default_factory=list)
    flaky_left: int = 0
    flaky_calls: int = 0

    async def flaky(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        self.flaky_calls += 1
        if self.flaky_left > 0:
            self.flaky_left -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return b"ok"

    async def slow(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await asyncio.sleep(2)
        return b"late"

    async def say(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        self.metadata.append({str(k): str(v) for k, v in context.invocation_metadata() or ()})
        return json.dumps({"pod": self.pod, "msg": request.decode()}).encode()

    async def count(self, request: bytes,
                    context: grpc.aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
        for i in range(int(request)):
            yield str(i).encode()

    async def serve(self, stack: contextlib.AsyncExitStack, ip: str, port: int) -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("mizzen.Echo", {
            "Say": grpc.unary_unary_rpc_method_handler(self.say),
            "Count": grpc.unary_stream_rpc_method_handler(self.count),
            "Flaky": grpc.unary_unary_rpc_method_handler(self.flaky),
            "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
        }),))
        assert server.add_insecure_port(f"{ip}:{port}") == port
        await server.start()
        stack.push_async_callback(server.stop, None)


async def grpc_echo_with_sidecar(mesh: Mesh, stack: contextlib.AsyncExitStack) -> tuple[GrpcEcho, str]:
    """The echo app on a private IP behind its own sidecar (inbound listener on the pod IP); returns the pod
    IP, the address other proxies send to."""
    app_ip, pod_ip = alloc_ip(), alloc_ip()
    echo = GrpcEcho("echo-v1-pod")
    await echo.serve(stack, app_ip, 50051)
    await mesh.sidecar(NS, echo.pod, {"app": "echo", "version": "v1"}, ip=pod_ip, app_host=app_ip)
    register(mesh, stack, echo.pod, pod_ip, {"app": "echo", "version": "v1"})
    return echo, pod_ip


def channel(target: str, authority: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=[("grpc.default_authority", authority),
                                                      ("grpc.enable_http_proxy", 0)])


async def grpc_calls(target: str, authority: str) -> tuple[dict[str, str], list[bytes]]:
    async with channel(target, authority) as ch:
        say = await ch.unary_unary("/mizzen.Echo/Say")(b"hello", timeout=3)
        stream = [m async for m in ch.unary_stream("/mizzen.Echo/Count")(b"5", timeout=3)]
    return json.loads(say), stream


async def test_grpc_through_gateway_and_through_sidecars(mesh: Mesh,
                                                         stack: contextlib.AsyncExitStack) -> None:
    await world(mesh)
    echo, _ = await grpc_echo_with_sidecar(mesh, stack)
    gw = await mesh.gateway()
    client = await mesh.sidecar(NS, "caller-v1-pod", {"app": "caller"})
    await mesh.wait_synced()

    # client -> gateway (h2c) -> echo's sidecar inbound listener (HTTP/2 upstream) -> grpcio
    async def via_gateway() -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            say, stream = await grpc_calls(f"{gw.spec.ip}:8080", "grpc.example.com")
            assert say == {"pod": echo.pod, "msg": "hello"} and stream == [b"0", b"1", b"2", b"3", b"4"]
            return
        raise AssertionError("gRPC via gateway failed")
    await eventually(via_gateway)
    assert "x-envoy-external-address" in echo.metadata[-1], echo.metadata   # set by the edge proxy

    # app -> its sidecar's outbound listener with h2 prior knowledge (routed by :authority, no CONNECT
    # needed) -> echo's sidecar inbound -> grpcio
    say, stream = await grpc_calls(f"{client.spec.ip}:15080", "echo:50051")
    assert say["pod"] == echo.pod and len(stream) == 5
    assert "x-request-id" in echo.metadata[-1] and "x-envoy-external-address" not in echo.metadata[-1]

    # a status from the backend (UNIMPLEMENTED) crosses both proxies intact
    async with channel(f"{client.spec.ip}:15080", "echo:50051") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await ch.unary_unary("/mizzen.Echo/Nope")(b"", timeout=3)
    assert e.value.code() is grpc.StatusCode.UNIMPLEMENTED
    # the client sidecar spoke HTTP/2 upstream (the grpc port's protocol)
    h2 = await _stats(client, "cluster.outbound|50051||echo.proto.svc.cluster.local.upstream_cx_http2_total")
    assert h2[0] >= 1, h2


GRPC_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo]
  http:
  - match: [{uri: {prefix: /mizzen.Echo/Say}, headers: {x-fault: {exact: "on"}}}]
    fault: {abort: {grpcStatus: RESOURCE_EXHAUSTED, percentage: {value: 100}}}
    route: [{destination: {host: echo}}]
  - match: [{uri: {exact: /mizzen.Echo/Flaky}}]
    retries: {attempts: 3, perTryTimeout: 1s, retryOn: unavailable}
    route: [{destination: {host: echo}}]
  - match: [{uri: {exact: /mizzen.Echo/Slow}}]
    timeout: 0.3s
    route: [{destination: {host: echo}}]
  - route: [{destination: {host: echo}}]
"""


async def test_grpc_fault_retry_and_timeout(mesh: Mesh, stack: contextlib.AsyncExitStack) -> None:
    await world(mesh)
    echo, _ = await grpc_echo_with_sidecar(mesh, stack)
    client = await mesh.sidecar(NS, "caller-v1-pod", {"app": "caller"})
    await mesh.apply_yaml(GRPC_VS, namespace=NS)
    await mesh.wait_synced()
    async with channel(f"{client.spec.ip}:15080", "echo:50051") as ch:
        say = ch.unary_unary("/mizzen.Echo/Say")

        async def aborted() -> None:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await say(b"x", timeout=3, metadata=(("x-fault", "on"),))
            assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
        await eventually(aborted)
        n = len(echo.metadata)
        assert json.loads(await say(b"x", timeout=3))["msg"] == "x"     # without the header: no fault
        assert len(echo.metadata) == n + 1                              # the aborted call never arrived

        echo.flaky_left = 2                       # two UNAVAILABLE answers, retried by the sidecar
        assert await ch.unary_unary("/mizzen.Echo/Flaky")(b"", timeout=3) == b"ok"
        assert echo.flaky_calls == 3
        echo.flaky_left, echo.flaky_calls = 5, 0  # more failures than attempts: the status reaches the app
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await ch.unary_unary("/mizzen.Echo/Flaky")(b"", timeout=3)
        assert e.value.code() is grpc.StatusCode.UNAVAILABLE and echo.flaky_calls == 4

        t0 = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await ch.unary_unary("/mizzen.Echo/Slow")(b"", timeout=3)
        assert time.monotonic() - t0 < 1.5                 # the route timeout, not the client's 3 s deadline
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), e.value

    # the sidecar's outbound listener is a forward proxy without CONNECT: a gRPC client configured to use it
    # as its HTTP proxy (grpc.http_proxy / HTTP_PROXY) cannot tunnel; apps dial it directly (above)
    rejected = f"http.outbound_{client.spec.ip}_15080.downstream_rq_4xx"
    before = await _stats(client, rejected)
    async with grpc.aio.insecure_channel("echo:50051", options=[
            ("grpc.http_proxy", f"http://{client.spec.ip}:15080")]) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await ch.unary_unary("/mizzen.Echo/Say")(b"x", timeout=2)
    assert e.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "proxy returned response code 404" in str(e.value)
    assert (await _stats(client, rejected))[0] == before[0] + 1      # Envoy answered the CONNECT with 404


# --- HTTP/2 and keepalive -----------------------------------------------------------------------------------
async def test_http2_prior_knowledge_via_gateway_and_sidecar(mesh: Mesh) -> None:
    await world(mesh)
    web_b = await mesh.backend("web", namespace=NS, port=9080)
    gw = await mesh.gateway()
    client = await mesh.sidecar(NS, "caller-v1-pod", {"app": "caller"})
    await mesh.wait_synced()

    async def h2_gateway() -> None:
        async with httpx.AsyncClient(http1=False, http2=True, trust_env=False, timeout=5) as c:
            rs = await asyncio.gather(*(c.get(f"http://{gw.spec.ip}:8080/h2/{i}",
                                              headers={"Host": "web.example.com"}) for i in range(5)))
        for i, r in enumerate(rs):
            assert r.status_code == 200 and r.http_version == "HTTP/2", (r.status_code, r.http_version)
            assert r.json()["path"] == f"/h2/{i}" and r.headers["server"] == "istio-envoy"
    await eventually(h2_gateway)

    # h2c straight to the sidecar's outbound listener: :authority picks the route like Host does
    async with httpx.AsyncClient(http1=False, http2=True, trust_env=False, timeout=5) as c:
        r = await c.get(f"http://{client.spec.ip}:15080/side", headers={"Host": "web:9080"})
    assert r.status_code == 200 and r.http_version == "HTTP/2" and r.json()["pod"] == web_b.pod
    assert r.json()["headers"]["Host"] == "web:9080"


async def test_http11_keepalive_reuses_both_connections(mesh: Mesh) -> None:
    await world(mesh)
    web_b = await mesh.backend("web", namespace=NS, port=9080)
    gw = await mesh.gateway()
    await mesh.wait_synced()
    async with mesh.gateway_client(gw) as c:
        await eventually(lambda: _ok(c.get("/", headers={"Host": "web.example.com"})))

    keys = (f"http.outbound_{gw.spec.ip}_8080.downstream_cx_total",
            "cluster.outbound|9080||web.proto.svc.cluster.local.upstream_cx_total")
    before = await _stats(gw, *keys)
    reader, writer = await asyncio.open_connection(gw.spec.ip, 8080)
    try:
        for i in range(5):          # five requests on one client connection, answers read in order
            writer.write(f"GET /ka/{i} HTTP/1.1\r\nHost: web.example.com\r\n\r\n".encode())
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 3)
            assert status.startswith(b"HTTP/1.1 200"), status
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                assert name.lower() != "connection" or "close" not in value.lower()
            assert json.loads(await reader.readexactly(length))["path"] == f"/ka/{i}"
    finally:
        writer.close()
    after = await _stats(gw, *keys)
    assert after[0] - before[0] == 1, (before, after)          # one downstream connection for five requests
    assert after[1] - before[1] == 0, (before, after)          # the upstream connection was pooled and reused
    assert web_b.paths[-5:] == [f"/ka/{i}" for i in range(5)]


async def _ok(req: object) -> None:
    r = await req  # type: ignore[misc]
    assert r.status_code == 200, r.status_code


async def _stats(agent: Agent, *keys: str) -> list[int]:
    """Counter values by exact stat name (a missing stat fails the test)."""
    text = await agent.admin_get("/stats")
    values = dict(line.rsplit(": ", 1) for line in text.splitlines() if ": " in line)
    return [int(values[k]) for k in keys]


# --- WebSocket ----------------------------------------------------------------------------------------------
async def ws_echo(mesh: Mesh, stack: contextlib.AsyncExitStack) -> list[str]:
    """An aiohttp WebSocket echo app (``/ws``) behind its own sidecar, registered as the ``ws`` workload (so
    every upgrade also crosses that sidecar's inbound listener); returns its Host log."""
    hosts: list[str] = []

    async def handle(request: web.Request) -> web.WebSocketResponse:
        hosts.append(request.host)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str(f"echo:{msg.data}")
        return ws

    app = web.Application()
    app.router.add_get("/ws", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    app_ip, pod_ip = alloc_ip(), alloc_ip()
    await web.TCPSite(runner, app_ip, 8080).start()
    stack.push_async_callback(runner.cleanup)
    labels = {"app": "ws", "version": "v1"}
    await mesh.sidecar(NS, "ws-v1-pod", labels, ip=pod_ip, app_host=app_ip)
    register(mesh, stack, "ws-v1-pod", pod_ip, labels)
    return hosts


async def _ws_roundtrip(session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None,
                        proxy: str | None = None) -> list[str]:
    async with session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_receive=3), headers=headers,
                                  proxy=proxy) as ws:
        out = []
        for i in range(3):
            await ws.send_str(f"m{i}")
            out.append((await ws.receive(timeout=3)).data)
        return out


async def test_websocket_via_gateway_and_sidecar_proxy(mesh: Mesh, stack: contextlib.AsyncExitStack) -> None:
    await world(mesh)
    hosts = await ws_echo(mesh, stack)
    gw = await mesh.gateway()
    client = await mesh.sidecar(NS, "caller-v1-pod", {"app": "caller"})
    await mesh.wait_synced()
    async with aiohttp.ClientSession(trust_env=False) as s:
        async def via_gateway() -> None:
            try:
                got = await _ws_roundtrip(s, f"http://{gw.spec.ip}:8080/ws",
                                          headers={"Host": "ws.example.com"})
            except aiohttp.ClientError as e:
                raise AssertionError(str(e)) from e
            assert got == ["echo:m0", "echo:m1", "echo:m2"], got
        await eventually(via_gateway)
        assert hosts[-1] == "ws.example.com"
        # the upgrade as an absolute-URI request through the sidecar's HTTP proxy listener
        got = await _ws_roundtrip(s, "http://ws:8080/ws", proxy=f"http://{client.spec.ip}:15080")
        assert got == ["echo:m0", "echo:m1", "echo:m2"] and hosts[-1] == "ws:8080"
    stats = await _stats(client, f"http.outbound_{client.spec.ip}_15080.downstream_cx_upgrades_total")
    assert stats[0] >= 1, stats
