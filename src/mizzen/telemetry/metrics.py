"""Istio's standard metrics, counted by Envoy's ``envoy.access_loggers.stats`` on each proxy's own listeners.

Names and labels are Istio's (``istio_requests_total``, ``istio_request_duration_milliseconds``,
``istio_request_bytes``, ``istio_response_bytes``, ``istio_tcp_*``; ``reporter``, ``source_*``,
``destination_*``, ``request_protocol``, ``response_code``, ``grpc_response_status``, ``response_flags``,
``connection_security_policy``). Envoy keeps them under the stat prefix ``istiocustom`` (Istio's own custom
stat namespace); the agent's Prometheus endpoints drop Envoy's ``envoy_istiocustom_`` prefix
(:mod:`mizzen.telemetry.prometheus`).

Label values, per side (no per-request Python, nothing per proxy outside LDS):

- the proxy's own side (``source_*`` at a client sidecar or gateway, ``destination_*`` at a server sidecar)
  is a constant in the logger (LDS is per proxy);
- a server's peer over HTTP comes from the client's request header, kept in the request's filter state by
  :mod:`mizzen.telemetry.exchange` (``unknown`` when absent);
- a client (HTTP and TCP) reads the destination from the chosen endpoint's metadata (EDS, shared; over HTTP
  ``unknown`` without an endpoint or metadata) and the service from the cluster's metadata (CDS, shared); a
  server's TCP stats carry the peer's principal and address, which the agent turns into the source labels
  with the control plane's address-to-workload map, trusted only when the principal matches
  (:mod:`mizzen.telemetry.peer_address`);
- ``connection_security_policy`` and the principals come from the connection's certificates (Envoy's
  built-in ``%CEL(...)%`` formatter): ``mutual_tls`` with the peer's and own SPIFFE IDs when the server's
  downstream presented a client certificate, else ``none`` and ``unknown`` (the source reporter: ``unknown``
  policy, principals of the upstream TLS connection);
- ``request_protocol`` is ``grpc`` for ``content-type: application/grpc*`` requests (a second logger
  behind a header filter), ``http`` otherwise, ``tcp`` for TCP.

Over HTTP every stat has one tag packing all these labels into one format string, which the agent expands
into Istio's labels where it serves Prometheus text (:mod:`mizzen.telemetry.packed`: per-tag formatting and
encoding was most of the per-request cost); TCP stats keep a tag per label.

``istio_requests_total`` over HTTP is no stat of its own when ``istio_request_duration_milliseconds`` is
enabled too (each stat costs ~7k instructions per request and proxy, most of it the logger's fixed path):
the loggers record the duration as :data:`COUNTED_DURATION`, and the agent serves it as Istio's duration
histogram and each series' ``_count`` as ``istio_requests_total`` with the same labels
(:func:`mizzen.telemetry.prometheus.with_request_count`). A histogram's count is exact and cumulative, but
Envoy merges its workers' histograms only at a stats flush (every 5 s by default), so the bootstrap flushes
on admin stats reads (``stats_flush_on_admin``, no flush timer) and the agent waits, before each scrape, for a
flush begun after the scrape started (:func:`mizzen.agent.metrics_server.merged_histograms`): a reader who
scrapes after requests completed sees them all, as with a counter. The price: Envoy's own admin shows the
counted histogram instead of the counter, Envoy's stats (server gauges too) are flushed only when read, and a
scrape costs ~3 extra admin round trips (~1 ms each) while Envoy holds the counted histogram (none without
it). Either metric disabled (Telemetry API): a real counter.

The logger's behaviour (counters, histograms, tags from command operators, empty operators -> empty tag) is
pinned by ``tests/telemetry/test_telemetry_stats_logger.py`` against the real Envoy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.data.accesslog.v3 import accesslog_pb2 as data_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.access_loggers.stats.v3 import stats_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2

from mizzen.core.workload_labels import PEER_FIELDS, PEER_KEY, PEER_METADATA, SERVICE_KEY, UNKNOWN, PeerLabels
from mizzen.telemetry import packed, peer_address
from mizzen.telemetry.exchange import PEER_OPERATOR

__all__ = [
    "STATS_LOGGER",
    "STAT_NAMESPACE",
    "Metric",
    "Reporter",
    "ServiceLabels",
    "http_loggers",
    "tcp_loggers",
    "with_stats_scope",
]

_J = TypeVar("_J")

STATS_LOGGER = "envoy.access_loggers.stats"
STAT_NAMESPACE = "istiocustom"        # Istio's custom stat prefix; Envoy renders envoy_istiocustom_<name>


class Reporter(str, Enum):
    SOURCE = "source"              # a client sidecar's outbound, or a gateway
    DESTINATION = "destination"    # a server sidecar's inbound


class Metric(str, Enum):
    """Istio's standard metrics; the names are the Telemetry API's ``overrides.match.metric`` values."""

    REQUEST_COUNT = "istio_requests_total"
    REQUEST_DURATION = "istio_request_duration_milliseconds"
    REQUEST_SIZE = "istio_request_bytes"
    RESPONSE_SIZE = "istio_response_bytes"
    TCP_OPENED_CONNECTIONS = "istio_tcp_connections_opened_total"
    TCP_CLOSED_CONNECTIONS = "istio_tcp_connections_closed_total"
    TCP_SENT_BYTES = "istio_tcp_sent_bytes_total"
    TCP_RECEIVED_BYTES = "istio_tcp_received_bytes_total"


HTTP_METRICS = (Metric.REQUEST_COUNT, Metric.REQUEST_DURATION, Metric.REQUEST_SIZE, Metric.RESPONSE_SIZE)
TCP_METRICS = (Metric.TCP_OPENED_CONNECTIONS, Metric.TCP_CLOSED_CONNECTIONS, Metric.TCP_SENT_BYTES,
               Metric.TCP_RECEIVED_BYTES)


@dataclass(frozen=True)
class ServiceLabels:
    """``destination_service``, ``destination_service_name``, ``destination_service_namespace``."""

    host: str = UNKNOWN
    name: str = UNKNOWN
    namespace: str = UNKNOWN


def _peer_from_metadata(prefix: str) -> dict[str, str]:
    return {f"{prefix}_{f}": PEER_OPERATOR for f in PEER_FIELDS}


def _peer_from_endpoint(prefix: str) -> dict[str, str]:
    return {f"{prefix}_{f}": f"%UPSTREAM_METADATA({PEER_METADATA}:{f})%" for f in PEER_FIELDS}


def _peer_constant(prefix: str, me: PeerLabels) -> dict[str, str]:
    return {f"{prefix}_{k}": v for k, v in me.fields().items()}


_SERVICE_FROM_CLUSTER = {
    "destination_service": f"%CLUSTER_METADATA({PEER_METADATA}:service)%",
    "destination_service_name": f"%CLUSTER_METADATA({PEER_METADATA}:service_name)%",
    "destination_service_namespace": f"%CLUSTER_METADATA({PEER_METADATA}:service_namespace)%",
}

# mTLS labels from the connection's certificates: the server sidecar's downstream presented a client
# certificate (Istio's mutual_tls, else none) and its URI SAN is the source's SPIFFE ID, the local
# certificate's the destination's; the client side reads the upstream connection's certificates and, as
# Istio's source reporter, says unknown for the policy. No certificate -> unknown.
#
# A server's TCP loggers come in two sets, split by a CEL access-log filter on connection.mtls (once per
# connection: tcp_loggers), each with constants or the plain SANs; a client's read the upstream SANs with CEL
# formatters. HTTP loggers carry the plain SANs in their
# packed tag and the agent derives the labels when it expands it (no CEL per request: packed.MODES):
# ``?`` empty -> unknown; ``!`` mutual_tls when the peer's SAN is there, else none. Our CA's certificates all
# carry a SPIFFE URI SAN, so "the peer's SAN is there" is "the peer presented a certificate" (CEL's
# ``connection.mtls``); the server's SAN without the peer's (TLS without a client certificate, which no
# sidecar inbound chain accepts) reports that SAN instead of ``unknown``.
_MTLS = "connection.mtls"
_DOWNSTREAM_HTTP = {"connection_security_policy": "%DOWNSTREAM_PEER_URI_SAN%",
                    "source_principal": "%DOWNSTREAM_PEER_URI_SAN%",
                    "destination_principal": "%DOWNSTREAM_LOCAL_URI_SAN%"}
_DOWNSTREAM_MODES = {"connection_security_policy": packed.MTLS_FROM_PEER_SAN, "source_principal":
                     packed.EMPTY_IS_UNKNOWN, "destination_principal": packed.EMPTY_IS_UNKNOWN}


def _upstream_san(attr: str) -> str:
    return f"%CEL((has(upstream.{attr}) && upstream.{attr} != '') ? upstream.{attr} : '{UNKNOWN}')%"


_UPSTREAM_MTLS = {
    "connection_security_policy": UNKNOWN,
    "source_principal": _upstream_san("uri_san_local_certificate"),
    "destination_principal": _upstream_san("uri_san_peer_certificate"),
}
# over HTTP the service's three labels are one cluster metadata string (one operator per stat, not three)
_SERVICE_OPERATOR = f"%CLUSTER_METADATA({PEER_METADATA}:{SERVICE_KEY})%"
_UPSTREAM_HTTP = {"connection_security_policy": UNKNOWN, "source_principal": "%UPSTREAM_LOCAL_URI_SAN%",
                  "destination_principal": "%UPSTREAM_PEER_URI_SAN%",
                  "destination_service": _SERVICE_OPERATOR, "destination_service_name": _SERVICE_OPERATOR,
                  "destination_service_namespace": _SERVICE_OPERATOR}
_UPSTREAM_MODES = {"source_principal": packed.EMPTY_IS_UNKNOWN,
                   "destination_principal": packed.EMPTY_IS_UNKNOWN,
                   "destination_service": packed.field(0), "destination_service_name": packed.field(1),
                   "destination_service_namespace": packed.field(2)}
# over HTTP a client's destination_* labels come from the chosen endpoint's metadata, all fields in one key
# (one operator per stat; the agent expands it); unknown without an endpoint (a local reply: fault abort,
# overflow, no healthy upstream) or without the metadata (not a mesh workload)
_ENDPOINT_PEER = f"%UPSTREAM_METADATA({PEER_METADATA}:{PEER_KEY})%"

_ORDER = packed.ISTIO_LABEL_ORDER


def base_labels(reporter: Reporter, me: PeerLabels, service: ServiceLabels | None,
                tcp: bool) -> dict[str, str]:
    """Every label except the protocol-specific ones, as ``value_format`` strings (over HTTP without the
    mTLS labels: see :func:`http_loggers`)."""
    labels: dict[str, str] = {"reporter": reporter.value}
    if reporter is Reporter.DESTINATION:
        labels |= _peer_constant("destination", me)
        # over TCP the server knows its peer's principal and address (tcp_loggers): the agent fills the
        # source labels from the control plane's address-to-workload map (telemetry.peer_address)
        labels |= {f"source_{f}": UNKNOWN for f in PEER_FIELDS} if tcp else _peer_from_metadata("source")
        svc = service or ServiceLabels()
        labels |= {"destination_service": svc.host, "destination_service_name": svc.name,
                   "destination_service_namespace": svc.namespace}
    else:
        labels |= _peer_constant("source", me)
        # the chosen endpoint's labels (EDS metadata), as over TCP: no response header to exchange
        labels |= _peer_from_endpoint("destination") if tcp else {
            f"destination_{f}": _ENDPOINT_PEER for f in PEER_FIELDS}
        labels |= _SERVICE_FROM_CLUSTER
        if tcp:
            labels |= _UPSTREAM_MTLS
    labels["response_flags"] = "%RESPONSE_FLAGS%"
    return labels


def _tags(labels: Mapping[str, str], removed: frozenset[str]) -> list[stats_pb2.Config.Tag]:
    keys = [k for k in _ORDER if k in labels] + sorted(k for k in labels if k not in _ORDER)
    # an empty value_format is invalid: a label with no value is reported as "unknown" (Istio's word)
    return [stats_pb2.Config.Tag(name=k, value_format=labels[k] or UNKNOWN) for k in keys if k not in removed]


def _stat(metric: Metric, labels: Mapping[str, str], removed: frozenset[str]) -> stats_pb2.Config.Stat:
    return stats_pb2.Config.Stat(name=metric.value, tags=_tags(labels, removed))


def _packed_tag(labels: Mapping[str, str], modes: Mapping[str, str],
                removed: frozenset[str]) -> stats_pb2.Config.Tag:
    """The HTTP stats' one tag: every label in one format string (:mod:`mizzen.telemetry.packed`)."""
    keys = [k for k in _ORDER if k in labels] + sorted(k for k in labels if k not in _ORDER)
    return stats_pb2.Config.Tag(name=packed.TAG, value_format=packed.value_format(
        labels, (PEER_OPERATOR, _ENDPOINT_PEER), [k for k in keys if k not in removed], modes))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


