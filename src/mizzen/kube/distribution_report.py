"""The distribution reports control-plane replicas exchange for Istio's ``PILOT_ENABLE_STATUS`` under HA:
what one report holds, its ConfigMap text, and the leader's view of the other replicas' reports.

As Istio's ``pilot/pkg/status/distribution`` did before 1.23, every replica with status on is a reporter:
it keeps a ConfigMap ``<identity>-distribution`` (:func:`report_name`) in its namespace, labelled
``internal.istio.io/distribution-report: "true"``, whose key ``distribution-report`` is the YAML of a
:class:`Report`::

    reporter: istiod-7d9f-abc
    timestamp: "2026-12-07T08:11:02.123456Z"
    dataPlaneCount: 2
    inProgressResources:
      networking.istio.io/v1/virtualservices/default/reviews/3: 1

``inProgressResources`` maps Istio's resource key ``group/version/resource/namespace/name/generation``
(:func:`resource_key`) to how many of the reporter's proxies ACKed config holding that object at that
generation (objects none of its proxies has at their generation are left out: zero). ``timestamp`` is when
the reporter wrote it; a reporter rewrites it at least every heartbeat (:data:`HEARTBEAT_S`) even when
nothing changed, so a dead replica's report goes stale (``$MIZZEN_DISTRIBUTION_HEARTBEAT`` shortens it for
tests; the stale bound follows at four heartbeats).

:class:`ReportIndex` is the leader's view (a :class:`~mizzen.kube.reflector.Reflector` handler over the
labelled ConfigMaps): the other replicas' fresh reports, summed per object (:meth:`ReportIndex.progress`).
Its own ConfigMap is ignored (its proxies are counted from its own tracker). A report is fresh while its age
is at most :data:`STALE_S` (four heartbeats, Istio's one-minute ``StaleInterval``): the age is measured on
the leader's monotonic clock from when it saw that report's timestamp change, and a report it has not seen
change since it started watching is aged from its ``timestamp`` by the wall clock at first sight (so
replicas' clock skew matters only for reports left behind by replicas that stopped writing). Malformed
reports are ignored with one warning per version. Nothing here does I/O.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from mizzen.config import kinds
from mizzen.config.env import env_duration
from mizzen.config.model import Config, ConfigKey

__all__ = ["DATA_KEY", "HEARTBEAT_ENV", "HEARTBEAT_S", "LABEL", "STALE_S", "Report", "ReportError",
           "ReportIndex", "build_report", "heartbeat", "parse_report", "report_name", "resource_key",
           "summed"]

log = logging.getLogger(__name__)

LABEL = "internal.istio.io/distribution-report"     # Istio's labelKey, value "true"
DATA_KEY = "distribution-report"                     # Istio's dataField
HEARTBEAT_S = 15.0
STALE_S = 4 * HEARTBEAT_S
HEARTBEAT_ENV = "MIZZEN_DISTRIBUTION_HEARTBEAT"     # shorter for tests


def heartbeat() -> float:
    """``$MIZZEN_DISTRIBUTION_HEARTBEAT`` (a duration, at least 100 ms), else 15 s (stale after four)."""
    return env_duration(HEARTBEAT_ENV, HEARTBEAT_S, minimum=0.1)


class ReportError(ValueError):
    """A report that cannot be read (a one-line reason)."""


def report_name(identity: str) -> str:
    """The reporter's ConfigMap name (Istio's ``<pod>-distribution``)."""
    return f"{identity}-distribution"


def resource_key(key: ConfigKey, generation: int) -> str | None:
    """Istio's resource key ``group/version/resource/namespace/name/generation``; None for non-Istio kinds."""
    kind = kinds.BY_NAME.get(key.kind)
    if kind is None or not kind.istio:
        return None
    return "/".join((kind.group, kind.versions[0], kind.plural, key.namespace, key.name, str(generation)))


