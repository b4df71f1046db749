"""Envoy 1.40 accepts what LDS emits (``envoy --mode validate`` on bootstraps embedding generated listeners)
and the listeners behave: inbound HTTP to the app, the local-mode HTTP forward proxy with absolute URIs, a
gateway terminating TLS by SNI from certificate files, and the access log."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from envoy.config.route.v3 import route_components_pb2, route_pb2
from listeners_testkit import (
    bootstrap,
    by_name,
    configs,
    envoy_validate,
    free_port,
    gateway,
    http,
    loopback,
    push_of,
    running_envoy,
    self_signed,
    service,
    sidecar,
)

from mizzen import telemetry
from mizzen.core.listeners import build_listeners, route_config_names
from mizzen.core.mesh import MeshConfig, OutboundPolicy
from mizzen.registry.model import Protocol

pytestmark = pytest.mark.e2e

REVIEWS = service("reviews", [(9080, Protocol.HTTP), (5000, Protocol.TCP)])
RATINGS = service("ratings", [(9080, Protocol.HTTP)])
MONGO = service("mongodb", [(27017, Protocol.MONGO)], addresses=("10.0.0.7",))
DB_A = service("db-a", [(3306, Protocol.TCP)], addresses=("10.0.1.1",))
DB_B = service("db-b", [(3306, Protocol.TCP)], addresses=("10.0.1.2",))
API = service("api", [(443, Protocol.TLS)], hostname="api.example.com", selector={})

SIDECAR_CFG = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: 127.0.10.50
    hosts: ["./*"]
  - port: {number: 27017, protocol: TCP, name: tcp}
    bind: 127.0.10.50
    hosts: ["./*"]
  - hosts: ["*/*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mongo}
spec:
  hosts: [mongodb]
  tcp:
  - route:
    - destination: {host: mongodb, subset: v1}
      weight: 70
    - destination: {host: mongodb, subset: v2}
      weight: 30
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api.example.com]
  tls:
  - match: [{port: 443, sniHosts: [api.example.com]}]
    route: [{destination: {host: api.example.com}}]
"""


@pytest.fixture(autouse=True)
def _telemetry() -> Iterator[None]:
    """Access logs (and Istio's stats loggers) come from the telemetry listener plugin, as in the control
    plane; Envoy must accept them with everything core builds."""
    telemetry.acquire()
    try:
        yield
    finally:
        telemetry.release()


def _validate(listeners: list[Any], tmp_path: Path) -> None:
    assert listeners
    res = envoy_validate(bootstrap(listeners, ("127.0.0.1", 0)), tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "OK" in res.stdout + res.stderr


@pytest.mark.parametrize("encoding", ["TEXT", "JSON"])
def test_envoy_accepts_local_mode_sidecar(tmp_path: Path, encoding: str) -> None:
    mesh = MeshConfig(access_log_file=str(tmp_path / "access.log"), access_log_encoding=encoding)
    lds = build_listeners(
        sidecar(http_proxy_port=15080), push_of([REVIEWS, RATINGS, MONGO], configs(SIDECAR_CFG), mesh)
    )
    assert {lis.name for lis in lds} == {
        "127.0.10.1_15080",
        "127.0.10.1_9080",
        "127.0.10.1_5000",
        "127.0.10.50_9080",
        "127.0.10.50_27017",
    }
    _validate(lds, tmp_path)


@pytest.mark.parametrize("policy", list(OutboundPolicy))
def test_envoy_accepts_redirect_mode_sidecar(tmp_path: Path, policy: OutboundPolicy) -> None:
    push = push_of(
        [
            REVIEWS,
            RATINGS,
            MONGO,
            DB_A,
            DB_B,
            API,
            service("legacy", [(9080, Protocol.TCP)], addresses=("10.0.2.1",)),
        ],
        configs(SIDECAR_CFG),
        MeshConfig(outbound_policy=policy),
    )
    lds = build_listeners(sidecar(mode="REDIRECT", http_proxy_port=15080), push)
    assert {"virtualOutbound", "virtualInbound", "0.0.0.0_443", "0.0.0.0_3306"} <= set(by_name(lds))
    _validate(lds, tmp_path)


def test_envoy_accepts_gateway_listeners(tmp_path: Path) -> None:
    files = self_signed(tmp_path, ["bookinfo.example.com", "*.example.org"])
    cert, key = files["cert"], files["key"]
    cfg = f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*"]
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: ["bookinfo/bookinfo.example.com"]
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}, minProtocolVersion: TLSV1_2}}
  - port: {{number: 443, name: https-mtls, protocol: HTTPS}}
    hosts: ["*.example.org"]
    tls: {{mode: MUTUAL, serverCertificate: {cert}, privateKey: {key}, caCertificates: {cert},
           subjectAltNames: [client.example.org]}}
  - port: {{number: 15443, name: tls, protocol: TLS}}
    hosts: ["api.example.com"]
    tls: {{mode: PASSTHROUGH}}
  - port: {{number: 31400, name: tcp, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: gw-routes, namespace: istio-system}}
