"""This replica's distribution report ConfigMap (Istio's ``Reporter``, ``PILOT_ENABLE_STATUS`` under HA): runs
on every replica with status on, leader or not, so the leader of ``istio-status-leader`` can count every
replica's proxies (:mod:`mizzen.kube.distribution_report` has the report's shape and the leader's side).

A change (:meth:`DistributionReporter.mark`: a proxy ACKed newer config, came or went; the store changed)
makes the reporter build its report at most once per ``PILOT_STATUS_UPDATE_INTERVAL``; it writes the
ConfigMap when the counts differ from the last written ones, and otherwise at least every heartbeat
(:data:`~mizzen.kube.distribution_report.HEARTBEAT_S`: a timestamp refresh, so a dead replica's report
goes stale). The write is an unconditional PUT (the ConfigMap is this replica's alone), a POST when it is
absent; a failed write is retried with backoff (1 s doubling to 30 s). The ConfigMap is owned by this
replica's Pod when there is one (``$POD_NAME`` in its namespace), so Kubernetes collects it after a crash;
a clean stop deletes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping

from kubernetes_asyncio import client

from mizzen.asyncwait import wait_event
from mizzen.config.model import Config, ConfigKey
from mizzen.kube.distribution_report import (
    DATA_KEY,
    HEARTBEAT_S,
    LABEL,
    Report,
    build_report,
    report_name,
)
from mizzen.kube.reflector import Backoff
from mizzen.kube.rest import Object, call, status_of

__all__ = ["DistributionReporter"]

log = logging.getLogger(__name__)


class DistributionReporter:
    """Keeps ``<identity>-distribution`` in ``namespace`` current while :meth:`run` runs. ``stored``,
    ``generations``, ``rejected`` are the config source's and store's (as the status writer's);
    ``progress(config) -> (acked, connected)`` and ``connected()`` this replica's proxies."""

    def __init__(self, api: client.ApiClient, namespace: str, identity: str,
                 stored: Callable[[], Iterable[Config]], generations: Mapping[ConfigKey, int],
                 rejected: Mapping[ConfigKey, object], progress: Callable[[Config], tuple[int, int]],
                 connected: Callable[[], int], interval_s: float, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.api = api
        self.namespace = namespace
        self.identity = identity
        self.name = report_name(identity)
        self.stored = stored
        self.generations = generations
        self.rejected = rejected
        self.progress = progress
        self.connected = connected
        self.interval_s = interval_s
        self.heartbeat_s = heartbeat_s
        self.writes = 0
        self.last: Report | None = None       # the last report written
        self._written_at = 0.0
        self._owner: list[Object] | None = None
        self._wake = asyncio.Event()
        self._backoff = Backoff(initial=1.0, maximum=30.0)     # failed writes (API server away, too big)

    def mark(self) -> None:
        """Something changed: a report at the next interval."""
        self._wake.set()

    def report(self) -> Report:
        return build_report(self.identity, self.stored(), self.generations, self.rejected, self.progress,
                            self.connected())

    async def run(self) -> None:
        self._owner = await self._pod_owner()
        self._wake.set()
        try:
            while True:
                left = self.heartbeat_s - (time.monotonic() - self._written_at)
                if left > 0:
                    await wait_event(self._wake, left)   # (not wait_for: see mizzen.asyncwait)
                self._wake.clear()
                report = self.report()
                due = time.monotonic() - self._written_at >= self.heartbeat_s
                if due or not report.same_counts(self.last):
                    try:
                        await self._write(report)
                    except asyncio.CancelledError:
                        raise
                    except Exception as e:
                        status = status_of(e)
                        delay = self._backoff.delay()
                        log.warning("status: writing distribution report %s/%s failed (%s); retrying in "
                                    "%.1fs", self.namespace, self.name,
                                    f"API server answered {status}" if status else f"{type(e).__name__}: {e}",
                                    delay)
                        self._wake.set()
                        await asyncio.sleep(delay)
                    else:
                        self._backoff.reset()
                await asyncio.sleep(self.interval_s)
        finally:
            await self._delete()

    async def _write(self, report: Report) -> None:
        path = self._path("configmaps")
        meta: Object = {"name": self.name, "namespace": self.namespace, "labels": {LABEL: "true"}}
        if self._owner:
            meta["ownerReferences"] = self._owner
        body: Object = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                        "data": {DATA_KEY: report.to_yaml()}}
        try:
            await call(self.api, "PUT", f"{path}/{urllib.parse.quote(self.name)}", body)
        except Exception as e:
            if status_of(e) != 404:
                raise
            await call(self.api, "POST", path, body)
            log.info("status: created distribution report %s/%s", self.namespace, self.name)
        self.writes += 1
        self.last = report
        self._written_at = time.monotonic()

    async def _delete(self) -> None:
        """A clean stop: the report goes (bounded, so a stop never hangs on an API server away)."""
        if self.writes == 0:
            return
        path = f"{self._path('configmaps')}/{urllib.parse.quote(self.name)}"
        try:
            await call(self.api, "DELETE", path, timeout_s=2.0)
        except Exception as e:
            if status_of(e) != 404:
                log.warning("status: deleting distribution report %s/%s failed: %s", self.namespace,
                            self.name, type(e).__name__)
            return
        log.info("status: deleted distribution report %s/%s", self.namespace, self.name)

    async def _pod_owner(self) -> list[Object] | None:
        """This replica's Pod as the ConfigMap's controller (None outside a pod, or if it cannot be read)."""
        path = f"{self._path('pods')}/{urllib.parse.quote(self.identity)}"
        try:
            pod = await call(self.api, "GET", path, timeout_s=5.0)
        except asyncio.CancelledError:
            raise
        except Exception:
            return None
        meta = pod.get("metadata") or {}
        if not meta.get("uid"):
            return None
        return [{"apiVersion": "v1", "kind": "Pod", "name": meta.get("name", self.identity),
                 "uid": meta["uid"], "controller": True}]

    def _path(self, plural: str) -> str:
        return f"/api/v1/namespaces/{urllib.parse.quote(self.namespace)}/{plural}"
