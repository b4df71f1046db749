"""MZ0001 SubsetSelectsNoEndpoints (Mizzen's own; Istio has no such message): a DestinationRule subset whose
labels match none of the endpoints its host has, so routes to it get no healthy upstream (503). Only for hosts
with endpoints known to the registry snapshot.
"""

from __future__ import annotations

from mizzen.analysis.context import AnalysisContext, labels_match
from mizzen.analysis.message import AnalysisIssue, issue_for

__all__ = ["subsets_without_endpoints"]


def subsets_without_endpoints(ctx: AnalysisContext) -> list[AnalysisIssue]:
    registry = ctx.registry
    if registry is None:
        return []
    out: list[AnalysisIssue] = []
    for dr in ctx.configs.list("DestinationRule"):
        host = ctx.resolve(str(dr.spec.get("host") or ""), dr.namespace)
        svc = ctx.push.service(host)
        if svc is None:
            continue
        endpoints = [e for p in svc.ports for e in registry.endpoints_for(host, p.port)]
        if not endpoints:
            continue   # nothing known to run behind the host: nothing to compare with
        for i, subset in enumerate(dr.spec.get("subsets") or ()):
            labels = subset.get("labels") or {}
            if not labels or any(labels_match(labels, e.labels) for e in endpoints):
                continue
            sel = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            out.append(issue_for(
                "MZ0001", dr, f"spec.subsets[{i}]",
                f'Subset "{subset.get("name")}" of host "{dr.spec.get("host")}" selects no endpoints: no '
                f"workload of the host has labels {sel} (requests routed to it fail with 503)"))
    return out
