"""The Telemetry API (``telemetry.istio.io/v1`` ``Telemetry``): which Telemetry applies to a proxy and what it
says about metrics, access logging and tracing.

Scope as in Istio: a Telemetry in the root namespace without a selector is mesh-wide, one in a workload's
namespace without a selector applies to the namespace, one with ``selector.matchLabels`` matching the proxy's
labels to the workload. For each of ``metrics``, ``accessLogging`` and ``tracing`` the most specific Telemetry
that sets it wins (workload over namespace over mesh; the oldest, then the name, breaks ties).

Providers: ``envoy`` (Istio's built-in file access log: ``/dev/stdout``) and any other name are file
access logs to the mesh's ``accessLogFile`` (``/dev/stdout`` if unset) in the mesh's encoding/format;
``prometheus`` is the metrics provider. CEL ``filter.expression`` goes to Envoy's CEL access-log filter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mizzen.config.labels import labels_match
from mizzen.config.model import Config
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext
from mizzen.telemetry.metrics import HTTP_METRICS, TCP_METRICS, Metric

__all__ = ["AccessLogging", "Effective", "MetricsSettings", "effective", "mode_matches"]

KIND = "Telemetry"


def _selector(c: Config) -> Mapping[str, str] | None:
    sel = c.spec.get("selector") or {}
    labels = sel.get("matchLabels") if isinstance(sel, Mapping) else None
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) and labels else None


def _applicable(proxy: Proxy, push: PushContext) -> list[Config]:
    """Telemetries that apply to the proxy, least specific first."""
    root = push.mesh.root_namespace
    mesh = [c for c in push.configs.list(KIND, root) if _selector(c) is None]
    ns = [] if proxy.namespace == root else [c for c in push.configs.list(KIND, proxy.namespace)
                                              if _selector(c) is None]
    wl = [c for c in push.configs.list(KIND, proxy.namespace)
          if (sel := _selector(c)) is not None and labels_match(sel, proxy.labels)]

    def order(cs: list[Config]) -> list[Config]:
        # the oldest wins a tie, so it goes last
        return sorted(cs, key=lambda c: (c.created, c.name), reverse=True)

    return [*order(mesh), *order(ns), *order(wl)]


def mode_matches(match: Any, outbound: bool) -> bool:
    """``match.mode``: CLIENT (outbound, gateways), SERVER (inbound) or CLIENT_AND_SERVER (the default)."""
    mode = str((match or {}).get("mode") or "CLIENT_AND_SERVER").upper() if isinstance(match, Mapping) \
        else "CLIENT_AND_SERVER"
    return mode == "CLIENT_AND_SERVER" or (mode == "CLIENT") == outbound


@dataclass(frozen=True)
class AccessLogging:
    """One access log to add: the provider's name and an optional CEL filter."""

    provider: str
    filter: str = ""


@dataclass(frozen=True)
class MetricsSettings:
    disabled: frozenset[Metric] = frozenset()
    removed_tags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Effective:
    """What the Telemetry API says for one proxy and one direction; ``None`` fields: no Telemetry sets it."""

    access_logs: tuple[AccessLogging, ...] | None = None
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    sampling: float | None = None


_METRIC_NAMES: dict[str, tuple[Metric, ...]] = {
    "ALL_METRICS": (*HTTP_METRICS, *TCP_METRICS),
    "REQUEST_COUNT": (Metric.REQUEST_COUNT,),
    "REQUEST_DURATION": (Metric.REQUEST_DURATION,),
    "REQUEST_SIZE": (Metric.REQUEST_SIZE,),
    "RESPONSE_SIZE": (Metric.RESPONSE_SIZE,),
    "TCP_OPENED_CONNECTIONS": (Metric.TCP_OPENED_CONNECTIONS,),
    "TCP_CLOSED_CONNECTIONS": (Metric.TCP_CLOSED_CONNECTIONS,),
    "TCP_SENT_BYTES": (Metric.TCP_SENT_BYTES,),
    "TCP_RECEIVED_BYTES": (Metric.TCP_RECEIVED_BYTES,),
}


def _providers(entry: Mapping[str, Any]) -> list[str]:
    return [str(p.get("name")) for p in entry.get("providers") or ()
            if isinstance(p, Mapping) and p.get("name")]


def _metrics(entries: Sequence[Any], outbound: bool) -> MetricsSettings:
    disabled: set[Metric] = set()
    removed: set[str] = set()
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        providers = _providers(entry)
        if providers and "prometheus" not in providers:
            continue
        for o in entry.get("overrides") or ():
            if not isinstance(o, Mapping) or not mode_matches(o.get("match"), outbound):
                continue
            match = o.get("match") or {}
            name = str(match.get("metric") or "ALL_METRICS") if not match.get("customMetric") else ""
            targets = _METRIC_NAMES.get(name, ())
            if o.get("disabled") is True:
                disabled.update(targets)
            elif o.get("disabled") is False:
                disabled.difference_update(targets)
            for tag, op in (o.get("tagOverrides") or {}).items():
                if isinstance(op, Mapping) and str(op.get("operation") or "UPSERT").upper() == "REMOVE":
                    removed.add(str(tag))
    return MetricsSettings(frozenset(disabled), frozenset(removed))


def _access_logs(entries: Sequence[Any], outbound: bool) -> tuple[AccessLogging, ...]:
    out: dict[str, AccessLogging] = {}
    for entry in entries:
        if not isinstance(entry, Mapping) or not mode_matches(entry.get("match"), outbound):
            continue
        providers = _providers(entry) or ["envoy"]
        expr = str(((entry.get("filter") or {}).get("expression")) or "")
        for p in providers:
            if entry.get("disabled") is True:
                out.pop(p, None)
            else:
                out[p] = AccessLogging(p, expr)
    return tuple(out.values())


def _sampling(entries: Sequence[Any], outbound: bool) -> float | None:
    value: float | None = None
    for entry in entries:
        if not isinstance(entry, Mapping) or not mode_matches(entry.get("match"), outbound):
            continue
        if entry.get("randomSamplingPercentage") is not None:
            value = float(entry["randomSamplingPercentage"])
        if entry.get("disableSpanReporting") is True:
            value = 0.0
    return value


def effective(proxy: Proxy, push: PushContext, outbound: bool) -> Effective:
    """The Telemetry API's settings for a proxy's outbound (client) or inbound (server) chains."""
    key = ("telemetry.effective", proxy.namespace, tuple(sorted(proxy.labels.items())), outbound)
    return push.memoized(key, lambda: _effective(proxy, push, outbound))


def _effective(proxy: Proxy, push: PushContext, outbound: bool) -> Effective:
    metrics: list[Any] | None = None
    logs: list[Any] | None = None
    tracing: list[Any] | None = None
    for c in _applicable(proxy, push):          # least specific first: later ones replace
        if c.spec.get("metrics") is not None:
            metrics = list(c.spec.get("metrics") or ())
        if c.spec.get("accessLogging") is not None:
            logs = list(c.spec.get("accessLogging") or ())
        if c.spec.get("tracing") is not None:
            tracing = list(c.spec.get("tracing") or ())
    return Effective(
        access_logs=_access_logs(logs, outbound) if logs is not None else None,
        metrics=_metrics(metrics or (), outbound),
        sampling=_sampling(tracing, outbound) if tracing is not None else None,
    )