# Envoy 1.40 deprecates ``stat_prefix`` (a warning on every listener update) for ``stats_scope``
# (field 6, ``envoy.type.v3.Scope``, whose ``prefix`` is field 5); the pinned xds-protos predate both new
# fields, so they are appended as encoded bytes (Envoy parses them; our protobufs keep them as unknown fields)
_STATS_SCOPE = _len_field(6, _len_field(5, STAT_NAMESPACE.encode()))


def with_stats_scope(doc: _J) -> _J:
    """``doc`` (a JSON-ready rendering of Envoy config, e.g. from ``json_format.MessageToDict``) with the
    stats loggers' ``stats_scope``, which the rendering drops (our protobufs keep it as an unknown field):
    for static bootstraps and what tools print. Changes ``doc`` in place and returns it."""
    if isinstance(doc, dict):
        if doc.get("@type") == "type.googleapis.com/" + stats_pb2.Config.DESCRIPTOR.full_name and \
                "stat_prefix" not in doc and "stats_scope" not in doc:
            doc["stats_scope"] = {"prefix": STAT_NAMESPACE}
        for v in doc.values():
            with_stats_scope(v)
    elif isinstance(doc, list):
        for v in doc:
            with_stats_scope(v)
    return doc


def _logger(cfg: stats_pb2.Config,
            flt: accesslog_pb2.AccessLogFilter | None = None) -> accesslog_pb2.AccessLog:
    typed = any_pb2.Any(type_url="type.googleapis.com/" + cfg.DESCRIPTOR.full_name,
                        value=cfg.SerializeToString() + _STATS_SCOPE)
    log = accesslog_pb2.AccessLog(name=STATS_LOGGER, typed_config=typed)
    if flt is not None:
        log.filter.CopyFrom(flt)
    return log


