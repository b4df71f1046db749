"""Applying an effective DestinationRule policy (see policy.py) to an Envoy Cluster, as Istio's
cluster_traffic_policy.go does: connection pool (circuit-breaker thresholds, timeouts, keepalive, HTTP
protocol options), outlier detection, load balancer (simple, consistent hash, locality). Client TLS (the
DestinationRule's ``tls`` and auto mTLS) is :mod:`mizzen.core.mtls`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2

from mizzen.core.policy import duration, parse_duration
from mizzen.registry.model import Protocol

__all__ = [
    "DEFAULT_LB_POLICY",
    "HTTP_PROTOCOL_OPTIONS",
    "MAX_UINT32",
    "apply_connection_pool",
    "apply_load_balancer",
    "apply_outlier_detection",
    "default_thresholds",
    "http_protocol_options",
    "set_http_protocol_options",
]

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
MAX_UINT32 = 4294967295
# What an unset / UNSPECIFIED ``loadBalancer.simple`` becomes: LEAST_REQUEST, Istio's documented default
# since 1.14 (ROUND_ROBIN only when a DestinationRule asks for it).
DEFAULT_LB_POLICY = cluster_pb2.Cluster.LEAST_REQUEST

_SIMPLE_LB = {
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    "LEAST_CONN": cluster_pb2.Cluster.LEAST_REQUEST,
    "RANDOM": cluster_pb2.Cluster.RANDOM,
}


def default_thresholds() -> circuit_breaker_pb2.CircuitBreakers.Thresholds:
    """Istio's defaults: every limit at uint32 max (Envoy's own max_retries of 3 breaks rollouts)."""
    t = circuit_breaker_pb2.CircuitBreakers.Thresholds(track_remaining=True)
    t.max_connections.value = MAX_UINT32
    t.max_pending_requests.value = MAX_UINT32
    t.max_requests.value = MAX_UINT32
    t.max_retries.value = MAX_UINT32
    return t


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def http_protocol_options(protocol: Protocol | None,
                          pool: Mapping[str, Any]) -> hpo_pb2.HttpProtocolOptions | None:
    """Upstream HTTP options for a cluster: explicit HTTP/2 for HTTP2/gRPC ports or ``h2UpgradePolicy:
    UPGRADE``, downstream protocol for ``useClientProtocol`` and for sniffed (UnsupportedProtocol) ports,
    explicit HTTP/1.1 for other HTTP ports; common
    options (idle timeout, max requests per connection, max connection duration) from the connection pool."""
    http = pool.get("http") or {}
    tcp = pool.get("tcp") or {}
    opts = hpo_pb2.HttpProtocolOptions()
    used = False
    # Istio's order: an explicit UPGRADE wins; then useClientProtocol; then the port's own protocol
    # (HTTP2/gRPC -> h2, sniffed/unsupported -> downstream protocol, HTTP -> HTTP/1.1).
    upgrade = http.get("h2UpgradePolicy") == "UPGRADE"
    downstream = not upgrade and (bool(http.get("useClientProtocol")) or protocol is Protocol.UNSUPPORTED)
    h2 = upgrade or (not downstream and protocol is not None and protocol.is_http2)
    if downstream:
        opts.use_downstream_protocol_config.http_protocol_options.SetInParent()
        opts.use_downstream_protocol_config.http2_protocol_options.SetInParent()
        used = True
    elif h2:
        h2o = opts.explicit_http_config.http2_protocol_options
        h2o.SetInParent()
        if _int(http.get("maxConcurrentStreams")) > 0:
            h2o.max_concurrent_streams.value = _int(http["maxConcurrentStreams"])
        used = True
    elif protocol is not None and protocol.is_http:
        opts.explicit_http_config.http_protocol_options.SetInParent()
        used = True
    common = opts.common_http_protocol_options
    idle = parse_duration(http.get("idleTimeout"))
    if idle is None:
        idle = parse_duration(tcp.get("idleTimeout"))
    if idle is not None:
        common.idle_timeout.CopyFrom(duration(idle))
    if _int(http.get("maxRequestsPerConnection")) > 0:
        common.max_requests_per_connection.value = _int(http["maxRequestsPerConnection"])
    max_duration = parse_duration(tcp.get("maxConnectionDuration"))
    if max_duration is not None:
        common.max_connection_duration.CopyFrom(duration(max_duration))
    if opts.HasField("common_http_protocol_options"):
        used = True
        if opts.WhichOneof("upstream_protocol_options") is None:
            opts.explicit_http_config.http_protocol_options.SetInParent()
    return opts if used else None


def set_http_protocol_options(c: cluster_pb2.Cluster, opts: hpo_pb2.HttpProtocolOptions | None) -> None:
    if opts is None:
        if HTTP_PROTOCOL_OPTIONS in c.typed_extension_protocol_options:
            del c.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS]
        return
    c.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Pack(opts)


def apply_connection_pool(c: cluster_pb2.Cluster, pool: Mapping[str, Any], connect_timeout_s: float,
                          protocol: Protocol | None) -> None:
    """Connect timeout, circuit-breaker thresholds (DEFAULT priority), TCP keepalive, HTTP options."""
    http = pool.get("http") or {}
    tcp = pool.get("tcp") or {}
    t = default_thresholds()
    if _int(http.get("http2MaxRequests")) > 0:
        t.max_requests.value = _int(http["http2MaxRequests"])
    if _int(http.get("http1MaxPendingRequests")) > 0:
        t.max_pending_requests.value = _int(http["http1MaxPendingRequests"])
    if _int(http.get("maxRetries")) > 0:
        t.max_retries.value = _int(http["maxRetries"])
    if _int(tcp.get("maxConnections")) > 0:
        t.max_connections.value = _int(tcp["maxConnections"])
    c.circuit_breakers.CopyFrom(circuit_breaker_pb2.CircuitBreakers(thresholds=[t]))
    timeout = parse_duration(tcp.get("connectTimeout"))
    c.connect_timeout.CopyFrom(duration(timeout if timeout is not None else connect_timeout_s))
    keepalive = tcp.get("tcpKeepalive")
    if keepalive is not None:
        ka = c.upstream_connection_options.tcp_keepalive
        ka.SetInParent()
        if _int(keepalive.get("probes")) > 0:
            ka.keepalive_probes.value = _int(keepalive["probes"])
        for field, key in (("keepalive_time", "time"), ("keepalive_interval", "interval")):
            secs = parse_duration(keepalive.get(key))
            if secs is not None:
                getattr(ka, field).value = int(secs)
    set_http_protocol_options(c, http_protocol_options(protocol, pool))


def apply_outlier_detection(c: cluster_pb2.Cluster, od: Mapping[str, Any] | None) -> None:
    """Istio's mapping; success-rate ejection is disabled; minHealthPercent (default 0) becomes the
    healthy panic threshold, so a fully ejected cluster fails instead of panicking to all hosts."""
    if od is None:
        return
    out = outlier_detection_pb2.OutlierDetection()
    out.enforcing_success_rate.value = 0
    if od.get("consecutive5xxErrors") is not None:
        v = _int(od["consecutive5xxErrors"])
        out.consecutive_5xx.value = v
        out.enforcing_consecutive_5xx.value = 100 if v > 0 else 0
    if od.get("consecutiveGatewayErrors") is not None:
        v = _int(od["consecutiveGatewayErrors"])
        out.consecutive_gateway_failure.value = v
        out.enforcing_consecutive_gateway_failure.value = 100 if v > 0 else 0
    for field, key in (("interval", "interval"), ("base_ejection_time", "baseEjectionTime")):
        secs = parse_duration(od.get(key))
        if secs is not None:
            getattr(out, field).CopyFrom(duration(secs))
    if _int(od.get("maxEjectionPercent")) > 0:
        out.max_ejection_percent.value = _int(od["maxEjectionPercent"])
    if od.get("splitExternalLocalOriginErrors"):
        out.split_external_local_origin_errors = True
        if _int(od.get("consecutiveLocalOriginFailures")) > 0:
            out.consecutive_local_origin_failure.value = _int(od["consecutiveLocalOriginFailures"])
            out.enforcing_consecutive_local_origin_failure.value = 100
        out.enforcing_local_origin_success_rate.value = 0
    c.outlier_detection.CopyFrom(out)
    min_health = _int(od.get("minHealthPercent"))
    c.common_lb_config.healthy_panic_threshold.value = float(max(min_health, 0))


def _to_original_dst(c: cluster_pb2.Cluster) -> None:
    c.type = cluster_pb2.Cluster.ORIGINAL_DST
    c.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    c.ClearField("load_assignment")
    c.ClearField("eds_cluster_config")


def apply_load_balancer(c: cluster_pb2.Cluster, lb: Mapping[str, Any] | None,
                        locality_setting: Mapping[str, Any] | None, enable_failover: bool,
                        passthrough_as_random: bool = False) -> None:
    """lb_policy from ``simple`` / ``consistentHash``, slow start from ``warmupDurationSecs``, and the
    locality-weighted LB config when Istio would set it. PASSTHROUGH turns the cluster into ORIGINAL_DST
    (the connection's destination, a Service VIP that kube-proxy balances randomly); with
    ``passthrough_as_random`` (local mode: no VIP, no kube-proxy) it stays on its endpoints with RANDOM."""
    lb = lb or {}
    if locality_setting and (locality_setting.get("distribute") or (enable_failover and (
            locality_setting.get("failover") or locality_setting.get("failoverPriority")))):
        c.common_lb_config.locality_weighted_lb_config.SetInParent()
    if c.type == cluster_pb2.Cluster.ORIGINAL_DST:
        c.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
        return
    simple = str(lb.get("simple") or "")
    if simple == "PASSTHROUGH":
        if passthrough_as_random:
            c.lb_policy = cluster_pb2.Cluster.RANDOM
        else:
            _to_original_dst(c)
        return
    c.lb_policy = _SIMPLE_LB.get(simple, DEFAULT_LB_POLICY)
    warmup = parse_duration(lb.get("warmupDurationSecs"))
    if warmup is not None:
        if c.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN:
            c.round_robin_lb_config.slow_start_config.slow_start_window.CopyFrom(duration(warmup))
        elif c.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST:
            c.least_request_lb_config.slow_start_config.slow_start_window.CopyFrom(duration(warmup))
    ch = lb.get("consistentHash")
    if not ch:
        return
    if ch.get("maglev") is not None:
        c.lb_policy = cluster_pb2.Cluster.MAGLEV
        if _int(ch["maglev"].get("tableSize")) > 0:
            c.maglev_lb_config.table_size.value = _int(ch["maglev"]["tableSize"])
    elif ch.get("ringHash") is not None:
        c.lb_policy = cluster_pb2.Cluster.RING_HASH
        if _int(ch["ringHash"].get("minimumRingSize")) > 0:
            c.ring_hash_lb_config.minimum_ring_size.value = _int(ch["ringHash"]["minimumRingSize"])
    else:
        c.lb_policy = cluster_pb2.Cluster.RING_HASH
        c.ring_hash_lb_config.minimum_ring_size.value = _int(ch.get("minimumRingSize")) or 1024
