"""The one place that says which proxy properties each generator's output depends on.

Two proxies with equal keys get the same generated messages (memoized per push in ``PushContext.memo``, and
carried into the next push when nothing they read changed), so they are hashed, serialized and stored once.
A key must name every proxy property the output reads, and only those: too little and proxies get each
other's config, too much and nothing is shared. Properties that only matter when some config uses a field
(labels for ``sourceLabels`` or ``failoverPriority``) are included only while such config exists.
"""

from __future__ import annotations

from collections.abc import Hashable

from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext

__all__ = [
    "cluster_inputs",
    "endpoint_inputs",
    "outbound_clusters_key",
    "route_inputs",
    "scope_inputs",
]


def scope_inputs(proxy: Proxy, push: PushContext) -> Hashable:
    """What decides which services a proxy sees: its namespace (exportTo), whether it is a gateway, and the
    Sidecar resource that applies to it (egress hosts)."""
    if proxy.is_gateway:
        return (proxy.namespace, True, None)
    sidecar = push.sidecar_for(proxy)
    return (proxy.namespace, False, sidecar.key if sidecar is not None else None)


def endpoint_inputs(proxy: Proxy, push: PushContext) -> Hashable:
    """Load assignments: the DestinationRule lookup (namespace) and locality LB relative to the proxy
    (locality; labels only while some DestinationRule uses ``failoverPriority``)."""
    labels = (frozenset(proxy.labels.items())
              if push.uses_field("DestinationRule", "failoverPriority") else None)
    return (proxy.namespace, proxy.locality, labels)


def cluster_inputs(proxy: Proxy, push: PushContext, inline_endpoints: bool) -> Hashable:
    """One outbound service port's clusters: the DestinationRule lookup (namespace), the interception mode
    (local ORIGINAL_DST), and for DNS clusters, which carry their endpoints inline, the endpoint inputs."""
    return (proxy.namespace, proxy.interception_mode.upper(),
            endpoint_inputs(proxy, push) if inline_endpoints else None)


def outbound_clusters_key(proxy: Proxy, push: PushContext) -> Hashable:
    """A proxy's whole outbound cluster list: which services it sees plus the per-cluster inputs (inline
    endpoint inputs whenever the mesh has DNS services)."""
    return (scope_inputs(proxy, push), cluster_inputs(proxy, push, push.has_inline_endpoints))


def route_inputs(proxy: Proxy, push: PushContext) -> Hashable:
    """Sidecar outbound route configs: namespace (domains, visibility), Sidecar resource, interception mode,
    labels only while some VirtualService uses ``sourceLabels``. Gateways: none shared (their routes follow
    their own labels' Gateways), so the proxy itself."""
    if proxy.is_gateway:
        return ("gateway", proxy.id)
    labels = (frozenset(proxy.labels.items())
              if push.uses_field("VirtualService", "sourceLabels") else None)
    return (scope_inputs(proxy, push), labels, proxy.interception_mode)
