""":func:`inject_pod`: the template's parts merged into a pod the way Istio's injector does it.

Containers of the template are added by name; a container the pod already names ``istio-proxy`` or
``istio-init`` keeps its own fields over the template's (Istio's "overrides" merge). Volumes are added by
name. ``istio-proxy`` goes last among the containers (first with ``holdApplicationUntilProxyStarts``),
``istio-init`` last among the init containers. App probes are rewritten to the agent unless
``sidecar.istio.io/rewriteAppHTTPProbers: "false"``. Istio's Prometheus merge: the pod is annotated to be
scraped at the agent's ``:15020/stats/prometheus``, and the app's own ``prometheus.io/*`` move to
``ISTIO_PROMETHEUS_ANNOTATIONS``. ``sidecar.istio.io/status`` records what was added.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

from mizzen.kube.inject.policy import STATUS_ANNOTATION
from mizzen.kube.inject.probes import APP_PROBERS_ENV, REWRITE_ANNOTATION, rewrite_probes
from mizzen.kube.inject.template import INIT_NAME, PROXY_NAME, WorkloadMeta, render
from mizzen.kube.inject.values import InjectConfig, ValuesError

__all__ = ["InjectError", "inject_pod", "workload_of_pod"]

Object = dict[str, Any]
PROM_ENV = "ISTIO_PROMETHEUS_ANNOTATIONS"
_PROM = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")
_HASHED = re.compile(r"^(.+)-[a-z0-9]{5,10}$")


class InjectError(ValueError):
    """The pod cannot be injected (one line)."""


def workload_of_pod(pod: Mapping[str, Any], namespace: str) -> WorkloadMeta:
    """Istio's ``GetDeployMetaFromPod``: a pod of a ReplicaSet ``x-<hash>`` belongs to Deployment ``x``; a
    Job's, StatefulSet's, DaemonSet's pod to that controller; a bare pod to itself (its name, or its
    generateName without the trailing ``-``)."""
    meta = pod.get("metadata") or {}
    name = meta.get("name") or ""
    if not name and meta.get("generateName"):
        name = str(meta["generateName"]).rstrip("-")
    wm = WorkloadMeta(name, namespace, "v1", "Pod")
    for ref in meta.get("ownerReferences") or []:
        if not ref.get("controller"):
            continue
        kind, ref_name, api = ref.get("kind", ""), ref.get("name", ""), ref.get("apiVersion", "")
        if kind == "ReplicaSet":
            m = _HASHED.match(ref_name)
            pth = (meta.get("labels") or {}).get("pod-template-hash")
            if pth and ref_name.endswith("-" + pth):
                return WorkloadMeta(ref_name[: -len(pth) - 1], namespace, "apps/v1", "Deployment")
            if m:
                return WorkloadMeta(m.group(1), namespace, "apps/v1", "Deployment")
            return WorkloadMeta(ref_name, namespace, api, kind)
        if kind == "Job":
            # a CronJob's Job is <cronjob>-<timestamp>; Istio names the Job itself
            return WorkloadMeta(ref_name, namespace, api, kind)
        return WorkloadMeta(ref_name, namespace, api, kind)
    return wm


def _by_name(items: list[Object]) -> dict[str, Object]:
    return {str(i.get("name")): i for i in items}


def _merge_container(template: Object, override: Object) -> Object:
    """The pod's own ``istio-proxy`` fields win; env/volumeMounts/ports merge by name."""
    out = copy.deepcopy(template)
    for k, val in override.items():
        if k in ("env", "volumeMounts", "ports") and isinstance(val, list):
            key = "name" if k != "ports" else "containerPort"
            merged = {str(i.get(key)): i for i in out.get(k) or []}
            merged.update({str(i.get(key)): copy.deepcopy(i) for i in val})
            out[k] = list(merged.values())
        else:
            out[k] = copy.deepcopy(val)
    return out


def _place(containers: list[Object], name: str, first: bool) -> list[Object]:
    found = [c for c in containers if c.get("name") == name]
    rest = [c for c in containers if c.get("name") != name]
    return found + rest if first else rest + found


