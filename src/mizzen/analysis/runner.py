"""The analyzer run: every cross-object analyzer over one config snapshot (+ registry snapshot when known),
messages sorted by file and line. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from mizzen.analysis import conflicts, endpoints, gateways, references
from mizzen.analysis.context import AnalysisContext
from mizzen.analysis.message import AnalysisIssue
from mizzen.config.model import ConfigSnapshot
from mizzen.core.mesh import MeshConfig
from mizzen.registry.model import RegistrySnapshot

__all__ = ["ANALYZERS", "analyze"]

ANALYZERS: tuple[Callable[[AnalysisContext], list[AnalysisIssue]], ...] = (
    references.virtual_service_refs,
    references.destination_rule_hosts,
    references.gateway_selectors,
    conflicts.mesh_virtual_service_hosts,
    conflicts.sidecar_selectors,
    gateways.virtual_service_hosts_in_gateway,
    gateways.conflicting_gateways,
    endpoints.subsets_without_endpoints,
)


def analyze(configs: ConfigSnapshot, registry: RegistrySnapshot | None, mesh: MeshConfig | None = None, *,
            gateway_workloads: Sequence[Mapping[str, str]] | None = None) -> list[AnalysisIssue]:
    """Every cross-object message. ``registry`` None skips the checks against services and endpoints;
    ``gateway_workloads`` (labels of the workloads Gateways may select) None or empty skips the Gateway
    selector check."""
    ctx = AnalysisContext.build(configs, registry, mesh, gateway_workloads)
    out: list[AnalysisIssue] = []
    for analyzer in ANALYZERS:
        out.extend(analyzer(ctx))
    unique = {(i.code, i.kind, i.namespace, i.name, i.path, i.message): i for i in out}
    return sorted(unique.values(),
                  key=lambda i: (i.file, i.line, i.kind, i.namespace, i.name, i.code, i.path))
