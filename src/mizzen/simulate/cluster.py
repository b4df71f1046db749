"""The upstream side of a simulated request: a cluster's type, load-balancing policy, circuit breakers,
outlier detection, TLS, the DestinationRule and subset it came from (Istio metadata), and its endpoints
from the ClusterLoadAssignment (address, locality, health, weight).

Pure functions over Envoy protos, returning JSON-able dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf.message import Message

from mizzen.simulate.action import istio_config

__all__ = ["UNLIMITED", "cluster_summary", "endpoints_of", "parse_cluster_name"]

UNLIMITED = 4294967295
_SPECIAL = {
    "BlackHoleCluster": "drops the request (BlackHoleCluster: Envoy answers 502)",
    "PassthroughCluster": "forwards to the original destination (PassthroughCluster)",
    "InboundPassthroughCluster": "forwards to the original destination (InboundPassthroughCluster)",
}


def parse_cluster_name(name: str) -> dict[str, Any]:
    """``outbound|9080|v1|reviews.bookinfo.svc.cluster.local`` -> direction, port, subset, host."""
    parts = name.split("|")
    if len(parts) != 4:
        return {}
    port = int(parts[1]) if parts[1].isdigit() else parts[1]
    return {"direction": parts[0], "port": port, "subset": parts[2], "host": parts[3]}


def _enum_name(msg: Message, field: str) -> str:
    fd = msg.DESCRIPTOR.fields_by_name[field]
    value = getattr(msg, field)
    ev = fd.enum_type.values_by_number.get(value) if fd.enum_type else None
    return ev.name if ev is not None else str(value)


def _dur(d: Any) -> str:
    return f"{float(d.seconds) + d.nanos / 1e9:g}s"


def _circuit_breakers(c: cluster_pb2.Cluster) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in c.circuit_breakers.thresholds:
        for field in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
            if t.HasField(field) and getattr(t, field).value != UNLIMITED:
                out[field] = getattr(t, field).value
    return out


def _outlier(c: cluster_pb2.Cluster) -> dict[str, Any]:
    if not c.HasField("outlier_detection"):
        return {}
    od = c.outlier_detection
    out: dict[str, Any] = {}
    for field in ("consecutive_5xx", "consecutive_gateway_failure", "max_ejection_percent",
                  "consecutive_local_origin_failure"):
        if od.HasField(field):
            out[field] = getattr(od, field).value
    for field in ("interval", "base_ejection_time"):
        if od.HasField(field):
            out[field] = _dur(getattr(od, field))
    return out


def cluster_summary(c: cluster_pb2.Cluster) -> dict[str, Any]:
    """Type, lb policy, DestinationRule, subset and policy highlights of one cluster."""
    out: dict[str, Any] = {"name": c.name, **parse_cluster_name(c.name)}
    which = c.WhichOneof("cluster_discovery_type")
    out["type"] = _enum_name(c, "type") if which == "type" else (c.cluster_type.name if which else "STATIC")
    out["lb_policy"] = _enum_name(c, "lb_policy")
    md = c.metadata.filter_metadata.get("istio")
    if md is not None and "subset" in md.fields:
        out["subset"] = md.fields["subset"].string_value
    dr = istio_config(c.metadata)
    if dr:
        out["destination_rule"] = dr
    cb = _circuit_breakers(c)
    if cb:
        out["circuit_breakers"] = cb
    od = _outlier(c)
    if od:
        out["outlier_detection"] = od
    if c.HasField("connect_timeout"):
        out["connect_timeout"] = _dur(c.connect_timeout)
    if c.HasField("transport_socket"):
        out["tls"] = c.transport_socket.name
    if c.common_lb_config.HasField("locality_weighted_lb_config"):
        out["locality_weighted"] = True
    if c.name in _SPECIAL:
        out["note"] = _SPECIAL[c.name]
    return out


def endpoints_of(c: cluster_pb2.Cluster | None,
                 assignments: Mapping[str, Message], cluster_name: str) -> tuple[list[dict[str, Any]], str]:
    """Endpoints (address:port, locality, health, weight, priority) from EDS or the cluster's own
    load_assignment, and where they came from ('' when the cluster has none, e.g. ORIGINAL_DST)."""
    cla: Message | None = None
    source = ""
    if c is not None and c.HasField("load_assignment"):
        cla, source = c.load_assignment, "cluster load_assignment"
    if c is not None and c.HasField("eds_cluster_config"):
        key = c.eds_cluster_config.service_name or c.name
        cla, source = assignments.get(key), f"EDS {key}"
    elif c is None:
        cla, source = assignments.get(cluster_name), f"EDS {cluster_name}"
    if not isinstance(cla, endpoint_pb2.ClusterLoadAssignment):
        return [], source
    out: list[dict[str, Any]] = []
    for loc in cla.endpoints:
        locality = "/".join(p for p in (loc.locality.region, loc.locality.zone, loc.locality.sub_zone) if p)
        for lb in loc.lb_endpoints:
            ep = lb.endpoint
            sa = ep.address.socket_address
            address = f"{sa.address}:{sa.port_value}" if sa.address else (ep.address.pipe.path or "?")
            health = health_check_pb2.HealthStatus.Name(lb.health_status)
            item: dict[str, Any] = {"address": address, "health": health}
            if locality:
                item["locality"] = locality
            if lb.HasField("load_balancing_weight"):
                item["weight"] = lb.load_balancing_weight.value
            if loc.priority:
                item["priority"] = loc.priority
            if ep.hostname:
                item["hostname"] = ep.hostname
            out.append(item)
    return out, source
