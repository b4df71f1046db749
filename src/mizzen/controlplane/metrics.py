"""The control plane's ``/metrics``: istiod's metric names and labels (``pilot/pkg/xds/monitoring.go``,
``discovery.go``) in Prometheus text format, one registry per control plane (so several can live in one
process), plus process metrics.

Pushes, rejects and convergence are observed from the xDS sync status (:class:`ObservedStatus` sees every
response, ACK and NACK the ADS server records), so the protocol layer needs no metrics code.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)

import mizzen
from mizzen.xds.cache import SnapshotCache, TypeSnapshot
from mizzen.xds.resources import SHORT
from mizzen.xds.status import ProxyStatus, SyncStatus, TypeStatus

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "ObservedStatus", "metric_type"]

_PUSH_BUCKETS = (.01, .1, 1, 3, 5, 10, 20, 30)
_CONVERGENCE_BUCKETS = (.1, .5, 1, 3, 5, 10, 20, 30)


_ISTIO_COUNTERS = frozenset({"pilot_xds_pushes", "pilot_total_xds_rejects", "pilot_xds_write_timeout",
                             "pilot_inbound_updates", "pilot_push_triggers", "pilot_k8s_cfg_events",
                             "pilot_k8s_reg_events", "pilot_total_xds_internal_errors",
                             "galley_validation_passed", "galley_validation_failed"})
# an apply's action -> Istio's config event (pilot/pkg/model/monitoring: event="add"|"update"|"delete")
CONFIG_EVENTS = {"created": "add", "configured": "update", "deleted": "delete"}


def metric_type(type_url: str) -> str:
    """Istio's GetMetricType: ``cds``, ``eds``, ``lds``, ``rds``, ``sds``; other types by their URL."""
    short = SHORT.get(type_url)
    return short.lower() if short else type_url