def _timestamp(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Report:
    """One replica's report: its connected proxies and, per resource key, how many of them ACKed it."""

    reporter: str
    timestamp: str
    data_plane_count: int
    in_progress: Mapping[str, int] = field(default_factory=dict)

    def to_yaml(self) -> str:
        return yaml.safe_dump({"reporter": self.reporter, "timestamp": self.timestamp,
                               "dataPlaneCount": self.data_plane_count,
                               "inProgressResources": dict(sorted(self.in_progress.items()))},
                              sort_keys=False)

    def same_counts(self, other: Report | None) -> bool:
        """Everything but the timestamp is equal (nothing to write but a heartbeat)."""
        return (other is not None and other.reporter == self.reporter
                and other.data_plane_count == self.data_plane_count and other.in_progress == self.in_progress)

    def when(self) -> dt.datetime:
        return _parse_time(self.timestamp)


def _parse_time(text: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(f"timestamp {text!r} is not an RFC 3339 time") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def build_report(reporter: str, stored: Iterable[Config], generations: Mapping[ConfigKey, int],
                 rejected: Mapping[ConfigKey, object], progress: Callable[[Config], tuple[int, int]],
                 data_plane_count: int, now: dt.datetime | None = None) -> Report:
    """The report of a replica whose store holds ``stored`` (at ``generations``; ``rejected`` left out) and
    whose proxies stand as ``progress(config) -> (acked, connected)`` says."""
    counts: dict[str, int] = {}
    if data_plane_count > 0:
        for config in stored:
            generation = generations.get(config.key)
            if generation is None or config.key in rejected:
                continue
            rkey = resource_key(config.key, generation)
            if rkey is None:
                continue
            acked, _ = progress(config)
            if acked > 0:
                counts[rkey] = acked
    return Report(reporter, _timestamp(now or dt.datetime.now(dt.UTC)), data_plane_count, counts)


def parse_report(text: str | None) -> Report:
    """A report from its ConfigMap text; :class:`ReportError` when it is not one."""
    if not text:
        raise ReportError(f"no {DATA_KEY!r} key")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ReportError(f"not YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ReportError("not a mapping")
    reporter, stamp, count = data.get("reporter"), data.get("timestamp"), data.get("dataPlaneCount")
    resources = data.get("inProgressResources") or {}
    if not isinstance(reporter, str) or not reporter:
        raise ReportError("no reporter")
    if not isinstance(stamp, str):
        raise ReportError("no timestamp")
    _parse_time(stamp)
    if not isinstance(count, int) or not _count(count):
        raise ReportError(f"dataPlaneCount {count!r} is not a count")
    if not isinstance(resources, dict):
        raise ReportError("inProgressResources is not a mapping")
    bad = next((k for k, v in resources.items() if not isinstance(k, str) or not _count(v)), None)
    if bad is not None:
        raise ReportError(f"inProgressResources[{bad!r}] is not a count")
    return Report(reporter, stamp, count, dict(resources))


def summed(reports: Iterable[Report], key: ConfigKey, generation: int) -> tuple[int, int]:
    """(the reports' proxies that ACKed ``key`` at ``generation``, their connected proxies)."""
    rkey = resource_key(key, generation)
    acked = total = 0
    for report in reports:
        total += report.data_plane_count
        if rkey is not None:
            acked += report.in_progress.get(rkey, 0)
    return acked, total


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


@dataclass
class _Seen:
    report: Report
    seen_at: float      # monotonic time the report's timestamp was (taken as) written


class ReportIndex:
    """The other replicas' reports in the leader's namespace, kept current by a reflector over the labelled
    ConfigMaps (``replace``/``upsert``/``delete``). ``on_change`` is called when a report changed, came or
    went. ``clock`` (monotonic) and ``wall`` (UTC now) are seams for tests."""

    def __init__(self, namespace: str, identity: str, stale_s: float = STALE_S,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.namespace = namespace
        self.own = report_name(identity)
        self.stale_s = stale_s
        self.on_change: Callable[[], None] | None = None
        self._clock = clock
        self._wall = wall
        self._reports: dict[str, _Seen] = {}          # ConfigMap name -> its report
        self._bad: dict[str, str] = {}                # ConfigMap name -> resourceVersion warned about
        self._stale: set[str] = set()                 # names logged as stale

    # --- the reflector's handler ----------------------------------------------------------------------------
    def replace(self, objects: list[dict[str, Any]]) -> None:
        names = set()
        for obj in objects:
            names.add(self._put(obj))
        for gone in (set(self._reports) | set(self._bad)) - names:
            self._forget(gone)
        self._changed()

    def upsert(self, obj: dict[str, Any]) -> None:
        self._put(obj)
        self._changed()

    def delete(self, obj: dict[str, Any]) -> None:
        name = str((obj.get("metadata") or {}).get("name", ""))
        if name in self._reports:
            log.info("status: distribution report %s/%s deleted", self.namespace, name)
        self._forget(name)
        self._changed()

    def _forget(self, name: str) -> None:
        self._reports.pop(name, None)
        self._bad.pop(name, None)
        self._stale.discard(name)

    def _put(self, obj: dict[str, Any]) -> str:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name", ""))
        if name == self.own or meta.get("namespace", self.namespace) != self.namespace:
            return name
        try:
            report = parse_report((obj.get("data") or {}).get(DATA_KEY))
        except ReportError as e:
            self._reports.pop(name, None)
            version = str(meta.get("resourceVersion", ""))
            if self._bad.get(name) != version:
                self._bad[name] = version
                log.warning("status: distribution report %s/%s ignored: %s", self.namespace, name, e)
            return name
        self._bad.pop(name, None)
        old = self._reports.get(name)
        if old is not None and old.report.timestamp == report.timestamp:
            old.report = report
            return name
        now = self._clock()
        if old is None:    # first sight: aged from its timestamp by the wall clock
            age = max(0.0, (self._wall() - report.when()).total_seconds())
            self._reports[name] = _Seen(report, now - age)
        else:
            self._reports[name] = _Seen(report, now)
        self._stale.discard(name)
        return name

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # --- the leader's questions -----------------------------------------------------------------------------
    def fresh(self) -> list[Report]:
        """The other replicas' reports not older than the stale bound."""
        now = self._clock()
        out = []
        for name, seen in sorted(self._reports.items()):
            if now - seen.seen_at <= self.stale_s:
                out.append(seen.report)
            elif name not in self._stale:
                self._stale.add(name)
                log.warning("status: distribution report %s/%s of %s not refreshed for %.0fs: ignored",
                            self.namespace, name, seen.report.reporter, now - seen.seen_at)
        return out

    def progress(self, key: ConfigKey, generation: int) -> tuple[int, int]:
        """(the other replicas' proxies that ACKed ``key`` at ``generation``, their connected proxies)."""
        return summed(self.fresh(), key, generation)

    def next_expiry(self) -> float | None:
        """Seconds until the next fresh report goes stale (a round is due then), None if none will."""
        now = self._clock()
        left = [seen.seen_at + self.stale_s - now for seen in self._reports.values()
                if now - seen.seen_at <= self.stale_s]
        return max(0.0, min(left)) + 0.01 if left else None
