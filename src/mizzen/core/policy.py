"""DestinationRule traffic policy: the effective policy for (rule, subset, port) merged like Istio's
MergeTrafficPolicy (top level < its portLevelSettings < subset < subset portLevelSettings; loadBalancer,
connectionPool, outlierDetection and tls replaced as units; a port-level entry replaces all four), Istio
durations, locality LB settings, and the consistent-hash HashPolicy list routes attach for a destination.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as route_pb2
from google.protobuf import duration_pb2

from mizzen.config import durations
from mizzen.config.model import Config
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext

__all__ = [
    "POLICY_PARTS",
    "consistent_hash_policy",
    "destination_policy",
    "duration",
    "effective_policy",
    "find_subset",
    "locality_lb_setting",
    "merge_traffic_policy",
    "parse_duration",
    "port_level_policy",
]

Policy = Mapping[str, Any]
POLICY_PARTS = ("connectionPool", "outlierDetection", "loadBalancer", "tls")
# Istio's default MeshConfig has localityLbSetting {enabled: true}: failover by locality once outlier
# detection is configured.
MESH_LOCALITY_LB: Policy = {"enabled": True}

def parse_duration(value: Any) -> float | None:
    """A duration field in seconds (Go syntax, see config.durations); None if absent or malformed."""
    return durations.seconds(value)


def duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def _pick(policy: Policy | None) -> dict[str, Any]:
    if not policy:
        return {}
    return {k: policy[k] for k in POLICY_PARTS if policy.get(k) is not None}


def _port_entry(policy: Policy | None, port: int | None) -> Policy | None:
    if not policy or port is None:
        return None
    for pl in policy.get("portLevelSettings") or ():
        if int((pl.get("port") or {}).get("number", -1)) == port:
            entry: Policy = pl
            return entry
    return None


def port_level_policy(policy: Policy | None, port: int | None) -> dict[str, Any]:
    """A trafficPolicy with its port-level entry for ``port`` applied (the entry replaces all four parts)."""
    entry = _port_entry(policy, port)
    if entry is not None:
        return _pick(entry)
    return _pick(policy)


def merge_traffic_policy(top: Policy | None, subset_policy: Policy | None,
                         port: int | None) -> dict[str, Any]:
    """Istio's MergeTrafficPolicy: ``top`` (with its port level applied) overridden by ``subset_policy``."""
    merged = port_level_policy(top, port)
    if not subset_policy:
        return merged
    merged.update(_pick(subset_policy))
    entry = _port_entry(subset_policy, port)
    if entry is not None:
        merged = _pick(entry)
    return merged


def find_subset(dr: Config | None, subset: str) -> Policy | None:
    if dr is None or not subset:
        return None
    for s in dr.spec.get("subsets") or ():
        if s.get("name") == subset:
            found: Policy = s
            return found
    return None


def effective_policy(dr: Config | None, subset: str, port: int | None) -> dict[str, Any]:
    """The policy parts ({connectionPool, outlierDetection, loadBalancer, tls}) in force for a cluster."""
    if dr is None:
        return {}
    sub = find_subset(dr, subset)
    return merge_traffic_policy(dr.spec.get("trafficPolicy"), (sub or {}).get("trafficPolicy"), port)


def destination_policy(proxy: Proxy, push: PushContext, hostname: str, subset: str,
                       port: int) -> tuple[Config | None, dict[str, Any]]:
    """The DestinationRule that applies to ``hostname`` for ``proxy``, and its effective policy."""
    dr = push.destination_rule(proxy.namespace, hostname)
    return dr, effective_policy(dr, subset, port)


def locality_lb_setting(policy: Policy) -> Policy | None:
    """The locality LB setting in force: the rule's (None when it says ``enabled: false``), else the mesh
    default (enabled, no distribute/failover)."""
    setting = (policy.get("loadBalancer") or {}).get("localityLbSetting")
    if setting is not None:
        if setting.get("enabled") is False:
            return None
        result: Policy = setting
        return result
    return MESH_LOCALITY_LB


def consistent_hash_policy(proxy: Proxy, push: PushContext, hostname: str, subset: str,
                           port: int) -> list[route_pb2.RouteAction.HashPolicy]:
    """Route hash policies for a destination whose DestinationRule uses ``loadBalancer.consistentHash``
    (header, cookie {name, path, ttl}, source IP, query parameter); empty otherwise."""
    _dr, policy = destination_policy(proxy, push, hostname, subset, port)
    ch = (policy.get("loadBalancer") or {}).get("consistentHash")
    if not ch:
        return []
    hp = route_pb2.RouteAction.HashPolicy
    if ch.get("httpHeaderName"):
        return [hp(header=hp.Header(header_name=str(ch["httpHeaderName"])))]
    cookie = ch.get("httpCookie")
    if cookie:
        c = hp.Cookie(name=str(cookie.get("name", "")), path=str(cookie.get("path") or ""))
        ttl = parse_duration(cookie.get("ttl"))
        if ttl is not None:
            c.ttl.CopyFrom(duration(ttl))
        return [hp(cookie=c)]
    if ch.get("useSourceIp"):
        return [hp(connection_properties=hp.ConnectionProperties(source_ip=True))]
    if ch.get("httpQueryParameterName"):
        return [hp(query_parameter=hp.QueryParameter(name=str(ch["httpQueryParameterName"])))]
    return []
