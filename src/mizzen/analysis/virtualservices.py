"""IST0149 JwtClaimBasedRoutingWithoutRequestAuthN (Istio's JWTClaimRouteAnalyzer): a VirtualService bound to
a Gateway routes on a JWT claim (``@request.auth.claims.*`` headers), but no RequestAuthentication (in
``istio-system`` or the gateway pod's namespace, selecting it) validates tokens on that gateway's workloads,
so the claims never exist. Only when the gateway workloads are known.
"""

from __future__ import annotations

from collections.abc import Mapping

from mizzen.analysis.context import AnalysisContext, labels_match
from mizzen.analysis.message import AnalysisIssue, issue_for
from mizzen.core.push_context import MESH_GATEWAY, resolve_gateway_ref

__all__ = ["JWT_CLAIM_PREFIX", "jwt_claim_routes"]

JWT_CLAIM_PREFIX = "@request.auth.claims"
SYSTEM_NAMESPACE = "istio-system"


def _claim_key(spec: Mapping[str, object]) -> str:
    for route in spec.get("http") or ():  # type: ignore[attr-defined]
        for m in (route or {}).get("match") or ():
            for group in ("headers", "withoutHeaders"):
                for key in (m or {}).get(group) or {}:
                    if str(key).startswith(JWT_CLAIM_PREFIX):
                        return str(key)
    return ""


def jwt_claim_routes(ctx: AnalysisContext) -> list[AnalysisIssue]:
    if ctx.gateway_workloads is None:
        return []
    authn = [(ra.namespace, (ra.spec.get("selector") or {}).get("matchLabels") or {})
             for ra in ctx.configs.list("RequestAuthentication")]
    out: list[AnalysisIssue] = []
    for vs in ctx.configs.list("VirtualService"):
        key = _claim_key(vs.spec)
        if not key:
            continue
        for ref in vs.spec.get("gateways") or ():
            full = resolve_gateway_ref(str(ref), vs.namespace)
            if full == MESH_GATEWAY:
                continue
            ns, _, name = full.partition("/")
            gw = ctx.configs.get("Gateway", ns, name)
            if gw is None:
                continue
            for pod in ctx.gateway_pods(gw):
                if any(ra_ns in (SYSTEM_NAMESPACE, pod.namespace) and labels_match(sel, pod.labels)
                       for ra_ns, sel in authn):
                    continue
                out.append(issue_for(
                    "IST0149", vs, "spec.http",
                    f"The virtual service uses the JWT claim based routing (key: {key}) but found no request "
                    f"authentication for the gateway ({full}) pod ({pod.name}). The request authentication "
                    "must first be applied for the gateway pods to validate the JWT token and make the "
                    "claims available for routing."))
    return out
