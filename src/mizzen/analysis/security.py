"""Security analyzers (Istio's AuthorizationPoliciesAnalyzer and the selector checks of its security
analyzers): IST0127 for an AuthorizationPolicy or RequestAuthentication whose selector matches no known
workload (it protects nothing), IST0101 for ``from.source.namespaces`` naming a namespace the mesh does not
know, and a CUSTOM policy whose provider is not in mesh config ``extensionProviders`` (IST0101 too: the
provider is a referenced resource), and a RequestAuthentication ``jwksUri`` no mesh Service or ServiceEntry
serves (Envoy fetches keys through the mesh; IST0101 too). Checks that need workloads or the registry run
only when they are known.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from mizzen.analysis.context import AnalysisContext
from mizzen.analysis.message import AnalysisIssue, issue_for
from mizzen.config.labels import labels_match
from mizzen.security.authz.jwt import jwks_cluster

__all__ = ["security_policies"]

KINDS = ("AuthorizationPolicy", "RequestAuthentication")


def _known_namespaces(ctx: AnalysisContext) -> set[str]:
    names = {ctx.mesh.root_namespace, "default"}
    names |= {c.name for c in ctx.configs.list("Namespace")}
    names |= {c.namespace for c in ctx.configs}
    if ctx.registry is not None:
        names |= {w.namespace for w in ctx.registry.workloads}
        names |= {s.namespace for s in ctx.registry.services}
    names |= {w.namespace for w in ctx.gateway_workloads or ()}
    return names


def security_policies(ctx: AnalysisContext) -> list[AnalysisIssue]:
    out: list[AnalysisIssue] = []
    workloads = [*(ctx.registry.workloads if ctx.registry is not None else ()),
                 *(ctx.gateway_workloads or ())]
    root = ctx.mesh.root_namespace
    for kind in KINDS:
        for cfg in ctx.configs.list(kind):
            selector = (cfg.spec.get("selector") or {}).get("matchLabels") or {}
            if selector and workloads and not any(
                    labels_match(selector, w.labels) and cfg.namespace in (root, w.namespace)
                    for w in workloads):
                labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
                out.append(issue_for("IST0127", cfg, "spec.selector",
                                     f"No matching workloads for this resource with the following labels: "
                                     f"{labels}"))
    if ctx.registry is None:
        return out
    known = _known_namespaces(ctx)
    providers = {p.name for p in ctx.mesh.extension_providers}
    for cfg in ctx.configs.list("AuthorizationPolicy"):
        for i, rule in enumerate(cfg.spec.get("rules") or ()):
            for j, fr in enumerate((rule or {}).get("from") or ()):
                src = (fr or {}).get("source") or {}
                for k, ns in enumerate(src.get("namespaces") or ()):
                    if "*" not in str(ns) and str(ns) not in known:
                        path = f"spec.rules[{i}].from[{j}].source.namespaces[{k}]"
                        out.append(issue_for("IST0101", cfg, path, f'Referenced namespace not found: "{ns}"'))
        if cfg.spec.get("action") == "CUSTOM":
            name = str((cfg.spec.get("provider") or {}).get("name", ""))
            if name and name not in providers:
                out.append(issue_for("IST0101", cfg, "spec.provider.name",
                                     f'Referenced extension provider not found: "{name}" (mesh config '
                                     "extensionProviders); requests its rules match are denied"))
    for cfg in ctx.configs.list("RequestAuthentication"):
        for i, rule in enumerate(cfg.spec.get("jwtRules") or ()):
            uri = str((rule or {}).get("jwksUri") or "")
            if uri and not (rule or {}).get("jwks") and jwks_cluster(ctx.push, uri, cfg.namespace) is None:
                host = urlsplit(uri).hostname or uri
                out.append(issue_for("IST0101", cfg, f"spec.jwtRules[{i}].jwksUri",
                                     f'Referenced host not found: "{host}" (Envoy fetches the JWKS through '
                                     "the mesh: declare it with a Service or ServiceEntry; until then tokens "
                                     "of this issuer are refused)"))
    return out
