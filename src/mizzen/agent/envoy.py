"""The agent's process job: write the bootstrap, start Envoy, wait until it is LIVE, supervise and drain it.

An unexpected Envoy exit is reported (log, ``on_event`` callback, restart count) and Envoy is restarted with
exponential backoff (0.2 s doubling up to 10 s; reset after a minute of stable running). ``stop()`` drains
listeners gracefully, then sends SIGTERM, and SIGKILL if Envoy does not exit in time.

Envoy's admin interface listens only on a Unix socket (mode 0600) in the agent's work dir (0700); the agent
itself uses it for readiness and draining. With ``AgentOptions.admin_token`` the agent also serves its
allow-listed admin proxy on ``<admin host>:<spec.admin_port>`` (:mod:`mizzen.agent.admin_proxy`).

Envoy's log file is kept under ``max_log_bytes`` (see :mod:`.logcap`).

With ``AgentOptions.identity`` the agent is also the pod's identity agent (:mod:`.identity`): SDS and the
xDS proxy start before Envoy, whose bootstrap then reaches the control plane only through the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from mizzen.agent.admin_proxy import AdminProxy
from mizzen.agent.binary import envoy_binary
from mizzen.agent.bootstrap import ADMIN_SOCKET_NAME, ProxySpec, render_bootstrap
from mizzen.agent.debug_channel import DebugChannel
from mizzen.agent.identity import IdentityOptions, WorkloadIdentity
from mizzen.agent.logcap import DEFAULT_MAX_LOG_BYTES, watch_log
from mizzen.agent.metrics_server import STATS_SOCKET_NAME, MetricsServer
from mizzen.childproc import tied_to_parent
from mizzen.core.proxy import ProxyType
from mizzen.telemetry.peer_address import AddressMap, grpc_fetch
from mizzen.telemetry.prometheus import AppScrape
from mizzen.tempdirs import owned_tempdir

log = logging.getLogger(__name__)

__all__ = [
    "Agent",
    "AgentError",
    "AgentEvent",
    "AgentOptions",
    "active_downstream_connections",
]

BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 10.0
STABLE_RESET_S = 60.0
# sun_path is 108 bytes: a socket in a longer work dir is bound relative to Envoy's working directory (the
# work dir) and reached by the agent through its own open directory fd (/proc/self/fd/N/admin.sock)
MAX_SOCKET_PATH = 100


def active_downstream_connections(stats: str) -> int:
    """Open downstream connections on the proxy's listeners (admin excluded), from admin ``/stats`` text."""
    total = 0
    for line in stats.splitlines():
        name, _, value = line.partition(":")
        parts = name.strip().split(".")
        if (len(parts) >= 3 and parts[0] == "listener" and parts[-1] == "downstream_cx_active"
                and parts[1] != "admin" and not parts[-2].startswith("worker_") and value.strip().isdigit()):
            total += int(value)
    return total


class AgentError(RuntimeError):
    pass


@dataclass(frozen=True)
class AgentEvent:
    """Something the supervisor reports: ``exited`` (unexpectedly), ``restarted`` or ``gave_up``."""

    kind: str
    node_id: str
    returncode: int | None = None
    restarts: int = 0
    detail: str = ""


@dataclass
class AgentOptions:
    log_level: str = "warning"
    concurrency: int = 1
    drain_time_s: int = 1
    parent_shutdown_time_s: int = 2
    work_dir: Path | None = None              # default: a temp dir, removed on stop
    extra_args: tuple[str, ...] = ()
    backoff_start_s: float = BACKOFF_START_S
    backoff_max_s: float = BACKOFF_MAX_S
    max_restarts: int | None = None           # None = forever
    service_node_flags: bool = False          # also pass --service-node/--service-cluster
    env: dict[str, str] = field(default_factory=dict)
    admin_token: str | None = None            # the API token: serve the admin proxy (None: no proxy)
    max_log_bytes: int = DEFAULT_MAX_LOG_BYTES   # envoy.log is rotated to envoy.log.1 beyond this (0: never)
    log_check_s: float = 2.0
    identity: IdentityOptions | None = None   # SDS + xDS over TLS through the agent (None: plaintext ADS)
    status_routes: tuple[tuple[str, Any], ...] = ()   # more GET routes on :15020 (app probes)


