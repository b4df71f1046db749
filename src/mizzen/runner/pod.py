"""One replica: its containers (supervised processes), its sidecar, and its readiness. A readiness loop (like
kubelet's probes) registers the Workload with the control plane once every container accepts TCP on
``<app host>:<containerPort>`` and the sidecar is ready, and deregisters it as soon as that stops being true
(crash, stop). :class:`PodStatus` is what ``status()`` reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from mizzen.asyncwait import wait_event
from mizzen.registry.model import ISTIO_TLS_MODE, TLS_MODE_LABEL, Workload
from mizzen.runner.addresses import PodAddresses
from mizzen.runner.containers import CommandError, PodIdentity, container_argv, container_env
from mizzen.runner.manifests import ContainerSpec, DeploymentSpec
from mizzen.runner.process import Backoff, ContainerProcess
from mizzen.runner.registrar import WorkloadRegistrar, call
from mizzen.runner.sidecar import Sidecar, SidecarFactory, SidecarRequest

log = logging.getLogger("mizzen.runner")

# kubectl STATUS reasons for a pod that cannot start (documented in docs/LOCAL_MODEL.md): the runner cannot
# run the container at all (no command and an image it does not know), or starting it failed (executable not
# found, sidecar did not start), like kubelet's RunContainerError.
ERR_NO_COMMAND = "ErrNoCommand"
RUN_CONTAINER_ERROR = "RunContainerError"


@dataclass(frozen=True)
class ContainerStatus:
    name: str
    state: str                    # Waiting | Running | CrashLoopBackOff | Failed | Terminated
    restarts: int
    pid: int | None
    ports: tuple[int, ...]
    last_exit: int | None
    message: str
    log_path: str
    started_at: float | None = None           # wall clock of the running process's start


@dataclass(frozen=True)
class PodStatus:
    name: str
    namespace: str
    deployment: str
    pod_ip: str
    app_host: str
    phase: str                    # Pending | Running | Failed | Terminating | Terminated
    ready: bool
    registered: bool
    restarts: int                 # app restarts, all containers
    sidecar: str                  # none | starting | running | down
    sidecar_restarts: int
    labels: dict[str, str] = field(default_factory=dict)
    service_account: str = "default"
    containers: tuple[ContainerStatus, ...] = ()
    message: str = ""
    age_s: float = 0.0
    sidecar_pid: int | None = None
    reason: str = ""              # why the pod cannot start (ErrNoCommand, RunContainerError), else ""
    failed_container: str = ""    # the container that ``reason`` is about
    annotations: dict[str, str] = field(default_factory=dict)
    specs: tuple[ContainerSpec, ...] = ()        # the pod template's containers (also those never started)
    created_at: float = 0.0                      # wall clock (epoch seconds) of the pod's creation
    admin: str = ""               # the sidecar agent's admin proxy (http://host:port), when it serves one

    @property
    def status_text(self) -> str:
        """kubectl's STATUS column: the reason a pod cannot start or is crashing, else the phase."""
        return self.reason or self.phase

    @property
    def ready_count(self) -> str:
        """kubectl's READY column: ready containers (sidecar included) / all containers."""
        total = max(len(self.specs), len(self.containers)) + (0 if self.sidecar == "none" else 1)
        up = sum(c.state == "Running" for c in self.containers) + (self.sidecar == "running")
        return f"{up}/{total}"


@dataclass(frozen=True)
class PodOptions:
    python: str
    log_dir: Path
    backoff: Backoff = field(default_factory=Backoff)
    grace_s: float = 5.0
    probe_period_s: float = 0.25
    sidecar_ready_timeout_s: float = 60.0


