"""Istio's config distribution status (``PILOT_ENABLE_STATUS``, off by default as in Istio): for each Istio
config object Mizzen accepted, ``status.observedGeneration`` and a ``Reconciled`` condition, written by the
leader of ``istio-status-leader`` (:data:`~mizzen.kube.leader.STATUS_CONTROLLER`) only::

    status:
      observedGeneration: 2
      conditions:
      - {type: Reconciled, status: "True", message: 1/1 proxies up to date.,
         lastProbeTime: "...", lastTransitionTime: "..."}

Istio's semantics (``pilot/pkg/status/distribution``, before Istio 1.23 removed the feature): an object at
generation *g* is reported once at least one connected proxy ACKed config holding it at *g*: then
``observedGeneration`` is *g* and the condition says how many of the connected proxies did ("k/n proxies up
to date."), ``True`` when all did. Until a proxy ACKed the new generation the status stays as it was (a
NACKing proxy leaves the object on its previous generation); with no proxy connected nothing is written.
Where the proxies stand comes from a callable (``progress(config) -> (acked, total)``: the control plane's
:class:`~mizzen.controlplane.distribution.DistributionTracker`), so this module knows nothing of xDS.

With several replicas the counts are summed over all of them, as Istio summed its reporters: every replica
writes a report ConfigMap (:mod:`mizzen.kube.distribution_reporter`), and the leader, while it leads, watches
the labelled ConfigMaps of its namespace (a :class:`~mizzen.kube.distribution_report.ReportIndex`). For an
object at generation *g*, acked = its own proxies that ACKed it + the other replicas' fresh reports' counts
for that object at *g*, total = its own connected proxies + their ``dataPlaneCount``; a report that changed,
came or went marks a round, and so does a report going stale (older than
:data:`~mizzen.kube.distribution_report.STALE_S`, ignored from then on).

Writes go through the ``/status`` subresource as a JSON merge patch of ``observedGeneration`` and
``conditions`` only (other conditions kept, ``validationMessages`` of :mod:`mizzen.kube.status` left
alone), under the field manager ``pilot-discovery/<pod>``. Rounds are coalesced: a change marks the writer
and a round runs at most once per ``PILOT_STATUS_UPDATE_INTERVAL`` (Istio's, 500 ms); writes are paced at
``PILOT_STATUS_QPS`` (Istio's, 100 a second). An object whose status already says it (as the config source
last read it, :attr:`KubeConfigSource.statuses`) is not written; ``lastTransitionTime`` moves only when the
condition's status flips (Kubernetes' convention; Istio's set both times at every write). Objects rejected
(not in the store, or their latest version refused while an older one serves) are not written.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubernetes_asyncio import client

from mizzen.asyncwait import wait_event
from mizzen.config.env import env_bool, env_duration, env_float
from mizzen.config.model import Config, ConfigKey
from mizzen.kube.distribution_report import LABEL, Report, ReportIndex, summed
from mizzen.kube.reflector import Reflector, ResourceType
from mizzen.kube.rest import Object
from mizzen.kube.status import StatusWriter, status_path

__all__ = ["QPS_ENV", "RECONCILED", "STATUS_ENV", "UPDATE_INTERVAL_ENV", "DistributionStatusWriter",
           "reconciled_condition", "status_enabled", "status_qps", "update_interval"]

log = logging.getLogger(__name__)

STATUS_ENV = "PILOT_ENABLE_STATUS"
UPDATE_INTERVAL_ENV = "PILOT_STATUS_UPDATE_INTERVAL"
QPS_ENV = "PILOT_STATUS_QPS"
DEFAULT_INTERVAL_S = 0.5
DEFAULT_QPS = 100.0
RECONCILED = "Reconciled"
SYNC_WAIT_S = 10.0      # how long a new leader waits for the first list of the reports before writing
_CONFIGMAPS = ResourceType("", "v1", "configmaps")


def status_enabled() -> bool:
    """``$PILOT_ENABLE_STATUS`` true (Istio's default: off)."""
    return env_bool(STATUS_ENV)


def update_interval() -> float:
    """``$PILOT_STATUS_UPDATE_INTERVAL`` (a duration, at least 10 ms), else Istio's 500 ms."""
    return env_duration(UPDATE_INTERVAL_ENV, DEFAULT_INTERVAL_S, minimum=0.01)


def status_qps() -> float:
    """``$PILOT_STATUS_QPS`` (a positive number: at least 0.01), else Istio's 100."""
    return env_float(QPS_ENV, DEFAULT_QPS, minimum=0.01)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def reconciled_condition(acked: int, total: int, previous: Mapping[str, Any] | None = None,
                         now: str | None = None) -> Object:
    """Istio's ``Reconciled`` IstioCondition for ``acked`` of ``total`` proxies."""
    status = "True" if acked == total else "False"
    now = now or _now()
    same = previous is not None and previous.get("status") == status and previous.get("lastTransitionTime")
    return {"type": RECONCILED, "status": status, "lastProbeTime": now,
            "lastTransitionTime": previous["lastTransitionTime"] if same and previous else now,
            "message": f"{acked}/{total} proxies up to date."}


def _reconciled(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for c in status.get("conditions") or ():
        if isinstance(c, Mapping) and c.get("type") == RECONCILED:
            return c
    return None


class DistributionStatusWriter(StatusWriter):
    """Keeps ``observedGeneration`` and the ``Reconciled`` condition of the stored Istio objects current
    while :meth:`run` runs (on the leader). ``statuses`` and ``generations`` are the config source's: each
    object's status as last read and the ``metadata.generation`` of the version the store holds;
    ``rejected`` its refused objects; ``stored()`` the store's objects; ``progress(config)`` (proxies that
    ACKed it, connected proxies) on this replica; ``reports`` the other replicas' reports (None: this
    replica's proxies only)."""

    what = "distribution status"

    def __init__(self, api: client.ApiClient, statuses: dict[ConfigKey, Object],
                 generations: Mapping[ConfigKey, int], rejected: Mapping[ConfigKey, object],
                 stored: Callable[[], Iterable[Config]], progress: Callable[[Config], tuple[int, int]],
                 manager: str, interval_s: float = DEFAULT_INTERVAL_S, qps: float = DEFAULT_QPS,
                 reports: ReportIndex | None = None) -> None:
        super().__init__(api, statuses, manager, interval_s)
        self.generations = generations
        self.rejected = rejected
        self.stored = stored
        self.progress = progress
        self.qps = qps
        self.reports = reports
        self._fresh: list[Report] = []     # the other replicas' fresh reports, as of this round

    async def run(self) -> None:
        """While leading: the other replicas' reports watched (if any are asked for) and the rounds run."""
        if self.reports is None:
            await super().run()
            return
        self.reports.on_change = self.mark
        reflector = Reflector(self.api, _CONFIGMAPS, self.reports,
                              field_selector=f"metadata.namespace={self.reports.namespace}",
                              label_selector=f"{LABEL}=true")
        task = asyncio.create_task(reflector.run(), name="distribution reports")
        try:
            if not await wait_event(reflector.synced, SYNC_WAIT_S):
                log.warning("status: the other replicas' distribution reports not listed within %.0fs; "
                            "counting this replica's proxies until they are", SYNC_WAIT_S)
            await super().run()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def next_timer(self) -> float | None:
        return self.reports.next_expiry() if self.reports is not None else None

    def counts(self, config: Config, generation: int) -> tuple[int, int]:
        """(proxies that ACKed ``config`` at ``generation``, connected proxies), over every replica."""
        acked, total = self.progress(config)
        more_acked, more_total = summed(self._fresh, config.key, generation)
        return acked + more_acked, total + more_total

    def wanted(self, config: Config) -> Object | None:
        """The status fields to write for ``config`` (observedGeneration, conditions), or None: nothing to
        report or already reported."""
        key = config.key
        path = status_path(key)
        generation = self.generations.get(key)
        if path is None or generation is None or key in self.rejected or key not in self.statuses:
            return None
        acked, total = self.counts(config, generation)
        if acked == 0 or total == 0:
            return None            # no proxy has this generation (yet): the status stays as it is
        have = self.statuses.get(key) or {}
        previous = _reconciled(have)
        condition = reconciled_condition(acked, total, previous)
        if (previous is not None and have.get("observedGeneration") == generation
                and previous.get("status") == condition["status"]
                and previous.get("message") == condition["message"]):
            return None
        others = [c for c in have.get("conditions") or () if not (isinstance(c, Mapping)
                                                                   and c.get("type") == RECONCILED)]
        return {"observedGeneration": generation, "conditions": [*others, condition]}

    async def round(self) -> int:
        """One pass over the stored objects; returns how many were written."""
        self.rounds += 1
        self._fresh = self.reports.fresh() if self.reports is not None else []
        written = 0
        for config in self.stored():     # (a ConfigSnapshot: by kind, namespace, name)
            body = self.wanted(config)
            if body is None:
                continue
            if await self._write(config.key, body):
                written += 1
                await asyncio.sleep(1.0 / self.qps)
        return written

    async def _write(self, key: ConfigKey, fields: Object) -> bool:
        path = status_path(key)
        assert path is not None
        if not await self.patch(key, path, {"status": fields}):
            return False
        condition = fields["conditions"][-1]
        log.info("status: %s %s/%s observedGeneration %s, Reconciled %s (%s)", key.kind, key.namespace,
                 key.name, fields["observedGeneration"], condition["status"], condition["message"])
        return True
