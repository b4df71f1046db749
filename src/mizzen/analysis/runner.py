"""The analyzer run: every cross-object analyzer over one config snapshot (+ registry snapshot when known),
messages sorted by file and line. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mizzen.analysis import (
    annotation_rules,
    conflicts,
    gateways,
    references,
    schema,
    security,
    subsets,
    virtualservices,
    workloads,
)
from mizzen.analysis.context import AnalysisContext
from mizzen.analysis.message import AnalysisIssue
from mizzen.config.model import ConfigSnapshot
from mizzen.core.mesh import MeshConfig
from mizzen.registry.model import RegistrySnapshot, Workload

__all__ = ["ANALYZERS", "analyze"]

ANALYZERS: tuple[Callable[[AnalysisContext], list[AnalysisIssue]], ...] = (
    schema.validation_findings,
    annotation_rules.annotation_checks,
    workloads.application_uid,
    workloads.namespaces_not_injected,
    references.virtual_service_refs,
    references.destination_rule_hosts,
    references.gateway_selectors,
    conflicts.mesh_virtual_service_hosts,
    conflicts.sidecar_selectors,
    conflicts.service_entry_protocols,
    gateways.virtual_service_hosts_in_gateway,
    gateways.conflicting_gateways,
    gateways.gateway_ports_on_services,
    gateways.gateway_credentials,
    gateways.duplicate_certificates,
    virtualservices.jwt_claim_routes,
    subsets.subsets_without_pods,
    security.security_policies,
)


def analyze(configs: ConfigSnapshot, registry: RegistrySnapshot | None, mesh: MeshConfig | None = None, *,
            gateway_workloads: Sequence[Workload] | None = None,
            per_object: bool = True) -> list[AnalysisIssue]:
    """Every analyzer message. ``registry`` None skips the checks against services and endpoints;
    ``gateway_workloads`` (the pods and gateway proxies Gateways may select) None or empty skips the checks
    that need a Gateway's workloads (selector, credentials, Service ports, JWT claim routing).
    ``per_object`` False leaves out the findings validation computes for each object (an apply has them
    from its own validation already; revalidating every stored object is the costly part)."""
    ctx = AnalysisContext.build(configs, registry, mesh, gateway_workloads)
    out: list[AnalysisIssue] = []
    for analyzer in ANALYZERS:
        if per_object or analyzer is not schema.validation_findings:
            out.extend(analyzer(ctx))
    out = [i for i in out if not _suppressed(ctx, i)]
    unique = {(i.code, i.kind, i.namespace, i.name, i.path, i.message): i for i in out}
    return sorted(unique.values(),
                  key=lambda i: (i.file, i.line, i.kind, i.namespace, i.name, i.code, i.path))


SUPPRESS_ANNOTATION = "galley.istio.io/analyze-suppress"


def _suppressed(ctx: AnalysisContext, issue: AnalysisIssue) -> bool:
    """Istio's ``galley.istio.io/analyze-suppress`` annotation: comma-separated codes (or ``*``) the object's
    messages leave out."""
    cfg = ctx.configs.get(issue.kind, issue.namespace, issue.name)
    codes = (cfg.annotations.get(SUPPRESS_ANNOTATION) or "") if cfg is not None else ""
    return any(c.strip() in ("*", issue.code) for c in codes.split(",") if c.strip())
