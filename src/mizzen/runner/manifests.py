"""Kubernetes-shaped input for the runner: Deployments and Services parsed from manifests (``Config`` or plain
dicts), ``$(VAR)`` expansion as Kubernetes does it in env values, command and args, and pod naming
(``<deployment>-<template hash>-<5 random chars>``).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mizzen.config.model import DEFAULT_NAMESPACE, Config

# Kubernetes' "safe" alphabet for generated names (no vowels, no confusable characters).
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


class ManifestError(ValueError):
    """A Deployment/Service the runner cannot use; the message names the object and the field."""


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None = None
    field_path: str | None = None             # valueFrom.fieldRef.fieldPath


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str = ""
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    working_dir: str = ""


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    namespace: str
    labels: Mapping[str, str]
    replicas: int
    pod_labels: Mapping[str, str]
    pod_annotations: Mapping[str, str]
    service_account: str
    containers: tuple[ContainerSpec, ...]
    template_hash: str = field(default="", compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def inject_sidecar(
        self, namespace_labels: Mapping[str, str] | None = None, policy: str = "always"
    ) -> bool:
        """Whether this pod gets a sidecar, decided at pod creation like Istio's injector.

        The pod's label (or annotation) ``sidecar.istio.io/inject: "true"/"false"`` wins; then the namespace
        label ``istio-injection: enabled/disabled``; then the policy: ``always`` (Mizzen's local default,
        everything is in the mesh) or ``istio`` (no label, no sidecar).
        """
        key = "sidecar.istio.io/inject"
        flag = str(self.pod_labels.get(key, self.pod_annotations.get(key, ""))).lower()
        if flag in ("true", "false"):
            return flag == "true"
        ns_flag = (namespace_labels or {}).get("istio-injection", "")
        if ns_flag in ("enabled", "disabled"):
            return ns_flag == "enabled"
        return policy == "always"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    namespace: str
    selector: Mapping[str, str]
    ports: tuple[tuple[str, int, int | str], ...]   # (name, port, targetPort)


def manifest_meta(
    obj: Config | Mapping[str, Any], default_ns: str
) -> tuple[str, str, str, dict[str, str], Any]:
    """(kind, name, namespace, labels, spec) of a manifest."""
    if isinstance(obj, Config):
        return obj.kind, obj.name, obj.namespace or default_ns, dict(obj.labels), obj.spec
    if not isinstance(obj, Mapping):
        raise ManifestError(f"manifest must be a mapping, got {type(obj).__name__}")
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{obj.get('kind')}: metadata.name is required")
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    return str(obj.get("kind") or ""), name, str(meta.get("namespace") or default_ns), labels, obj.get("spec")


def kind_of(obj: Config | Mapping[str, Any] | None) -> str:
    if isinstance(obj, Config):
        return obj.kind
    return str(obj.get("kind") or "") if isinstance(obj, Mapping) else ""


def load_manifests(path: str | Path) -> list[dict[str, Any]]:
    """The objects of a multi-document YAML file (empty documents skipped)."""
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]


def _str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ManifestError(f"{where}: must be a map")
    return {str(k): str(v) for k, v in value.items()}


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ManifestError(f"{where}: must be a list of strings")
    return tuple(str(v) for v in value)


def parse_container(c: Any, where: str) -> ContainerSpec:
    """One entry of a pod spec's ``containers``/``initContainers`` (``where`` names it in errors)."""
    return _container(c, where)


def _container(c: Any, where: str) -> ContainerSpec:
    if not isinstance(c, Mapping) or not c.get("name"):
        raise ManifestError(f"{where}: a container needs a name")
    env: list[EnvVar] = []
    for i, e in enumerate(c.get("env") or []):
        if not isinstance(e, Mapping) or not e.get("name"):
            raise ManifestError(f"{where}.env[{i}]: needs a name")
        ref = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        value = e.get("value")
        env.append(EnvVar(str(e["name"]), None if value is None else str(value), ref))
    ports: list[ContainerPort] = []
    for i, p in enumerate(c.get("ports") or []):
        num = p.get("containerPort") if isinstance(p, Mapping) else None
        if not isinstance(num, int) or not 0 < num < 65536:
            raise ManifestError(f"{where}.ports[{i}].containerPort: must be a port number")
        ports.append(ContainerPort(num, str(p.get("name") or ""), str(p.get("protocol") or "TCP")))
    return ContainerSpec(
        name=str(c["name"]),
        image=str(c.get("image") or ""),
        command=_str_list(c.get("command"), f"{where}.command"),
        args=_str_list(c.get("args"), f"{where}.args"),
        env=tuple(env),
        ports=tuple(ports),
        working_dir=str(c.get("workingDir") or ""),
    )


def parse_deployment(obj: Config | Mapping[str, Any], default_ns: str = DEFAULT_NAMESPACE) -> DeploymentSpec:
    kind, name, ns, labels, spec = manifest_meta(obj, default_ns)
    where = f"Deployment/{ns}/{name}"
    if kind != "Deployment":
        raise ManifestError(f"{where}: not a Deployment ({kind})")
    spec = spec or {}
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise ManifestError(f"{where}: spec.replicas must be a non-negative integer")
    template = spec.get("template") or {}
    tmeta = template.get("metadata") or {}
    pod = template.get("spec") or {}
    containers = pod.get("containers")
    if not isinstance(containers, list | tuple) or not containers:
        raise ManifestError(f"{where}: spec.template.spec.containers must list at least one container")
    parsed = tuple(
        _container(c, f"{where}: spec.template.spec.containers[{i}]") for i, c in enumerate(containers)
    )
    pod_labels = _str_map(tmeta.get("labels"), f"{where}: spec.template.metadata.labels")
    template_hash = pod_template_hash(template)
    return DeploymentSpec(
        name=name,
        namespace=ns,
        labels=labels,
        replicas=replicas,
        pod_labels=pod_labels,
        pod_annotations=_str_map(tmeta.get("annotations"), f"{where}: spec.template.metadata.annotations"),
        service_account=str(pod.get("serviceAccountName") or pod.get("serviceAccount") or "default"),
        containers=parsed,
        template_hash=template_hash,
    )


def parse_service(obj: Config | Mapping[str, Any], default_ns: str = DEFAULT_NAMESPACE) -> ServiceSpec:
    kind, name, ns, _labels, spec = manifest_meta(obj, default_ns)
    if kind != "Service":
        raise ManifestError(f"Service/{ns}/{name}: not a Service ({kind})")
    spec = spec or {}
    ports = tuple(
        (str(p.get("name") or ""), int(p["port"]), p.get("targetPort") or int(p["port"]))
        for p in spec.get("ports") or []
        if isinstance(p, Mapping) and isinstance(p.get("port"), int)
    )
    return ServiceSpec(name, ns, _str_map(spec.get("selector"), f"Service/{ns}/{name}: spec.selector"), ports)


def pod_template_hash(template: Any) -> str:
    """A stable 10-character name-safe hash of a pod template (Kubernetes' pod-template-hash)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True, default=str).encode()).digest()
    return "".join(NAME_ALPHABET[b % len(NAME_ALPHABET)] for b in digest[:10])


def pod_name(deployment: str, template_hash: str) -> str:
    suffix = "".join(secrets.choice(NAME_ALPHABET) for _ in range(5))
    return f"{deployment}-{template_hash}-{suffix}"


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined variables are replaced, ``$$`` escapes to ``$``, and
    references to undefined variables are left as written."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR.sub(repl, text)
