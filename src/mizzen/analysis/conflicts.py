"""Objects that contend for the same thing: IST0109 (several mesh VirtualServices for one host; Mizzen, like
Istio's sidecars, uses only the oldest), IST0110 (Sidecars whose selectors pick the same workload) and IST0111
(several namespace-wide Sidecars in one namespace).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mizzen.analysis.context import AnalysisContext, labels_match
from mizzen.analysis.message import AnalysisIssue, issue_for
from mizzen.config.model import Config
from mizzen.core.push_context import MESH_GATEWAY

__all__ = ["mesh_virtual_service_hosts", "sidecar_selectors"]


def _scope(vs: Config) -> tuple[str, ...]:
    """Which namespaces see the VirtualService: ("*",) when public, else the namespaces it is exported to
    (two VirtualServices for one host only conflict where both are seen)."""
    export = [str(e) for e in vs.spec.get("exportTo") or ()]
    if not export or "*" in export:
        return ("*",)
    return tuple(sorted({vs.namespace if e == "." else e for e in export if e != "~"}))


def _overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Both public, or both exported to some namespace by name; a namespace's own or named VirtualService
    takes precedence over a public one there (push_context.vs_visibility), so those do not conflict."""
    if a == ("*",) or b == ("*",):
        return a == b
    return bool(set(a) & set(b))


def mesh_virtual_service_hosts(ctx: AnalysisContext) -> list[AnalysisIssue]:
    by_host: dict[str, list[tuple[int, Any]]] = {}
    for rvs in ctx.push.virtual_services:   # oldest first
        if MESH_GATEWAY not in rvs.gateways:
            continue
        for j, h in enumerate(rvs.hosts):
            by_host.setdefault(h, []).append((j, rvs))
    out: list[AnalysisIssue] = []
    for host, entries in sorted(by_host.items()):
        for j, rvs in entries:
            scope = _scope(rvs.config)
            group = [other for _, other in entries if _overlaps(scope, _scope(other.config))]
            if len(group) < 2:
                continue
            names = ",".join(f"{o.config.namespace}/{o.config.name}" for o in group)
            winner = group[0].config
            out.append(issue_for(
                "IST0109", rvs.config, f"spec.hosts[{j}]",
                f"The VirtualServices {names} associated with mesh gateway define the same host {host} which "
                "can lead to undefined behavior. This can be fixed by merging the conflicting "
                f"VirtualServices into a single resource. (Mizzen's sidecars use only the oldest, "
                f"{winner.namespace}/{winner.name}.)"))
    return out


def _selector(sc: Config) -> Mapping[str, Any]:
    return (sc.spec.get("workloadSelector") or {}).get("labels") or {}


def sidecar_selectors(ctx: AnalysisContext) -> list[AnalysisIssue]:
    out: list[AnalysisIssue] = []
    by_ns: dict[str, list[Config]] = {}
    for sc in ctx.configs.list("Sidecar"):
        by_ns.setdefault(sc.namespace, []).append(sc)
    for ns, sidecars in sorted(by_ns.items()):
        unselected = [sc for sc in sidecars if not _selector(sc)]
        if len(unselected) > 1:
            names = "[" + " ".join(sc.name for sc in unselected) + "]"
            for sc in unselected:
                out.append(issue_for(
                    "IST0111", sc, "spec",
                    f'The Sidecars {names} in namespace "{ns}" have no workload selector, which can lead to '
                    "undefined behavior."))
        if ctx.registry is None:
            continue
        reported: set[tuple[str, tuple[str, ...]]] = set()
        for w in ctx.registry.workloads:
            if w.namespace != ns:
                continue
            selecting = [sc for sc in sidecars if _selector(sc) and labels_match(_selector(sc), w.labels)]
            if len(selecting) < 2:
                continue
            names_t = tuple(sc.name for sc in selecting)
            for sc in selecting:
                if (sc.name, names_t) in reported:
                    continue   # one message per conflicting set, not per replica
                reported.add((sc.name, names_t))
                out.append(issue_for(
                    "IST0110", sc, "spec.workloadSelector",
                    f"The Sidecars [{' '.join(names_t)}] in namespace \"{ns}\" select the same workload pod "
                    f'"{w.name}", which can lead to undefined behavior.'))
    return out
