"""IST0173 DestinationRuleSubsetNotSelectPods (Istio's PodNotSelectedAnalyzer): a DestinationRule subset
whose labels, with the host's own selector (a Service's selector, a ServiceEntry's workloadSelector), select
no workload, so routes to it fail with 503 UH. Only when the workloads are known (a registry snapshot; files
alone use one stand-in per Deployment); a DestinationRule for an unknown host is IST0174 instead.
"""

from __future__ import annotations

from mizzen.analysis.context import AnalysisContext, labels_match
from mizzen.analysis.message import AnalysisIssue, issue_for

__all__ = ["subsets_without_pods"]


def subsets_without_pods(ctx: AnalysisContext) -> list[AnalysisIssue]:
    registry = ctx.registry
    if registry is None:
        return []
    out: list[AnalysisIssue] = []
    for dr in ctx.configs.list("DestinationRule"):
        svc = ctx.service_for(ctx.resolve(str(dr.spec.get("host") or ""), dr.namespace))
        if svc is None:
            continue   # IST0174
        candidates = [w for w in registry.workloads
                      if svc.origin != "Service" or w.namespace == svc.namespace]
        for i, subset in enumerate(dr.spec.get("subsets") or ()):
            selector = {**(svc.selector or {}), **{str(k): str(v) for k, v in
                                                  (subset.get("labels") or {}).items()}}
            if any(labels_match(selector, w.labels) for w in candidates):
                continue
            out.append(issue_for(
                "IST0173", dr, f"spec.subsets[{i}]",
                f"The Subset {subset.get('name')} defined in the DestinationRule does not select any pods. "
                "Which may lead to 503 UH (NoHealthyUpstream)."))
    return out
