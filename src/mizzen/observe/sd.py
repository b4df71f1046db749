"""Prometheus service discovery for the local mesh: ``v1 Pod`` objects -> file SD target groups carrying the
labels Kubernetes' pod discovery (``kubernetes_sd_configs: role: pod``) gives, so that Istio's own
``kubernetes-pods`` job and relabelling (``samples/addons/prometheus.yaml``) apply unchanged: pod labels
(``app``, ``version``...), ``namespace``, ``pod``, the ``prometheus.io/*`` annotations that pick the port and
path. Pure: no I/O besides :func:`write_targets`, which replaces the file atomically (Prometheus re-reads it
on change).

Istio's injector (metrics merging, ``applyPrometheusMerge``) annotates every injected pod
``prometheus.io/scrape: "true"``, ``prometheus.io/port: "15020"``, ``prometheus.io/path: /stats/prometheus``
(the agent's merged endpoint, which also serves the app's own metrics from its original annotations); a pod
with an ``istio-proxy`` container gets those here, as it would from the injector, unless it opts out
(``prometheus.io/scrape: "false"`` or ``prometheus.istio.io/merge-metrics: "false"``: kept as is).

A pod without a pod IP, or in a phase Prometheus drops, is still listed with its phase (the relabelling
drops it, as in Kubernetes)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["MERGED_METRICS_PATH", "MERGED_METRICS_PORT", "PROXY_CONTAINER", "target_groups", "write_targets"]

PROXY_CONTAINER = "istio-proxy"
MERGED_METRICS_PORT = 15020
MERGED_METRICS_PATH = "/stats/prometheus"
INJECTED_ANNOTATIONS = {"prometheus.io/scrape": "true", "prometheus.io/port": str(MERGED_METRICS_PORT),
                        "prometheus.io/path": MERGED_METRICS_PATH}
MERGE_ANNOTATION = "prometheus.istio.io/merge-metrics"
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def _sanitize(name: str) -> str:
    """Kubernetes SD's label-name mangling: every character outside [a-zA-Z0-9_] becomes ``_``."""
    return _INVALID.sub("_", name)


def _annotations(pod: Mapping[str, Any]) -> dict[str, str]:
    meta = pod.get("metadata") or {}
    out = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    containers = (pod.get("spec") or {}).get("containers") or []
    injected = any(c.get("name") == PROXY_CONTAINER for c in containers)
    opted_out = out.get("prometheus.io/scrape", "").lower() == "false" or \
        out.get(MERGE_ANNOTATION, "").lower() == "false"
    if injected and not opted_out:
        out.update(INJECTED_ANNOTATIONS)
    return out


def target_groups(pods: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One target group per pod (``targets: [<pod ip>]``), labelled like Kubernetes' pod discovery."""
    out: list[dict[str, Any]] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        spec = pod.get("spec") or {}
        ip = str(status.get("podIP") or "")
        if not ip:
            continue
        labels: dict[str, str] = {
            "__meta_kubernetes_namespace": str(meta.get("namespace") or "default"),
            "__meta_kubernetes_pod_name": str(meta.get("name") or ""),
            "__meta_kubernetes_pod_ip": ip,
            "__meta_kubernetes_pod_phase": str(status.get("phase") or ""),
            "__meta_kubernetes_pod_node_name": str(spec.get("nodeName") or "local"),
            "__meta_kubernetes_pod_ready": "true" if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or []) else "false",
        }
        for k, v in (meta.get("labels") or {}).items():
            labels[f"__meta_kubernetes_pod_label_{_sanitize(str(k))}"] = str(v)
            labels[f"__meta_kubernetes_pod_labelpresent_{_sanitize(str(k))}"] = "true"
        for k, v in _annotations(pod).items():
            labels[f"__meta_kubernetes_pod_annotation_{_sanitize(k)}"] = v
            labels[f"__meta_kubernetes_pod_annotationpresent_{_sanitize(k)}"] = "true"
        out.append({"targets": [ip], "labels": labels})
    return sorted(out, key=lambda g: (g["labels"]["__meta_kubernetes_namespace"],
                                      g["labels"]["__meta_kubernetes_pod_name"]))


def write_targets(path: Path, groups: list[dict[str, Any]]) -> bool:
    """Write the file SD document when it changed (a private temp file renamed into place, so Prometheus never
    reads half a file); True when it was written."""
    text = json.dumps(groups, indent=1, sort_keys=True) + "\n"
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".targets.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
