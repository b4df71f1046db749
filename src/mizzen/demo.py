"""``mizzen demo``: the whole mesh on one machine - control plane, ingress gateway and Bookinfo.

One long-lived process (Envoy dies with its parent, so the supervisor must live as long as the mesh) runs
the control plane, a LocalRunner that reconciles Deployments from the config store (so ``mizzen apply -f
deploy.yaml`` starts processes, like a kubelet would), and the ingress gateway; its API also serves the pods
(``mizzen get pods``, ``mizzen logs``). The console narrates: one line per config change, crash, Envoy restart
and pod (un)readiness. Ctrl-C/SIGTERM stops all.

The API token is ``<state dir>/token`` (0600, created at first start); the runner's agents serve their admin
proxies with it. Workload registration over the API accepts only pod IPs this demo's runner allocated. The
gateway binds loopback only unless ``--allow-external-bind`` (also needed for Gateway ``bind`` fields outside
loopback), which the console warns about.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mizzen import __version__
from mizzen.agent.envoy import MAX_SOCKET_PATH, AgentEvent, AgentOptions
from mizzen.auth.token import TokenError
from mizzen.bookinfo import MANIFEST
from mizzen.config.model import Config
from mizzen.controlplane.exposure import external_bind
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.controlplane.store import ApplyResult
from mizzen.core.mesh import MeshConfig
from mizzen.runner import AgentSidecars, InProcessRegistrar, LocalRunner
from mizzen.runner.api import PodsApi
from mizzen.runner.gateway import EGRESS_NAME, EGRESS_SERVICE_YAML, GATEWAY_NAME, GATEWAY_NAMESPACE
from mizzen.runner.watch import PodWatcher, agent_event_line

log = logging.getLogger("mizzen.demo")

GATEWAY_MANIFEST = MANIFEST.parent / "bookinfo-gateway.yaml"   # Istio's sample, unchanged
BOOKINFO_NAMESPACE = "bookinfo"


class DemoError(RuntimeError):
    """A condition that stops the demo with one clear line (port busy, another demo running...)."""


@dataclass
class DemoOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    tls_port: int = 8443
    xds_port: int = 15010
    http_port: int = 15014
    state_dir: Path = Path(os.environ.get("MIZZEN_STATE_DIR", Path.home() / ".local/state/mizzen"))
    fresh: bool = False
    bookinfo: bool = True
    ready_timeout: float = 60.0
    allow_external_bind: bool = False


def default_state_dir() -> Path:
    return DemoOptions().state_dir


@contextlib.contextmanager
def single_instance(state_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<state>/demo.lock`` for the demo's lifetime; a second demo says so."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "demo.lock"
    fh: IO[str] = path.open("a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        pid = fh.read().strip() or "?"
        fh.close()
        raise DemoError(f"a Mizzen demo is already running (pid {pid}, state {state_dir}); "
                        "stop it with Ctrl-C first, or use another --state-dir and ports") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound (``Address already in use``), or None when it is free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return e.strerror or str(e)
    return None


def check_ports_free(ports: Sequence[tuple[str, int, str, str]]) -> None:
    """Check every ``(host, port, what, option)`` first and report all the busy ones in one error."""
    problems: list[str] = []
    seen: dict[tuple[str, int], str] = {}
    for host, port, what, option in ports:
        if (host, port) in seen:
            problems.append(f"{what} port {host}:{port} ({option}) is also the {seen[(host, port)]} port")
            continue
        seen[(host, port)] = what
        why = port_problem(host, port)
        if why:
            problems.append(f"{what} port {host}:{port} ({option}) is in use ({why})")
    if problems:
        raise DemoError("; ".join(problems) + ". Pick free ports with those options (see mizzen demo --help)")


def restored_line(stored: Sequence[Config], defaults: Sequence[Config], state_dir: Path) -> str | None:
    """What a restarted demo restored from its state dir: the objects that are not the demo's own defaults
    (added or changed in an earlier run; Services and Deployments of the defaults are re-applied anyway)."""
    default = {c.key: c for c in defaults}
    kept = [c for c in stored if c.key not in default or (
        c.kind not in ("Service", "Deployment") and c.content_hash() != default[c.key].content_hash())]
    if not kept:
        return None
    names = ", ".join(f"{c.kind} {c.namespace}/{c.name}" if c.namespace else f"{c.kind} {c.name}"
                      for c in sorted(kept, key=lambda c: (c.kind, c.namespace, c.name)))
    n = len(kept)
    return (f"restored {n} object{'' if n == 1 else 's'} from {state_dir}: {names} "
            "(mizzen demo --fresh starts from the defaults)")


class DeploymentController:
    """Keeps the runner's Deployments equal to the store's (the kubelet/ReplicaSet part of the demo)."""

    def __init__(self, cp: ControlPlane, runner: LocalRunner) -> None:
        self.cp, self.runner = cp, runner
        self._queue: asyncio.Queue[list[ApplyResult]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe = cp.store.add_listener(self._queue.put_nowait)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="deployment-controller")

    async def sync_all(self) -> None:
        snap = self.cp.store.snapshot()
        for ns in snap.list("Namespace"):
            self.runner.set_namespace_labels(ns.name, ns.labels)
        await self.runner.apply(list(snap.list("Deployment")))

    async def _run(self) -> None:
        while True:
            results = await self._queue.get()
            try:
                await self._reconcile(results)
            except Exception as e:   # a bad Deployment must not take the demo down
                log.error("reconciling deployments failed: %s", e)

    async def _reconcile(self, results: list[ApplyResult]) -> None:
        snap = self.cp.store.snapshot()
        for r in results:
            if r.kind == "Namespace":
                ns = snap.get("Namespace", "", r.name)
                self.runner.set_namespace_labels(r.name, ns.labels if ns else {})
            if r.kind != "Deployment":
                continue
            cfg: Config | None = snap.get("Deployment", r.namespace, r.name)
            if cfg is None:
                await self.runner.delete_deployment(r.namespace, r.name)
            else:
                await self.runner.apply([cfg])

    async def stop(self) -> None:
        self._unsubscribe()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def wait_for_page(url: str, timeout: float) -> float:
    """Poll ``url`` until it answers 200; returns the seconds it took."""
    t0 = time.monotonic()
    last = ""
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        while time.monotonic() - t0 < timeout:
            try:
                r = await client.get(url)
                if r.status_code == 200:
                    return time.monotonic() - t0
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                last = type(e).__name__
            await asyncio.sleep(0.1)
    raise DemoError(f"{url} did not answer 200 within {timeout:.0f}s (last: {last})")


class _ReportedElsewhere(logging.Filter):
    """Drops the runner's and agent's crash warnings while the demo reports them as one line each."""

    TEMPLATES = ("container %s exited with code", "envoy for %s exited unexpectedly")
    FAILED = "pod %s/%s: %s"     # logged as an error when a pod cannot start: the watcher reports it

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str):
            return True
        failed = record.msg == self.FAILED and record.levelno >= logging.ERROR
        return not (failed or record.msg.startswith(self.TEMPLATES))


REPORTED_LOGGERS = ("mizzen.runner", "mizzen.agent.envoy")


def config_line(r: ApplyResult) -> str:
    """``config: VirtualService bookinfo/reviews configured``."""
    where = f"{r.namespace}/{r.name}" if r.namespace else r.name
    return f"config: {r.kind} {where} {r.action}"


def status_table(runner: LocalRunner) -> Table:
    table = Table(title="pods", title_justify="left")
    for col in ("NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "POD IP"):
        table.add_column(col)
    for p in sorted(runner.status(), key=lambda s: (s.namespace, s.name)):
        table.add_row(p.namespace, p.name, p.ready_count, p.status_text, str(p.restarts + p.sidecar_restarts),
                      p.pod_ip)
    return table


class Demo:
    def __init__(self, opts: DemoOptions, console: Console | None = None) -> None:
        self.opts = opts
        self.console = console or Console(stderr=False)
        if not self.console.is_terminal:     # a log file: no wrapping at 80 columns
            self.console.width = max(self.console.width, 160)
        self.cp: ControlPlane | None = None
        self.runner: LocalRunner | None = None
        self.controller: DeploymentController | None = None
        self.watcher: PodWatcher | None = None
        self.ready_after_s: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: list[Callable[[], None]] = []
        self._log_filter = _ReportedElsewhere()

    def report(self, line: str) -> None:
        """One narration line on the console (no markup: names may contain brackets)."""
        self.console.print(f"{time.strftime('%H:%M:%S')} {line}", markup=False, highlight=False,
                           soft_wrap=True)

    def _on_agent_event(self, event: AgentEvent) -> None:
        line = agent_event_line(event)
        if line:
            self.report(line)

    def _on_config(self, results: list[ApplyResult]) -> None:
        for r in results:
            if r.changed:
                self.report(config_line(r))

    def narrate(self) -> None:
        """From now on also report config changes and pods created/deleted/(un)ready (after the banner)."""
        assert self.cp is not None
        if self.watcher is not None:
            self.watcher.lifecycle = True
        self._unsubscribe.append(self.cp.store.add_listener(self._on_config))

    @property
    def url(self) -> str:
        return f"http://{self.opts.host}:{self.opts.port}"

    @property
    def api_socket(self) -> Path | None:
        """``<state dir>/api.sock`` (0600): the API for this user without a token; None when the path is too
        long for a Unix socket."""
        path = self.opts.state_dir.absolute() / "api.sock"
        return path if len(str(path)) <= MAX_SOCKET_PATH else None

    def _registered_address(self, address: str) -> str | None:
        """The API's check on workload registrations: only pod IPs this demo's runner allocated."""
        if self.runner is not None and self.runner.addresses.allocated(address):
            return None
        return f"address {address} was not allocated by this demo's runner (it registers its own pods)"

    async def start(self) -> None:
        o = self.opts
        t0 = time.monotonic()
        try:
            ipaddress.ip_address(o.host)
        except ValueError:
            raise DemoError(f"--host {o.host!r} is not an IP address (the gateway binds it)") from None
        if external_bind(o.host):
            if not o.allow_external_bind:
                raise DemoError(f"--host {o.host} is outside loopback and would serve the mesh beyond this "
                                "machine; add --allow-external-bind to do that on purpose")
            self.report(f"warning: the gateway binds {o.host}, outside loopback: other machines can reach "
                        "the mesh (--allow-external-bind)")
        elif o.allow_external_bind:
            self.report("warning: --allow-external-bind: Gateways may bind addresses outside loopback")
        check_ports_free([(o.host, o.port, "gateway", "--port"),
                          (o.host, o.tls_port, "gateway TLS", "--tls-port"),
                          ("127.0.0.1", o.xds_port, "xDS", "--xds-port"),
                          ("127.0.0.1", o.http_port, "API", "--api-port")])
        if o.fresh:   # applied objects, and applies committed but not yet written out (the journal)
            for f in [*(o.state_dir / "objects").rglob("*"), *(o.state_dir / "journal").rglob("*")]:
                if f.is_file():
                    f.unlink()
        # the demo starts every workload itself: workloads registered by an earlier run are dropped
        self.cp = ControlPlane(ControlPlaneOptions(
            state_dir=o.state_dir, xds_port=o.xds_port, http_port=o.http_port, restore_workloads=False,
            mesh=MeshConfig(allow_external_bind=o.allow_external_bind), api_socket=self.api_socket))
        self.cp.api.add_routes(PodsApi(lambda: self.runner, self._pod_events).routes())
        self.cp.api.workload_address_check = self._registered_address
        await self.cp.start()
        stored = list(self.cp.store.snapshot())
        for name in REPORTED_LOGGERS:
            logging.getLogger(name).addFilter(self._log_filter)
        agent_options = AgentOptions(concurrency=1, admin_token=self.cp.token)
        sidecars = AgentSidecars("127.0.0.1", self.cp.xds_port, agent_options,
                                 work_root=o.state_dir / "proxies", on_event=self._on_agent_event)
        self.runner = LocalRunner(InProcessRegistrar(self.cp), sidecars=sidecars,
                                  log_dir=o.state_dir / "logs", injection="istio")
        self.watcher = PodWatcher(self.runner, self.report, lifecycle=False)
        self._tasks.append(asyncio.create_task(self.watcher.run(), name="pod-watcher"))
        self.runner.set_namespace_labels(BOOKINFO_NAMESPACE, {"istio-injection": "enabled"})
        self.controller = DeploymentController(self.cp, self.runner)
        gateways = o.state_dir / "proxies" / GATEWAY_NAMESPACE
        with self.console.status("starting the ingress and egress gateways..."):
            ingress, egress = await asyncio.gather(
                self.runner.start_gateway(o.host, o.port, tls_port=o.tls_port, xds_port=self.cp.xds_port,
                                          options=AgentOptions(concurrency=1, admin_token=self.cp.token,
                                                               work_dir=gateways / GATEWAY_NAME)),
                self.runner.start_egress_gateway(xds_port=self.cp.xds_port, options=AgentOptions(
                    concurrency=1, admin_token=self.cp.token, work_dir=gateways / EGRESS_NAME)))
            ingress.on_event = egress.on_event = self._on_agent_event
        defaults = self._apply_text(EGRESS_SERVICE_YAML, f"<{EGRESS_NAME} Service>", GATEWAY_NAMESPACE)
        if o.bookinfo:
            defaults += self._apply_file(MANIFEST, BOOKINFO_NAMESPACE)
            defaults += self._apply_file(GATEWAY_MANIFEST, BOOKINFO_NAMESPACE)
        line = restored_line(stored, defaults, o.state_dir)
        if line:
            self.report(line)
        with self.console.status("starting workloads and their sidecars..."):
            await self.controller.sync_all()
            self.controller.start()
            await self.runner.wait_ready(o.ready_timeout)
            await self.cp.wait_synced(timeout=10)
        if o.bookinfo:
            with self.console.status("waiting for /productpage through the gateway..."):
                await wait_for_page(f"{self.url}/productpage", o.ready_timeout)
        self.ready_after_s = time.monotonic() - t0

    def _pod_events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return self.watcher.events(namespace, name) if self.watcher is not None else []

    def _apply_file(self, path: Path, namespace: str) -> list[Config]:
        return self._apply_text(path.read_text(), str(path), namespace)

    def _apply_text(self, text: str, file: str, namespace: str) -> list[Config]:
        """Apply the demo's own manifests, keeping objects an earlier run changed; returns the defaults."""
        assert self.cp is not None
        result = self.cp.api.loader(text, file, namespace)
        if result.errors:
            raise DemoError("; ".join(str(e) for e in result.errors))
        # objects the user changed in an earlier run (persisted state) are kept, not overwritten
        keep = {c.key for c in self.cp.store.snapshot()}
        fresh = [c for c in result.configs if c.key not in keep or c.kind in ("Service", "Deployment")]
        self.cp.store.apply(fresh)
        return list(result.configs)

    def banner(self) -> None:
        assert self.cp is not None and self.runner is not None
        c = self.console
        c.print(status_table(self.runner))
        c.print(f"\n[bold green]Mizzen {__version__}: Bookinfo is up[/] "
                f"(ready in {self.ready_after_s or 0:.1f}s)\n")
        c.print(f"  product page      {self.url}/productpage")
        c.print(f"  control plane API {self.cp.http_url}   (mizzen get vs -n bookinfo, mizzen proxy-status)")
        c.print(f"  API token         {self.cp.token_file}   (0600; mizzen commands read it from there)")
        if self.api_socket is not None:
            c.print(f"  API socket        unix://{self.api_socket}   (0600: no token needed, --server)")
        c.print("  pods              mizzen get pods -n bookinfo, mizzen logs POD [-c istio-proxy]")
        egress = next((g for g in self.runner.gateways if g.spec.labels.get("istio") == "egressgateway"),
                      None)
        if egress is not None:
            c.print(f"  egress gateway    {egress.spec.ip}:8080 (Service {EGRESS_NAME}.{GATEWAY_NAMESPACE})")
        c.print(f"  xDS (ADS gRPC)    {self.cp.xds_address}")
        c.print(f"  state and logs    {self.opts.state_dir}")
        problems = self.cp.store.load_problems
        if problems:   # said loudly: these objects were NOT restored (Bookinfo's defaults replace its own)
            c.print(f"\n[bold red]{len(problems)} stored object(s) could not be restored and are not "
                    f"served[/] (moved to {self.opts.state_dir / 'quarantine'}; also in /debug/configz):")
            for p in problems:
                c.print(f"  [red]{escape(str(p))}[/]")
        c.print("\nPress Ctrl-C to stop everything.")

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.controller:
            await self.controller.stop()
        if self.runner:
            await self.runner.stop()
        if self.cp:
            await self.cp.stop()
        for name in REPORTED_LOGGERS:
            logging.getLogger(name).removeFilter(self._log_filter)


async def serve(opts: DemoOptions, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGINT/SIGTERM)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    demo = Demo(opts)
    try:
        with single_instance(opts.state_dir):
            try:
                starting = asyncio.create_task(demo.start())
                stopping = asyncio.create_task(stop.wait())
                done, _ = await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if starting in done:
                    starting.result()
                    demo.banner()
                    demo.narrate()
                    await stop.wait()
                else:
                    starting.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await starting
                stopping.cancel()
            finally:
                demo.console.print("stopping...")
                await demo.stop()
                demo.console.print("stopped: every process this demo started has exited")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(opts: DemoOptions) -> int:
    """Entry for ``mizzen demo`` (its options are declared in :mod:`mizzen.cli.runtime`); the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(opts))
    except (DemoError, TokenError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except TimeoutError as e:
        print(f"error: the demo did not become ready: {e}", file=sys.stderr)
        return 1
    return 0


__all__ = ["Demo", "DemoError", "DemoOptions", "run", "serve"]