class Pod:
    def __init__(
        self,
        spec: DeploymentSpec,
        name: str,
        addrs: PodAddresses,
        registrar: WorkloadRegistrar,
        sidecars: SidecarFactory | None,
        options: PodOptions,
    ) -> None:
        self.spec = spec
        self.name = name
        self.addrs = addrs
        self.registrar = registrar
        self.options = options
        self.created = time.monotonic()
        self.created_at = time.time()
        self.phase = "Pending"
        self.message = ""
        self.reason = ""
        self.failed_container = ""
        self.registered = False
        self.ready = False
        self.containers: list[ContainerProcess] = []
        self.sidecar: Sidecar | None = None
        self._sidecar_state = "none"
        self._sidecar_factory = sidecars
        if sidecars is None:        # no sidecar: the app itself listens on the pod IP, like an un-meshed pod
            self.addrs = PodAddresses(addrs.pod_ip, addrs.pod_ip)
        self._wake = asyncio.Event()
        self._probe: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def labels(self) -> dict[str, str]:
        """The pod's labels: the template's, plus Istio's ``security.istio.io/tlsMode: istio`` when the
        sidecar is injected (as Istio's injector adds it), which tells clients' auto mTLS to use TLS."""
        out = dict(self.spec.pod_labels)
        if self._sidecar_factory is not None:
            out.setdefault(TLS_MODE_LABEL, ISTIO_TLS_MODE)
        return out

    @property
    def identity(self) -> PodIdentity:
        return PodIdentity(
            name=self.name,
            namespace=self.spec.namespace,
            pod_ip=self.addrs.pod_ip,
            app_host=self.addrs.app_host,
            service_account=self.spec.service_account,
            labels=self.labels,
            sidecar=self._sidecar_factory is not None,
            python=self.options.python,
        )

    def workload(self) -> Workload:
        ports = {p.name: p.container_port for c in self.spec.containers for p in c.ports if p.name}
        return Workload(
            name=self.name,
            namespace=self.spec.namespace,
            address=self.addrs.pod_ip,
            labels=self.labels,
            service_account=self.spec.service_account,
            ports=ports,
        )

    def _changed(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        """Start the sidecar (not waiting for it) and the containers; readiness is tracked separately."""
        ident = self.identity
        if self._sidecar_factory is not None:
            self.sidecar = self._sidecar_factory(SidecarRequest(
                pod_name=self.name, namespace=self.spec.namespace, pod_ip=self.addrs.pod_ip,
                app_host=self.addrs.app_host, labels=self.labels,
                service_account=self.spec.service_account, workload=self.spec.name,
                annotations=dict(self.spec.pod_annotations),
            ))
            self._sidecar_state = "starting"
            try:
                await self.sidecar.start(ready_timeout=None)
            except Exception as exc:
                self.phase, self.message = "Failed", f"sidecar did not start: {exc}"
                self.reason, self.failed_container = RUN_CONTAINER_ERROR, "istio-proxy"
                self._sidecar_state = "down"
                log.error("pod %s/%s: %s", self.spec.namespace, self.name, self.message)
                return
        for c in self.spec.containers:
            label = f"{self.spec.namespace}/{self.name}/{c.name}"
            env = container_env(c, ident)
            try:
                argv = container_argv(c, env, self.options.python)
            except CommandError as exc:
                self.phase, self.message = "Failed", str(exc)
                self.reason, self.failed_container = ERR_NO_COMMAND, c.name
                log.error("pod %s/%s: %s", self.spec.namespace, self.name, exc)
                return
            proc = ContainerProcess(
                label, argv, env,
                log_path=self.options.log_dir / self.spec.namespace / self.name / f"{c.name}.log",
                cwd=c.working_dir or None, backoff=self.options.backoff, on_change=self._changed,
            )
            self.containers.append(proc)
            try:
                await proc.start()
            except OSError as exc:
                self.phase, self.message = "Failed", f"container {c.name}: {proc.message or exc}"
                self.reason, self.failed_container = RUN_CONTAINER_ERROR, c.name
                return
        self.phase = "Running"
        self._probe = asyncio.create_task(self._readiness(), name=f"readiness {self.name}")

    async def _app_ready(self) -> bool:
        for proc, c in zip(self.containers, self.spec.containers, strict=True):
            if not proc.running:
                return False
            for p in c.ports:
                if p.protocol.upper() != "TCP":
                    continue
                try:
                    _r, w = await asyncio.wait_for(
                        asyncio.open_connection(self.addrs.app_host, p.container_port), 1.0
                    )
                except (OSError, TimeoutError):
                    return False
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()
        return True

    async def _sidecar_ready(self) -> bool:
        sc = self.sidecar
        if sc is None:
            return True
        if self._sidecar_state == "running":
            if sc.running:
                return True
            self._sidecar_state = "down"
            return False
        try:
            await sc.wait_ready(timeout=1.0)
        except Exception:
            if time.monotonic() - self.created > self.options.sidecar_ready_timeout_s:
                self.message = "sidecar not ready (is the control plane reachable?)"
            return False
        self._sidecar_state = "running"
        return True

    async def _readiness(self) -> None:
        while not self._stopping:
            self._wake.clear()
            ready = await self._sidecar_ready() and await self._app_ready()
            self.ready = ready
            if ready and not self.registered:
                await self._register()
            elif not ready and self.registered:
                await self._deregister("not ready")
            await wait_event(self._wake, self.options.probe_period_s * (4 if ready else 1))

    async def _register(self) -> None:
        try:
            await call(self.registrar.register(self.workload()))
        except Exception as exc:
            self.message = f"register failed: {exc}"
            log.warning("pod %s/%s: %s", self.spec.namespace, self.name, self.message)
            return
        self.registered, self.message = True, ""
        log.info("pod %s/%s ready at %s (app %s); registered", self.spec.namespace, self.name,
                 self.addrs.pod_ip, self.addrs.app_host)

    async def _deregister(self, why: str) -> None:
        try:
            await call(self.registrar.deregister(self.spec.namespace, self.name))
        except Exception as exc:
            log.warning("pod %s/%s: deregister failed: %s", self.spec.namespace, self.name, exc)
        self.registered = False
        log.info("pod %s/%s deregistered (%s)", self.spec.namespace, self.name, why)

    async def stop(self) -> None:
        """Deregister first (so traffic moves away), then stop containers and the sidecar."""
        self._stopping = True
        self.phase = "Terminating"
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
        if self.registered:
            await self._deregister("stopping")
        self.ready = False
        await asyncio.gather(*(c.stop(self.options.grace_s) for c in self.containers))
        if self.sidecar is not None:
            with contextlib.suppress(Exception):
                await self.sidecar.stop()
            self._sidecar_state = "down"
        self.phase = "Terminated"

    def status(self) -> PodStatus:
        containers = tuple(
            ContainerStatus(
                name=c.name, state=p.state, restarts=p.restarts, pid=p.pid,
                ports=tuple(x.container_port for x in c.ports), last_exit=p.last_exit, message=p.message,
                log_path=str(p.log_path), started_at=p.started_at,
            )
            for p, c in zip(self.containers, self.spec.containers, strict=False)
        )
        phase, reason = self.phase, self.reason
        if phase == "Running" and any(c.state == "CrashLoopBackOff" for c in containers):
            phase = "CrashLoopBackOff"
        if not reason and any(c.state == "Failed" for c in containers):   # could not be restarted
            reason = RUN_CONTAINER_ERROR
        message = self.message or next((c.message for c in containers if c.message), "")
        return PodStatus(
            name=self.name,
            namespace=self.spec.namespace,
            deployment=self.spec.name,
            pod_ip=self.addrs.pod_ip,
            app_host=self.addrs.app_host,
            phase=phase,
            ready=self.ready,
            registered=self.registered,
            restarts=sum(c.restarts for c in containers),
            sidecar=self._sidecar_state,
            sidecar_restarts=self.sidecar.restarts if self.sidecar is not None else 0,
            labels=self.labels,
            service_account=self.spec.service_account,
            containers=containers,
            message=message,
            age_s=time.monotonic() - self.created,
            sidecar_pid=getattr(self.sidecar, "pid", None),
            reason=reason,
            failed_container=self.failed_container,
            annotations=dict(self.spec.pod_annotations),
            specs=self.spec.containers,
            created_at=self.created_at,
            admin=getattr(self.sidecar, "admin_proxy_url", None) or "",
        )
