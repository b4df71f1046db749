"""The telemetry listener plugin (Istio's telemetry networking plugin): for every chain core builds it adds
the peer-metadata exchange (an early header mutation at a client, a filter at a server), the stats loggers
of Istio's standard metrics, the access logs and, when a Telemetry resource sets a sampling percentage, the
HCM's ``tracing``.

Registered by :func:`mizzen.telemetry.register` where the control plane starts. Everything here reads the
proxy, the push and Telemetry resources only (``Telemetry`` is read by LDS, see ``config.kinds``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf.message import Message

from mizzen.config.labels import labels_match
from mizzen.core.plugins import Direction, ListenerContext, ListenerPlugin, Phased
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext
from mizzen.core.workload_labels import PeerLabels, peer_labels
from mizzen.telemetry import access_log, api, exchange
from mizzen.telemetry.metrics import (
    HTTP_METRICS,
    TCP_METRICS,
    Metric,
    Reporter,
    ServiceLabels,
    http_loggers,
    tcp_loggers,
)

__all__ = ["METADATA_EXCHANGE_PHASE", "TelemetryPlugin", "proxy_labels", "telemetry_sampling"]

# before authn/authz (100/200) and core's fault: local replies of later filters still get peer defaults
METADATA_EXCHANGE_PHASE = 50


def proxy_labels(proxy: Proxy) -> PeerLabels:
    """What a proxy reports about itself (its workload is the Deployment its pod belongs to)."""
    pod = proxy.workload_name or proxy.id.split("~")[2].partition(".")[0]
    return peer_labels(pod, proxy.namespace, proxy.labels)


def inbound_service(proxy: Proxy, push: PushContext, port: int) -> ServiceLabels:
    """The service a server sidecar reports for its inbound port: the first (by name) of its namespace's
    services that select it and target that port; ``unknown`` when none does."""
    found = []
    for svc in push.services_in(proxy.namespace):
        if svc.selector is None or not labels_match(svc.selector, proxy.labels):
            continue
        for sp in svc.ports:
            target = sp.target_port if sp.target_port is not None else sp.port
            if target == port or (isinstance(target, str) and port in proxy_named_ports(proxy, push, target)):
                found.append(svc)
                break
    if not found:
        return ServiceLabels()
    svc = min(found, key=lambda s: s.hostname)
    return ServiceLabels(svc.hostname, svc.name, svc.namespace)


def proxy_named_ports(proxy: Proxy, push: PushContext, name: str) -> set[int]:
    return {w.ports[name] for w in push.workloads_in(proxy.namespace)
            if (w.address == proxy.ip or w.name == proxy.workload_name) and name in w.ports}


def telemetry_sampling(ctx: ListenerContext) -> float | None:
    """The Telemetry API's ``randomSamplingPercentage`` for a chain (None: no Telemetry sets it): the sampling
    source :mod:`mizzen.tracing` consults before the mesh config's default."""
    return api.effective(ctx.proxy, ctx.push, ctx.direction is not Direction.INBOUND).sampling


# The filters and stats loggers are pure functions of these labels (alike proxies, e.g. a Deployment's pods,
# have the same): built once and shared, instead of per chain, proxy and push (they were most of an LDS push's
# CPU). Callers copy them into their listeners (protobuf ``extend``), never change them.
# Requests carry the client's labels to the server (an early header mutation at the client, a filter at the
# server, whose router strips the header); responses carry nothing (a client reads its destination's labels
# from the chosen endpoint's metadata)
_RECEIVE = exchange.receive_filter()


@functools.lru_cache(maxsize=4096)
def _early_send(me: PeerLabels) -> Message:
    return exchange.early_send(me)


@functools.lru_cache(maxsize=4096)
def _stats_loggers(http: bool, reporter: Reporter, me: PeerLabels, svc: ServiceLabels | None,
                   enabled: tuple[Metric, ...], removed: frozenset[str]) -> tuple[Message, ...]:
    loggers = http_loggers if http else tcp_loggers
    return tuple(loggers(reporter, me, svc, enabled, removed))


def _http_metrics(ctx: ListenerContext) -> bool:
    """Any HTTP metric enabled for the chain (else no exchange either)."""
    eff = api.effective(ctx.proxy, ctx.push, ctx.direction is not Direction.INBOUND)
    return not all(m in eff.metrics.disabled for m in HTTP_METRICS)


def _reporter(ctx: ListenerContext) -> Reporter:
    return Reporter.DESTINATION if ctx.direction is Direction.INBOUND else Reporter.SOURCE


class TelemetryPlugin(ListenerPlugin):
    name = "telemetry"
    reads = frozenset({"Telemetry"})   # and the registry (the inbound service)

    def http_filters(self, ctx: ListenerContext) -> Sequence[Phased]:
        if ctx.direction is not Direction.INBOUND or not _http_metrics(ctx):
            return ()
        return [Phased(METADATA_EXCHANGE_PHASE, _RECEIVE)]

    def request_headers_to_remove(self, ctx: ListenerContext) -> Sequence[str]:
        # the peer's header never reaches the app, metrics on or off (the router removes it: next to free)
        return (exchange.HEADER,) if ctx.direction is Direction.INBOUND else ()

    def early_header_mutations(self, ctx: ListenerContext) -> Sequence[Message]:
        if ctx.direction is Direction.INBOUND or not _http_metrics(ctx):
            return ()
        return [_early_send(proxy_labels(ctx.proxy))]

    def access_logs(self, ctx: ListenerContext) -> Sequence[Message]:
        outbound = ctx.direction is not Direction.INBOUND
        eff = api.effective(ctx.proxy, ctx.push, outbound)
        mesh = ctx.push.mesh
        if eff.access_logs is None:
            logs: list[Message] = list(access_log.mesh_access_logs(mesh))
        else:
            logs = [access_log.provider_access_log(mesh, a.provider, a.filter) for a in eff.access_logs]
        if not ctx.http:
            logs = [access_log.at_tcp_end_only(log) for log in logs]
        if ctx.port == 0:
            return logs           # passthrough / blackhole catch-alls: no service to report
        me = proxy_labels(ctx.proxy)
        reporter = _reporter(ctx)
        svc = inbound_service(ctx.proxy, ctx.push, ctx.port) if reporter is Reporter.DESTINATION else None
        disabled = eff.metrics.disabled
        enabled = tuple(m for m in (HTTP_METRICS if ctx.http else TCP_METRICS) if m not in disabled)
        logs.extend(_stats_loggers(ctx.http, reporter, me, svc, enabled, eff.metrics.removed_tags))
        return logs

    def tracing(self, ctx: ListenerContext) -> Message | None:
        eff = api.effective(ctx.proxy, ctx.push, ctx.direction is not Direction.INBOUND)
        if eff.sampling is None:
            return None
        return hcm_pb2.HttpConnectionManager.Tracing(random_sampling=percent_pb2.Percent(value=eff.sampling))
