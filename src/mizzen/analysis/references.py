"""IST0101 ReferencedResourceNotFound, IST0174 and IST0112: references from one object to others that must
exist.

VirtualService gateways (``ns/name`` resolution like the push context), destination hosts (a Service or
ServiceEntry) and ports, mirror hosts, destination subsets (defined by the DestinationRule that applies), and
Gateway selectors (only when the gateway workloads are known); a DestinationRule host no service has is
IST0174 UnknownDestinationRuleHost (a warning, as in Istio); IST0112 for a route
to a multi-port service without a port, only from Gateways: unlike Istio, which reports it for sidecar routes
too, Mizzen (like Istio's sidecars) sends a sidecar's request to the port it arrived on: nothing is ambiguous.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from mizzen.analysis.context import AnalysisContext, destinations
from mizzen.analysis.message import AnalysisIssue, issue_for
from mizzen.config.model import Config
from mizzen.core.push_context import MESH_GATEWAY, resolve_gateway_ref

__all__ = ["destination_rule_hosts", "gateway_selectors", "virtual_service_refs"]


def _gateway_refs(spec: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for i, g in enumerate(spec.get("gateways") or ()):
        yield f"spec.gateways[{i}]", str(g)
    for section in ("http", "tcp", "tls"):
        for i, rule in enumerate(spec.get(section) or ()):
            for j, m in enumerate((rule or {}).get("match") or ()):
                for k, g in enumerate((m or {}).get("gateways") or ()):
                    yield f"spec.{section}[{i}].match[{j}].gateways[{k}]", str(g)


def _bound_to_gateway(ctx: AnalysisContext, vs: Config) -> bool:
    gws = [resolve_gateway_ref(g, vs.namespace) for g in vs.spec.get("gateways") or ()]
    return any(g != MESH_GATEWAY for g in gws)


def virtual_service_refs(ctx: AnalysisContext) -> list[AnalysisIssue]:
    out: list[AnalysisIssue] = []
    for vs in ctx.configs.list("VirtualService"):
        for path, ref in _gateway_refs(vs.spec):
            full = resolve_gateway_ref(ref, vs.namespace)
            if full == MESH_GATEWAY:
                continue
            ns, _, name = full.partition("/")
            if ctx.configs.get("Gateway", ns, name) is None:
                out.append(issue_for("IST0101", vs, path, f'Referenced gateway not found: "{ref}"'))
        if ctx.registry is None:
            continue
        gateway_bound = _bound_to_gateway(ctx, vs)
        for path, dest in destinations(vs.spec):
            raw = str(dest.get("host") or "")
            if not raw:
                continue
            host = ctx.resolve(raw, vs.namespace)
            if not ctx.host_known(host):
                what = "mirror host" if ".mirror" in path else "host"
                out.append(issue_for("IST0101", vs, f"{path}.host", f'Referenced {what} not found: "{raw}"'))
                continue
            svc = ctx.service_for(host)
            number = (dest.get("port") or {}).get("number")
            if svc is not None and number is not None and svc.port(int(number)) is None:
                out.append(issue_for("IST0101", vs, f"{path}.port.number",
                                     f'Referenced host:port not found: "{raw}:{number}"'))
            subset = dest.get("subset")
            if subset:
                dr = ctx.push.destination_rule(vs.namespace, host)
                names = {str(s.get("name")) for s in (dr.spec.get("subsets") or ())} if dr else set()
                if str(subset) not in names:
                    out.append(issue_for("IST0101", vs, f"{path}.subset",
                                         f'Referenced host+subset in destinationrule not found: '
                                         f'"{raw}+{subset}"'))
            if gateway_bound and svc is not None and not dest.get("port") and len(svc.ports) > 1:
                ports = "[" + " ".join(str(p.port) for p in svc.ports) + "]"
                out.append(issue_for("IST0112", vs, path,
                                     f'This VirtualService routes to a service "{raw}" that exposes multiple '
                                     f"ports {ports}. Specifying a port in the destination is required to "
                                     "disambiguate."))
    return out


def destination_rule_hosts(ctx: AnalysisContext) -> list[AnalysisIssue]:
    """IST0174 (Istio's UnknownDestinationRuleHost, a warning): a DestinationRule for a host no Service or
    ServiceEntry defines configures nothing."""
    if ctx.registry is None:
        return []
    out: list[AnalysisIssue] = []
    for dr in ctx.configs.list("DestinationRule"):
        raw = str(dr.spec.get("host") or "")
        if not raw or raw == "*":
            continue
        host = ctx.resolve(raw, dr.namespace)
        if not ctx.host_known(host):
            out.append(issue_for("IST0174", dr, "spec.host",
                                 f"The host {raw} defined in the DestinationRule does not match any services "
                                 "in the mesh."))
    return out


def gateway_selectors(ctx: AnalysisContext) -> list[AnalysisIssue]:
    """A Gateway whose selector matches no gateway workload configures no proxy (only when workloads are
    known)."""
    if ctx.gateway_workloads is None:
        return []
    out: list[AnalysisIssue] = []
    for gw in ctx.configs.list("Gateway"):
        selector = gw.spec.get("selector") or {}
        if not selector or ctx.gateway_pods(gw):
            continue
        sel = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        out.append(issue_for("IST0101", gw, "spec.selector", f'Referenced selector not found: "{sel}"'))
    return out
