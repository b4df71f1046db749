"""Istio's annotation analyzer (annotations.K8sAnalyzer) on the Kubernetes kinds Mizzen models: for every
Istio annotation (a ``*istio.io/`` prefix, or ``kubernetes.io/ingress.class``) on a Namespace, Service or
Deployment, and on a Deployment's pod template (Mizzen's stand-in for its pods): IST0108 unknown, IST0135
deprecated, IST0107 on a kind it does not apply to, IST0125 a value Istio's injector rejects.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping

import yaml

from mizzen.analysis.annotation_table import ISTIO_ANNOTATIONS
from mizzen.analysis.context import AnalysisContext
from mizzen.analysis.message import AnalysisIssue, issue_for
from mizzen.config.model import Config
from mizzen.config.schema import key_path

__all__ = ["annotation_checks", "invalid_annotation_value"]

# set by istiod or controllers, never reported (Istio's maturity.AlwaysIgnoredAnnotations)
ALWAYS_IGNORED = frozenset({"sidecar.istio.io/status", "gateway.istio.io/controller-version", "istio.io/rev"})
SIDECAR_INJECT = "sidecar.istio.io/inject"
DEPRECATION_EXTRA = {SIDECAR_INJECT: ' in favor of the "sidecar.istio.io/inject" label'}
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?\d+)?$")


def _is_istio(ann: str) -> bool:
    return ann == "kubernetes.io/ingress.class" or ann.split("/", 1)[0].endswith("istio.io")


def _ports(value: str, what: str, star: bool = False) -> str | None:
    if star and value == "*":
        return None
    for part in value.strip().split(",") if value.strip() else []:
        p = part.strip()
        if not p.isdigit() or int(p) > 65535:
            return f"{what} invalid: failed parsing port '{part}'"
    return None


def _cidrs(value: str, what: str, star: bool = False) -> str | None:
    if star and value == "*":
        return None
    for cidr in value.split(",") if value else []:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return f"{what} invalid: failed parsing cidr '{cidr}'"
    return None


def _uint32(value: str) -> str | None:
    ok = value.isdigit() and int(value) < 2**32
    return None if ok else f'strconv.ParseUint: parsing "{value}": invalid syntax'


def _bool(value: str) -> str | None:
    ok = value in ("1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False")
    return None if ok else f'strconv.ParseBool: parsing "{value}": invalid syntax'


def _quantity(value: str) -> str | None:
    return None if _QUANTITY.match(value) else "quantities must match the regular expression " \
        "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"


def _interception(value: str) -> str | None:
    ok = value in ("REDIRECT", "TPROXY", "NONE")
    return None if ok else f"interceptionMode invalid, use REDIRECT,TPROXY,NONE: {value}"


def _proxy_config(value: str) -> str | None:
    try:
        parsed = yaml.safe_load(value) if value.strip() else {}
    except yaml.YAMLError as e:
        return f"failed to convert to apply proxy config: {str(e).splitlines()[0]}"
    return None if isinstance(parsed, dict) else "failed to convert to apply proxy config: not a mapping"


def _status_port(value: str) -> str | None:
    return None if value.strip().isdigit() and int(value) <= 65535 else \
        f"excludeInboundPorts invalid: failed parsing port '{value}'"


# Istio's inject.AnnotationValidation
VALIDATORS: Mapping[str, Callable[[str], str | None]] = {
    "sidecar.istio.io/interceptionMode": _interception,
    "status.sidecar.istio.io/port": _status_port,
    "readiness.status.sidecar.istio.io/initialDelaySeconds": _uint32,
    "readiness.status.sidecar.istio.io/periodSeconds": _uint32,
    "readiness.status.sidecar.istio.io/failureThreshold": _uint32,
    "traffic.sidecar.istio.io/includeOutboundIPRanges": lambda v: _cidrs(v, "includeIPRanges", star=True),
    "traffic.sidecar.istio.io/excludeOutboundIPRanges": lambda v: _cidrs(v, "excludeIPRanges"),
    "traffic.sidecar.istio.io/includeInboundPorts": lambda v: _ports(v, "includeInboundPorts", star=True),
    "traffic.sidecar.istio.io/excludeInboundPorts": lambda v: _ports(v, "excludeInboundPorts"),
    "traffic.sidecar.istio.io/excludeOutboundPorts": lambda v: _ports(v, "excludeOutboundPorts"),
    "prometheus.istio.io/merge-metrics": _bool,
    "proxy.istio.io/config": _proxy_config,
    "sidecar.istio.io/proxyCPU": _quantity,
    "sidecar.istio.io/proxyMemory": _quantity,
    "sidecar.istio.io/proxyCPULimit": _quantity,
    "sidecar.istio.io/proxyMemoryLimit": _quantity,
}


def invalid_annotation_value(name: str, value: str) -> str | None:
    """Why Istio's injector rejects ``value`` for annotation ``name`` (None: accepted or not checked)."""
    check = VALIDATORS.get(name)
    return check(value) if check is not None else None


def _check(cfg: Config, kind: str, annotations: Mapping[str, str], labels: Mapping[str, str],
           base: str) -> list[AnalysisIssue]:
    out: list[AnalysisIssue] = []
    for ann, value in sorted(annotations.items()):
        if not _is_istio(ann) or ann in ALWAYS_IGNORED:
            continue
        path = key_path(base, ann)
        entry = ISTIO_ANNOTATIONS.get(ann)
        if entry is None:
            out.append(issue_for("IST0108", cfg, path, f"Unknown annotation: {ann}"))
            continue
        resources, deprecated = entry
        if deprecated and not (ann == SIDECAR_INJECT and SIDECAR_INJECT in labels):
            out.append(issue_for("IST0135", cfg, path, f'Annotation "{ann}" has been deprecated'
                                                       f"{DEPRECATION_EXTRA.get(ann, '')} and may not work "
                                                       "in future Istio versions."))
        if "Any" in resources:
            continue
        if kind not in resources:
            applies = ", ".join(r for r in resources if r != "Unknown")
            out.append(issue_for("IST0107", cfg, path,
                                 f"Misplaced annotation: {ann} can only be applied to {applies}"))
            continue
        problem = invalid_annotation_value(ann, str(value))
        if problem:
            out.append(issue_for("IST0125", cfg, path, f"Invalid annotation {ann}: {problem}"))
    return out


def annotation_checks(ctx: AnalysisContext) -> list[AnalysisIssue]:
    out: list[AnalysisIssue] = []
    for kind in ("Namespace", "Service", "Deployment"):
        for cfg in ctx.configs.list(kind):
            out.extend(_check(cfg, kind, cfg.annotations, cfg.labels, "metadata.annotations"))
    for d in ctx.configs.list("Deployment"):
        meta = (d.spec.get("template") or {}).get("metadata") or {}
        anns = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        out.extend(_check(d, "Pod", anns, labels, "spec.template.metadata.annotations"))
    return out
