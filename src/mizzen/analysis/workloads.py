"""Kubernetes workload and namespace analyzers: IST0144 (Istio's ApplicationUIDAnalyzer: a Deployment's pod
or an app container running as UID 1337, the sidecar's) and IST0102 (Istio's injection analyzer: a
Namespace without an ``istio-injection`` or ``istio.io/rev`` label; Info, as Mizzen's local mode injects
every pod unless told otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mizzen.analysis.context import AnalysisContext
from mizzen.analysis.message import AnalysisIssue, issue_for

__all__ = ["application_uid", "namespaces_not_injected"]

PROXY_UID = 1337
PROXY_CONTAINERS = frozenset({"istio-proxy", "istio-operator"})
SYSTEM_NAMESPACE = "istio-system"


def _run_as(context: Any) -> Any:
    return context.get("runAsUser") if isinstance(context, Mapping) else None


def application_uid(ctx: AnalysisContext) -> list[AnalysisIssue]:
    out: list[AnalysisIssue] = []
    text = "User ID (UID) 1337 is reserved for the sidecar proxy."
    for d in ctx.configs.list("Deployment"):
        pod = (d.spec.get("template") or {}).get("spec") or {}
        if _run_as(pod.get("securityContext")) == PROXY_UID:
            out.append(issue_for("IST0144", d, "spec.template.spec.securityContext.runAsUser", text))
        for i, c in enumerate(pod.get("containers") or ()):
            if not isinstance(c, Mapping) or c.get("name") in PROXY_CONTAINERS:
                continue
            if _run_as(c.get("securityContext")) == PROXY_UID:
                out.append(issue_for(
                    "IST0144", d, f"spec.template.spec.containers[{i}].securityContext.runAsUser", text))
    return out


def namespaces_not_injected(ctx: AnalysisContext) -> list[AnalysisIssue]:
    out: list[AnalysisIssue] = []
    for ns in ctx.configs.list("Namespace"):
        if ns.name == SYSTEM_NAMESPACE or ns.labels.get("istio.io/dataplane-mode") == "ambient":
            continue
        if ns.labels.get("istio-injection") or "istio.io/rev" in ns.labels:
            continue
        out.append(issue_for(
            "IST0102", ns, "metadata.name",
            f"The namespace is not enabled for Istio injection. Run 'kubectl label namespace {ns.name} "
            f"istio-injection=enabled' to enable it, or 'kubectl label namespace {ns.name} "
            "istio-injection=disabled' to explicitly mark it as not needing injection."))
    return out
