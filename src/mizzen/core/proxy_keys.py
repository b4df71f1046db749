"""The one place that says which proxy properties each generator's output depends on.

Two proxies with equal keys get the same generated messages (memoized per push in ``PushContext.memo``, and
carried into the next push when nothing they read changed), so they are hashed, serialized and stored once.
A key must name every proxy property the output reads, and only those: too little and proxies get each
other's config, too much and nothing is shared. Properties that only matter when some config uses a field
(labels for ``sourceLabels`` or ``failoverPriority``) are included only while such config exists.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from mizzen.config.model import Config
from mizzen.core.policy import locality_lb_setting
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext

__all__ = [
    "Reads",
    "cluster_inputs",
    "endpoint_inputs",
    "listener_reads",
    "locality_inputs",
    "memoized_for",
    "outbound_clusters_key",
    "route_inputs",
    "rule_identity",
    "scope_inputs",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Reads:
    """The last part of a per-proxy memo key (whose second part is the node id): the config kinds the value
    was built from. ``core.generate.carry_memo`` keeps such an entry across a push whose changed kinds are
    not among them and whose registry is unchanged, while the node is still connected."""

    kinds: frozenset[str]


def memoized_for(push: PushContext, proxy: Proxy, key: tuple[Any, ...], build: Callable[[], T]) -> T:
    """``build()`` once for one proxy under ``key`` (``(tag, proxy.id, ..., Reads(...))``), kept across pushes
    by ``carry_memo``; rebuilt when the proxy reconnected with another model (labels, metadata) under the
    same node id."""
    hit = push.memo.get(key)
    if hit is not None and hit[0] == proxy:
        return cast(T, hit[1])
    value = build()
    push.memo[key] = (proxy, value)
    return value


def scope_inputs(proxy: Proxy, push: PushContext) -> Hashable:
    """What decides which services a proxy sees: its namespace (exportTo), whether it is a gateway, and the
    Sidecar resource that applies to it (egress hosts)."""
    if proxy.is_gateway:
        return (proxy.namespace, True, None)
    sidecar = push.sidecar_for(proxy)
    return (proxy.namespace, False, sidecar.key if sidecar is not None else None)


def endpoint_inputs(proxy: Proxy, push: PushContext) -> Hashable:
    """A proxy's whole set of load assignments: the DestinationRule lookups (namespace) and locality LB
    relative to the proxy (locality; labels only while some DestinationRule uses ``failoverPriority``)."""
    labels = (frozenset(proxy.labels.items())
              if push.uses_field("DestinationRule", "failoverPriority") else None)
    return (proxy.namespace, proxy.locality, labels)


def rule_identity(dr: Config | None) -> Hashable:
    """The DestinationRule a proxy's lookup found, as a memo key part. Proxies of different namespaces that
    find the same rule share the clusters and load assignments built from it. (Any DestinationRule change
    drops every memo entry built from one, so the name stands for the content.)"""
    return (dr.namespace, dr.name) if dr is not None else None


def locality_inputs(proxy: Proxy, policy: Mapping[str, Any]) -> Hashable:
    """Load assignments of one cluster under ``policy``: locality LB makes them depend on the proxy's
    locality only with ``distribute`` or with failover (outlier detection on), and on its labels only with
    ``failoverPriority``; otherwise not at all."""
    setting = locality_lb_setting(policy)
    if not setting or not (setting.get("distribute") or policy.get("outlierDetection") is not None):
        return None
    return (proxy.locality, frozenset(proxy.labels.items()) if setting.get("failoverPriority") else None)


def cluster_inputs(proxy: Proxy, push: PushContext, dr: Config | None, inline_endpoints: bool) -> Hashable:
    """One outbound service port's clusters: the DestinationRule the proxy's lookup found, the interception
    mode (local ORIGINAL_DST), whether the proxy has SDS (mTLS), whether it is a gateway (DestinationRule
    ``credentialName``), and for DNS clusters, which carry their endpoints inline, the endpoint inputs."""
    return (rule_identity(dr), proxy.interception_mode.upper(), proxy.has_sds, proxy.is_gateway,
            endpoint_inputs(proxy, push) if inline_endpoints else None)


def outbound_clusters_key(proxy: Proxy, push: PushContext) -> Hashable:
    """A proxy's whole outbound cluster list: which services it sees (which also fixes the DestinationRule
    lookups: namespace), the interception mode, and the endpoint inputs whenever the mesh has DNS services
    (their clusters carry endpoints inline)."""
    return (scope_inputs(proxy, push), proxy.interception_mode.upper(), proxy.has_sds,
            endpoint_inputs(proxy, push) if push.has_inline_endpoints else None)


_GATEWAY_ONLY = frozenset({"Gateway", "Secret"})


def listener_reads(proxy: Proxy, push: PushContext, kinds: frozenset[str]) -> frozenset[str]:
    """The config kinds, out of LDS's declared ``kinds``, that this proxy's listeners are built from. A
    sidecar's listeners read no Gateway or Secret (Istio's skippedLdsConfigs for sidecars), and
    VirtualServices only where they build TCP/TLS routes or imported destinations: in REDIRECT mode (per-port
    outbound listeners) and under a Sidecar resource (bound egress listeners, VirtualService imports). In
    local mode without a Sidecar (every proxy of the demo) a VirtualService change leaves listeners alone."""
    if proxy.is_gateway:
        return kinds
    out = kinds - _GATEWAY_ONLY
    if proxy.interception_mode.upper() != "REDIRECT" and push.sidecar_for(proxy) is None:
        out -= {"VirtualService"}
    return out


def route_inputs(proxy: Proxy, push: PushContext) -> Hashable:
    """Sidecar outbound route configs: namespace (domains, visibility), Sidecar resource, interception mode,
    labels only while some VirtualService uses ``sourceLabels``. Gateways: none shared (their routes follow
    their own labels' Gateways), so the proxy itself."""
    if proxy.is_gateway:
        return ("gateway", proxy.id)
    labels = (frozenset(proxy.labels.items())
              if push.uses_field("VirtualService", "sourceLabels") else None)
    return (scope_inputs(proxy, push), labels, proxy.interception_mode)