def _grpc_filter(invert: bool) -> accesslog_pb2.AccessLogFilter:
    hm = route_components_pb2.HeaderMatcher(
        name="content-type", string_match=string_pb2.StringMatcher(prefix="application/grpc"),
        invert_match=invert, treat_missing_header_as_empty=True)
    return accesslog_pb2.AccessLogFilter(header_filter=accesslog_pb2.HeaderFilter(header=hm))


# Istio's request and response sizes: its stats filter (istio/proxy ``istio_stats``) records the downstream
# stream's wire bytes (``getDownstreamBytesMeter()->wireBytesReceived()`` / ``wireBytesSent()``: headers and
# body as the codec read and wrote them), which are Envoy's command operators of the same name: a counter
# read per request, no CEL evaluation (``request.total_size`` cost ~7.5k instructions per histogram)
REQUEST_TOTAL_SIZE = "%DOWNSTREAM_WIRE_BYTES_RECEIVED%"
RESPONSE_TOTAL_SIZE = "%DOWNSTREAM_WIRE_BYTES_SENT%"


# The request duration histogram's name when its exact count also stands for istio_requests_total (one stat
# fewer per request and proxy): the agent renames it back and derives the counter from its ``_count``
# (:func:`mizzen.telemetry.prometheus.istio_names`); only Envoy's own admin shows this name.
COUNTED_DURATION = Metric.REQUEST_DURATION.value + "_counted"


