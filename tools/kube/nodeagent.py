"""The node agent: the one simulated part of the test cluster (tools/kube/testcluster.py), a kubelet stand-in.

It registers a Node (Ready, with capacity, topology labels and a podCIDR) and renews its Lease in
``kube-node-lease``, so the real scheduler binds pods to it. It watches the Pods bound to it
(``fieldSelector=spec.nodeName=<node>``) and, for each, does what a kubelet and a container runtime would:

* **network**: a network namespace ``mzk<S>-p<uid8>`` with a veth (host end ``mzk<S>p<uid8>`` on the
  cluster's bridge, ``eth0`` inside) and a pod IP from the node's podCIDR ``10.244.(228+S).0/24``; the
  node's own address ``10.244.(228+S).1/24`` is added to the bridge (the pods' default route and
  ``status.hostIP``), so the host reaches pod IPs directly. Nothing is added to the host's iptables.
* **volumes**, materialized under ``<workdir>/pods/<uid>/volumes/<volume>``: projected (service-account
  tokens through TokenRequest with the projection's audience and bound to the pod, ConfigMap, Secret,
  downwardAPI), ConfigMap, Secret, downwardAPI and emptyDir. Secrets and tokens are written 0600. They are
  re-synced every ``volume_resync_s`` (60 s) and tokens re-requested at 80 % of their lifetime.
* **containers** as processes in the pod's namespace (``ip netns exec``): init containers one after another
  first, then the containers; command/args/env as :mod:`mizzen.runner.containers` builds them (incl.
  downward-API fieldRefs; Istio's Bookinfo images without a command run ``python -m mizzen.bookinfo``),
  plus ``configMapKeyRef``/``secretKeyRef`` env and ``envFrom``; a command ``mizzen`` (the Mizzen image's,
  as ``mizzen install`` renders it) is this checkout's console script. Restarts follow ``restartPolicy``
  with a capped backoff (1 s doubling to 30 s, shorter than a kubelet's 10 s..5 min: this is a test harness).
* **users and hooks**: a container's (or the pod's) ``securityContext.runAsUser``/``runAsGroup`` runs it
  through ``setpriv`` (Istio's ``istio-proxy`` as 1337, ``istio-init`` as root applying its iptables rules in
  the pod's namespace: transparent capture, uid 1337 excluded); emptyDirs are 0777 like a kubelet's and the
  path to a non-root pod's volumes is searchable; containers start in order and a ``lifecycle.postStart``
  exec hook finishes before the next one starts (``holdApplicationUntilProxyStarts``); on deletion each
  running container's ``lifecycle.preStop`` hook (exec, httpGet or sleep) runs before its SIGTERM, all
  within the pod's grace period.
* **probes**: readiness and liveness (httpGet, tcpSocket, exec) with Kubernetes' defaults and semantics;
  httpGet and tcpSocket are sent from the host (as a kubelet does from the node) to the pod IP.
* **status** written through the API like a kubelet: phase, podIP/podIPs, hostIP, startTime, conditions
  (PodReadyToStartContainers, Initialized, ContainersReady, Ready; PodScheduled kept), containerStatuses and
  initContainerStatuses with state, lastState, ready, started and restartCount.
* **deletion**: a pod with a deletionTimestamp is stopped (preStop hooks, then SIGTERM to the process group,
  SIGKILL at the end of its grace period, capped at 30 s), its namespace, veth and directory removed, then
  the object is deleted with grace 0, as a kubelet confirms a deletion.

**Paths: there is no mount namespace.** A process sees the host's file system, so a volume's
``mountPath`` is mapped to its directory on the host: every command/args element and env value that starts
with a mountPath (longest first) is rewritten to the host directory (``/etc/cfg/x`` ->
``<pod dir>/volumes/cfg/x``), ``workingDir`` likewise, and the env var ``MIZZEN_MOUNTS`` carries the whole map
as JSON (``{"/etc/cfg": "/tmp/.../volumes/cfg"}``) for programs that build paths themselves. Paths a program
hard-codes (e.g. the in-cluster token path) are not mapped.

**Cluster DNS and Services.** Each pod gets ``/etc/hosts`` (itself, and every Service's ClusterIP under
``name.ns.svc.cluster.local``, ``name.ns.svc``, ``name.ns`` and, in its own namespace, ``name``; rewritten in
place when Services change) and ``/etc/resolv.conf`` (search path, ``ndots:5``, no nameserver yet: the
sidecar's DNS proxy answers meshed pods) through ``/etc/netns/<netns>/``, which ``ip netns exec`` bind-mounts
over ``/etc``. With ``kube_proxy=True`` the real kube-proxy (iptables mode) runs in each pod's namespace (one
process per pod: there is no node namespace the pods' traffic crosses, and the host's iptables are never
touched), so ClusterIPs work from pods. In an injected pod the order of the nat table matters: on a real node
the sidecar's capture (the pod's namespace) comes before kube-proxy's DNAT (the node's); here both live in
the pod's namespace, so the node agent writes kube-proxy's own jump rules (``KUBE_PROXY_NAT_JUMPS``, exactly
as kube-proxy writes them) before starting it and, once ``istio-init`` has run, moves them behind Istio's
jumps in one atomic ``iptables-restore --noflush``; kube-proxy's "ensure rule" (``-C``, prepend only if
missing) finds them and leaves them where they are. So the app's connection to a ClusterIP is captured to
the sidecar first, and only what ``ISTIO_OUTPUT`` returns (uid 1337: the agent, Envoy) is DNATed: the agent
reaches istiod's ClusterIP (``istiod.istio-system.svc:15012``). Containers start once kube-proxy has
written its first rules. The pods and the control plane reach each other on the bridge by
on-link routes (``10.244.(228+S).0/24`` in the control plane's namespace, ``10.244.(224+S).0/24`` in each
pod's), without the host forwarding; ``KUBERNETES_SERVICE_HOST/PORT`` name the API server itself.

Not done yet: headless Services and pod hostnames in DNS; the other Services' ``*_SERVICE_HOST`` env vars;
removing files of keys deleted from a ConfigMap/Secret on resync (updates and new keys do follow, every
``volume_resync_s``; tokens are re-requested at 80 % of their lifetime);
startupProbes and grpc probes; resource limits; hostNetwork pods; more than one node per cluster slot (the
podCIDR is per slot); the node credential (it uses the admin kubeconfig, so the Node authorizer is not
exercised).

``stop()`` stops every pod, removes every namespace, link, address and directory it made and deletes its
Node and Lease (a kubelet would leave them; a test harness must leave nothing behind).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from mizzen.kube.client import connect
from mizzen.kube.reflector import Reflector, ResourceType
from mizzen.runner.containers import CommandError, PodIdentity, container_argv, container_env, field_ref
from mizzen.runner.manifests import ContainerSpec, ManifestError, parse_container

log = logging.getLogger("mizzen.nodeagent")

Object = dict[str, Any]
GRACE_CAP_S = 30.0
CLUSTER_DOMAIN = "cluster.local"
API_PORT = 6443   # testcluster.API_PORT (this module is loaded by path beside it, not as a package)
BACKOFF_START_S, BACKOFF_MAX_S = 1.0, 30.0
# kube-proxy's (iptables mode) jumps from the nat table's built-in chains: (chain, comment, target)
KUBE_PROXY_NAT_JUMPS = (("PREROUTING", "kubernetes service portals", "KUBE-SERVICES"),
                        ("OUTPUT", "kubernetes service portals", "KUBE-SERVICES"),
                        ("POSTROUTING", "kubernetes postrouting rules", "KUBE-POSTROUTING"))


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _die_with_parent() -> None:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)   # PR_SET_PDEATHSIG


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically (a reader sees the old or the new content, never half), created with ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _image_entrypoint(argv: list[str], python: str) -> list[str]:
    """The Mizzen image's ``mizzen`` (``mizzen install``'s Deployments run ``mizzen controlplane``/``agent``):
    the console script beside ``python`` (this checkout's), as the image has it on its PATH."""
    if argv and argv[0] == "mizzen":
        script = Path(python).parent / "mizzen"
        return [str(script) if script.exists() else "mizzen", *argv[1:]]
    return argv


def _injected(pod: Object) -> bool:
    """A pod with Istio's sidecar (``sidecar.istio.io/status``): its ``istio-init`` rules capture outbound
    traffic in the pod's own namespace, so kube-proxy's jumps must come after Istio's there (see
    ``NodeAgent._kube_proxy_jumps``)."""
    return "sidecar.istio.io/status" in ((pod.get("metadata") or {}).get("annotations") or {})


def _user(pod: Object, container: Object) -> tuple[int, int]:
    """(uid, gid) from ``securityContext.runAsUser``/``runAsGroup``, the container's else the pod's; root
    by default."""
    pod_sc = (pod.get("spec") or {}).get("securityContext") or {}
    sc = container.get("securityContext") or {}
    uid = int(sc.get("runAsUser", pod_sc.get("runAsUser")) or 0)
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    return uid, int(gid) if gid is not None else uid


def _run_as(pod: Object, container: Object) -> list[str]:
    """The container's user as a ``setpriv`` prefix; none for root."""
    uid, gid = _user(pod, container)
    if not uid and not gid:
        return []
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--pdeathsig=KILL"]


# ------------------------------------------------------------------------------------------- probes

@dataclass
class Probe:
    """One readiness/liveness probe with Kubernetes' defaults."""
    spec: Object
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def parse(cls, spec: Object | None) -> Probe | None:
        if not spec:
            return None
        return cls(spec, float(spec.get("initialDelaySeconds", 0)), float(spec.get("periodSeconds", 10)),
                   float(spec.get("timeoutSeconds", 1)), int(spec.get("successThreshold", 1)),
                   int(spec.get("failureThreshold", 3)))


def _port(value: Any, container: Object) -> int:
    if isinstance(value, int):
        return value
    for p in container.get("ports") or []:
        if p.get("name") == value:
            return int(p["containerPort"])
    return int(value)


# ----------------------------------------------------------------------------------------- the agent

@dataclass
class ContainerRun:
    name: str
    spec: Object
    image: str
    proc: asyncio.subprocess.Process | None = None
    restart_count: int = 0
    ready: bool = False
    started_at: str = ""
    state: Object = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Object = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def status(self, init: bool = False) -> Object:
        running = self.proc is not None and self.proc.returncode is None
        return {"name": self.name, "image": self.image, "imageID": "",
                "containerID": f"mizzen://{self.proc.pid}" if self.proc else "",
                "ready": self.ready, "started": running, "restartCount": self.restart_count,
                "state": self.state, "lastState": self.last_state}


@dataclass
class PodRun:
    uid: str
    name: str
    namespace: str
    pod: Object
    netns: str
    veth: str
    ip: str
    dir: Path
    containers: dict[str, ContainerRun] = field(default_factory=dict)
    init_statuses: list[Object] = field(default_factory=list)
    initialized: bool = False
    phase: str = "Pending"
    start_time: str = field(default_factory=_now)
    net_up: bool = False
    kube_proxy: asyncio.subprocess.Process | None = None
    token_due: dict[str, float] = field(default_factory=dict)   # token file -> when to request a new one
    resync: asyncio.Task[None] | None = None
    # status writes are serialized and each builds its body once it holds the lock, so a slower request
    # carrying an older state can never land after a newer one
    status_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None
    stopping: bool = False
    error: str = ""
    mounts: dict[str, dict[str, Path]] = field(default_factory=dict)   # container -> mountPath -> host dir


class NodeAgent:
    """``with NodeAgent(cluster) as node:`` a Ready node of ``cluster`` (a started TestCluster) running the
    pods bound to it; ``node.pods`` maps pod uid -> :class:`PodRun`. Runs its own asyncio loop in a thread."""

    def __init__(self, cluster: Any, name: str = "mizzen-node-0", *, region: str = "region1",
                 zone: str = "zone1", subzone: str = "", lease_renew_s: float = 10.0,
                 lease_duration_s: int = 40, kube_proxy: bool = False, volume_resync_s: float = 60.0,
                 token_refresh_s: float | None = None) -> None:
        """``kube_proxy``: run the real kube-proxy (iptables mode) in each pod's namespace, so ClusterIPs work
        from pods (one process per pod: the host's iptables are never touched, and there is no node
        namespace that pods' traffic passes through)."""
        self.cluster = cluster
        self.name = name
        self.slot: int = cluster.net.addr.slot
        self.bridge = f"{cluster.net.tag}br"
        self.tag = cluster.net.tag
        self.pod_cidr = ipaddress.ip_network(f"10.244.{228 + self.slot}.0/24")
        self.host_ip = str(self.pod_cidr.network_address + 1)
        self.labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "topology.kubernetes.io/region": region,
                       "topology.kubernetes.io/zone": zone}
        if subzone:
            self.labels["topology.istio.io/subzone"] = subzone
        self.lease_renew_s = lease_renew_s
        self.kube_proxy = kube_proxy
        self.volume_resync_s = volume_resync_s
        self.token_refresh_s = token_refresh_s
        self._proxy_kubeconfig: Path | None = None
        self.lease_duration_s = lease_duration_s
        self.workdir = Path(cluster.workdir) / "node" / name
        self.pods: dict[str, PodRun] = {}
        self.services: dict[tuple[str, str], str] = {}   # (namespace, name) -> ClusterIP
        self._free_ips = [str(h) for h in list(self.pod_cidr.hosts())[1:]]
        self._addr_added = self._route_added = False
        self._cp_link = f"{cluster.net.tag}cpn"            # the control plane's end of its veth
        self._cp_subnet = ipaddress.ip_network(f"{cluster.net.addr.cp_ip}/24", strict=False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self.api: client.ApiClient | None = None
        self.python = sys.executable
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ sync lifecycle (for tests)
    def start(self, timeout: float = 60.0) -> None:
        self._thread = threading.Thread(target=self._thread_main, name=f"nodeagent-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"node agent {self.name} did not register in {timeout:.0f} s")
        if self._error:
            err = self._error
            self.stop()
            raise RuntimeError(f"node agent {self.name}: {err}")

    def stop(self, timeout: float = 60.0) -> None:
        if self._loop and self._stop and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> NodeAgent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pod_by_name(self, namespace: str, name: str) -> PodRun | None:
        return next((p for p in list(self.pods.values()) if (p.namespace, p.name) == (namespace, name)), None)

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:  # reported by start()
            self._error = e
            self._ready.set()
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.api = await connect(Path(self.cluster.kubeconfig))
        tasks: list[asyncio.Task[Any]] = []
        try:
            await asyncio.to_thread(self._node_network_up)
            await self._register()
            reflector = Reflector(self.api, ResourceType("", "v1", "pods"), _PodHandler(self),
                                  field_selector=f"spec.nodeName={self.name}", watch_timeout_s=60)
            services = Reflector(self.api, ResourceType("", "v1", "services"), _ServiceHandler(self),
                                 watch_timeout_s=60)
            tasks = [asyncio.create_task(self._heartbeat()), asyncio.create_task(services.run())]
            tasks.append(asyncio.create_task(  # the kubelet API (kubectl logs): kubelet_api.py beside this
                __import__("runpy").run_path(Path(__file__).with_name("kubelet_api.py"))["serve"](self)))
            await asyncio.wait_for(services.synced.wait(), 30)   # pods' hosts files need them
            tasks.append(asyncio.create_task(reflector.run()))
            await asyncio.wait_for(reflector.synced.wait(), 30)
            self._ready.set()
            await self._stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(self._stop_pod(p, grace=2.0, delete_object=False)
                                   for p in list(self.pods.values())), return_exceptions=True)
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._call("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/"
                                 f"{self.name}")
            with contextlib.suppress(Exception):
                await self._call("DELETE", f"/api/v1/nodes/{self.name}")
            await self.api.close()
            await asyncio.to_thread(self._node_network_down)
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _background(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------------------------- API helper
    async def _call(self, method: str, path: str, body: Any = None,
                    ctype: str = "application/json", query: list[tuple[str, str]] | None = None) -> Object:
        assert self.api is not None
        resp = await self.api.call_api(
            path, method, query_params=query or [], body=body,
            header_params={"Content-Type": ctype, "Accept": "application/json"},
            auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True,
            _request_timeout=30)
        try:
            data = await resp.read()
        finally:
            resp.release()
        if not 200 <= resp.status <= 299:   # unpreloaded responses are not checked by the client
            err = ApiException(status=resp.status, reason=resp.reason)
            err.body = data.decode(errors="replace")
            raise err
        return json.loads(data) if data else {}

    # ---------------------------------------------------------------------------------- the node
    def _node_network_up(self) -> None:
        _ip("addr", "add", f"{self.host_ip}/{self.pod_cidr.prefixlen}", "dev", self.bridge)
        self._addr_added = True
        # the control plane reaches the pods on the bridge directly (webhooks, in-cluster clients' replies):
        # the host does not forward, and we leave its sysctls alone
        _ip("-n", self.cluster.net.netns, "route", "add", str(self.pod_cidr), "dev", self._cp_link)
        self._route_added = True

    def _node_network_down(self) -> None:
        if self._route_added:
            with contextlib.suppress(RuntimeError):
                _ip("-n", self.cluster.net.netns, "route", "del", str(self.pod_cidr), "dev", self._cp_link)
            self._route_added = False
        if self._addr_added:
            with contextlib.suppress(RuntimeError):
                _ip("addr", "del", f"{self.host_ip}/{self.pod_cidr.prefixlen}", "dev", self.bridge)
            self._addr_added = False

    def _node_status(self) -> Object:
        now = _now()
        cond = [{"type": t, "status": "False", "reason": r, "message": m, "lastHeartbeatTime": now,
                 "lastTransitionTime": now}
                for t, r, m in (("MemoryPressure", "KubeletHasSufficientMemory", "sufficient memory"),
                                ("DiskPressure", "KubeletHasNoDiskPressure", "no disk pressure"),
                                ("PIDPressure", "KubeletHasSufficientPID", "sufficient PID"))]
        cond.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                     "message": "mizzen node agent is posting ready status", "lastHeartbeatTime": now,
                     "lastTransitionTime": now})
        res = {"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        return {"capacity": res, "allocatable": res, "conditions": cond,
                "addresses": [{"type": "InternalIP", "address": self.host_ip},
                              {"type": "Hostname", "address": self.name}],
                "nodeInfo": {"kubeletVersion": "v1.36.3-mizzen", "kubeProxyVersion": "",
                             "operatingSystem": "linux", "architecture": "amd64",
                             "containerRuntimeVersion": "mizzen://process", "osImage": "mizzen node agent",
                             "kernelVersion": os.uname().release, "machineID": "", "systemUUID": "",
                             "bootID": "", }}

    async def _register(self) -> None:
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.name, "labels": self.labels},
                "spec": {"podCIDR": str(self.pod_cidr), "podCIDRs": [str(self.pod_cidr)]}}
        try:
            await self._call("POST", "/api/v1/nodes", node)
        except ApiException as e:
            if e.status != 409:
                raise
            await self._call("PATCH", f"/api/v1/nodes/{self.name}",
                             {"metadata": {"labels": self.labels}}, "application/merge-patch+json")
        await self._call("PATCH", f"/api/v1/nodes/{self.name}/status", {"status": self._node_status()},
                         "application/merge-patch+json")
        await self._renew_lease()

    async def _renew_lease(self) -> None:
        base = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": self.lease_duration_s,
                "renewTime": _now_micro()}
        try:
            await self._call("PATCH", f"{base}/{self.name}", {"spec": spec}, "application/merge-patch+json")
        except ApiException as e:
            if e.status != 404:
                raise
            nodeobj = await self._call("GET", f"/api/v1/nodes/{self.name}")
            await self._call("POST", base, {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": "kube-node-lease",
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.name,
                                                  "uid": nodeobj["metadata"]["uid"]}]},
                "spec": spec})

    async def _heartbeat(self) -> None:
        last_status = time.monotonic()
        while True:
            await asyncio.sleep(self.lease_renew_s)
            try:
                await self._renew_lease()
                if time.monotonic() - last_status > 60:
                    await self._call("PATCH", f"/api/v1/nodes/{self.name}/status",
                                     {"status": self._node_status()}, "application/merge-patch+json")
                    last_status = time.monotonic()
            except Exception as e:
                log.warning("node %s: heartbeat failed: %s", self.name, e)

    # ---------------------------------------------------------------------------------- pods
    def pod_seen(self, pod: Object) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        run = self.pods.get(uid)
        phase = (pod.get("status") or {}).get("phase")
        if run is None:
            if meta.get("deletionTimestamp") or phase in ("Succeeded", "Failed"):
                if meta.get("deletionTimestamp"):   # nothing of ours runs: confirm the deletion
                    self._background(self._confirm_delete(meta["namespace"], meta["name"], uid))
                return
            if not self._free_ips:
                log.warning("node %s: no pod IP left for %s", self.name, meta["name"])
                return
            short = uid.replace("-", "")[:8]
            run = PodRun(uid=uid, name=meta["name"], namespace=meta["namespace"], pod=pod,
                         netns=f"{self.tag}-p{short}", veth=f"{self.tag}p{short}", ip=self._free_ips.pop(0),
                         dir=self.workdir / "pods" / uid)
            self.pods[uid] = run
            run.task = asyncio.create_task(self._run_pod(run))
            return
        run.pod = pod
        if meta.get("deletionTimestamp") and not run.stopping:
            grace = float(meta.get("deletionGracePeriodSeconds") or 0)
            self._background(self._stop_pod(run, grace=min(grace, GRACE_CAP_S), delete_object=True))

    def pod_gone(self, pod: Object) -> None:
        run = self.pods.get(pod["metadata"]["uid"])
        if run and not run.stopping:
            self._background(self._stop_pod(run, grace=2.0, delete_object=False))

    def pods_listed(self, pods: list[Object]) -> None:
        present = {p["metadata"]["uid"] for p in pods}
        for uid, run in list(self.pods.items()):
            if uid not in present and not run.stopping:
                self._background(self._stop_pod(run, grace=2.0, delete_object=False))
        for p in pods:
            self.pod_seen(p)

    async def _confirm_delete(self, namespace: str, name: str, uid: str) -> None:
        with contextlib.suppress(ApiException):
            await self._call("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}",
                             {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                              "preconditions": {"uid": uid}})

    async def _run_pod(self, run: PodRun) -> None:
        spec = run.pod.get("spec") or {}
        try:
            await asyncio.to_thread(self._pod_network_up, run)
            if self.kube_proxy:
                if _injected(run.pod):   # its jumps made first, moved behind Istio's after istio-init
                    await asyncio.to_thread(self._kube_proxy_jumps, run, False)
                await self._start_kube_proxy(run)
            delay = BACKOFF_START_S
            while True:   # like a kubelet, retry mounting until the ConfigMap/Secret/token can be had
                try:
                    await self._volumes(run)
                    break
                except (RuntimeError, ApiException) as e:
                    run.error = f"FailedMount: {e}"
                    log.info("pod %s/%s: %s; retrying in %.0f s", run.namespace, run.name, run.error, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX_S)
            run.error = ""
            self._traversable(run)
            run.resync = asyncio.create_task(self._resync_volumes(run))
            init = [parse_container(c, f"initContainers[{i}]") for i, c in
                    enumerate(spec.get("initContainers") or [])]
            main = [parse_container(c, f"containers[{i}]") for i, c in
                    enumerate(spec.get("containers") or [])]
            for c, raw in zip(main, spec.get("containers") or [], strict=True):
                run.containers[c.name] = ContainerRun(c.name, raw, c.image)
            await self._write_status(run)
            for c, raw in zip(init, spec.get("initContainers") or [], strict=True):
                if not await self._run_init(run, c, raw):
                    return
            if run.kube_proxy is not None:
                if _injected(run.pod):
                    await asyncio.to_thread(self._kube_proxy_jumps, run, True)
                await self._kube_proxy_synced(run)
            run.initialized = True
            run.phase = "Running"
            for c in main:
                cr = run.containers[c.name]
                cr.tasks.append(asyncio.create_task(self._supervise(run, c, cr)))
                await self._post_start(run, cr)
            await self._write_status(run)
        except (ManifestError, CommandError, ApiException, RuntimeError, OSError) as e:
            run.error = str(e).splitlines()[0] if str(e) else type(e).__name__
            log.warning("pod %s/%s: %s", run.namespace, run.name, run.error)
            for cr in run.containers.values():
                cr.state = {"waiting": {"reason": "CreateContainerConfigError", "message": run.error}}
            with contextlib.suppress(Exception):
                await self._write_status(run)

    # -- users and lifecycle hooks (injected pods: istio-proxy runs as 1337, holdApplicationUntilProxyStarts)
    def _traversable(self, run: PodRun) -> None:
        """A container running as another user than root reaches its volumes: every directory from the
        cluster's work dir down to the pod's volumes gets search permission for others (not read)."""
        spec = run.pod.get("spec") or {}
        if not any(_run_as(run.pod, c) for c in spec.get("containers") or []):
            return
        d = run.dir / "volumes"
        top = Path(self.cluster.workdir)
        while True:
            with contextlib.suppress(OSError):
                d.chmod(d.stat().st_mode & 0o777 | 0o111)
            if d == top or d.parent == d:
                break
            d = d.parent

    async def _post_start(self, run: PodRun, cr: ContainerRun, timeout: float = 120.0) -> None:
        """A kubelet runs a container's ``lifecycle.postStart`` exec hook right after starting it and starts
        the next container only when the hook returned (Istio's ``pilot-agent wait``)."""
        hook = ((cr.spec.get("lifecycle") or {}).get("postStart") or {}).get("exec")
        if not hook or not hook.get("command"):
            return
        deadline = time.monotonic() + timeout
        while cr.proc is None and time.monotonic() < deadline and not run.stopping:
            await asyncio.sleep(0.05)
        code = await self._exec_hook(run, cr, hook["command"], deadline, "postStart")
        if code != 0:
            log.info("pod %s/%s: postStart hook of %s exited %s", run.namespace, run.name, cr.name, code)

    async def _exec_hook(self, run: PodRun, cr: ContainerRun, command: list[str], deadline: float,
                         what: str) -> int:
        """An exec hook's command in the container's namespace, as its user, with its env and mounts;
        killed at ``deadline`` (then -1)."""
        c = parse_container({**cr.spec, "command": command, "args": []}, what)
        argv, env, cwd = await self._process_spec(run, c, cr.spec)
        p = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", run.netns, *_run_as(run.pod, cr.spec), *argv, env=env, cwd=cwd,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True)
        try:
            return await asyncio.wait_for(p.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            await self._kill(p, 0)
            return -1

    async def _pre_stop(self, run: PodRun, cr: ContainerRun, deadline: float) -> None:
        """A kubelet runs a running container's ``lifecycle.preStop`` hook (exec, httpGet, or sleep) before
        its SIGTERM, within the pod's termination grace period (``deadline``); a failed hook is logged."""
        hook = (cr.spec.get("lifecycle") or {}).get("preStop") or {}
        if not hook or cr.proc is None or cr.proc.returncode is not None:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if (hook.get("exec") or {}).get("command"):
            ok = await self._exec_hook(run, cr, hook["exec"]["command"], deadline, "preStop") == 0
        elif "httpGet" in hook:
            ok = await self._probe_once(run, cr, Probe({"httpGet": hook["httpGet"]}, timeout=left))
        elif "sleep" in hook:
            await asyncio.sleep(min(float(hook["sleep"].get("seconds", 0)), left))
            ok = True
        else:
            return
        if not ok:
            log.info("pod %s/%s: preStop hook of %s failed", run.namespace, run.name, cr.name)

    # -- network
    def _pod_network_up(self, run: PodRun) -> None:
        if Path(f"/run/netns/{run.netns}").exists():   # a leftover of a killed run
            _ip("netns", "del", run.netns)
        _ip("netns", "add", run.netns)
        run.net_up = True
        _ip("link", "add", run.veth, "type", "veth", "peer", "name", "eth0", "netns", run.netns)
        _ip("link", "set", run.veth, "master", self.bridge)
        _ip("link", "set", run.veth, "up")
        _ip("-n", run.netns, "addr", "add", f"{run.ip}/{self.pod_cidr.prefixlen}", "dev", "eth0")
        _ip("-n", run.netns, "link", "set", "eth0", "up")
        _ip("-n", run.netns, "link", "set", "lo", "up")
        _ip("-n", run.netns, "route", "add", "default", "via", self.host_ip)
        _ip("-n", run.netns, "route", "add", str(self._cp_subnet), "dev", "eth0")   # the API server, on-link
        self._write_dns(run)

    # -- cluster DNS for pods without a sidecar: /etc/hosts and /etc/resolv.conf of the pod
    def services_changed(self, services: dict[tuple[str, str], str]) -> None:
        self.services = services
        for run in list(self.pods.values()):
            if run.net_up and not run.stopping:
                self._write_dns(run)

    def _etc_dir(self, run: PodRun) -> Path:
        return Path("/etc/netns") / run.netns   # `ip netns exec` bind-mounts these over /etc/hosts etc.

    def _write_dns(self, run: PodRun) -> None:
        """The pod's /etc/hosts (itself, then every Service's ClusterIP under its cluster names, short name
        only in its own namespace) and /etc/resolv.conf (Kubernetes' search path, ndots:5). Rewritten in
        place: the processes' bind mounts keep the inode."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                 f"{run.ip}\t{run.name}"]
        for (ns, name), ip in sorted(self.services.items()):
            names = [f"{name}.{ns}.svc.{CLUSTER_DOMAIN}", f"{name}.{ns}.svc", f"{name}.{ns}"]
            if ns == run.namespace:
                names.append(name)
            lines.append(f"{ip}\t{' '.join(names)}")
        d = self._etc_dir(run)
        d.mkdir(parents=True, exist_ok=True)
        search = f"{run.namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}"
        for fname, text in (("hosts", "\n".join(lines) + "\n"),
                            ("resolv.conf", f"search {search}\noptions ndots:5\n")):
            with open(d / fname, "w") as f:   # truncate + write: same inode
                f.write(text)

    def _pod_network_down(self, run: PodRun) -> None:
        shutil.rmtree(self._etc_dir(run), ignore_errors=True)
        if run.net_up:
            with contextlib.suppress(RuntimeError):
                _ip("link", "del", run.veth)
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", run.netns)
            run.net_up = False
        if run.ip not in self._free_ips:
            self._free_ips.append(run.ip)

    # -- kube-proxy
    async def _start_kube_proxy(self, run: PodRun) -> None:
        """The real kube-proxy in iptables mode, in the pod's namespace: its rules (nat OUTPUT ->
        KUBE-SERVICES) DNAT the pod's own connections to ClusterIPs. Sysctls it would change globally are
        left alone (conntrack limits 0 = as-is; no localhost NodePorts, which need route_localnet)."""
        if self._proxy_kubeconfig is None:
            pki = self.cluster.pki
            self._proxy_kubeconfig = await asyncio.to_thread(pki.kubeconfig, "kube-proxy",
                                                             "system:kube-proxy")
        logs = run.dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        exe = str(Path(self.cluster.bin) / "kube-proxy")
        # in an injected pod kube-proxy's own API connections must not be captured (on a node it is outside
        # the pod): root with the proxy's group 1337, which istio-init's ``--gid-owner 1337`` rule returns
        group = (["setpriv", "--regid=1337", "--clear-groups", "--pdeathsig=KILL"] if _injected(run.pod)
                 else [])
        with open(logs / "kube-proxy.log", "ab") as out:
            run.kube_proxy = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", run.netns, *group, exe, "--kubeconfig", str(self._proxy_kubeconfig),
                "--proxy-mode", "iptables", "--hostname-override", self.name,
                "--cluster-cidr", str(self.pod_cidr), "--conntrack-max-per-core", "0",
                "--conntrack-tcp-timeout-established", "0", "--conntrack-tcp-timeout-close-wait", "0",
                "--iptables-localhost-nodeports=false", "--nodeport-addresses", "primary",
                "--metrics-bind-address", "",
                "--healthz-bind-address", "127.0.0.1:10256", "--iptables-min-sync-period", "0s",
                "--v", "1", stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_die_with_parent)

    def _kube_proxy_jumps(self, run: PodRun, behind_istio: bool) -> None:
        """kube-proxy's own jump rules in the pod's nat table, exactly as kube-proxy (iptables mode) writes
        them. First (``behind_istio=False``, before kube-proxy starts) they are created; kube-proxy's
        "ensure rule" (``iptables -C``, then prepend only if missing) finds them and leaves them. After
        ``istio-init`` has appended its ``-j ISTIO_OUTPUT``/``-j ISTIO_INBOUND`` jumps, they are moved behind
        those in one ``iptables-restore --noflush`` transaction (delete + append, atomic, so kube-proxy never
        sees them missing): the app's connection to a ClusterIP is captured to the sidecar before any DNAT,
        and only what ISTIO_OUTPUT returns (uid 1337: the agent and Envoy) reaches KUBE-SERVICES."""
        lines = ["*nat"]
        if not behind_istio:
            lines += [f":{chain} - [0:0]" for chain in ("KUBE-SERVICES", "KUBE-POSTROUTING")]
        for chain, comment, target in KUBE_PROXY_NAT_JUMPS:
            rule = f'{chain} -m comment --comment "{comment}" -j {target}'
            if behind_istio:
                lines.append(f"-D {rule}")
            lines.append(f"-A {rule}")
        lines.append("COMMIT")
        r = subprocess.run(["ip", "netns", "exec", run.netns, "iptables-restore", "--noflush"],
                           input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            raise RuntimeError(f"kube-proxy's jump rules in {run.netns}: {r.stderr.strip()}")

    async def _kube_proxy_synced(self, run: PodRun, timeout: float = 20.0) -> None:
        """Until kube-proxy has written its first KUBE-SERVICES rules (the ``kubernetes`` Service is always
        there), so the containers find ClusterIPs working from their first connection; bounded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not run.stopping:
            p = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", run.netns, "iptables", "-t", "nat", "-S", "KUBE-SERVICES",
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            out, _ = await p.communicate()
            if b"-A KUBE-SERVICES" in out:
                return
            await asyncio.sleep(0.1)
        log.info("pod %s/%s: kube-proxy not synced in %.0f s", run.namespace, run.name, timeout)

    # -- volumes
    async def _volumes(self, run: PodRun) -> None:
        spec = run.pod.get("spec") or {}
        vols: dict[str, Path] = {}
        for v in spec.get("volumes") or []:
            d = run.dir / "volumes" / v["name"]
            d.mkdir(parents=True, exist_ok=True, mode=0o755)
            vols[v["name"]] = d
            if "emptyDir" in v:
                d.chmod(0o777)          # a kubelet's emptyDir: any container user may write
                continue
            if "configMap" in v:
                await self._configmap(run, v["configMap"], d)
            elif "secret" in v:
                await self._secret(run, v["secret"], d)
            elif "downwardAPI" in v:
                self._downward(run, v["downwardAPI"].get("items") or [], d,
                               v["downwardAPI"].get("defaultMode", 0o644))
            elif "projected" in v:
                mode = v["projected"].get("defaultMode", 0o644)
                for src in v["projected"].get("sources") or []:
                    if "serviceAccountToken" in src:
                        await self._token(run, src["serviceAccountToken"], d, mode)
                    elif "configMap" in src:
                        await self._configmap(run, {"defaultMode": mode, **src["configMap"]}, d)
                    elif "secret" in src:
                        await self._secret(run, {"defaultMode": mode, **src["secret"]}, d)
                    elif "downwardAPI" in src:
                        self._downward(run, src["downwardAPI"].get("items") or [], d, mode)
            else:
                raise RuntimeError(f"volume {v['name']!r}: this node agent supports emptyDir, configMap, "
                                   "secret, downwardAPI and projected volumes")
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            m: dict[str, Path] = {}
            for vm in c.get("volumeMounts") or []:
                if vm["name"] not in vols:
                    raise RuntimeError(f"container {c['name']!r} mounts unknown volume {vm['name']!r}")
                host = vols[vm["name"]] / vm.get("subPath", "")
                m[vm["mountPath"].rstrip("/") or "/"] = host
            run.mounts[c["name"]] = m

    @staticmethod
    def _items(data: Mapping[str, bytes], items: list[Object] | None) -> list[tuple[str, bytes, int | None]]:
        if not items:
            return [(k, v, None) for k, v in data.items()]
        return [(i["path"], data[i["key"]], i.get("mode")) for i in items if i["key"] in data]

    async def _configmap(self, run: PodRun, src: Object, d: Path) -> None:
        try:
            cm = await self._call("GET", f"/api/v1/namespaces/{run.namespace}/configmaps/{src['name']}")
        except ApiException as e:
            if e.status == 404 and src.get("optional"):
                return
            raise RuntimeError(f"configmap {src['name']!r}: {e.status} {e.reason}") from None
        data = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
        for path, value, mode in self._items(data, src.get("items")):
            _write(d / path, value, mode if mode is not None else src.get("defaultMode", 0o644))

    async def _secret(self, run: PodRun, src: Object, d: Path) -> None:
        name = src.get("secretName") or src.get("name")
        try:
            sec = await self._call("GET", f"/api/v1/namespaces/{run.namespace}/secrets/{name}")
        except ApiException as e:
            if e.status == 404 and src.get("optional"):
                return
            raise RuntimeError(f"secret {name!r}: {e.status} {e.reason}") from None
        data = {k: base64.b64decode(v) for k, v in (sec.get("data") or {}).items()}
        for path, value, mode in self._items(data, src.get("items")):
            _write(d / path, value, 0o600 if mode is None else mode)   # secrets: owner only

    def _downward(self, run: PodRun, items: list[Object], d: Path, mode: int) -> None:
        meta = run.pod["metadata"]
        for item in items:
            fp = (item.get("fieldRef") or {}).get("fieldPath", "")
            if fp in ("metadata.labels", "metadata.annotations"):
                kv = meta.get(fp.split(".")[1]) or {}
                value = "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted(kv.items()))
            else:
                value = field_ref(fp, self._identity(run))
            _write(d / item["path"], value.encode(), item.get("mode", mode))

    async def _token(self, run: PodRun, src: Object, d: Path, mode: int = 0o644) -> None:
        """A TokenRequest for the projection, bound to the pod; re-requested (on resync) once 80 % of its
        lifetime has passed, as a kubelet does (``token_refresh_s`` shortens that for tests). The file's mode
        is a kubelet's (KEP 1598): 0600 owned by the pod's user when every container runs as the same one,
        else the projection's ``defaultMode`` (0644), so a sidecar running as 1337 can read it."""
        key = str(d / src["path"])
        if time.monotonic() < run.token_due.get(key, 0.0):
            return
        sa = (run.pod.get("spec") or {}).get("serviceAccountName") or "default"
        spec: Object = {"expirationSeconds": int(src.get("expirationSeconds", 3607)),
                        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": run.name,
                                           "uid": run.uid}}
        if src.get("audience"):
            spec["audiences"] = [src["audience"]]
        tr = await self._call("POST", f"/api/v1/namespaces/{run.namespace}/serviceaccounts/{sa}/token",
                              {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                               "spec": spec})
        spec_ = run.pod.get("spec") or {}
        users = {_user(run.pod, c)[0]
                 for c in [*(spec_.get("initContainers") or []), *(spec_.get("containers") or [])]}
        path = d / src["path"]
        _write(path, tr["status"]["token"].encode(), 0o600 if len(users) == 1 else mode)
        if len(users) == 1 and (uid := next(iter(users))) != 0:
            os.chown(path, uid, -1)
        ttl = float(spec["expirationSeconds"])
        run.token_due[key] = time.monotonic() + (self.token_refresh_s or 0.8 * ttl)

    async def _resync_volumes(self, run: PodRun) -> None:
        """Like a kubelet's periodic sync: ConfigMap, Secret and downwardAPI volumes follow their sources
        (files replaced atomically; keys removed from a source stay), tokens are refreshed when due."""
        while not run.stopping:
            await asyncio.sleep(self.volume_resync_s)
            try:
                await self._volumes(run)
            except (RuntimeError, ApiException, OSError) as e:
                log.info("pod %s/%s: volume resync: %s", run.namespace, run.name, e)

    # -- containers
    def _identity(self, run: PodRun) -> PodIdentity:
        meta, spec = run.pod["metadata"], run.pod.get("spec") or {}
        return PodIdentity(
            # HOST is the local model's bind address; in a pod's own namespace an app binds every address
            name=run.name, namespace=run.namespace, pod_ip=run.ip, app_host="0.0.0.0",
            service_account=spec.get("serviceAccountName") or "default", labels=meta.get("labels") or {},
            sidecar=False, python=self.python, host_ip=self.host_ip, node_name=self.name, uid=run.uid,
            annotations=meta.get("annotations") or {})

    async def _ref(self, run: PodRun, kind: str, name: str, key: str | None, optional: bool) -> Any:
        try:
            obj = await self._call("GET", f"/api/v1/namespaces/{run.namespace}/{kind}/{name}")
        except ApiException as e:
            if e.status == 404 and optional:
                return {} if key is None else None
            raise RuntimeError(f"{kind[:-1]} {name!r}: {e.status} {e.reason}") from None
        data: dict[str, str] = dict(obj.get("data") or {})
        if kind == "secrets":
            data = {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
        if key is None:
            return data
        if key not in data and not optional:
            raise RuntimeError(f"{kind[:-1]} {name!r} has no key {key!r}")
        return data.get(key)

    async def _process_spec(self, run: PodRun, c: ContainerSpec,
                            raw: Object) -> tuple[list[str], dict[str, str], str]:
        ident = self._identity(run)
        env = container_env(c, ident)
        # in-cluster clients find the API server here; until kube-proxy runs in the pods' namespaces this is
        # the API server's own address, not the ``kubernetes`` Service's ClusterIP
        api_host, api_port = self.cluster.net.addr.cp_ip, str(API_PORT)
        for k, v in (("KUBERNETES_SERVICE_HOST", api_host), ("KUBERNETES_SERVICE_PORT", api_port),
                     ("KUBERNETES_SERVICE_PORT_HTTPS", api_port),
                     ("KUBERNETES_PORT", f"tcp://{api_host}:{api_port}")):
            env.setdefault(k, v)
        for ef in raw.get("envFrom") or []:
            prefix = ef.get("prefix", "")
            if "configMapRef" in ef:
                r = ef["configMapRef"]
                data = await self._ref(run, "configmaps", r["name"], None, bool(r.get("optional")))
            else:
                r = ef.get("secretRef") or {}
                data = await self._ref(run, "secrets", r["name"], None, bool(r.get("optional")))
            for k, v in data.items():
                env.setdefault(prefix + k, v)
        for e in raw.get("env") or []:
            vf = e.get("valueFrom") or {}
            for kind, refkey in (("configmaps", "configMapKeyRef"), ("secrets", "secretKeyRef")):
                if refkey in vf:
                    r = vf[refkey]
                    v = await self._ref(run, kind, r["name"], r["key"], bool(r.get("optional")))
                    if v is not None:
                        env[e["name"]] = v
        mounts = sorted(run.mounts.get(c.name, {}).items(), key=lambda kv: -len(kv[0]))
        env["MIZZEN_MOUNTS"] = json.dumps({k: str(v) for k, v in mounts})

        def mapped(s: str) -> str:
            for mp, host in mounts:
                if s == mp or s.startswith(mp + "/"):
                    return str(host) + s[len(mp):]
            return s

        argv = [mapped(a) for a in _image_entrypoint(container_argv(c, env, self.python), self.python)]
        env = {k: (v if k == "MIZZEN_MOUNTS" else mapped(v)) for k, v in env.items()}
        cwd = mapped(c.working_dir) if c.working_dir else str(run.dir)
        return argv, env, cwd

    async def _spawn(self, run: PodRun, c: ContainerSpec, raw: Object) -> asyncio.subprocess.Process:
        argv, env, cwd = await self._process_spec(run, c, raw)
        logs = run.dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{c.name}.log", "ab") as out:
            return await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", run.netns, *_run_as(run.pod, raw), *argv, env=env, cwd=cwd, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=_die_with_parent)

    async def _run_init(self, run: PodRun, c: ContainerSpec, raw: Object) -> bool:
        policy = (run.pod.get("spec") or {}).get("restartPolicy", "Always")
        restarts, delay = 0, BACKOFF_START_S
        while not run.stopping:
            started = _now()
            proc = await self._spawn(run, c, raw)
            self._set_init(run, c, {"running": {"startedAt": started}}, restarts)
            await self._write_status(run)
            code = await proc.wait()
            term = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                   "startedAt": started, "finishedAt": _now()}}
            self._set_init(run, c, term, restarts)
            if code == 0:
                return True
            if policy == "Never":
                run.phase = "Failed"
                await self._write_status(run)
                return False
            restarts += 1
            await self._write_status(run)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
        return False

    def _set_init(self, run: PodRun, c: ContainerSpec, state: Object, restarts: int) -> None:
        st = {"name": c.name, "image": c.image, "imageID": "", "ready": "terminated" in state
              and state["terminated"]["exitCode"] == 0, "restartCount": restarts, "state": state,
              "lastState": {}}
        run.init_statuses = [s for s in run.init_statuses if s["name"] != c.name] + [st]

    async def _supervise(self, run: PodRun, c: ContainerSpec, cr: ContainerRun) -> None:
        policy = (run.pod.get("spec") or {}).get("restartPolicy", "Always")
        delay = BACKOFF_START_S
        while not run.stopping:
            try:
                cr.proc = await self._spawn(run, c, cr.spec)
            except (CommandError, RuntimeError, OSError) as e:
                cr.state = {"waiting": {"reason": "CreateContainerError", "message": str(e)}}
                await self._write_status(run)
                return
            cr.started_at = _now()
            cr.state = {"running": {"startedAt": cr.started_at}}
            readiness = Probe.parse(cr.spec.get("readinessProbe"))
            cr.ready = readiness is None
            probes = []
            if readiness:
                probes.append(asyncio.create_task(self._probe_loop(run, cr, readiness, "readiness")))
            liveness = Probe.parse(cr.spec.get("livenessProbe"))
            if liveness:
                probes.append(asyncio.create_task(self._probe_loop(run, cr, liveness, "liveness")))
            started = time.monotonic()
            try:
                await self._write_status(run)
                code = await cr.proc.wait()
            finally:
                for t in probes:
                    t.cancel()
                await asyncio.gather(*probes, return_exceptions=True)
            cr.ready = False
            if run.stopping:
                return
            cr.last_state = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                            "startedAt": cr.started_at, "finishedAt": _now()}}
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                cr.state, cr.last_state = cr.last_state, {}
                if all(x.state.get("terminated") for x in run.containers.values()):
                    failed = any(x.state["terminated"]["exitCode"] for x in run.containers.values())
                    run.phase = "Failed" if failed else "Succeeded"
                await self._write_status(run)
                return
            if time.monotonic() - started > 60:
                delay = BACKOFF_START_S
            cr.restart_count += 1
            cr.state = {"waiting": {"reason": "CrashLoopBackOff",
                                    "message": f"back-off {delay:.0f}s restarting failed container={c.name}"}}
            await self._write_status(run)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _probe_loop(self, run: PodRun, cr: ContainerRun, probe: Probe, kind: str) -> None:
        await asyncio.sleep(probe.initial_delay)
        ok_n = fail_n = 0
        while cr.proc is not None and cr.proc.returncode is None:
            ok = await self._probe_once(run, cr, probe)
            ok_n, fail_n = (ok_n + 1, 0) if ok else (0, fail_n + 1)
            if kind == "readiness":
                new = cr.ready
                if ok_n >= probe.success_threshold:
                    new = True
                elif fail_n >= probe.failure_threshold:
                    new = False
                if new != cr.ready:
                    cr.ready = new
                    await self._write_status(run)
            elif fail_n >= probe.failure_threshold:
                log.info("pod %s/%s: container %s failed liveness; killing", run.namespace, run.name, cr.name)
                grace = float((run.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
                await self._kill(cr.proc, min(grace, GRACE_CAP_S))
                return
            await asyncio.sleep(probe.period)

    async def _probe_once(self, run: PodRun, cr: ContainerRun, probe: Probe) -> bool:
        spec = probe.spec
        try:
            if "httpGet" in spec:
                h = spec["httpGet"]
                host = h.get("host") or run.ip
                port = _port(h["port"], cr.spec)
                url = f"{h.get('scheme', 'HTTP').lower()}://{host}:{port}{h.get('path', '/')}"
                headers = {x["name"]: x["value"] for x in h.get("httpHeaders") or []}
                headers.setdefault("User-Agent", "kube-probe/1.36")
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=probe.timeout)) as s, \
                        s.get(url, headers=headers, ssl=False, allow_redirects=False) as r:
                    return 200 <= r.status < 400
            if "tcpSocket" in spec:
                t = spec["tcpSocket"]
                conn = asyncio.open_connection(t.get("host") or run.ip, _port(t["port"], cr.spec))
                _r, w = await asyncio.wait_for(conn, probe.timeout)
                w.close()
                return True
            if "exec" in spec:
                c = parse_container({**cr.spec, "command": spec["exec"].get("command") or [], "args": []},
                                    "probe")
                argv, env, cwd = await self._process_spec(run, c, cr.spec)
                p = await asyncio.create_subprocess_exec(
                    "ip", "netns", "exec", run.netns, *argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)
                try:
                    return await asyncio.wait_for(p.wait(), probe.timeout) == 0
                except TimeoutError:
                    await self._kill(p, 0)
                    return False
            if "grpc" in spec:
                return False
        except (OSError, TimeoutError, aiohttp.ClientError, RuntimeError, ValueError):
            return False
        return False

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process, grace: float) -> None:
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        try:
            await asyncio.wait_for(proc.wait(), grace if grace > 0 else 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        with contextlib.suppress(ProcessLookupError):   # anything left in its process group
            os.killpg(proc.pid, signal.SIGKILL)

    async def _stop_pod(self, run: PodRun, grace: float, delete_object: bool) -> None:
        if run.stopping:
            return
        run.stopping = True
        for task in (run.task, run.resync):
            if task:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        # preStop hooks first (all containers at once, as a kubelet kills containers in parallel), then
        # SIGTERM with what is left of the grace period; a kubelet grants 2 s more to a hook that used it up
        deadline = time.monotonic() + grace
        await asyncio.gather(*(self._pre_stop(run, cr, deadline) for cr in run.containers.values()),
                             return_exceptions=True)
        if grace > 0:
            grace = max(deadline - time.monotonic(), min(grace, 2.0))
        for cr in run.containers.values():
            for t in cr.tasks:
                t.cancel()
        await asyncio.gather(*(self._kill(cr.proc, grace) for cr in run.containers.values() if cr.proc),
                             return_exceptions=True)
        await asyncio.gather(*(t for cr in run.containers.values() for t in cr.tasks), return_exceptions=True)
        if run.kube_proxy:
            await self._kill(run.kube_proxy, 5.0)
        await asyncio.to_thread(self._pod_network_down, run)
        shutil.rmtree(run.dir, ignore_errors=True)
        self.pods.pop(run.uid, None)
        if delete_object:
            await self._confirm_delete(run.namespace, run.name, run.uid)

    # -- status
    async def _write_status(self, run: PodRun) -> None:
        async with run.status_lock:
            await self._write_status_locked(run)

    async def _write_status_locked(self, run: PodRun) -> None:
        if run.stopping:
            return
        now = _now()
        old = {c["type"]: c for c in ((run.pod.get("status") or {}).get("conditions") or [])}
        statuses = [cr.status() for cr in run.containers.values()]
        all_ready = bool(statuses) and all(s["ready"] for s in statuses)
        want = {"PodReadyToStartContainers": run.net_up, "Initialized": run.initialized,
                "ContainersReady": all_ready, "Ready": all_ready}
        conds = [c for t, c in old.items() if t not in want]
        for t, ok in want.items():
            status = "True" if ok else "False"
            prev = old.get(t)
            c: Object = {"type": t, "status": status, "lastProbeTime": None,
                         "lastTransitionTime": prev["lastTransitionTime"]
                         if prev and prev.get("status") == status else now}
            if not ok and t in ("ContainersReady", "Ready"):
                c["reason"] = "ContainersNotReady"
            conds.append(c)
        body: Object = {"phase": run.phase, "hostIP": self.host_ip, "hostIPs": [{"ip": self.host_ip}],
                        "podIP": run.ip, "podIPs": [{"ip": run.ip}], "startTime": run.start_time,
                        "conditions": conds, "containerStatuses": statuses}
        if run.init_statuses:
            body["initContainerStatuses"] = run.init_statuses
        try:
            updated = await self._call("PATCH", f"/api/v1/namespaces/{run.namespace}/pods/{run.name}/status",
                                       {"status": body}, "application/merge-patch+json")
            if updated.get("metadata", {}).get("uid") == run.uid:
                run.pod = updated
        except ApiException as e:
            if e.status != 404:
                log.warning("pod %s/%s: status update failed: %s %s", run.namespace, run.name, e.status,
                            e.reason)


class _ServiceHandler:
    """Reflector handler: keeps the agent's map of Service ClusterIPs for the pods' hosts files."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self.ips: dict[tuple[str, str], str] = {}

    @staticmethod
    def _key_ip(obj: Object) -> tuple[tuple[str, str], str]:
        meta = obj["metadata"]
        ip = (obj.get("spec") or {}).get("clusterIP") or ""
        return (meta["namespace"], meta["name"]), ("" if ip == "None" else ip)

    def replace(self, objects: list[Object]) -> None:
        self.ips = dict(kv for kv in map(self._key_ip, objects) if kv[1])
        self.agent.services_changed(dict(self.ips))

    def upsert(self, obj: Object) -> None:
        key, ip = self._key_ip(obj)
        if ip and self.ips.get(key) != ip:
            self.ips[key] = ip
            self.agent.services_changed(dict(self.ips))

    def delete(self, obj: Object) -> None:
        key, _ = self._key_ip(obj)
        if self.ips.pop(key, None):
            self.agent.services_changed(dict(self.ips))


class _PodHandler:
    """Reflector handler: hands pod events to the agent (on its loop)."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent

    def replace(self, objects: list[Object]) -> None:
        self.agent.pods_listed(objects)

    def upsert(self, obj: Object) -> None:
        self.agent.pod_seen(obj)

    def delete(self, obj: Object) -> None:
        self.agent.pod_gone(obj)
