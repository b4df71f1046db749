"""Gateway-side analyzers: IST0132 (a VirtualService bound to a Gateway none of whose server hosts it
matches) and IST0145 (two Gateways selecting the same workloads with the same port and overlapping hosts).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from mizzen.analysis.context import AnalysisContext
from mizzen.analysis.message import AnalysisIssue, issue_for
from mizzen.config.model import Config
from mizzen.core.hosts import hosts_intersect
from mizzen.core.push_context import MESH_GATEWAY, resolve_gateway_ref

__all__ = ["conflicting_gateways", "virtual_service_hosts_in_gateway"]


def _server_hosts(gw: Config, vs_namespace: str) -> Iterator[str]:
    """The server hosts of ``gw`` a VirtualService in ``vs_namespace`` may bind (``ns/host`` honoured)."""
    for server in gw.spec.get("servers") or ():
        for h in (server or {}).get("hosts") or ():
            ns, sep, host = str(h).rpartition("/")
            if not sep or ns == "*" or ns == vs_namespace or (ns == "." and gw.namespace == vs_namespace):
                yield host


def virtual_service_hosts_in_gateway(ctx: AnalysisContext) -> list[AnalysisIssue]:
    out: list[AnalysisIssue] = []
    for vs in ctx.configs.list("VirtualService"):
        vs_hosts = [str(h) for h in vs.spec.get("hosts") or ()]
        for ref in vs.spec.get("gateways") or ():
            full = resolve_gateway_ref(str(ref), vs.namespace)
            if full == MESH_GATEWAY:
                continue
            ns, _, name = full.partition("/")
            gw = ctx.configs.get("Gateway", ns, name)
            if gw is None:
                continue   # IST0101
            server_hosts = list(_server_hosts(gw, vs.namespace))
            missing = [h for h in vs_hosts
                       if not any(hosts_intersect(h, s) or hosts_intersect(ctx.resolve(h, vs.namespace), s)
                                  for s in server_hosts)]
            if missing:
                out.append(issue_for(
                    "IST0132", vs, "spec.hosts",
                    f"one or more host [{' '.join(missing)}] defined in VirtualService "
                    f"{vs.namespace}/{vs.name} not found in Gateway {gw.namespace}/{gw.name}."))
    return out


def _ports(gw: Config) -> Iterator[tuple[int, list[str]]]:
    for server in gw.spec.get("servers") or ():
        port = ((server or {}).get("port") or {}).get("number")
        if isinstance(port, int):
            yield port, [str(h).rpartition("/")[2] for h in (server or {}).get("hosts") or ()]


def _selector_text(selector: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def conflicting_gateways(ctx: AnalysisContext) -> list[AnalysisIssue]:
    out: list[AnalysisIssue] = []
    gateways = list(ctx.configs.list("Gateway"))
    for gw in gateways:
        selector = dict(gw.spec.get("selector") or {})
        for other in gateways:
            if other is gw or dict(other.spec.get("selector") or {}) != selector:
                continue
            for port, hosts in _ports(gw):
                common = sorted({h for h in hosts for port2, hosts2 in _ports(other) if port2 == port
                                 for h2 in hosts2 if hosts_intersect(h, h2)})
                if common:
                    out.append(issue_for(
                        "IST0145", gw, "spec.servers",
                        f"Conflict with gateways {other.namespace}/{other.name} (workload selector "
                        f"{_selector_text(selector)}, port {port}, hosts [{' '.join(common)}])."))
                    break
    return out
