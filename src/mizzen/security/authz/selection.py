"""Which AuthorizationPolicies and RequestAuthentications apply to a proxy, as Istio selects them: those in
the mesh's root namespace (``istio-system``) and in the proxy's namespace whose ``selector`` is absent or
matches the proxy's labels. Policies attached with ``targetRef(s)`` apply to no sidecar or gateway here
(validation warns). Sorted like Istio: by namespace (root first), then creation time, then name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mizzen.config.labels import labels_match
from mizzen.config.model import Config
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext

__all__ = ["Policies", "applies_to", "authorization_policies", "request_authentications"]


def applies_to(cfg: Config, proxy: Proxy, root_namespace: str) -> bool:
    if cfg.namespace not in (root_namespace, proxy.namespace):
        return False
    spec = cfg.spec
    if spec.get("targetRef") or spec.get("targetRefs"):
        return False
    selector = (spec.get("selector") or {}).get("matchLabels")
    return labels_match(selector, proxy.labels)


def _selected(push: PushContext, kind: str, proxy: Proxy) -> list[Config]:
    root = push.mesh.root_namespace
    found = [c for c in push.configs.list(kind) if applies_to(c, proxy, root)]
    found.sort(key=lambda c: (c.namespace != root, c.created, c.namespace, c.name))
    return found


@dataclass(frozen=True)
class Policies:
    """The AuthorizationPolicies of one proxy by action (Istio's AuthorizationPoliciesResult)."""

    custom: tuple[Config, ...] = ()
    deny: tuple[Config, ...] = ()
    allow: tuple[Config, ...] = ()
    audit: tuple[Config, ...] = ()
    all: tuple[Config, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not self.all


def authorization_policies(push: PushContext, proxy: Proxy) -> Policies:
    by: dict[str, list[Config]] = {"CUSTOM": [], "DENY": [], "ALLOW": [], "AUDIT": []}
    found = _selected(push, "AuthorizationPolicy", proxy)
    for c in found:
        by.setdefault(str(c.spec.get("action") or "ALLOW"), []).append(c)
    return Policies(tuple(by["CUSTOM"]), tuple(by["DENY"]), tuple(by["ALLOW"]), tuple(by["AUDIT"]),
                    tuple(found))


def request_authentications(push: PushContext, proxy: Proxy) -> list[Config]:
    return _selected(push, "RequestAuthentication", proxy)