def _http_config(labels: Mapping[str, str], modes: Mapping[str, str], enabled: Iterable[Metric],
                 removed: frozenset[str]) -> stats_pb2.Config:
    cfg = stats_pb2.Config()
    H = stats_pb2.Config.Histogram
    tag = _packed_tag(labels, modes, removed)
    metrics = list(enabled)
    # both enabled, with the same tag (tag removals apply to the whole logger): the duration's count is the
    # request count; either disabled: a real counter (or none)
    counted = Metric.REQUEST_COUNT in metrics and Metric.REQUEST_DURATION in metrics
    for m in metrics:
        if counted and m is Metric.REQUEST_COUNT:
            continue
        name = COUNTED_DURATION if counted and m is Metric.REQUEST_DURATION else m.value
        stat = stats_pb2.Config.Stat(name=name, tags=[tag])
        if m is Metric.REQUEST_COUNT:
            c = cfg.counters.add(stat=stat)
            c.value_fixed.value = 1
        elif m is Metric.REQUEST_DURATION:
            cfg.histograms.add(stat=stat, unit=H.Milliseconds, value_format="%DURATION%")
        elif m is Metric.REQUEST_SIZE:
            cfg.histograms.add(stat=stat, unit=H.Bytes, value_format=REQUEST_TOTAL_SIZE)
        elif m is Metric.RESPONSE_SIZE:
            cfg.histograms.add(stat=stat, unit=H.Bytes, value_format=RESPONSE_TOTAL_SIZE)
    return cfg


