"""The control plane as a pod of the local mesh (istiod's, in ``istio-system``): ``python -m
mizzen.controlplane`` run and restarted with backoff like any container (its output in its log file, killed
with the runner), while the agents, Envoys and apps stay the runner's children, so they keep serving with
their last config while it is away, as Istio promises.

Each time the control plane (re)starts, :class:`ControlPlanePod` waits for its API and calls ``on_up``;
the runner uses that to send its complete set of registered workloads (``PUT /apis/workloads``), which opens
the control plane's xDS gate (``--await-workload-sync``): a restarted control plane serves its restored
registry only once it has been reconciled with the pods actually running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from mizzen.asyncwait import wait_event
from mizzen.auth.token import TOKEN_ENV
from mizzen.runner.manifests import pod_name, pod_template_hash
from mizzen.runner.pod import ContainerStatus, PodStatus
from mizzen.runner.process import Backoff, Supervised, spawn_logged, stop_group

log = logging.getLogger("mizzen.runner")

__all__ = ["ISTIOD_LABELS", "ISTIOD_NAME", "ControlPlaneArgs", "ControlPlanePod"]

ISTIOD_NAME = "istiod"
ISTIOD_NAMESPACE = "istio-system"
ISTIOD_CONTAINER = "discovery"
ISTIOD_LABELS = {"app": "istiod", "istio": "pilot"}
# a control plane is cheap to restart and everything waits for it: retry fast, still back off when it
# keeps crashing
ISTIOD_BACKOFF = Backoff(start_s=0.1, max_s=10.0, stable_s=30.0)
# the spare is started this long after a (re)start is up, so its imports do not compete for the CPU with the
# first pushes of the process that just took over
SPARE_DELAY_S = 3.0


@dataclass(frozen=True)
class ControlPlaneArgs:
    """How to run the control plane process."""

    state_dir: Path
    xds_port: int
    http_port: int
    host: str = "127.0.0.1"
    pods_url: str | None = None
    await_workload_sync_s: float = 10.0
    log_level: str = "WARNING"
    python: str = sys.executable
    # the API token, handed over in the environment ($MIZZEN_TOKEN), never on the command line; None: the
    # process reads <state dir>/token (and a $MIZZEN_TOKEN of our own environment is not passed on)
    token: str | None = field(default=None, repr=False)
    api_socket: Path | None = None          # a second API listener on this Unix socket (0600)
    allow_external_bind: bool = False
    mesh_config: Path | None = None         # Istio mesh config YAML (--mesh-config)
    zipkin_address: str = ""                # defaultConfig.tracing.zipkin.address ("" = no tracing)
    trace_sampling: float = 1.0             # defaultConfig.tracing.sampling (percent)
    xds_tls_port: int = -1                  # xDS + the CA over TLS (15012 in the demo); -1: no CA
    ca_dir: Path | None = None              # a plugged-in CA (Istio's cacerts files)

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def argv(self) -> list[str]:
        out = [self.python, "-m", "mizzen.controlplane", "--state-dir", str(self.state_dir),
               "--xds-host", self.host, "--xds-port", str(self.xds_port), "--http-host", self.host,
               "--http-port", str(self.http_port), "--await-workload-sync", str(self.await_workload_sync_s),
               "--log-level", self.log_level, "--xds-tls-port", str(self.xds_tls_port)]
        if self.ca_dir is not None:
            out += ["--ca-dir", str(self.ca_dir)]
        if self.pods_url:
            out += ["--pods-url", self.pods_url]
        if self.api_socket is not None:
            out += ["--api-socket", str(self.api_socket)]
        if self.allow_external_bind:
            out.append("--allow-external-bind")
        if self.mesh_config is not None:
            out += ["--mesh-config", str(self.mesh_config)]
        if self.zipkin_address:
            out += ["--zipkin-address", self.zipkin_address, "--trace-sampling", str(self.trace_sampling)]
        return out

    def env(self) -> dict[str, str]:
        """The process environment: ours, with the API token (or without any inherited one)."""
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
        if self.token:
            env[TOKEN_ENV] = self.token
        return env


class ControlPlanePod(Supervised):
    """Run, supervise and stop the control plane process; ``on_up()`` runs after every (re)start once its
    API answers (before that, its xDS is held).

    A warm spare (``--standby``: everything imported, nothing read or bound) waits next to the running
    process; when that dies, the spare is promoted after the backoff delay, so a restart costs the state
    load and the port binds rather than a Python start-up (~2 s on a busy machine). A new spare is started
    :data:`SPARE_DELAY_S` after the promoted process serves.
    """

    def __init__(
        self,
        args: ControlPlaneArgs,
        log_path: Path,
        on_up: Callable[[], Awaitable[object]] | None = None,
        backoff: Backoff = ISTIOD_BACKOFF,
        warm_spare: bool = True,
    ) -> None:
        self.args = args
        self.log_path = log_path
        self.on_up = on_up
        self.backoff = backoff
        self.warm_spare = warm_spare
        self.name = pod_name(ISTIOD_NAME, pod_template_hash({"controlplane": ISTIOD_NAME}))
        self.label = f"{ISTIOD_NAMESPACE}/{self.name}/{ISTIOD_CONTAINER}"
        self.created = time.monotonic()
        self.state = "Waiting"             # Waiting | Running | CrashLoopBackOff | Failed | Terminated
        self.message = ""
        self.restarts = 0
        self.last_exit: int | None = None
        self.ups = 0                       # completed (re)starts: API up and on_up done
        self.up_at: float | None = None    # monotonic time of the last one
        self._proc: asyncio.subprocess.Process | None = None
        self._spare: asyncio.subprocess.Process | None = None
        self._up_pid: int | None = None    # the process those were for
        self._wake = asyncio.Event()
        self._up = asyncio.Event()
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self._monitor: asyncio.Task[None] | None = None

    @property
    def spare_pid(self) -> int | None:
        p = self._spare
        return p.pid if p is not None and p.returncode is None else None

    @property
    def ready(self) -> bool:
        return self.pid is not None and self._up_pid == self.pid

    def _changed(self) -> None:
        self._wake.set()

    async def _spawn(self, spare: bool) -> asyncio.subprocess.Process:
        return await spawn_logged(self.args.argv() + (["--standby"] if spare else []), self.args.env(),
                                  self.log_path,
                                  stdin=asyncio.subprocess.PIPE if spare else asyncio.subprocess.DEVNULL)

    async def _promote(self) -> asyncio.subprocess.Process:
        """The warm spare told to start, or (none alive) a new process."""
        spare, self._spare = self._spare, None
        if spare is not None and spare.returncode is None and spare.stdin is not None:
            try:
                spare.stdin.write(b"start\n")
                await spare.stdin.drain()
                return spare
            except (BrokenPipeError, ConnectionResetError):
                pass
        return await self._spawn(spare=False)

    async def _ensure_spare(self) -> None:
        if self.warm_spare and not self._stopping and self.spare_pid is None:
            try:
                self._spare = await self._spawn(spare=True)
            except OSError as e:
                log.warning("control plane: cannot start a warm spare: %s", e)

    async def start(self, ready_timeout: float = 30.0) -> None:
        """Start the process and wait until it is up (raises TimeoutError naming its log otherwise)."""
        self._proc = await self._spawn(spare=False)
        self.state = "Running"
        self._changed()
        self._supervisor = asyncio.create_task(self._supervise(), name="control plane supervisor")
        self._monitor = asyncio.create_task(self._watch(), name="control plane monitor")
        try:
            await asyncio.wait_for(self._up.wait(), ready_timeout)
        except TimeoutError:
            raise TimeoutError(f"the control plane did not come up within {ready_timeout:.0f}s "
                               f"(log: {self.log_path})") from None

    async def _restart(self) -> None:
        # the crash loop is the runner's (Supervised): the demo reports a crash like any container's
        self._proc = await self._promote()

    def _restarted(self) -> None:
        self.state, self.message = "Running", ""
        self._changed()

    async def wait_up(self, after: int, timeout: float) -> None:
        """Wait until the control plane has come up more than ``after`` times in total."""
        deadline = time.monotonic() + timeout
        while self.ups <= after:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the control plane is not back after {timeout}s")
            await asyncio.sleep(0.02)

    async def _watch(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
            while True:
                pid = self.pid
                if pid is None or pid == self._up_pid:
                    if pid is not None and self.up_at is not None and \
                            time.monotonic() - self.up_at >= SPARE_DELAY_S:
                        await self._ensure_spare()
                    self._wake.clear()
                    await wait_event(self._wake, 0.5)
                    continue
                if not await self._api_answers(session):
                    await asyncio.sleep(0.01)
                    continue
                try:
                    if self.on_up is not None:
                        await self.on_up()
                except Exception as e:      # retried: the pid is still not marked up
                    log.warning("control plane (pid %s) is up but the workload sync failed: %s", pid, e)
                    await asyncio.sleep(0.2)
                    continue
                self._up_pid = pid
                self.ups += 1
                self.up_at = time.monotonic()
                self._up.set()
                self._changed()
                log.info("control plane up (pid %s, start %d)", pid, self.ups)

    async def _api_answers(self, session: aiohttp.ClientSession) -> bool:
        try:
            async with session.get(f"{self.args.http_url}/version") as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop the spare and the control plane (SIGTERM, SIGKILL after ``grace_s``); waits for both."""
        self._stopping = True
        for task in (self._monitor, self._supervisor):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._monitor = self._supervisor = None
        for proc in (self._spare, self._proc):
            if proc is not None:
                await stop_group(proc, grace_s, f"control plane (pid {proc.pid})")
        self._spare = None
        self.state = "Terminated"
        self._changed()

    def status(self) -> PodStatus:
        age = time.monotonic() - self.created
        container = ContainerStatus(
            name=ISTIOD_CONTAINER, state=self.state, restarts=self.restarts, pid=self.pid,
            ports=(self.args.xds_port, self.args.http_port), last_exit=self.last_exit, message=self.message,
            log_path=str(self.log_path),
        )
        phase = self.state if self.state in ("CrashLoopBackOff", "Failed", "Terminated") else (
            "Running" if self.pid is not None else "Pending")
        return PodStatus(
            name=self.name, namespace=ISTIOD_NAMESPACE, deployment=ISTIOD_NAME, pod_ip=self.args.host,
            app_host=self.args.host, phase=phase, ready=self.ready, registered=False, restarts=self.restarts,
            sidecar="none", sidecar_restarts=0, labels=dict(ISTIOD_LABELS),
            service_account="istiod", containers=(container,), message=self.message,
            age_s=age, created_at=time.time() - age,
            # as istiod's Deployment: Prometheus scrapes its /metrics (15014 in Istio: the API port here)
            annotations={"prometheus.io/scrape": "true", "prometheus.io/port": str(self.args.http_port),
                         "sidecar.istio.io/inject": "false"},
        )
