"""Which proxies a change can affect (Istio's ``ConfigAffectsProxy`` / ``DefaultProxyNeedsPush``).

A changed object is looked up in both the previous and the new PushContext (it may have been created,
changed or deleted). Sidecars are scoped by exportTo and by their Sidecar resource's egress hosts; gateways
see every exported service and only Gateway-bound VirtualServices. An object of a kind with no rule here
affects every proxy (correct, merely not minimal).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from mizzen.config import kinds
from mizzen.config.model import Config, ConfigKey
from mizzen.core.hosts import resolve_short_name
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import (
    MESH_GATEWAY,
    PushContext,
    exported_to,
    resolve_gateway_ref,
    vs_visibility,
)
from mizzen.core.sidecar_scope import egress_listeners, imports_host
from mizzen.registry.model import Service

__all__ = ["config_affects_proxy", "scope_key", "sees_service"]


def _egress_hosts(proxy: Proxy, push: PushContext) -> list[str]:
    hosts: list[str] = []
    for e in egress_listeners(proxy, push):
        hosts.extend(e.hosts)
    return hosts


def _imports(proxy: Proxy, push: PushContext, config_namespace: str, hosts: Iterable[str]) -> bool:
    egress = _egress_hosts(proxy, push)
    return any(imports_host(egress, proxy.namespace, config_namespace, h, push.mesh.domain_suffix)
               for h in hosts)


def sees_service(proxy: Proxy, push: PushContext, service: Service) -> bool:
    """Whether the proxy has clusters for ``service`` (exported to it; for a sidecar, admitted by egress)."""
    if not exported_to(service.export_to, service.namespace, proxy.namespace):
        return False
    return proxy.is_gateway or _imports(proxy, push, service.namespace, (service.hostname,))


def _object_hosts(c: Config, push: PushContext) -> list[str]:
    suffix = push.mesh.domain_suffix
    if c.kind == "DestinationRule":
        return [resolve_short_name(str(c.spec.get("host", "")), c.namespace, suffix)]
    return [resolve_short_name(str(h), c.namespace, suffix) for h in c.spec.get("hosts") or ()]


def _affects(proxy: Proxy, push: PushContext, c: Config) -> bool:
    # reads of the proxy: is_gateway, namespace, its Sidecar egress; a rule that reads more (labels, a
    # workload selector) must add it to scope_key, which the push uses to ask once per alike proxies
    root = push.mesh.root_namespace
    if c.kind == "Gateway":
        return proxy.is_gateway
    if c.kind == "Secret":   # gateway credentialName: served only to gateways of the Secret's namespace
        return proxy.is_gateway and proxy.namespace == c.namespace
    if c.kind == "Sidecar":
        return not proxy.is_gateway and c.namespace in (proxy.namespace, root)
    if c.kind == "VirtualService":
        if not c.spec.get("hosts"):
            return True   # a delegate: it reaches proxies through whichever root VS names it
        refs = c.spec.get("gateways") or (MESH_GATEWAY,)
        gateways = [resolve_gateway_ref(str(g), c.namespace) for g in refs]
        if proxy.is_gateway:
            return any(g != MESH_GATEWAY for g in gateways)
        if MESH_GATEWAY not in gateways:
            return False
        if vs_visibility(c.spec.get("exportTo"), c.namespace, proxy.namespace) is None:
            return False
        return _imports(proxy, push, c.namespace, _object_hosts(c, push))
    if c.kind == "DestinationRule":
        if c.namespace == proxy.namespace:
            return True   # also its own inbound clusters' connection pool
        if not exported_to(c.spec.get("exportTo"), c.namespace, proxy.namespace):
            return False
        return proxy.is_gateway or _imports(proxy, push, c.namespace, _object_hosts(c, push))
    if c.kind in ("AuthorizationPolicy", "RequestAuthentication"):
        return c.namespace in (proxy.namespace, root)   # security.authz selects from these two only
    if c.kind in ("Service", "ServiceEntry"):
        if c.namespace == proxy.namespace:
            return True   # may select the proxy's own workload (inbound listeners and clusters)
        return any(sees_service(proxy, push, s) for s in _services_of(push, c))
    return True


def _services_of(push: PushContext, c: Config) -> tuple[Service, ...]:
    def find() -> tuple[Service, ...]:
        return tuple(s for s in push.registry.services
                     if s.origin == c.kind and s.namespace == c.namespace and s.name == c.name)
    return push.memoized(("scope", c.kind, c.namespace, c.name), find)


def scope_key(proxy: Proxy, push: PushContext) -> Hashable:
    """What :func:`config_affects_proxy` reads of a proxy in ``push``: proxies with equal keys (in both
    PushContexts) get the same answer for every object, so a push can ask once per key."""
    return proxy.is_gateway, proxy.namespace, tuple(_egress_hosts(proxy, push))


def config_affects_proxy(proxy: Proxy, before: PushContext, after: PushContext, key: ConfigKey) -> bool:
    """Whether the object ``key`` (as it was in ``before`` and as it is in ``after``) can change anything
    generated for ``proxy``. Depends on the proxy only through :func:`scope_key` in each."""
    if not kinds.read_by(key.kind):
        return False   # stored only (Deployment, Namespace, passive kinds)
    for push in (before, after):
        c = push.configs.get(key.kind, key.namespace, key.name)
        if c is not None and _affects(proxy, push, c):
            return True
    return False