spec:
  hosts: ["*"]
  gateways: [gw]
  tls:
  - match: [{{sniHosts: [api.example.com]}}]
    route: [{{destination: {{host: api.example.com}}}}]
  tcp:
  - match: [{{port: 31400}}]
    route:
    - destination: {{host: mongodb.bookinfo.svc.cluster.local}}
      weight: 50
    - destination: {{host: mongodb.bookinfo.svc.cluster.local, subset: v2}}
      weight: 50
"""
    lds = build_listeners(gateway(), push_of([MONGO, API], configs(cfg)))
    assert {lis.name for lis in lds} == {
        "127.0.20.1_8080",
        "127.0.20.1_8443",
        "127.0.20.1_15443",
        "127.0.20.1_31400",
    }
    _validate(lds, tmp_path)


# --- real traffic -------------------------------------------------------------------------------------------
@pytest.fixture
async def app() -> AsyncIterator[tuple[str, int]]:
    """An HTTP app on its own loopback address echoing host and path as JSON."""

    async def echo(req: web.Request) -> web.Response:
        return web.json_response(
            {"host": req.host, "path": req.path_qs, "rid": req.headers.get("x-request-id")}
        )

    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    ip = loopback()
    port = free_port(ip)
    await web.TCPSite(runner, ip, port).start()
    try:
        yield ip, port
    finally:
        await runner.cleanup()


def _route(name: str, cluster: str, domains: list[str]) -> Any:
    vh = route_components_pb2.VirtualHost(
        name=name,
        domains=domains,
        routes=[
            route_components_pb2.Route(
                match=route_components_pb2.RouteMatch(prefix="/"),
                route=route_components_pb2.RouteAction(cluster=cluster),
            )
        ],
    )
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[vh])


async def test_inbound_and_http_proxy_with_absolute_uri(tmp_path: Path, app: tuple[str, int]) -> None:
    app_ip, app_port = app
    ip = loopback()
    proxy_port = free_port(ip)
    proxy = sidecar(ip=ip, http_proxy_port=proxy_port)
    svc = service("reviews", [(app_port, Protocol.HTTP)], selector={"app": "reviews"})
    log = tmp_path / "access.log"
    mesh = MeshConfig(access_log_file=str(log), access_log_encoding="JSON")
    lds = build_listeners(proxy, push_of([svc], mesh=mesh))
    assert route_config_names(lds) == ["http_proxy"]
    outbound = f"outbound|9080||{svc.hostname}"
    routes = {"http_proxy": _route("http_proxy", outbound, ["reviews:9080", f"{svc.hostname}:9080"])}
    upstreams = {f"inbound|{app_port}||": (app_ip, app_port), outbound: (app_ip, app_port)}
    cfg = bootstrap(lds, (ip, free_port(ip)), routes, upstreams)
    async with running_envoy(cfg, tmp_path, (ip, proxy_port)):
        await asyncio.wait_for(_wait_listener(ip, app_port), 10)
        # inbound: <pod ip>:<port> -> inbound|port|| -> the app
        status, headers, body = await http(
            ip, app_port, f"GET /hello?x=1 HTTP/1.1\r\nHost: reviews:{app_port}\r\nConnection: close\r\n\r\n"
        )
        assert status == 200, body
        assert headers["server"] == "istio-envoy"
        assert json.loads(body)["path"] == "/hello?x=1"
        # the forward proxy: the absolute URI decides the route, not the Host header
        status, _, body = await http(
            ip,
            proxy_port,
            "GET http://reviews:9080/reviews/0 HTTP/1.1\r\nHost: wrong\r\nConnection: close\r\n\r\n",
        )
        assert status == 200, body
        assert json.loads(body) == {
            "host": "reviews:9080",
            "path": "/reviews/0",
            "rid": json.loads(body)["rid"],
        }
        status, _, _ = await http(
            ip,
            proxy_port,
            "GET http://unknown:9080/ HTTP/1.1\r\nHost: reviews:9080\r\nConnection: close\r\n\r\n",
        )
        assert status == 404
        lines = await _log_lines(log, 3)
    entries = [json.loads(x) for x in lines]
    assert {e["upstream_cluster"] for e in entries} >= {f"inbound|{app_port}||", outbound}
    assert any(e["path"] == "/reviews/0" and e["authority"] == "reviews:9080" for e in entries)


async def _wait_listener(ip: str, port: int) -> None:
    while True:
        try:
            _, w = await asyncio.open_connection(ip, port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)


async def _log_lines(path: Path, n: int) -> list[str]:
    for _ in range(100):
        if path.exists():
            lines = [x for x in path.read_text().splitlines() if x.strip()]
            if len(lines) >= n:
                return lines
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"access log has fewer than {n} lines: {path.read_text() if path.exists() else None}"
    )


async def test_gateway_terminates_tls_by_sni(tmp_path: Path, app: tuple[str, int]) -> None:
    app_ip, app_port = app
    files = self_signed(tmp_path, ["bookinfo.example.com"])
    ip = loopback()
    https_port, http_port = free_port(ip), free_port(ip)
    cfg = f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: secure, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: ["bookinfo.example.com"]
    tls: {{mode: SIMPLE, serverCertificate: {files["cert"]}, privateKey: {files["key"]}}}
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*"]
"""
    proxy = gateway(ip=ip, ports={443: https_port, 80: http_port})
    lds = build_listeners(proxy, push_of([], configs(cfg)))
    names = route_config_names(lds)
    https_route = f"https.{https_port}.https.secure.istio-system"
    assert names == sorted([https_route, f"http.{http_port}"])
    routes = {n: _route(n, "outbound|9080||productpage.bookinfo.svc.cluster.local", ["*"]) for n in names}
    upstreams = {"outbound|9080||productpage.bookinfo.svc.cluster.local": (app_ip, app_port)}
    boot = bootstrap(lds, (ip, free_port(ip)), routes, upstreams)
    client = ssl.create_default_context(cafile=str(files["cert"]))
    async with running_envoy(boot, tmp_path, (ip, https_port)):
        req = "GET /productpage HTTP/1.1\r\nHost: bookinfo.example.com\r\nConnection: close\r\n\r\n"
        status, _, body = await http(ip, https_port, req, tls=client, sni="bookinfo.example.com")
        assert status == 200, body
        assert json.loads(body)["path"] == "/productpage"
        assert json.loads(body)["rid"]  # generated by the gateway
        # an SNI no server claims has no filter chain: the handshake fails
        with pytest.raises((ssl.SSLError, ConnectionResetError, asyncio.IncompleteReadError)):
            await http(ip, https_port, req, tls=client, sni="other.example.com")
        status, _, _ = await http(ip, http_port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status == 200


async def _tls_backend(tmp: Path, host: str) -> tuple[asyncio.Server, str, int, Path]:
    """A TLS server for ``host`` that answers every connection with its own name."""
    files = self_signed(tmp, [host])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files["cert"], files["key"])

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(host.encode())
        await w.drain()
        w.close()

    ip = loopback()
    server = await asyncio.start_server(handle, ip, 0, ssl=ctx)
    return server, ip, server.sockets[0].getsockname()[1], files["cert"]


