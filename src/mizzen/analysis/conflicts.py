"""Objects that contend for the same thing: IST0109 (several mesh VirtualServices for one host, Istio's
ConflictingMeshGatewayHostsAnalyzer), IST0110 (Sidecars whose selectors pick the same workload), IST0111
(several namespace-wide Sidecars in one namespace) and IST0177 (ServiceEntries giving one host and port
different protocols, Istio's ConflictingServiceEntryProtocolAnalyzer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mizzen.analysis.context import AnalysisContext, labels_match
from mizzen.analysis.message import AnalysisIssue, issue_for
from mizzen.config.model import Config
from mizzen.core.hosts import hosts_intersect
from mizzen.core.push_context import MESH_GATEWAY

__all__ = ["mesh_virtual_service_hosts", "service_entry_protocols", "sidecar_selectors"]

ALL = "*"


def _fqdn(host: str, namespace: str) -> str:
    """Istio's ConvertHostToFQDN: a short name (no dot, not a wildcard) in the object's namespace."""
    return host if host.startswith("*") or "." in host else f"{host}.{namespace}.svc.cluster.local"


def _scopes(export_to: Sequence[Any] | None, namespace: str) -> set[str]:
    """Istio's exportTo scopes: ``*`` when public (no exportTo or one naming ``*``), else the namespaces."""
    export = [str(e) for e in export_to or ()]
    if not export or ALL in export:
        return {ALL}
    return {namespace if e == "." else e for e in export}


def _full_name(c: Config) -> str:
    return f"{c.namespace}/{c.name}"


def mesh_virtual_service_hosts(ctx: AnalysisContext) -> list[AnalysisIssue]:
    """IST0109 as Istio decides it: VirtualServices bound to the mesh (no gateways, or ``mesh``) conflict when
    they give the same host in the same exportTo scope; a VirtualService exported to named namespaces also
    conflicts with every public one whose host matches or covers its host (wildcards included). Each
    VirtualService is reported once."""
    index: dict[tuple[str, str], list[Config]] = {}
    for vs in ctx.configs.list("VirtualService"):      # oldest first
        gateways = [str(g) for g in vs.spec.get("gateways") or ()]
        if gateways and MESH_GATEWAY not in gateways:
            continue
        for scope in sorted(_scopes(vs.spec.get("exportTo"), vs.namespace)):
            for h in vs.spec.get("hosts") or ():
                index.setdefault((scope, _fqdn(str(h), vs.namespace)), []).append(vs)
    out: list[AnalysisIssue] = []
    reported: set[tuple[str, str]] = set()
    for (scope, host), members in sorted(index.items()):
        group = list(members)
        if scope != ALL:
            for (other_scope, other_host), public in sorted(index.items()):
                if other_scope == ALL and _matches(host, other_host):
                    group.extend(public)
        if len(group) < 2:
            continue
        names = ",".join(sorted(_full_name(c) for c in group))
        for vs in group:
            if (vs.namespace, vs.name) in reported:
                continue
            reported.add((vs.namespace, vs.name))
            out.append(issue_for(
                "IST0109", vs, "metadata.name",
                f"The VirtualServices {names} associated with mesh gateway define the same host "
                f"{scope}/{host} which can lead to undefined behavior. This can be fixed by merging the "
                "conflicting VirtualServices into a single resource."))
    return out


def _matches(a: str, b: str) -> bool:
    """Istio's host.Name.Matches: equal, or one a wildcard covering the other."""
    return a == b or ((a.startswith("*") or b.startswith("*")) and hosts_intersect(a, b))


def service_entry_protocols(ctx: AnalysisContext) -> list[AnalysisIssue]:
    """IST0177: ServiceEntries that give the same host and port number different protocols, in one exportTo
    scope or one scope and the public one. Each ServiceEntry is reported once."""
    index: dict[tuple[str, str, int], list[tuple[str, Config]]] = {}
    for se in ctx.configs.list("ServiceEntry"):
        for scope in _scopes(se.spec.get("exportTo"), se.namespace):
            for h in se.spec.get("hosts") or ():
                for p in se.spec.get("ports") or ():
                    if isinstance(p, Mapping) and isinstance(p.get("number"), int):
                        index.setdefault((scope, str(h), int(p["number"])), []).append(
                            (str(p.get("protocol") or "").upper(), se))
    out: list[AnalysisIssue] = []
    reported: set[tuple[str, str]] = set()
    for (scope, host, port), entries in sorted(index.items(), key=lambda kv: kv[0]):
        group = list(entries)
        if scope != ALL:
            group.extend(index.get((ALL, host, port), []))
        protocols = sorted({proto for proto, _ in group})
        if len(protocols) < 2:
            continue
        names = ", ".join(sorted({_full_name(se) for _, se in group}))
        for _, se in group:
            if (se.namespace, se.name) in reported:
                continue
            reported.add((se.namespace, se.name))
            out.append(issue_for(
                "IST0177", se, "metadata.name",
                f'Multiple ServiceEntries ({names}) define the same host "{host}" and port {port} with '
                f"conflicting protocols ({', '.join(protocols)})."))
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