def inject_pod(pod: Mapping[str, Any], cfg: InjectConfig, workload: WorkloadMeta | None = None,
               namespace: str = "") -> Object:
    """The injected copy of ``pod`` (a Pod, or a workload's pod template: ``metadata`` + ``spec``).
    Whether it should be injected at all is :func:`..policy.inject_required`'s question."""
    ns = namespace or (pod.get("metadata") or {}).get("namespace") or "default"
    out: Object = copy.deepcopy(dict(pod))
    meta: Object = out.setdefault("metadata", {}) or {}
    out["metadata"] = meta
    spec: Object = out.setdefault("spec", {}) or {}
    out["spec"] = spec
    if not isinstance(spec.get("containers"), list) or not spec["containers"]:
        raise InjectError("spec.containers: a pod needs at least one container")
    try:
        parts = render(out, cfg, workload or workload_of_pod(out, ns))
    except ValuesError as e:
        raise InjectError(str(e)) from None
    annotations: Object = dict(meta.get("annotations") or {})
    labels: Object = dict(meta.get("labels") or {})

    app = [c for c in spec["containers"] if c.get("name") != PROXY_NAME]
    rewrite = annotations.get(REWRITE_ANNOTATION, str(
        cfg.values.get("sidecarInjectorWebhook.rewriteAppHTTPProbe", True)).lower()).lower() != "false"
    status_port = int(annotations.get("status.sidecar.istio.io/port",
                                      cfg.values.get("global.proxy.statusPort") or 15020))
    probers = rewrite_probes(app, status_port) if rewrite and status_port else ""
    proxy_env: list[Object] = parts.containers[0]["env"]
    if probers:
        proxy_env.append({"name": APP_PROBERS_ENV, "value": probers})
    # Istio's Prometheus merge: scrape the agent, which merges the app's own metrics in
    if annotations.get("prometheus.io/scrape", "true") != "false":
        own = {k.split("/", 1)[1]: annotations[k] for k in _PROM if k in annotations}
        if own:
            proxy_env.append({"name": PROM_ENV, "value": json.dumps(own, separators=(",", ":"),
                                                                    sort_keys=True)})
        annotations.update({"prometheus.io/scrape": "true", "prometheus.io/port": str(status_port),
                            "prometheus.io/path": "/stats/prometheus"})

    existing = _by_name(spec["containers"])
    containers = [c for c in spec["containers"] if c.get("name") != PROXY_NAME]
    for c in parts.containers:
        containers.append(_merge_container(c, existing[c["name"]]) if c["name"] in existing else c)
    spec["containers"] = _place(containers, PROXY_NAME, first=parts.hold)
    existing_init = _by_name(spec.get("initContainers") or [])
    inits = [c for c in spec.get("initContainers") or [] if c.get("name") != INIT_NAME]
    for c in parts.init_containers:
        inits.append(_merge_container(c, existing_init[c["name"]]) if c["name"] in existing_init else c)
    if inits or "initContainers" in spec:
        spec["initContainers"] = _place(inits, INIT_NAME, first=False)
    have = {v.get("name") for v in spec.get("volumes") or []}
    spec["volumes"] = [*(spec.get("volumes") or []), *(v for v in parts.volumes if v["name"] not in have)]

    labels.update({k: v for k, v in parts.labels.items()})
    annotations.update(parts.annotations)
    annotations.update(cfg.values.get("sidecarInjectorWebhook.injectedAnnotations") or {})
    pull = [s.get("name") for s in spec.get("imagePullSecrets") or []] or None
    annotations[STATUS_ANNOTATION] = json.dumps({
        "initContainers": [c["name"] for c in parts.init_containers] or None,
        "containers": [c["name"] for c in parts.containers],
        "volumes": [v["name"] for v in parts.volumes],
        "imagePullSecrets": pull,
        "revision": cfg.revision}, separators=(",", ":"))
    meta["labels"] = labels
    meta["annotations"] = annotations
    return out