async def test_gateway_tls_passthrough_by_sni_and_tcp_server(tmp_path: Path) -> None:
    a, a_ip, a_port, a_cert = await _tls_backend(tmp_path, "a.example.com")
    b, b_ip, b_port, b_cert = await _tls_backend(tmp_path, "b.example.com")

    async def plain(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"echo:" + await r.readline())
        await w.drain()
        w.close()

    c_ip = loopback()
    c = await asyncio.start_server(plain, c_ip, 0)
    c_port = c.sockets[0].getsockname()[1]
    cfg = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["a.example.com", "b.example.com"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge, namespace: default}
spec:
  hosts: ["a.example.com", "b.example.com"]
  gateways: [edge]
  tls:
  - match: [{sniHosts: [a.example.com]}]
    route: [{destination: {host: a.example.com, port: {number: 443}}}]
  - match: [{sniHosts: [b.example.com]}]
    route: [{destination: {host: b.example.com, port: {number: 443}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp, namespace: default}
spec:
  hosts: ["*"]
  gateways: [edge]
  tcp:
  - route: [{destination: {host: echo, port: {number: 7000}}}]
"""
    ip = loopback()
    tls_port, tcp_port = free_port(ip), free_port(ip)
    lds = build_listeners(
        gateway(ip=ip, ports={443: tls_port, 31400: tcp_port}), push_of([], configs(cfg, "default"))
    )
    upstreams = {
        "outbound|443||a.example.com": (a_ip, a_port),
        "outbound|443||b.example.com": (b_ip, b_port),
        "outbound|7000||echo.default.svc.cluster.local": (c_ip, c_port),
    }
    boot = bootstrap(lds, (ip, free_port(ip)), {}, upstreams)
    try:
        async with running_envoy(boot, tmp_path, (ip, tcp_port)):
            for host, cert in (("a.example.com", a_cert), ("b.example.com", b_cert)):
                ctx = ssl.create_default_context(cafile=str(cert))
                r, w = await asyncio.wait_for(
                    asyncio.open_connection(ip, tls_port, ssl=ctx, server_hostname=host), 10
                )
                assert (
                    await asyncio.wait_for(r.read(), 10) == host.encode()
                )  # the backend's own cert verified
                w.close()
            r, w = await asyncio.wait_for(asyncio.open_connection(ip, tcp_port), 10)
            w.write(b"hello\n")
            await w.drain()
            assert await asyncio.wait_for(r.read(), 10) == b"echo:hello\n"
            w.close()
    finally:
        for s in (a, b, c):
            s.close()
            await s.wait_closed()