def http_loggers(reporter: Reporter, me: PeerLabels, service: ServiceLabels | None = None,
                 enabled: Sequence[Metric] = HTTP_METRICS,
                 removed: frozenset[str] = frozenset()) -> list[accesslog_pb2.AccessLog]:
    """The HTTP connection manager's stats loggers: one for gRPC requests, one for the rest (a header filter
    on ``content-type``); exactly one logs each request."""
    metrics = [m for m in HTTP_METRICS if m in enabled]
    if not metrics:
        return []
    base = base_labels(reporter, me, service, tcp=False)
    server = reporter is Reporter.DESTINATION
    mtls, modes = (_DOWNSTREAM_HTTP, _DOWNSTREAM_MODES) if server else (_UPSTREAM_HTTP, _UPSTREAM_MODES)
    out = []
    for grpc in (False, True):
        labels = base | mtls | {
            "request_protocol": "grpc" if grpc else "http",
            "response_code": "%RESPONSE_CODE%",
            # Istio's: empty for plain HTTP (a constant: no formatter per request), the status for gRPC
            "grpc_response_status": "%GRPC_STATUS_NUMBER%" if grpc else packed.EMPTY,
        }
        out.append(_logger(_http_config(labels, modes, metrics, removed), _grpc_filter(invert=not grpc)))
    return out


def _log_type(*types: int) -> accesslog_pb2.AccessLogFilter:
    return accesslog_pb2.AccessLogFilter(log_type_filter=accesslog_pb2.LogTypeFilter(types=list(types)))


