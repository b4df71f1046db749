"""Helpers for the CLI tests: an event loop in a thread, a fake of the debug API, the real console script.

The CLI under test is synchronous, so servers run on their own loop in a background thread, bound to
127.0.91.x with ephemeral ports. ``run_cli`` runs the installed ``mizzen`` script as a real subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")
MIZZEN = str(Path(sys.executable).parent / "mizzen")
FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "tests" / "fixtures" / "seed"


class LoopThread:
    """An asyncio loop in a daemon thread; ``call(coro)`` runs a coroutine there and waits (bounded)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Awaitable[T], timeout: float = 20.0) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return fut.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class FakeApi:
    """The debug/API endpoints with canned answers; ``apply_status``/``apply_body`` script /apis/apply."""

    syncz: list[dict[str, Any]] = field(default_factory=list)
    dumps: dict[str, dict[str, Any]] = field(default_factory=dict)
    apply_status: int = 200
    apply_body: dict[str, Any] = field(default_factory=lambda: {"results": [], "warnings": []})
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    delay_s: float = 0.0          # before answering /debug/syncz
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/version", self._version)
        app.router.add_post("/apis/apply", self._apply)
        app.router.add_get("/debug/syncz", self._syncz)
        app.router.add_get("/debug/config_dump", self._dump)
        return app

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "fake-1.0"})

    async def _apply(self, request: web.Request) -> web.Response:
        self.requests.append(("POST", request.path, await request.json()))
        return web.json_response(self.apply_body, status=self.apply_status)

    async def _syncz(self, request: web.Request) -> web.Response:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return web.json_response(self.syncz)

    async def _dump(self, request: web.Request) -> web.Response:
        pid = request.query.get("proxyID", "")
        self.requests.append(("GET", request.path, pid))
        if pid not in self.dumps:
            return web.json_response({"error": f"no proxy {pid!r}"}, status=404)
        return web.json_response(self.dumps[pid])


async def start_site(app: web.Application, host: str) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://{host}:{port}"


@dataclass
class RealControlPlane:
    url: str
    cp: Any
    loop: LoopThread

    @property
    def token(self) -> str:
        token: str = self.cp.token
        return token

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        return self.loop.call(fn())


@contextlib.contextmanager
def running_control_plane(host: str) -> Iterator[RealControlPlane]:
    """The real :class:`mizzen.controlplane.server.ControlPlane`, in memory, HTTP + xDS on ephemeral ports
    of ``host``, driven from a background event loop. Its API token is in ``$MIZZEN_TOKEN`` while it runs,
    which is how the ``mizzen`` commands under test (in-process or subprocesses) find it."""
    from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions

    lt = LoopThread()
    opts = ControlPlaneOptions(xds_host=host, xds_port=0, http_host=host, http_port=0,
                               debounce_quiet_s=0.01, debounce_max_s=0.05)

    async def start() -> Any:
        cp = ControlPlane(opts)
        await cp.start()
        return cp

    cp = lt.call(start())
    saved = os.environ.get("MIZZEN_TOKEN")
    os.environ["MIZZEN_TOKEN"] = cp.token
    try:
        yield RealControlPlane(cp.http_url, cp, lt)
    finally:
        if saved is None:
            os.environ.pop("MIZZEN_TOKEN", None)
        else:
            os.environ["MIZZEN_TOKEN"] = saved
        lt.call(cp.stop())
        lt.close()


def run_cli(
    *args: str, server: str | None = None, timeout: float = 30.0, stdin: str | None = None,
    env_extra: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The installed console script as a real subprocess."""
    env = {k: v for k, v in os.environ.items() if k != "MIZZEN_SERVER"}
    if server:
        env["MIZZEN_SERVER"] = server
    env.update(env_extra or {})
    return subprocess.run([MIZZEN, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=REPO, check=False, input=stdin)
