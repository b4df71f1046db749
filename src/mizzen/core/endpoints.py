"""EDS: ClusterLoadAssignments for outbound EDS clusters (subset-filtered, grouped by locality, with health,
weights and Istio's endpoint metadata), plus the locality load-balancing rules Istio applies relative to the
calling proxy: ``distribute`` weights, and failover priorities (region/zone/subzone, ``failover`` region
pairs, ``failoverPriority`` labels) which Istio only applies when outlier detection is configured.
The same grouping and rules are reused for STRICT_DNS clusters' inline load assignments (see clusters.py).
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ep_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import struct_pb2

from mizzen.config.labels import labels_match
from mizzen.core import names
from mizzen.core.policy import effective_policy, find_subset, locality_lb_setting
from mizzen.core.proxy import Proxy
from mizzen.core.proxy_keys import locality_inputs, rule_identity
from mizzen.core.push_context import PushContext
from mizzen.core.workload_labels import PEER_KEY, PEER_METADATA, encode_peer, peer_labels
from mizzen.registry.model import ISTIO_TLS_MODE, Endpoint

__all__ = [
    "LocalityGroup",
    "apply_locality_lb",
    "build_endpoints",
    "endpoints_for_cluster",
    "group_by_locality",
    "lb_endpoint",
    "subset_endpoints",
]

# Labels Istio derives from an endpoint's (or proxy's) locality and network, usable in failoverPriority.
REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
SUBZONE_LABEL = "topology.istio.io/subzone"
NETWORK_LABEL = "topology.istio.io/network"
CLUSTER_ID = "Kubernetes"
TRANSPORT_SOCKET_MATCH = "envoy.transport_socket_match"


def _split_locality(locality: str) -> tuple[str, str, str]:
    parts = [*locality.split("/"), "", "", ""][:3] if locality else ["", "", ""]
    return parts[0], parts[1], parts[2]


def _locality_pb(locality: str) -> base_pb2.Locality:
    region, zone, subzone = _split_locality(locality)
    return base_pb2.Locality(region=region, zone=zone, sub_zone=subzone)


def _topology_labels(labels: Mapping[str, str], locality: str, network: str = "") -> dict[str, str]:
    out = dict(labels)
    region, zone, subzone = _split_locality(locality)
    for key, value in ((REGION_LABEL, region), (ZONE_LABEL, zone), (SUBZONE_LABEL, subzone),
                       (NETWORK_LABEL, network)):
        if value and key not in out:
            out[key] = value
    return out


def canonical_names(labels: Mapping[str, str], workload: str) -> tuple[str, str]:
    """Istio's canonical service and revision of a workload, from its labels."""
    canonical = (labels.get("service.istio.io/canonical-name") or labels.get("app.kubernetes.io/name")
                 or labels.get("app") or workload)
    revision = (labels.get("service.istio.io/canonical-revision") or labels.get("app.kubernetes.io/version")
                or labels.get("version") or "latest")
    return canonical, revision


def _workload_metadata(e: Endpoint) -> base_pb2.Metadata:
    canonical, revision = canonical_names(e.labels, e.workload)
    peer = peer_labels(e.workload, e.namespace, e.labels)
    return _istio_metadata(f"{e.workload};{e.namespace};{canonical};{revision};{CLUSTER_ID}",
                           e.tls_mode == ISTIO_TLS_MODE,
                           (*peer.fields().items(), (PEER_KEY, encode_peer(peer.fields()))))


@functools.lru_cache(maxsize=65536)
def _istio_metadata(workload: str, istio_tls: bool = False,
                    peer: tuple[tuple[str, str], ...] = ()) -> base_pb2.Metadata:
    """Shared per workload string (every proxy's EDS repeats it); callers copy it, never mutate it. An
    endpoint with a sidecar also carries ``envoy.transport_socket_match: {tlsMode: istio}``, what auto mTLS
    clusters' transport socket matches select on (see core.mtls). ``mizzen.peer``: the workload's labels
    one per key (a client's TCP stats read ``%UPSTREAM_METADATA(mizzen.peer:<key>)%``) and all in one string
    under ``peer`` (its HTTP stats: one operator per stat), see :mod:`mizzen.core.workload_labels`."""
    md = base_pb2.Metadata()
    if workload:
        istio = struct_pb2.Struct()
        istio.update({"workload": workload})
        md.filter_metadata["istio"].CopyFrom(istio)
    if istio_tls:
        match = struct_pb2.Struct()
        match.update({"tlsMode": ISTIO_TLS_MODE})
        md.filter_metadata[TRANSPORT_SOCKET_MATCH].CopyFrom(match)
    if peer:
        md.filter_metadata[PEER_METADATA].update(dict(peer))
    return md


