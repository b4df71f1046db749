"""``kube-inject`` over files, like ``istioctl kube-inject``: every document of a multi-document YAML stream
that has a pod template (Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job,
CronJob) or is a Pod gets the same injection the webhook gives a pod of it (:func:`..pod.inject_pod` with
the workload as its owner); a ``List`` has its items injected; everything else passes through unchanged.
A template the policy does not inject (``sidecar.istio.io/inject: "false"``, hostNetwork, already
injected) is passed through too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from mizzen.kube.inject.pod import InjectError, inject_pod
from mizzen.kube.inject.policy import inject_required
from mizzen.kube.inject.template import WorkloadMeta
from mizzen.kube.inject.values import InjectConfig

__all__ = ["TEMPLATE_PATHS", "inject_documents", "inject_object", "inject_yaml"]

Object = dict[str, Any]
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
    "DeploymentConfig": ("spec", "template"),
}


def inject_object(obj: Mapping[str, Any], cfg: InjectConfig, namespace: str = "default") -> Object:
    """One object: injected when it is (or has) a pod the policy injects, else returned as is."""
    out: Object = dict(obj)
    kind = str(obj.get("kind") or "")
    meta = obj.get("metadata") or {}
    ns = str(meta.get("namespace") or namespace)
    where = f"{kind}/{meta.get('name', '?')}"
    if kind == "List":
        out["items"] = [inject_object(i, cfg, namespace) if isinstance(i, Mapping) else i
                        for i in obj.get("items") or []]
        return out
    if kind == "Pod":
        if not inject_required(obj, ns, cfg.values)[0]:
            return out
        try:
            return inject_pod(obj, cfg, WorkloadMeta(str(meta.get("name") or ""), ns, "v1", "Pod"), ns)
        except InjectError as e:
            raise InjectError(f"{where}: {e}") from None
    path = TEMPLATE_PATHS.get(kind)
    if path is None:
        return out
    parent: Any = out
    for key in path[:-1]:
        if not isinstance(parent.get(key), Mapping):
            raise InjectError(f"{where}: {'.'.join(path)} is missing")
        parent[key] = dict(parent[key])
        parent = parent[key]
    template = parent.get(path[-1])
    if not isinstance(template, Mapping):
        raise InjectError(f"{where}: {'.'.join(path)} is missing")
    if not inject_required(template, ns, cfg.values)[0]:
        return out
    workload = WorkloadMeta(str(meta.get("name") or ""), ns, str(obj.get("apiVersion") or ""), kind)
    try:
        parent[path[-1]] = inject_pod(template, cfg, workload, ns)
    except InjectError as e:
        raise InjectError(f"{where}: {e}") from None
    return out


def inject_documents(docs: list[Any], cfg: InjectConfig, namespace: str = "default") -> list[Any]:
    return [inject_object(d, cfg, namespace) if isinstance(d, Mapping) else d for d in docs]


def inject_yaml(text: str, cfg: InjectConfig, namespace: str = "default", source: str = "-") -> str:
    """Multi-document YAML in, the injected documents out (``---`` separated)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise InjectError(f"{source}{line}: not YAML: {getattr(e, 'problem', None) or e}") from None
    out = inject_documents(docs, cfg, namespace)
    return "---\n".join(yaml.dump(d, Dumper=_NoAliases, sort_keys=False, default_flow_style=False)
                         for d in out)


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True
