"""``mizzen demo``: the whole mesh on one machine - control plane, ingress gateway and Bookinfo.

One long-lived process (Envoy dies with its parent, so the supervisor must live as long as the mesh) runs a
LocalRunner: the control plane as its own supervised process (the ``istio-system/istiod-...`` pod, restarted
with backoff when it dies, while every Envoy and app keeps serving), the ingress and egress gateways, and the
Deployments it follows from the control plane's config feed (so ``mizzen apply -f deploy.yaml`` starts
processes, like a kubelet would). Ready pods are registered over the control plane's API and re-sent in full
each time it comes back. The runner serves the pods on its own loopback port and the control plane forwards
``/apis/pods`` there (``mizzen get pods``, ``mizzen logs``). The console narrates: one line per config
change, crash (the control plane's included), Envoy restart and pod (un)readiness. Ctrl-C/SIGTERM stops all.

The API token is ``<state dir>/token`` (0600, created by the demo at first start and handed to the control
plane process in its environment); the runner's agents serve their admin proxies with it, and the runner's
pod API, its registrations and its config feed use it. Workload registration over the API accepts only pod
IPs this demo's runner allocated (the control plane asks the runner). The gateway binds loopback only unless
``--allow-external-bind`` (also needed for Gateway ``bind`` fields outside loopback), which the console
warns about.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
from aiohttp import web
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mizzen import __version__
from mizzen.agent.envoy import MAX_SOCKET_PATH, AgentEvent, AgentOptions
from mizzen.auth.guard import Guard
from mizzen.auth.token import TOKEN_FILE, TokenError, ensure_token
from mizzen.bookinfo import MANIFEST
from mizzen.config.loader import load_text
from mizzen.config.model import Config
from mizzen.console.addons import remove_addons, write_addons
from mizzen.controlplane.exposure import external_bind
from mizzen.controlplane.persist import LoadProblem, StateDir
from mizzen.controlplane.store import ApplyResult
from mizzen.observe.jaeger import BUILD_HINT, Jaeger, JaegerOptions
from mizzen.observe.jaeger import find_binary as find_jaeger
from mizzen.observe.process import AddonError
from mizzen.observe.prometheus import INSTALL_HINT, Prometheus, PrometheusOptions
from mizzen.observe.prometheus import find_binary as find_prometheus
from mizzen.observe.sd import target_groups, write_targets
from mizzen.runner import AgentSidecars, LocalRunner
from mizzen.runner.api import PodsApi
from mizzen.runner.controller import DeploymentController
from mizzen.runner.credentials import HttpCredentials
from mizzen.runner.gateway import EGRESS_NAME, EGRESS_SERVICE_YAML, GATEWAY_NAME, GATEWAY_NAMESPACE
from mizzen.runner.istiod import ControlPlaneArgs, ControlPlanePod
from mizzen.runner.pod_object import pod_object
from mizzen.runner.registrar import HttpRegistrar
from mizzen.runner.watch import PodWatcher, agent_event_line

log = logging.getLogger("mizzen.demo")

GATEWAY_MANIFEST = MANIFEST.parent / "bookinfo-gateway.yaml"   # Istio's sample, unchanged
_DOCUMENT_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)
BOOKINFO_NAMESPACE = "bookinfo"


class DemoError(RuntimeError):
    """A condition that stops the demo with one clear line (port busy, another demo running...)."""


@dataclass
class DemoOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    tls_port: int = 8443
    xds_port: int = 15010
    # xDS + the CA over TLS (what every proxy of the demo uses); None: 15012 with the default xds_port, else
    # a free port chosen at start (so tests with their own ports never meet a running demo)
    xds_tls_port: int | None = None
    http_port: int = 15014
    state_dir: Path = Path(os.environ.get("MIZZEN_STATE_DIR", Path.home() / ".local/state/mizzen"))
    fresh: bool = False
    bookinfo: bool = True
    ready_timeout: float = 60.0
    allow_external_bind: bool = False
    mesh_config: Path | None = None         # Istio mesh config YAML for the control plane (--mesh-config)
    prometheus_port: int = 9090          # 0: no Prometheus
    scrape_interval_s: float = 15.0
    jaeger_host: str = "127.0.16.86"     # Jaeger's own loopback address ("" = no Jaeger); Jaeger's ports
    trace_sampling: float = 100.0        # Istio's demo profile traces every request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
        self.cp: ControlPlanePod | None = None
        self.runner: LocalRunner | None = None
        self.registrar: HttpRegistrar | None = None
        self.controller: DeploymentController | None = None
        self.watcher: PodWatcher | None = None
        self.ready_after_s: float | None = None
        self._pods_api: web.AppRunner | None = None
        self._pods_served: list[tuple[str, int]] = []
        self.token = ""                     # the API token, read or created by start()
        self.xds_tls_port: int | None = None  # xDS + CA over TLS, chosen by start()
        self.load_problems: list[LoadProblem] = []     # what the control plane could not restore
        self._tasks: list[asyncio.Task[None]] = []
        self._narrating = False
        self._log_filter = _ReportedElsewhere()
        self.prometheus: Prometheus | None = None
        self.prometheus_note = ""           # why there is none (not installed, port busy...)
        self.jaeger: Jaeger | None = None
        self.jaeger_note = ""

    def report(self, line: str) -> None:
        """One narration line on the console (no markup: names may contain brackets)."""
        self.console.print(f"{time.strftime('%H:%M:%S')} {line}", markup=False, highlight=False,
                           soft_wrap=True)

    def _on_agent_event(self, event: AgentEvent) -> None:
        line = agent_event_line(event)
        if line:
            self.report(line)

    def _on_config(self, results: list[ApplyResult]) -> None:
        if not self._narrating:
            return
        for r in results:
            if r.changed:
                self.report(config_line(r))

    def narrate(self) -> None:
        """From now on also report config changes and pods created/deleted/(un)ready (after the banner)."""
        if self.watcher is not None:
            self.watcher.lifecycle = True
        self._narrating = True

    @property
    def url(self) -> str:
        return f"http://{self.opts.host}:{self.opts.port}"

    @property
    def api_socket(self) -> Path | None:
        """``<state dir>/api.sock`` (0600): the API for this user without a token; None when the path is too
        long for a Unix socket."""
        path = self.opts.state_dir.absolute() / "api.sock"
        return path if len(str(path)) <= MAX_SOCKET_PATH else None

    @property
    def token_file(self) -> Path:
        return self.opts.state_dir / TOKEN_FILE

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.opts.http_port}"

    async def _control_plane_up(self) -> None:
        """After every (re)start of the control plane: send it every registered workload (opens its xDS)."""
        assert self.registrar is not None and self.runner is not None
        count = await self.registrar.resync(self.runner.registered_workloads)
        cp = self.runner.control_plane
        if cp is not None and cp.ups > 0:
            self.report(f"pod istio-system/{cp.name}: control plane back, {count} workloads re-registered")

    async def _serve_pods(self) -> str:
        """The runner's pod API on a free loopback port (the control plane forwards /apis/pods to it)."""
        app = web.Application(middlewares=[Guard(self.token, lambda: self._pods_served,
                                                  hint=f"the token is in {self.token_file}").middleware])
        app.add_routes(PodsApi(lambda: self.runner, self._pod_events).routes())
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._pods_api = runner
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        for addr in runner.addresses:
            if isinstance(addr, tuple):
                self._pods_served = [("127.0.0.1", addr[1])]
                return f"http://127.0.0.1:{addr[1]}"
        raise DemoError("the pod API has no address")

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
        if o.jaeger_host:
            try:
                loopback = ipaddress.ip_address(o.jaeger_host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise DemoError(f"--jaeger-host {o.jaeger_host!r} must be a loopback address (127.x.y.z): "
                                "Jaeger's receivers and query API have no authentication")
        if not 0 <= o.trace_sampling <= 100:
            raise DemoError(f"--trace-sampling {o.trace_sampling:g}: want a percentage from 0 to 100")
        if o.scrape_interval_s <= 0:
            raise DemoError(f"--scrape-interval {o.scrape_interval_s:g}: want a positive number of seconds")
        xds_tls_port = o.xds_tls_port
        if xds_tls_port is None:
            xds_tls_port = 15012 if o.xds_port == 15010 else _free_port()
        self.xds_tls_port = xds_tls_port
        check_ports_free([(o.host, o.port, "gateway", "--port"),
                          (o.host, o.tls_port, "gateway TLS", "--tls-port"),
                          ("127.0.0.1", o.xds_port, "xDS", "--xds-port"),
                          ("127.0.0.1", xds_tls_port, "xDS over TLS", "--xds-tls-port"),
                          ("127.0.0.1", o.http_port, "API", "--api-port")])
        # the token exists before any process that needs it: the control plane, the agents, the runner's API
        self.token = ensure_token(self.token_file)
        if o.fresh:   # applied objects, and applies committed but not yet written out (the journal)
            for f in [*(o.state_dir / "objects").rglob("*"), *(o.state_dir / "journal").rglob("*")]:
                if f.is_file():
                    f.unlink()
        # the demo starts every workload itself: workloads registered by an earlier run are dropped (a
        # restarted control plane, in contrast, restores the current run's and is re-sent them)
        shutil.rmtree(o.state_dir / "workloads", ignore_errors=True)
        # likewise the pod credentials of an earlier run's pods (a restarted control plane keeps this run's)
        (o.state_dir / "credentials.json").unlink(missing_ok=True)
        for name in REPORTED_LOGGERS:
            logging.getLogger(name).addFilter(self._log_filter)
        await self._start_jaeger()      # before the control plane, which sends its address to every proxy
        pods_url = await self._serve_pods()
        self.registrar = HttpRegistrar(self.api_url, token=self.token)
        # every proxy gets its pod credential from the control plane (through the runner, the one holder of
        # the API token) and reaches xDS and the CA over TLS on xds_tls_port
        sidecars = AgentSidecars("127.0.0.1", o.xds_port,
                                 AgentOptions(concurrency=1, admin_token=self.token),
                                 work_root=o.state_dir / "proxies", on_event=self._on_agent_event,
                                 credentials=HttpCredentials(self.api_url, self.token),
                                 ca_address=f"127.0.0.1:{xds_tls_port}")
        self.runner = LocalRunner(self.registrar, sidecars=sidecars, log_dir=o.state_dir / "logs",
                                  injection="istio")
        self.watcher = PodWatcher(self.runner, self.report, lifecycle=False)
        self._tasks.append(asyncio.create_task(self.watcher.run(), name="pod-watcher"))
        with self.console.status("starting the control plane..."):
            self.cp = await self.runner.start_control_plane(
                ControlPlaneArgs(o.state_dir, o.xds_port, o.http_port, pods_url=pods_url, token=self.token,
                                 xds_tls_port=xds_tls_port,
                                 api_socket=self.api_socket, allow_external_bind=o.allow_external_bind,
                                 mesh_config=o.mesh_config,
                                 zipkin_address=self.jaeger.opts.zipkin_address if self.jaeger else "",
                                 trace_sampling=o.trace_sampling),
                on_up=self._control_plane_up, ready_timeout=o.ready_timeout)
        # what the control plane restored (it replayed the journal and set aside what it could not restore)
        stored = StateDir(o.state_dir).read_objects()
        self.runner.set_namespace_labels(BOOKINFO_NAMESPACE, {"istio-injection": "enabled"})
        self.controller = DeploymentController(self.api_url, self.runner, self._on_config, token=self.token)
        gateways = o.state_dir / "proxies" / GATEWAY_NAMESPACE
        with self.console.status("starting the ingress and egress gateways..."):
            ingress, egress = await asyncio.gather(
                self.runner.start_gateway(o.host, o.port, tls_port=o.tls_port, xds_port=o.xds_port,
                                          options=AgentOptions(concurrency=1, admin_token=self.token,
                                                               work_dir=gateways / GATEWAY_NAME)),
                self.runner.start_egress_gateway(xds_port=o.xds_port, options=AgentOptions(
                    concurrency=1, admin_token=self.token, work_dir=gateways / EGRESS_NAME)))
            ingress.on_event = egress.on_event = self._on_agent_event
        async with httpx.AsyncClient(trust_env=False, timeout=30,
                                     headers={"Authorization": f"Bearer {self.token}"}) as api:
            defaults = await self._apply_text(api, EGRESS_SERVICE_YAML, f"<{EGRESS_NAME} Service>",
                                              GATEWAY_NAMESPACE)
            if o.bookinfo:
                defaults += await self._apply_file(api, MANIFEST, BOOKINFO_NAMESPACE)
                defaults += await self._apply_file(api, GATEWAY_MANIFEST, BOOKINFO_NAMESPACE)
            configz = (await api.get(f"{self.api_url}/debug/configz")).json()
            self.load_problems = [LoadProblem(**p) for p in configz.get("load_problems") or []]
            line = restored_line(stored, defaults, o.state_dir)
            if line:
                self.report(line)
            with self.console.status("starting workloads and their sidecars..."):
                await self.controller.sync_all()
                self.controller.start()
                await self.runner.wait_ready(o.ready_timeout)
                await wait_all_synced(api, self.api_url, timeout=10)
        if o.bookinfo:
            with self.console.status("waiting for /productpage through the gateway..."):
                await wait_for_page(f"{self.url}/productpage", o.ready_timeout)
        await self._start_prometheus()
        self.ready_after_s = time.monotonic() - t0

    @property
    def prometheus_options(self) -> PrometheusOptions:
        o = self.opts
        pods = self._pods_served[0] if self._pods_served else None
        return PrometheusOptions(o.state_dir / "prometheus", port=o.prometheus_port,
                                 scrape_interval_s=o.scrape_interval_s,
                                 cadvisor_target=f"{pods[0]}:{pods[1]}" if pods else None,
                                 token_file=self.token_file.absolute())

    def write_scrape_targets(self) -> None:
        """The file SD Prometheus reads: every pod of the runner (gateways and istiod included) as Kubernetes'
        pod discovery would label it."""
        if self.runner is not None:
            write_targets(self.prometheus_options.targets_file,
                          target_groups(pod_object(s) for s in self.runner.status()))

    async def _keep_targets(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.write_scrape_targets()
            except OSError as e:
                log.warning("cannot write Prometheus' targets: %s", e)

    async def _start_jaeger(self) -> None:
        """Jaeger when built and its ports are free on its own address; otherwise a note saying why."""
        o = self.opts
        if not o.jaeger_host:
            self.jaeger_note = "not started (--jaeger-host '')"
            return
        binary = find_jaeger()
        if binary is None:
            self.jaeger_note = BUILD_HINT
            return
        opts = JaegerOptions(o.state_dir / "jaeger", host=o.jaeger_host)
        busy = [f"{o.jaeger_host}:{p} ({why})" for p in opts.ports()
                if (why := port_problem(o.jaeger_host, p))]
        if busy:
            self.jaeger_note = f"not started: {', '.join(busy)} in use; pick another --jaeger-host"
            return
        jaeger = Jaeger(opts, binary)
        try:
            with self.console.status("starting Jaeger..."):
                await jaeger.start(timeout=o.ready_timeout)
        except AddonError as e:
            self.jaeger_note = f"not started: {e}"
            return
        self.jaeger = jaeger
        self._write_addons()

    def _write_addons(self) -> None:
        urls = {}
        if self.prometheus is not None:
            urls["prometheus"] = self.prometheus.url
        if self.jaeger is not None:
            urls["jaeger"] = self.jaeger.url
        write_addons(self.opts.state_dir, urls)

    async def _start_prometheus(self) -> None:
        """Prometheus when installed and its port is free; otherwise a note on the banner saying why."""
        o = self.opts
        if o.prometheus_port == 0:
            self.prometheus_note = "not started (--prometheus-port 0)"
            return
        binary = find_prometheus()
        if binary is None:
            self.prometheus_note = INSTALL_HINT
            return
        why = port_problem("127.0.0.1", o.prometheus_port)
        if why:
            self.prometheus_note = (f"not started: port 127.0.0.1:{o.prometheus_port} is in use ({why}); "
                                    "pick another with --prometheus-port")
            return
        self.write_scrape_targets()
        prom = Prometheus(self.prometheus_options, binary)
        try:
            with self.console.status("starting Prometheus..."):
                await prom.start(timeout=o.ready_timeout)
        except AddonError as e:
            self.prometheus_note = f"not started: {e}"
            return
        self.prometheus = prom
        self._write_addons()
        self._tasks.append(asyncio.create_task(self._keep_targets(), name="prometheus-targets"))

    def _pod_events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return self.watcher.events(namespace, name) if self.watcher is not None else []

    async def _apply_file(self, api: httpx.AsyncClient, path: Path, namespace: str) -> list[Config]:
        return await self._apply_text(api, path.read_text(), str(path), namespace)

    async def _apply_text(self, api: httpx.AsyncClient, text: str, file: str, namespace: str) -> list[Config]:
        """Apply the demo's own manifests through the control plane's API, keeping objects an earlier run
        changed; returns the defaults."""
        result = load_text(text, file, namespace)
        if result.errors:
            raise DemoError("; ".join(str(e) for e in result.errors))
        # objects the user changed in an earlier run (persisted state) are kept, not overwritten
        r = await api.get(f"{self.api_url}/apis/objects")
        r.raise_for_status()
        keep = {(m["kind"], m["metadata"].get("namespace") or "", m["metadata"]["name"])
                for m in r.json()["items"]}
        # sent as written (documents of the file), so what is stored is exactly what the file says
        fresh = [doc for doc in _DOCUMENT_SEPARATOR.split(text)
                 if any((c.kind, c.namespace, c.name) not in keep or c.kind in ("Service", "Deployment")
                        for c in load_text(doc, file, namespace).configs)]
        if fresh:
            r = await api.post(f"{self.api_url}/apis/apply", json={
                "documents": [{"file": file, "text": "\n---\n".join(fresh)}], "namespace": namespace})
            if r.status_code != 200:
                raise DemoError(f"applying {file}: HTTP {r.status_code} {r.text}")
        return list(result.configs)

    def banner(self) -> None:
        assert self.runner is not None
        c = self.console
        c.print(status_table(self.runner))
        c.print(f"\n[bold green]Mizzen {__version__}: Bookinfo is up[/] "
                f"(ready in {self.ready_after_s or 0:.1f}s)\n")
        c.print(f"  product page      {self.url}/productpage")
        c.print(f"  control plane API {self.api_url}   (mizzen get vs -n bookinfo, mizzen proxy-status)")
        c.print(f"  console           {self.api_url}/console/   (mizzen dashboard: opens it with a one-time "
                "login link)")
        c.print(f"  API token         {self.token_file}   (0600; mizzen commands read it from there)")
        if self.api_socket is not None:
            c.print(f"  API socket        unix://{self.api_socket}   (0600: no token needed, --server)")
        c.print("  pods              mizzen get pods -n bookinfo, mizzen logs POD [-c istio-proxy]")
        egress = next((g for g in self.runner.gateways if g.spec.labels.get("istio") == "egressgateway"),
                      None)
        if egress is not None:
            c.print(f"  egress gateway    {egress.spec.ip}:8080 (Service {EGRESS_NAME}.{GATEWAY_NAMESPACE})")
        c.print(f"  xDS + CA (TLS)    127.0.0.1:{self.xds_tls_port}   (every proxy; plaintext ADS "
                f"127.0.0.1:{self.opts.xds_port} for tools)")
        if self.prometheus is not None:
            c.print(f"  Prometheus        {self.prometheus.url}   (mizzen dashboard prometheus; "
                    "Istio's dashboards: mizzen dashboard grafana)")
        else:
            c.print(f"  Prometheus        {escape(self.prometheus_note)}")
        if self.jaeger is not None:
            c.print(f"  Jaeger            {self.jaeger.url}   (query API /api/traces; mizzen dashboard "
                    f"jaeger; sampling {self.opts.trace_sampling:g}%)")
        else:
            c.print(f"  Jaeger            {escape(self.jaeger_note)}")
        c.print(f"  state and logs    {self.opts.state_dir}")
        problems = self.load_problems
        if problems:   # said loudly: these objects were NOT restored (Bookinfo's defaults replace its own)
            c.print(f"\n[bold red]{len(problems)} stored object(s) could not be restored and are not "
                    f"served[/] (moved to {self.opts.state_dir / 'quarantine'}; also in /debug/configz):")
            for p in problems:
                c.print(f"  [red]{escape(str(p))}[/]")
        c.print("\nPress Ctrl-C to stop everything.")

    async def stop(self) -> None:
        self._narrating = False
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.controller:
            await self.controller.stop()
        remove_addons(self.opts.state_dir)
        if self.prometheus is not None:
            await self.prometheus.stop()
            self.prometheus = None
        if self.runner:
            await self.runner.stop()          # pods, gateways, then the control plane
        if self.jaeger is not None:
            await self.jaeger.stop()
            self.jaeger = None
        if self._pods_api is not None:
            await self._pods_api.cleanup()
            self._pods_api = None
        for name in REPORTED_LOGGERS:
            logging.getLogger(name).removeFilter(self._log_filter)


async def wait_all_synced(api: httpx.AsyncClient, api_url: str, timeout: float) -> None:
    """Wait until no push is pending and every connected proxy ACKed its current config."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            push = (await api.get(f"{api_url}/debug/push_status")).json()
            syncz = (await api.get(f"{api_url}/debug/syncz")).json()
            lagging = [p["proxy"] for p in syncz if not p.get("synced")]
            if not push.get("pending") and not lagging:
                return
            last = f"not synced: {', '.join(lagging[:3])}" if lagging else "push pending"
        except (httpx.HTTPError, ValueError) as e:
            last = type(e).__name__
        await asyncio.sleep(0.05)
    raise TimeoutError(f"proxies not synced after {timeout}s ({last})")


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