def lb_endpoint(e: Endpoint) -> ep_pb2.LbEndpoint:
    """One Envoy LbEndpoint: socket address, health status, weight (when set) and Istio metadata."""
    lb = ep_pb2.LbEndpoint(
        endpoint=ep_pb2.Endpoint(address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=e.address, port_value=e.port))),
        health_status=(health_check_pb2.DRAINING if e.draining else health_check_pb2.HEALTHY if e.healthy
                       else health_check_pb2.UNHEALTHY),
    )
    if e.weight > 0:
        lb.load_balancing_weight.value = e.weight
    if e.workload:
        lb.metadata.CopyFrom(_workload_metadata(e))
    elif e.tls_mode == ISTIO_TLS_MODE:
        lb.metadata.CopyFrom(_istio_metadata("", True))
    return lb


@dataclass
class LocalityGroup:
    """A LocalityLbEndpoints under construction together with the registry endpoints it was built from."""

    lle: ep_pb2.LocalityLbEndpoints
    endpoints: list[Endpoint] = field(default_factory=list)


def group_by_locality(endpoints: Iterable[Endpoint]) -> list[LocalityGroup]:
    """Group endpoints by locality (sorted; the locality message is always set, even when empty), each group
    weighted by the sum of its endpoints' weights (unset counts as 1)."""
    by_loc: dict[str, list[Endpoint]] = {}
    for e in endpoints:
        by_loc.setdefault(e.locality, []).append(e)
    groups = []
    for loc in sorted(by_loc):
        eps = by_loc[loc]
        lle = ep_pb2.LocalityLbEndpoints(locality=_locality_pb(loc),
                                         lb_endpoints=[lb_endpoint(e) for e in eps])
        lle.load_balancing_weight.value = sum(e.weight if e.weight > 0 else 1 for e in eps)
        groups.append(LocalityGroup(lle, list(eps)))
    return groups


def _locality_match(locality: base_pb2.Locality, rule: str) -> bool:
    """Istio's LocalityMatch: ``region/zone/subzone`` with ``*`` wildcards; missing parts match anything."""
    region, zone, subzone = _split_locality(rule)
    return ((region == "*" or locality.region == region)
            and (zone in ("*", "") or locality.zone == zone)
            and (subzone in ("*", "") or locality.sub_zone == subzone))


def _lb_priority(proxy: base_pb2.Locality, ep: base_pb2.Locality) -> int:
    if proxy.region == ep.region:
        if proxy.zone == ep.zone:
            return 0 if proxy.sub_zone == ep.sub_zone else 1
        return 2
    return 3


def _compact(priorities: Sequence[int]) -> list[int]:
    """Renumber priorities to 0..N without gaps, keeping their order."""
    ranks = {p: i for i, p in enumerate(sorted(set(priorities)))}
    return [ranks[p] for p in priorities]


def _apply_distribute(proxy_loc: base_pb2.Locality, groups: list[LocalityGroup],
                      distribute: Sequence[Mapping[str, Any]]) -> None:
    for rule in distribute:
        if not _locality_match(proxy_loc, str(rule.get("from", ""))):
            continue
        unmatched = set(range(len(groups)))
        for to_loc, weight in (rule.get("to") or {}).items():
            original: dict[int, int] = {}
            for i in sorted(unmatched):
                if _locality_match(groups[i].lle.locality, str(to_loc)):
                    w = groups[i].lle.load_balancing_weight.value if groups[i].lle.HasField(
                        "load_balancing_weight") else 1
                    original[i] = w
            unmatched -= set(original)
            total = sum(original.values())
            for i, w in original.items():
                share = w * int(weight) / total if total else 0
                if share > 0:
                    groups[i].lle.load_balancing_weight.value = math.ceil(share)
        for i in unmatched:
            del groups[i].lle.lb_endpoints[:]
        return


def _apply_failover(proxy_loc: base_pb2.Locality, groups: list[LocalityGroup],
                    failover: Sequence[Mapping[str, Any]]) -> None:
    raw = []
    for g in groups:
        prio = _lb_priority(proxy_loc, g.lle.locality)
        if prio == 3:
            for f in failover:
                if f.get("from") == proxy_loc.region:
                    if g.lle.locality.region != f.get("to"):
                        prio = 4
                    break
        raw.append(g.lle.priority * 5 + prio)
    for g, p in zip(groups, _compact(raw), strict=True):
        g.lle.priority = p