class Agent:
    """One supervised Envoy for one proxy. Use ``async with Agent(spec) as a:`` or ``start()``/``stop()``."""

    def __init__(
        self,
        spec: ProxySpec,
        options: AgentOptions | None = None,
        on_event: Callable[[AgentEvent], None] | None = None,
    ) -> None:
        self.spec = spec
        self.options = options or AgentOptions()
        self.on_event = on_event
        self.restarts = 0
        self.events: list[AgentEvent] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._log_watch: asyncio.Task[None] | None = None
        self._stopping = False
        self._owns_work_dir = self.options.work_dir is None
        self._work_dir: Path | None = self.options.work_dir
        self._started_at = 0.0
        self._running = asyncio.Event()     # set while a process is up
        self._dir_fd: int | None = None       # the work dir, open, when its socket path is too long
        self.admin_proxy: AdminProxy | None = None
        self.identity: WorkloadIdentity | None = None
        self.metrics_server: MetricsServer | None = None
        self.debug_channel: DebugChannel | None = None
        self._lookup_channel: grpc.aio.Channel | None = None   # the plaintext port's, for address lookups

    # --- properties -----------------------------------------------------------------------------------------
    @property
    def node_id(self) -> str:
        return self.spec.node_id

    @property
    def admin_socket(self) -> Path:
        """Envoy's admin interface (a 0600 Unix socket): only this agent's user reaches it."""
        return self.work_dir / ADMIN_SOCKET_NAME

    @property
    def admin_connect_path(self) -> str:
        """A path this process can connect to the admin socket with (short even for a long work dir)."""
        if self._dir_fd is not None:
            return f"/proc/self/fd/{self._dir_fd}/{ADMIN_SOCKET_NAME}"
        return str(self.admin_socket)

    @property
    def admin_proxy_url(self) -> str | None:
        """The agent's admin proxy (``http://<admin host>:15004``), when it serves one."""
        return self.admin_proxy.url if self.admin_proxy is not None else None

    def _admin_session(self, timeout: float) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.admin_connect_path),
                                     timeout=aiohttp.ClientTimeout(total=timeout))

    @property
    def work_dir(self) -> Path:
        if self._work_dir is None:
            raise AgentError("agent not started")
        return self._work_dir

    @property
    def bootstrap_path(self) -> Path:
        return self.work_dir / "envoy.json"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "envoy.log"

    @property
    def output_path(self) -> Path:
        return self.work_dir / "envoy.out"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def command(self) -> list[str]:
        o = self.options
        args = [
            str(envoy_binary()),
            "-c", str(self.bootstrap_path),
            "--disable-hot-restart",
            "-l", o.log_level,
            "--log-path", str(self.log_path),
            "--drain-time-s", str(o.drain_time_s),
            "--parent-shutdown-time-s", str(o.parent_shutdown_time_s),
            "--concurrency", str(o.concurrency),
        ]
        if o.service_node_flags:
            args += ["--service-node", self.node_id, "--service-cluster", self.spec.cluster]
        return args + list(o.extra_args)

    # --- lifecycle ------------------------------------------------------------------------------------------
    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, ready_timeout: float | None = 30.0) -> None:
        """Write the bootstrap, start and supervise Envoy; wait until LIVE unless ready_timeout is None."""
        if self._supervisor is not None:
            raise AgentError("agent already started")
        if self._work_dir is None:
            self._work_dir = owned_tempdir("mizzen-agent-")
        self._work_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            if self._work_dir.stat().st_uid == os.getuid():
                os.chmod(self._work_dir, 0o700)     # the admin socket and logs are the agent's alone
        try:
            bound = str(self.admin_socket)
            bind_dir = envoy_dir = str(self._work_dir.absolute())
            if len(str(self._work_dir.absolute() / ADMIN_SOCKET_NAME)) > MAX_SOCKET_PATH:
                self._dir_fd = os.open(self._work_dir, os.O_PATH | os.O_DIRECTORY)
                bound = ADMIN_SOCKET_NAME           # relative to Envoy's working directory, the work dir
                bind_dir, envoy_dir = f"/proc/self/fd/{self._dir_fd}", ""
            sockets: dict[str, str] = {}
            if self.options.identity is not None:
                self.identity = WorkloadIdentity(self.spec, self.options.identity, self._work_dir, bind_dir,
                                                 envoy_dir)
                await self.identity.start()
                sockets = {"xds_socket": self.identity.xds_socket, "sds_socket": self.identity.sds_socket}
            stats_bound = str(self.work_dir.absolute() / STATS_SOCKET_NAME) if self._dir_fd is None \
                else STATS_SOCKET_NAME
            tmp = self.bootstrap_path.with_suffix(".tmp")
            tmp.write_text(render_bootstrap(self.spec, bound, stats_socket=stats_bound, **sockets))
            os.replace(tmp, self.bootstrap_path)
            self._stopping = False
            await self._spawn()
        except BaseException:           # nothing started: leave no temp work dir behind
            if self.identity is not None:
                await self.identity.stop()
                self.identity = None
            self._remove_own_work_dir()
            raise
        self._supervisor = asyncio.create_task(self._supervise(), name=f"agent {self.node_id}")
        try:
            await self._start_metrics()
        except BaseException:
            await self.stop()
            raise
        if self.options.admin_token:
            proxy = AdminProxy(Path(self.admin_connect_path), self.spec.effective_admin_host,
                               self.spec.admin_port, self.options.admin_token)
            try:
                await proxy.start()
            except BaseException:
                await self.stop()
                raise
            self.admin_proxy = proxy
        wanted = self.options.identity is not None and self.options.identity.debug_channel
        if wanted and self.identity is not None and self.identity.xds_tls is not None:
            self.debug_channel = DebugChannel(
                self.identity.xds_tls, self.node_id,
                {"NAMESPACE": self.spec.namespace, "SERVICE_ACCOUNT": self.spec.service_account},
                Path(self.admin_connect_path), self.log_path)
            self.debug_channel.start()
        if self.options.max_log_bytes > 0:
            self._log_watch = asyncio.create_task(
                watch_log(self.log_path, self.options.max_log_bytes, self._reopen_logs,
                          self.options.log_check_s), name=f"agent log {self.node_id}")
        if ready_timeout is not None:
            try:
                await self.wait_ready(ready_timeout)
            except BaseException:
                await self.stop()
                raise

    async def _start_metrics(self) -> None:
        """The agent's metrics endpoints: :15090's socket (Istio's names) and the merged :15020."""
        spec = self.spec
        app = AppScrape(spec.app_metrics_port, spec.app_metrics_path) if spec.app_metrics_port else None
        stats_socket = (Path(f"/proc/self/fd/{self._dir_fd}/{STATS_SOCKET_NAME}") if self._dir_fd is not None
                        else self.work_dir / STATS_SOCKET_NAME)
        st = self.work_dir.stat()
        server = MetricsServer(self.admin_connect_path, stats_socket, spec.effective_admin_host,
                               spec.merged_stats_port, app, spec.app_host,
                               socket_owner=(st.st_uid, st.st_gid), extra_routes=self.options.status_routes,
                               peers=self._address_map())
        await server.start()
        self.metrics_server = server

    def _address_map(self) -> AddressMap:
        """The control plane's address-to-workload map for TCP source labels, asked over the agent's own
        channel: xDS over TLS with the pod's credential, else the plaintext xDS port (opened on first use)."""
        tls = self.identity.xds_tls if self.identity is not None else None
        if tls is not None:
            return AddressMap(grpc_fetch(tls.channel, tls.metadata))
        host, port = self.spec.xds_host, self.spec.xds_port
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

        def channel() -> grpc.aio.Channel:
            if self._lookup_channel is None:
                self._lookup_channel = grpc.aio.insecure_channel(target)
            return self._lookup_channel
        return AddressMap(grpc_fetch(channel, tuple))

    async def _spawn(self) -> None:
        env = {**os.environ, **self.options.env}
        with contextlib.suppress(FileNotFoundError):
            self.admin_socket.unlink()              # a stale socket from an earlier Envoy
        with open(self.output_path, "ab") as out:   # Envoy's stdout/stderr (flag errors, early crashes)
            self._proc = await asyncio.create_subprocess_exec(
                *tied_to_parent(self.command()),   # Envoy never outlives the agent
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=self.work_dir,                  # a relative admin socket path is bound here
                # its own process group: a Ctrl-C at the terminal goes to the supervisor, which drains and
                # stops Envoy in order, instead of killing every Envoy at once behind its back
                start_new_session=True,
            )
        self._started_at = time.monotonic()
        self._running.set()
        log.info("envoy for %s started (pid %d, admin %s)", self.node_id, self._proc.pid, self.admin_socket)

    def _emit(self, event: AgentEvent) -> None:
        self.events.append(event)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("agent event callback failed")

    async def _supervise(self) -> None:
        backoff = self.options.backoff_start_s
        while True:
            proc = self._proc
            assert proc is not None
            rc = await proc.wait()
            self._running.clear()
            if self._stopping:
                return
            ran_for = time.monotonic() - self._started_at
            if ran_for >= STABLE_RESET_S:
                backoff = self.options.backoff_start_s
            tail = self.log_tail(5)
            log.warning("envoy for %s exited unexpectedly (rc %s after %.1fs); restarting in %.1fs%s",
                        self.node_id, rc, ran_for, backoff, f"\n{tail}" if tail else "")
            self._emit(AgentEvent("exited", self.node_id, rc, self.restarts, tail))
            if self.options.max_restarts is not None and self.restarts >= self.options.max_restarts:
                self._emit(AgentEvent("gave_up", self.node_id, rc, self.restarts))
                return
            await asyncio.sleep(backoff)
            if self._stopping:
                return
            backoff = min(backoff * 2, self.options.backoff_max_s)
            try:
                await self._spawn()
            except OSError as e:
                log.error("could not restart envoy for %s: %s", self.node_id, e)
                self._emit(AgentEvent("gave_up", self.node_id, None, self.restarts, str(e)))
                return
            self.restarts += 1
            self._emit(AgentEvent("restarted", self.node_id, None, self.restarts))

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the admin ``/ready`` endpoint answers 200 ``LIVE``."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        async with self._admin_session(1.0) as session:
            while time.monotonic() < deadline:
                sup, proc = self._supervisor, self._proc
                if proc is not None and proc.returncode is not None and (sup is None or sup.done()):
                    raise AgentError(f"envoy for {self.node_id} exited with {proc.returncode} and is not "
                                     f"restarted: {self.log_tail(10)}")
                try:
                    async with session.get("http://localhost/ready") as resp:
                        body = (await resp.text()).strip()
                        if resp.status == 200 and body == "LIVE":
                            return
                        last = f"{resp.status} {body}"
                except (TimeoutError, aiohttp.ClientError, OSError) as e:
                    last = type(e).__name__
                await asyncio.sleep(0.05)
        raise AgentError(f"envoy for {self.node_id} not ready after {timeout}s (last: {last}); "
                         f"log: {self.log_tail(10)}")

    async def _reopen_logs(self) -> None:
        async with (
            self._admin_session(2.0) as session,
            session.post("http://localhost/reopen_logs") as resp,
        ):
            resp.raise_for_status()

    async def admin_get(self, path: str, timeout: float = 5.0) -> str:
        """GET an admin endpoint (e.g. ``/config_dump``) over the admin socket and return the body."""
        async with self._admin_session(timeout) as session, session.get(f"http://localhost{path}") as resp:
            return await resp.text()

    async def stop(self, timeout: float = 5.0) -> None:
        """Drain and stop Envoy (graceful listener drain, SIGTERM, SIGKILL after ``timeout``)."""
        self._stopping = True
        if self.debug_channel is not None:
            await self.debug_channel.stop()
            self.debug_channel = None
        if self.admin_proxy is not None:
            await self.admin_proxy.stop()
            self.admin_proxy = None
        if self.metrics_server is not None:
            await self.metrics_server.stop()
            self.metrics_server = None
        if self._lookup_channel is not None:
            await self._lookup_channel.close()
            self._lookup_channel = None
        proc = self._proc
        if proc is not None and proc.returncode is None:
            await self._drain()
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                log.warning("envoy for %s ignored SIGTERM; killing", self.node_id)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in (self._supervisor, self._log_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._supervisor = self._log_watch = None
        self._running.clear()
        if self.identity is not None:
            await self.identity.stop()
            self.identity = None
        self._remove_own_work_dir()

    def _remove_own_work_dir(self) -> None:
        if self._work_dir is not None:
            with contextlib.suppress(OSError):
                self.admin_socket.unlink()
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None
        if self._owns_work_dir and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None

    async def _drain(self) -> None:
        """Graceful listener drain (inbound only for sidecars, like pilot-agent), then wait up to
        ``drain_time_s`` for downstream connections to close."""
        query = "graceful&inboundonly" if self.spec.type is ProxyType.SIDECAR else "graceful"
        deadline = time.monotonic() + self.options.drain_time_s
        try:
            async with self._admin_session(1.0) as session:
                async with session.post(f"http://localhost/drain_listeners?{query}") as r:
                    await r.read()
                while time.monotonic() < deadline:
                    async with session.get("http://localhost/stats?filter=downstream_cx_active$") as r:
                        text = await r.text()
                    if active_downstream_connections(text) == 0:
                        return
                    await asyncio.sleep(0.05)
        except (TimeoutError, aiohttp.ClientError, OSError):
            return

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of Envoy's output and log files."""
        out = []
        for path in ("output_path", "log_path"):
            try:
                text = getattr(self, path).read_text(errors="replace")
            except (OSError, AgentError):
                continue
            out.extend(text.splitlines()[-lines:])
        return "\n".join(out)

    async def wait_restarted(self, count: int, timeout: float = 10.0) -> None:
        """Wait until Envoy has been restarted ``count`` times in total and is running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.restarts >= count and self.running:
                return
            await asyncio.sleep(0.02)
        raise AgentError(
            f"envoy for {self.node_id}: {self.restarts} restarts after {timeout}s, wanted {count}"
        )
