"""Helpers for Bookinfo tests: run an app as a real process on a loopback address, and a fake mesh (an HTTP
proxy that answers by Host header, standing in for the sidecar's http_proxy listener) that records requests.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

import addrblocks

_ADDRS = itertools.count(2)
_BLOCK: list[int] = []   # the 127.77.<x> block this process claimed (addrblocks), once needed


def fresh_addr() -> str:
    """A loopback address unused by other tests in this session and by other test processes (so port 9080
    can be reused)."""
    if not _BLOCK:
        _BLOCK.append(addrblocks.claim(77))
    n = next(_ADDRS)
    assert n < 255, "more than 253 Bookinfo test addresses in one process"
    return f"127.77.{_BLOCK[0]}.{n}"


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} not accepting connections after {timeout}s")


@dataclass
class AppProc:
    host: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@pytest.fixture
def start_app() -> Iterator[Callable[..., AppProc]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(service: str, *args: str, env: dict[str, str] | None = None) -> AppProc:
        host = fresh_addr()
        full_env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
        full_env.update({"HOST": host, "PORT": "9080", **(env or {})})
        proc = subprocess.Popen(
            [sys.executable, "-m", "mizzen.bookinfo", service, *args],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        procs.append(proc)
        try:
            wait_port(host, 9080)
        except TimeoutError:
            proc.kill()
            raise AssertionError(proc.communicate()[1].decode()) from None
        return AppProc(host, 9080, proc)

    yield start
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.stderr:
            p.stderr.close()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeMesh:
    """An HTTP proxy on a loopback address: routes each request by its Host to a handler and records it."""

    host: str
    port: int
    routes: dict[str, Handler] = field(default_factory=dict)
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)   # (host, path, headers)

    @property
    def proxy_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def requests_to(self, host: str) -> list[tuple[str, str, dict[str, str]]]:
        return [s for s in self.seen if s[0] == host]


@pytest.fixture
async def fake_mesh() -> AsyncIterator[FakeMesh]:
    mesh = FakeMesh(fresh_addr(), 15080)

    async def dispatch(request: web.Request) -> web.StreamResponse:
        host = request.headers.get("Host", "").split(":")[0]
        mesh.seen.append((host, request.rel_url.path, {k.lower(): v for k, v in request.headers.items()}))
        handler = mesh.routes.get(host)
        if handler is None:
            return web.Response(status=503, text="no healthy upstream")
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", dispatch)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, mesh.host, mesh.port).start()
    yield mesh
    await runner.cleanup()


def json_handler(body: object, status: int = 200, delay: float = 0.0) -> Handler:
    async def handle(_: web.Request) -> web.StreamResponse:
        if delay:
            await asyncio.sleep(delay)
        return web.json_response(body, status=status)

    return handle