def _apply_failover_priority(proxy_labels: Mapping[str, str], groups: list[LocalityGroup],
                             failover_priority: Sequence[str]) -> list[LocalityGroup]:
    keys: list[str] = []
    overrides: dict[str, str] = {}
    for item in failover_priority:
        key, sep, value = str(item).partition("=")
        keys.append(key)
        if sep:
            overrides[key] = value
    lowest = len(keys)
    out: list[LocalityGroup] = []
    for g in groups:
        by_prio: dict[int, list[int]] = {}
        for idx, e in enumerate(g.endpoints):
            labels = _topology_labels(e.labels, e.locality)
            prio = 0
            for j, key in enumerate(keys):
                if overrides.get(key, proxy_labels.get(key)) != labels.get(key):
                    prio = lowest - j
                    break
            by_prio.setdefault(prio, []).append(idx)
        for prio in sorted(by_prio):
            lle = ep_pb2.LocalityLbEndpoints()
            lle.CopyFrom(g.lle)
            del lle.lb_endpoints[:]
            lle.lb_endpoints.extend(g.lle.lb_endpoints[i] for i in by_prio[prio])
            lle.priority = prio
            lle.load_balancing_weight.value = sum(lb.load_balancing_weight.value for lb in lle.lb_endpoints)
            out.append(LocalityGroup(lle, [g.endpoints[i] for i in by_prio[prio]]))
    for g, p in zip(out, _compact([g.lle.priority for g in out]), strict=True):
        g.lle.priority = p
    return out


def apply_locality_lb(proxy: Proxy, groups: list[LocalityGroup], setting: Mapping[str, Any] | None,
                      enable_failover: bool) -> list[LocalityGroup]:
    """Istio's ApplyLocalityLoadBalancer: ``distribute`` weights, else (only with outlier detection) failover
    priorities from ``failoverPriority`` labels and/or locality proximity to the proxy."""
    if not setting or not groups:
        return groups
    proxy_loc = _locality_pb(proxy.locality)
    if setting.get("distribute"):
        _apply_distribute(proxy_loc, groups, setting["distribute"])
    elif enable_failover:
        failover = setting.get("failover") or ()
        if setting.get("failoverPriority"):
            labels = _topology_labels(proxy.labels, proxy.locality)
            if proxy.labels:
                groups = _apply_failover_priority(labels, groups, setting["failoverPriority"])
            if failover:
                _apply_failover(proxy_loc, groups, failover)
        else:
            _apply_failover(proxy_loc, groups, failover)
    return groups


def subset_endpoints(push: PushContext, hostname: str, port: int,
                     subset_labels: Mapping[str, str] | None) -> list[Endpoint]:
    """Endpoints of (host, port) whose labels include every subset label."""
    eps = push.registry.endpoints_for(hostname, port)
    if not subset_labels:
        return list(eps)
    return [e for e in eps if labels_match(subset_labels, e.labels)]


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def endpoints_for_cluster(proxy: Proxy, push: PushContext, hostname: str, port: int,
                          subset: str, *, ip_only: bool = False) -> list[ep_pb2.LocalityLbEndpoints]:
    """The locality groups for an outbound cluster, with the DestinationRule's locality LB applied.

    ``ip_only`` (EDS): endpoints whose address is a host name are left out, as Envoy rejects the whole
    assignment for one (a DNS ServiceEntry's host endpoint reaching the EDS cluster of a STATIC one for the
    same host in another namespace)."""
    dr = push.destination_rule(proxy.namespace, hostname)
    labels: Mapping[str, str] | None = None
    if subset:
        sub = find_subset(dr, subset)
        if sub is None:
            return []   # unknown subset: nothing to send to (Istio drops the cluster)
        labels = sub.get("labels") or {}
    policy = effective_policy(dr, subset, port)
    eps = subset_endpoints(push, hostname, port, labels)
    if ip_only:
        eps = [e for e in eps if _is_ip(e.address)]
    groups = group_by_locality(eps)
    groups = apply_locality_lb(proxy, groups, locality_lb_setting(policy),
                               enable_failover=policy.get("outlierDetection") is not None)
    return [g.lle for g in groups]


def _filled(cla: endpoint_pb2.ClusterLoadAssignment, proxy: Proxy, push: PushContext, hostname: str,
            port: int, subset: str) -> endpoint_pb2.ClusterLoadAssignment:
    cla.endpoints.extend(endpoints_for_cluster(proxy, push, hostname, port, subset, ip_only=True))
    return cla


def build_endpoints(proxy: Proxy, push: PushContext, cluster_names: list[str]) -> list[
        endpoint_pb2.ClusterLoadAssignment]:
    """One ClusterLoadAssignment per EDS cluster name (empty when there are no endpoints), sorted by name."""
    out = []
    for name in sorted(set(cluster_names)):
        cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
        try:
            direction, port, subset, hostname = names.parse_cluster(name)
        except ValueError:
            direction = ""
        if direction == "outbound":
            # shared by proxies that find the same DestinationRule and have the same locality LB inputs
            dr = push.destination_rule(proxy.namespace, hostname)
            key = ("EDS", hostname, name, rule_identity(dr),
                   locality_inputs(proxy, effective_policy(dr, subset, port)))
            cla = push.memoized(key, partial(_filled, cla, proxy, push, hostname, port, subset))
        out.append(cla)
    return out
