"""The local runner: runs Kubernetes-shaped Deployments as local processes, each replica with its own
loopback pod IP, app host and (optionally) an Envoy sidecar, registering ready replicas with the control plane
through a :class:`WorkloadRegistrar`. ``apply``/``delete`` like kubectl, ``status()`` like ``get pods``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mizzen.agent.envoy import Agent, AgentOptions
from mizzen.config.labels import labels_match
from mizzen.config.model import DEFAULT_NAMESPACE, Config
from mizzen.registry.model import Workload
from mizzen.runner.addresses import DEFAULT_APP_NET, DEFAULT_POD_NET, AddressPool, PodAddresses
from mizzen.runner.gateway import (
    EGRESS_HTTP_PORT,
    EGRESS_LABELS,
    EGRESS_NAME,
    EGRESS_TLS_PORT,
    GATEWAY_NAMESPACE,
    start_gateway,
)
from mizzen.runner.istiod import ISTIOD_NAME, ControlPlaneArgs, ControlPlanePod
from mizzen.runner.manifests import (
    DeploymentSpec,
    ManifestError,
    ServiceSpec,
    kind_of,
    manifest_meta,
    parse_deployment,
    parse_service,
    pod_name,
)
from mizzen.runner.pod import Pod, PodOptions, PodStatus
from mizzen.runner.process import Backoff
from mizzen.runner.registrar import WorkloadRegistrar, call
from mizzen.runner.sidecar import SidecarFactory

log = logging.getLogger("mizzen.runner")

Manifest = Config | Mapping[str, Any] | None


@dataclass
class _Deployment:
    spec: DeploymentSpec
    pods: list[Pod] = field(default_factory=list)


class LocalRunner:
    """Run Deployments locally.

    ``sidecars``: a factory for per-pod sidecars (``AgentSidecars(xds_host, xds_port)`` for real Envoys), or
    None to run apps without sidecars (then apps get no HTTP_PROXY). ``injection`` decides per pod at
    creation (see :meth:`DeploymentSpec.inject_sidecar`); Namespace manifests given to ``apply`` (or
    :meth:`set_namespace_labels`) supply the ``istio-injection`` label. A change never touches running pods.
    """

    def __init__(
        self,
        control_plane: WorkloadRegistrar,
        *,
        sidecars: SidecarFactory | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        pod_net: str = DEFAULT_POD_NET,
        app_net: str = DEFAULT_APP_NET,
        log_dir: Path | None = None,
        python: str = sys.executable,
        backoff: Backoff | None = None,
        grace_s: float = 5.0,
        probe_period_s: float = 0.25,
        injection: str = "always",
    ) -> None:
        if injection not in ("always", "istio"):
            raise ValueError("injection must be 'always' or 'istio'")
        self.injection = injection
        self.namespace_labels: dict[str, dict[str, str]] = {}
        self.registrar = control_plane
        self.sidecars = sidecars
        self.namespace = namespace
        self.addresses = AddressPool(pod_net, app_net)
        self._own_log_dir = log_dir is None
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="mizzen-runner-"))
        self.pod_options = PodOptions(
            python=python, log_dir=self.log_dir, backoff=backoff or Backoff(), grace_s=grace_s,
            probe_period_s=probe_period_s,
        )
        self.deployments: dict[tuple[str, str], _Deployment] = {}
        self.services: dict[tuple[str, str], ServiceSpec] = {}
        self.gateways: list[Agent] = []
        self._gateway_started: dict[str, float] = {}      # gateway name -> monotonic start (AGE)
        self._gateway_addrs: list[PodAddresses] = []
        self._registered_gateways: list[str] = []          # gateway pods registered as workloads
        self._gateway_workloads: dict[str, Workload] = {}   # gateway pod -> its workload (egress)
        self.control_plane: ControlPlanePod | None = None
        self._lock = asyncio.Lock()

    # --- apply / delete ------------------------------------------------------------------------------------
    async def apply(self, manifests: Iterable[Manifest], namespace: str | None = None) -> list[str]:
        """Create/update the Deployments (and remember the Services) in ``manifests``; other kinds are
        ignored. Returns kubectl-style lines (``deployment.apps/reviews-v1 created``)."""
        ns = namespace or self.namespace
        deployments: list[DeploymentSpec] = []
        out: list[str] = []
        for m in manifests:         # parse everything first: nothing starts if any Deployment is invalid
            if m is None:
                continue
            kind = kind_of(m)
            if kind == "Deployment":
                deployments.append(parse_deployment(m, ns))
            elif kind == "Service":
                svc = parse_service(m, ns)
                self.services[(svc.namespace, svc.name)] = svc
            elif kind == "Namespace":
                _kind, name, _ns, labels, _spec = manifest_meta(m, ns)
                self.namespace_labels[name] = labels
                out.append(f"namespace/{name} configured")
        async with self._lock:
            for spec in deployments:
                out.append(f"deployment.apps/{spec.name} {await self._apply_deployment(spec)}")
        return out

    async def _apply_deployment(self, spec: DeploymentSpec) -> str:
        current = self.deployments.get(spec.key)
        if current is None:
            dep = self.deployments[spec.key] = _Deployment(spec)
            await self._scale(dep, spec.replicas)
            return "created"
        if current.spec.template_hash == spec.template_hash:
            changed = len(current.pods) != spec.replicas or current.spec != spec
            current.spec = spec
            await self._scale(current, spec.replicas)
            return "configured" if changed else "unchanged"
        # new pod template: start the new pods, then stop the old ones (a one-step rolling update)
        old = current.pods
        current.spec, current.pods = spec, []
        await self._scale(current, spec.replicas)
        await self._stop_pods(old)
        return "configured"

    async def _scale(self, dep: _Deployment, replicas: int) -> None:
        while len(dep.pods) > replicas:
            await self._stop_pods([dep.pods.pop()])
        new: list[Pod] = []
        while len(dep.pods) < replicas:
            pod = self._new_pod(dep.spec)
            dep.pods.append(pod)
            new.append(pod)
        await asyncio.gather(*(p.start() for p in new))

    def _new_pod(self, spec: DeploymentSpec) -> Pod:
        ports = [p.container_port for c in spec.containers for p in c.ports]
        ns_labels = self.namespace_labels.get(spec.namespace, {})
        sidecars = self.sidecars if spec.inject_sidecar(ns_labels, self.injection) else None
        addrs = self.addresses.allocate(ports, sidecar=sidecars is not None)
        names = {p.name for d in self.deployments.values() for p in d.pods}
        name = pod_name(spec.name, spec.template_hash)
        while name in names:
            name = pod_name(spec.name, spec.template_hash)
        return Pod(spec, name, addrs, self.registrar, sidecars, self.pod_options)

    async def _stop_pods(self, pods: list[Pod]) -> None:
        await asyncio.gather(*(p.stop() for p in pods))
        for p in pods:
            self.addresses.release(p.addrs)

    async def delete(self, manifests: Iterable[Manifest], namespace: str | None = None) -> list[str]:
        """Delete the Deployments (and forget the Services) named in ``manifests``."""
        ns = namespace or self.namespace
        out: list[str] = []
        for m in manifests:
            if m is None:
                continue
            kind = kind_of(m)
            if kind == "Deployment":
                spec = parse_deployment(m, ns)
                deleted = await self.delete_deployment(spec.namespace, spec.name)
                out.append(f"deployment.apps/{spec.name} {'deleted' if deleted else 'not found'}")
            elif kind == "Service":
                svc = parse_service(m, ns)
                self.services.pop((svc.namespace, svc.name), None)
        return out

    def set_namespace_labels(self, namespace: str, labels: Mapping[str, str]) -> None:
        self.namespace_labels[namespace] = dict(labels)

    async def delete_deployment(self, namespace: str, name: str) -> bool:
        async with self._lock:
            dep = self.deployments.pop((namespace, name), None)
            if dep is None:
                return False
            await self._stop_pods(dep.pods)
            return True

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        async with self._lock:
            dep = self.deployments.get((namespace, name))
            if dep is None:
                raise ManifestError(f"Deployment/{namespace}/{name} not found")
            await self._scale(dep, replicas)

    # --- control plane -------------------------------------------------------------------------------------
    async def start_control_plane(
        self,
        args: ControlPlaneArgs,
        on_up: Callable[[], Awaitable[object]] | None = None,
        ready_timeout: float = 30.0,
    ) -> ControlPlanePod:
        """Run the control plane as this runner's ``istio-system/istiod-...`` pod (see
        :mod:`mizzen.runner.istiod`); stopped last by :meth:`stop`."""
        if self.control_plane is not None:
            raise RuntimeError("the control plane is already running")
        cp = ControlPlanePod(args, self.log_dir / "istio-system" / ISTIOD_NAME / "discovery.log", on_up)
        self.control_plane = cp
        try:
            await cp.start(ready_timeout)
        except BaseException:
            self.control_plane = None
            await cp.stop()
            raise
        return cp

    def registered_workloads(self) -> list[Workload]:
        """The workloads registered with the control plane now (what a resync sends): ready pods and the
        gateways that are registered as workloads (the egress gateway)."""
        pods = [p.workload() for d in self.deployments.values() for p in d.pods if p.registered]
        return pods + [self._gateway_workloads[gw.spec.name] for gw in self.gateways
                       if gw.spec.name in self._gateway_workloads]

    # --- gateway -------------------------------------------------------------------------------------------
    async def start_gateway(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        tls_port: int = 8443,
        xds_host: str = "127.0.0.1",
        xds_port: int = 15010,
        options: AgentOptions | None = None,
        ready_timeout: float | None = 30.0,
    ) -> Agent:
        """Start the ingress gateway (see :func:`mizzen.runner.gateway.start_gateway`); its admin listener
        gets a pod IP from the runner's pool so it never clashes with anything on ``host``: its agent admin
        proxy (15004) and stats listener (15090) bind there. When the sidecars get identities
        (``AgentSidecars(credentials=..., ca_address=...)``), so does the gateway."""
        admin = self.addresses.allocate((), sidecar=True)
        try:
            agent = await start_gateway(
                host, port, tls_port=tls_port, xds_host=xds_host, xds_port=xds_port,
                admin_host=admin.pod_ip, options=options, ready_timeout=ready_timeout,
                **self._gateway_identity(),
            )
        except BaseException:
            self.addresses.release(admin)
            raise
        self.gateways.append(agent)
        self._gateway_started[agent.spec.name] = time.monotonic()
        self._gateway_addrs.append(admin)
        return agent

    async def start_egress_gateway(
        self,
        *,
        xds_host: str = "127.0.0.1",
        xds_port: int = 15010,
        options: AgentOptions | None = None,
        ready_timeout: float = 30.0,
    ) -> Agent:
        """Start ``istio-egressgateway`` like Istio's demo profile: its own pod IP from the pool, Gateway
        ports 80/443 served on 8080/8443 there, registered as a workload (labels ``istio: egressgateway``)
        once ready, so the ``istio-egressgateway`` Service
        (:data:`~mizzen.runner.gateway.EGRESS_SERVICE_YAML`) has it as its endpoint."""
        addrs = self.addresses.allocate((EGRESS_HTTP_PORT, EGRESS_TLS_PORT), sidecar=True)
        try:
            agent = await start_gateway(
                addrs.pod_ip, EGRESS_HTTP_PORT, tls_port=EGRESS_TLS_PORT, xds_host=xds_host,
                xds_port=xds_port, admin_host=addrs.pod_ip, options=options,
                ready_timeout=ready_timeout, deployment=EGRESS_NAME, labels=EGRESS_LABELS,
                **self._gateway_identity(),
            )
        except BaseException:
            self.addresses.release(addrs)
            raise
        self.gateways.append(agent)
        self._gateway_started[agent.spec.name] = time.monotonic()
        self._gateway_addrs.append(addrs)
        workload = Workload(
            name=agent.spec.name, namespace=agent.spec.namespace, address=addrs.pod_ip,
            labels=dict(EGRESS_LABELS), service_account=agent.spec.service_account,
            ports={"http2": EGRESS_HTTP_PORT, "https": EGRESS_TLS_PORT})
        self._gateway_workloads[agent.spec.name] = workload     # also re-sent by every resync
        try:
            await call(self.registrar.register(workload))
        except Exception as exc:
            log.warning("egress gateway %s: register failed: %s", agent.spec.name, exc)
        else:
            self._registered_gateways.append(agent.spec.name)
        return agent

    def _gateway_identity(self) -> dict[str, Any]:
        """The sidecars' credential source and CA address, for the gateways (none without identities)."""
        credentials = getattr(self.sidecars, "credentials", None)
        ca_address = getattr(self.sidecars, "ca_address", None)
        return {"credentials": credentials, "ca_address": ca_address} if credentials and ca_address else {}

    @staticmethod
    def _gateway_deployment(agent: Agent) -> str:
        """``istio-egressgateway`` from the pod name ``istio-egressgateway-<hash>-<id>``."""
        parts = agent.spec.name.rsplit("-", 2)
        return parts[0] if len(parts) == 3 else agent.spec.name

    # --- status / stop -------------------------------------------------------------------------------------
    def status(self) -> list[PodStatus]:
        out = [p.status() for d in self.deployments.values() for p in d.pods]
        if self.control_plane is not None:
            out.append(self.control_plane.status())
        for gw in self.gateways:
            out.append(PodStatus(
                name=gw.spec.name, namespace=gw.spec.namespace, deployment=self._gateway_deployment(gw),
                # the pod's own address (its agent's 15004/15020/15090), not where it publishes its ports
                pod_ip=gw.spec.effective_admin_host, app_host="",
                phase="Running" if gw.running else "Pending",
                ready=gw.running, registered=gw.spec.name in self._registered_gateways, restarts=0,
                sidecar="running" if gw.running else "down",
                sidecar_restarts=gw.restarts, labels=dict(gw.spec.labels),
                service_account=gw.spec.service_account,
                age_s=(age := time.monotonic() - self._gateway_started.get(gw.spec.name, time.monotonic())),
                sidecar_pid=gw.pid, created_at=time.time() - age,
                admin=gw.admin_proxy_url or "",
            ))
        return sorted(out, key=lambda s: (s.namespace, s.name))

    def pods(self, namespace: str | None = None, **labels: str) -> list[PodStatus]:
        """Pods in ``namespace`` (all if None) whose labels include ``labels``."""
        return [
            s for s in self.status()
            if (namespace is None or s.namespace == namespace)
            and labels_match(labels, s.labels)
        ]

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every pod is registered (ready); raises TimeoutError naming the ones that are not.
        Pods in phase ``Failed`` (e.g. a container the runner cannot run) never become ready and are not
        waited for; ``status()`` reports them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            pending = [s for s in self.status()
                       if s.namespace != GATEWAY_NAMESPACE and not s.registered and s.phase != "Failed"]
            if not pending:
                return
            if loop.time() >= deadline:
                names = ", ".join(f"{s.namespace}/{s.name} ({s.phase} {s.message})".strip() for s in pending)
                raise TimeoutError(f"pods not ready after {timeout}s: {names}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Stop every pod and gateway: deregister, SIGTERM, SIGKILL after the grace period; free addresses."""
        async with self._lock:
            deps = list(self.deployments.values())
            self.deployments.clear()
            await asyncio.gather(*(self._stop_pods(d.pods) for d in deps))
            gws, self.gateways = self.gateways, []
            for name in self._registered_gateways:      # traffic moves away first, like a pod
                with contextlib.suppress(Exception):
                    await call(self.registrar.deregister(GATEWAY_NAMESPACE, name))
            self._registered_gateways.clear()
            self._gateway_workloads.clear()
            for gw in gws:
                with contextlib.suppress(Exception):
                    await gw.stop()
            for addrs in self._gateway_addrs:
                self.addresses.release(addrs)
            self._gateway_addrs.clear()
            self._gateway_started.clear()
            cp, self.control_plane = self.control_plane, None
            if cp is not None:
                await cp.stop()
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    async def __aenter__(self) -> LocalRunner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