class Metrics:
    """The metric objects, registered in their own :class:`CollectorRegistry`."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        process_collector.ProcessCollector(registry=r)
        platform_collector.PlatformCollector(registry=r)
        gc_collector.GCCollector(registry=r)
        self.xds_clients = Gauge("pilot_xds", "Number of endpoints connected to this pilot using XDS.",
                                 ["version"], registry=r)
        self.pushes = Counter("pilot_xds_pushes", "Pilot build and send errors for lds, rds, cds and eds.",
                              ["type"], registry=r)
        self.push_time = Histogram("pilot_xds_push_time",
                                   "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
                                   ["type"], buckets=_PUSH_BUCKETS, registry=r)
        self.convergence = Histogram(
            "pilot_proxy_convergence_time",
            "Delay in seconds between config change and a proxy receiving all required configuration.",
            buckets=_CONVERGENCE_BUCKETS, registry=r)
        self.debounce_time = Histogram(
            "pilot_debounce_time",
            "Delay in seconds between the first config enters debouncing and the merged push request is "
            "pushed into the push queue.", buckets=_PUSH_BUCKETS, registry=r)
        self.pushcontext_init = Histogram("pilot_pushcontext_init_seconds",
                                          "Total time in seconds Pilot takes to init pushContext.",
                                          buckets=(.01, .1, 0.5, 1, 3, 5), registry=r)
        self.rejects = Counter("pilot_total_xds_rejects",
                               "Total number of XDS responses from pilot rejected by proxy.", ["type"],
                               registry=r)
        self.write_timeouts = Counter("pilot_xds_write_timeout", "Pilot XDS response write timeouts.",
                                      registry=r)
        self.inbound_updates = Counter("pilot_inbound_updates", "Total number of updates received by pilot.",
                                       ["type"], registry=r)
        self.push_triggers = Counter("pilot_push_triggers",
                                     "Total number of times a push was triggered, labeled by reason for the "
                                     "push.", ["type"], registry=r)
        self.config_size = Histogram("pilot_xds_config_size_bytes",
                                     "Distribution of configuration sizes pushed to clients", ["type"],
                                     buckets=(1, 10000, 1000000, 4000000, 10000000, 40000000), registry=r)
        # what istiod's config and service-registry controllers count (``pilot_k8s_cfg_events{type=<kind>,
        # event}``, ``pilot_k8s_reg_events{type="Services"|"Pods",event}``); here the API's applies and the
        # workloads the runner registers
        self.config_events = Counter("pilot_k8s_cfg_events", "Events from k8s config.", ["type", "event"],
                                     registry=r)
        self.registry_events = Counter("pilot_k8s_reg_events", "Events from k8s registry.", ["type", "event"],
                                       registry=r)
        self.internal_errors = Counter("pilot_total_xds_internal_errors",
                                       "Total number of internal XDS errors in pilot.", registry=r)
        # istiod's validation webhook counts every object it admits or refuses; our API validates each apply
        self.validation_passed = Counter("galley_validation_passed", "Resource is valid",
                                         ["group", "version", "resource"], registry=r)
        self.validation_failed = Counter("galley_validation_failed", "Resource validation failed",
                                         ["group", "version", "resource", "reason"], registry=r)
        self.services = Gauge("pilot_services", "Total services known to pilot.", registry=r)
        build = Gauge("istio_build", "Istio component build info", ["component", "tag"], registry=r)
        build.labels(component="pilot", tag=mizzen.__version__).set(1)

    def exposition(self) -> bytes:
        """Text format with istiod's names: its counters carry no ``_total`` suffix and no ``_created``
        series (Istio exports without counter suffixes)."""
        out = []
        for line in generate_latest(self.registry).decode().splitlines():
            name = line.split(" ", 3)[2] if line.startswith("#") else line.split("{", 1)[0].split(" ", 1)[0]
            if name.endswith("_created"):
                continue
            base = name.removesuffix("_total")
            if base in _ISTIO_COUNTERS:
                line = line.replace(name, base, 1) if not line.startswith("#") else line.replace(
                    f" {name} ", f" {base} ", 1)
            out.append(line)
        return ("\n".join(out) + "\n").encode()


class ObservedStatus(SyncStatus):
    """Sync status that also feeds the metrics: connected proxies by version, every response sent (by
    type, with its size), every NACK, and each proxy's convergence time after a push changed its config.
    Each is counted at its own stream event (``sent``, ``nacked``, ...): nothing walks a stream's types."""

    def __init__(self, cache: SnapshotCache, metrics: Metrics) -> None:
        super().__init__(cache)
        self._m = metrics
        self._cache_ref = cache
        self._nacked: dict[tuple[int, str], str] = {}   # (stream, type) -> nonce of its last NACK counted
        self._versions: dict[int, str] = {}
        self._pending: dict[str, float] = {}   # node -> monotonic time of the change it must converge on
        # node -> (when its generation began in the last push that changed it, the types written since)
        self._generated: dict[str, tuple[float, set[str]]] = {}
        self._sizes: OrderedDict[tuple[str, str], int] = OrderedDict()
        # metric children by type URL (``labels()`` costs a lock and a lookup per call)
        self._by_type: dict[str, tuple[Any, Any, Any]] = {}
        # called with the node id at each ACK or other move that can make it synced (the distribution
        # tracker of PILOT_ENABLE_STATUS); None: nothing
        self.on_ack: Callable[[str], None] | None = None

    def _children(self, type_url: str) -> tuple[Any, Any, Any]:
        """(pushes, config size, push time) of ``type_url``."""
        c = self._by_type.get(type_url)
        if c is None:
            kind = metric_type(type_url)
            c = self._by_type[type_url] = (self._m.pushes.labels(type=kind), self._m.config_size.labels(
                type=kind), self._m.push_time.labels(type=kind))
        return c

    def changed(self, node_ids: list[str], since: float, generated: dict[str, float] | None = None) -> None:
        """A push changed these nodes' config; ``since`` is when the change entered the debouncer,
        ``generated[node]`` when the push began generating that node's config."""
        for n in node_ids:
            self._pending.setdefault(n, since)
            if generated is not None and n in generated:
                self._generated[n] = (generated[n], set())

    def written(self, node_id: str, type_url: str, started: float) -> None:
        """``pilot_xds_push_time``, per response like istiod's pushXds: from the start of the proxy's
        generation in the push that changed it to its response of the type written (the first of each type
        after that push); for other responses (answers to requests, served from the cache) the write."""
        now = time.monotonic()
        gen = self._generated.get(node_id)
        if gen is not None and type_url not in gen[1]:
            gen[1].add(type_url)
            started = gen[0]
        self._children(type_url)[2].observe(max(0.0, now - started))

    def write_timeout(self, node_id: str, type_url: str) -> None:
        self._m.write_timeouts.inc()

    def connect(self, ps: ProxyStatus) -> None:
        version = str(ps.metadata.get("ISTIO_VERSION") or mizzen.__version__)
        self._versions[ps.stream_id] = version
        self._m.xds_clients.labels(version=version).inc()
        super().connect(ps)

    def disconnect(self, ps: ProxyStatus) -> bool:
        version = self._versions.pop(ps.stream_id, None)
        if version is not None:
            self._m.xds_clients.labels(version=version).dec()
        for type_url in ps.types:
            self._nacked.pop((ps.stream_id, type_url), None)
        last = super().disconnect(ps)
        if last:
            self._pending.pop(ps.node_id, None)
            self._generated.pop(ps.node_id, None)
        return last

    def sent(self, ps: ProxyStatus, ts: TypeStatus) -> None:
        pushes, config_size, _t = self._children(ts.type_url)
        pushes.inc()
        size = self._size(ps.node_id, ts.type_url)
        if size is not None:
            config_size.observe(size)

    def nacked(self, ps: ProxyStatus, ts: TypeStatus) -> None:
        assert ts.nack is not None
        key = (ps.stream_id, ts.type_url)
        if self._nacked.get(key) != ts.nack.nonce:   # Envoy may NACK one response more than once
            self._nacked[key] = ts.nack.nonce
            self._m.rejects.labels(type=metric_type(ts.type_url)).inc()
        self._converged(ps.node_id)
        super().nacked(ps, ts)

    def acked(self, ps: ProxyStatus, ts: TypeStatus) -> None:
        self._converged(ps.node_id)
        if self.on_ack is not None:
            self.on_ack(ps.node_id)
        super().acked(ps, ts)

    def moved(self, ps: ProxyStatus) -> None:
        self._converged(ps.node_id)
        if self.on_ack is not None:
            self.on_ack(ps.node_id)
        super().moved(ps)

    def _converged(self, node_id: str) -> None:
        """``pilot_proxy_convergence_time`` once the node a push changed is synced."""
        since = self._pending.get(node_id)
        if since is not None and self.is_synced(node_id):
            del self._pending[node_id]
            self._m.convergence.observe(time.monotonic() - since)

    def _size(self, node_id: str, type_url: str) -> int | None:
        snap = self._cache_ref.get(node_id)
        if snap is None:
            return None
        tsnap: TypeSnapshot = snap.of(type_url)
        key = (type_url, tsnap.version)
        size = self._sizes.get(key)
        if size is None:
            size = self._sizes[key] = sum(len(p.any.value) for p in tsnap.resources.values())
            if len(self._sizes) > 4096:
                self._sizes.popitem(last=False)
        return size