def _mtls_filter(mtls: bool) -> accesslog_pb2.AccessLogFilter:
    """Only connections whose downstream did (or did not) present a client certificate (CEL, once per
    connection)."""
    expr = cel_pb2.ExpressionFilter(expression=_MTLS if mtls else f"!{_MTLS}")
    return accesslog_pb2.AccessLogFilter(extension_filter=accesslog_pb2.ExtensionFilter(
        name="envoy.access_loggers.extension_filters.cel",
        typed_config=any_pb2.Any(type_url="type.googleapis.com/" + expr.DESCRIPTOR.full_name,
                                 value=expr.SerializeToString())))


def _when(*filters: accesslog_pb2.AccessLogFilter) -> accesslog_pb2.AccessLogFilter:
    if len(filters) == 1:
        return filters[0]
    return accesslog_pb2.AccessLogFilter(and_filter=accesslog_pb2.AndFilter(filters=list(filters)))


def _tcp_set(labels: Mapping[str, str], enabled: Sequence[Metric], removed: frozenset[str],
             *only: accesslog_pb2.AccessLogFilter) -> list[accesslog_pb2.AccessLog]:
    out = []
    if Metric.TCP_OPENED_CONNECTIONS in enabled:
        cfg = stats_pb2.Config()
        c = cfg.counters.add(stat=_stat(Metric.TCP_OPENED_CONNECTIONS, labels, removed))
        c.value_fixed.value = 1
        out.append(_logger(cfg, _when(_log_type(data_pb2.TcpUpstreamConnected), *only)))
    end = stats_pb2.Config()
    if Metric.TCP_CLOSED_CONNECTIONS in enabled:
        c = end.counters.add(stat=_stat(Metric.TCP_CLOSED_CONNECTIONS, labels, removed))
        c.value_fixed.value = 1
    if Metric.TCP_SENT_BYTES in enabled:
        end.counters.add(stat=_stat(Metric.TCP_SENT_BYTES, labels, removed), value_format="%BYTES_SENT%")
    if Metric.TCP_RECEIVED_BYTES in enabled:
        end.counters.add(stat=_stat(Metric.TCP_RECEIVED_BYTES, labels, removed),
                         value_format="%BYTES_RECEIVED%")
    if end.counters:
        out.append(_logger(end, _when(_log_type(data_pb2.TcpConnectionEnd), *only)))
    return out


def tcp_loggers(reporter: Reporter, me: PeerLabels, service: ServiceLabels | None = None,
                enabled: Sequence[Metric] = TCP_METRICS,
                removed: frozenset[str] = frozenset()) -> list[accesslog_pb2.AccessLog]:
    """tcp_proxy's stats loggers: connections opened (logged when the upstream connects: the tcp_proxy needs
    ``flush_access_log_on_connected``), closed and bytes (logged when the connection ends).

    A server's loggers come in two sets, told apart by a CEL filter on ``connection.mtls``: mTLS connections
    carry the peer's principal and address (the agent expands them into the source labels:
    :mod:`mizzen.telemetry.peer_address`), plaintext ones neither (``none``/``unknown`` constants), so a
    plaintext caller's address never becomes a stat of its own (no series per outside client in Envoy)."""
    labels = base_labels(reporter, me, service, tcp=True) | {"request_protocol": "tcp"}
    if reporter is Reporter.SOURCE:
        return _tcp_set(labels, enabled, removed)
    mtls = labels | {"connection_security_policy": "mutual_tls",
                     "source_principal": "%DOWNSTREAM_PEER_URI_SAN%",
                     "destination_principal": "%DOWNSTREAM_LOCAL_URI_SAN%",
                     peer_address.ADDRESS_TAG: peer_address.ADDRESS_OPERATOR}
    plain = labels | {"connection_security_policy": "none", "source_principal": UNKNOWN,
                      "destination_principal": UNKNOWN}
    return (_tcp_set(mtls, enabled, removed, _mtls_filter(True))
            + _tcp_set(plain, enabled, removed, _mtls_filter(False)))
