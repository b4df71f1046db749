"""Analysis messages in the ``status`` of Istio's config objects (Istio's ``PILOT_ENABLE_ANALYSIS``, Helm
value ``global.istiod.enableAnalysis``): leader-only work, under the Lease ``istio-analyze-leader``
(:data:`~mizzen.kube.leader.ANALYZE_CONTROLLER`, Istio's ``pkg/config/analysis/incluster`` controller).

The leader runs the analyzers over the cluster's config (an async callable handing back
:class:`Finding`\\ s, so this module knows nothing of the analyzers) and writes each object's messages to its
``status.validationMessages`` in Istio's ``AnalysisMessageBase`` shape::

    {"documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0101/",
     "level": "ERROR", "type": {"code": "IST0101", "name": "ReferencedResourceNotFound"}}

through the ``/status`` subresource (a JSON merge patch, so ``spec`` and other status fields, like
``conditions``, are left alone) with a field manager naming the writer (``pilot-discovery/<pod>``).
Messages that went away are cleared (the field removed; an emptied status is removed too, so no field
manager keeps owning an empty ``status``). An object whose status already holds exactly the
wanted messages (as the config source last read it: :attr:`KubeConfigSource.statuses`) is not written, so
a round without changes writes nothing. Rounds are coalesced: a change marks the writer dirty and a round
runs at most once per ``PILOT_ANALYSIS_INTERVAL`` (Istio's, 10 s by default, at least 1 s); writes within a
round are paced (:data:`WRITES_PER_SECOND`). Objects Mizzen rejected (not in the store) keep their status.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

from mizzen.asyncwait import wait_event
from mizzen.config import kinds
from mizzen.config.env import env_bool, env_duration
from mizzen.config.errors import Severity
from mizzen.config.model import ConfigKey
from mizzen.kube.rest import MERGE_PATCH, Object, call, status_of

__all__ = ["ANALYSIS_ENV", "DOC_PREFIX", "INTERVAL_ENV", "WRITES_PER_SECOND", "AnalysisStatusWriter",
           "Finding", "StatusWriter", "analysis_enabled", "analysis_interval", "field_manager", "status_path",
           "validation_messages"]

log = logging.getLogger(__name__)

ANALYSIS_ENV = "PILOT_ENABLE_ANALYSIS"
INTERVAL_ENV = "PILOT_ANALYSIS_INTERVAL"
DEFAULT_INTERVAL_S = 10.0
DOC_PREFIX = "https://istio.io/latest/docs/reference/config/analysis"
WRITES_PER_SECOND = 50.0
_LEVELS = {Severity.ERROR: "ERROR", Severity.WARNING: "WARNING", Severity.INFO: "INFO"}


@dataclass(frozen=True)
class Finding:
    """One analyzer message about one object."""

    kind: str
    namespace: str
    name: str
    code: str          # IST0101
    type_name: str     # ReferencedResourceNotFound
    severity: Severity


def analysis_enabled() -> bool:
    """``$PILOT_ENABLE_ANALYSIS`` true (Istio's default: off)."""
    return env_bool(ANALYSIS_ENV)


def analysis_interval() -> float:
    """``$PILOT_ANALYSIS_INTERVAL`` (a duration); below 1 s or unreadable: Istio's 10 s (with a warning)."""
    return env_duration(INTERVAL_ENV, DEFAULT_INTERVAL_S, minimum=1.0)


def field_manager(identity: str) -> str:
    """The writer's field manager: istiod's name and this replica's (at most 128 characters)."""
    return f"pilot-discovery/{identity}"[:128]


def validation_messages(findings: Iterable[Finding]) -> dict[ConfigKey, list[Object]]:
    """Each object's ``validationMessages`` (Istio's AnalysisMessageBase), in the findings' order."""
    out: dict[ConfigKey, list[Object]] = {}
    for f in findings:
        out.setdefault(ConfigKey(f.kind, f.namespace, f.name), []).append({
            "documentationUrl": f"{DOC_PREFIX}/{f.code.lower()}/",
            "level": _LEVELS.get(f.severity, "UNKNOWN"),
            "type": {"code": f.code, "name": f.type_name},
        })
    return out


def status_path(key: ConfigKey) -> str | None:
    """The ``/status`` subresource of an Istio config object (None for other kinds)."""
    kind = kinds.BY_NAME.get(key.kind)
    if kind is None or not kind.istio:
        return None      # only Istio's CRDs have a status with validationMessages
    ns = f"namespaces/{urllib.parse.quote(key.namespace)}/" if kind.namespaced and key.namespace else ""
    return f"/apis/{kind.group}/{kind.versions[0]}/{ns}{kind.plural}/{urllib.parse.quote(key.name)}/status"


class StatusWriter:
    """What the control plane's status writers share: rounds coalesced while :meth:`run` runs (on the
    leader: a change marks the writer (:meth:`mark`), a round runs at most once per ``interval_s``, a
    failed one is retried), and a ``/status`` JSON merge patch under the field manager ``manager`` that
    updates ``statuses`` (each object's status as last read or written). Subclasses write a round in
    :meth:`round`."""

    what = "status"     # for log messages

    def __init__(self, api: client.ApiClient, statuses: dict[ConfigKey, Object], manager: str,
                 interval_s: float) -> None:
        self.api = api
        self.statuses = statuses
        self.manager = manager
        self.interval_s = interval_s
        self.writes = 0          # status patches sent and accepted
        self.rounds = 0
        self._wake = asyncio.Event()

    def mark(self) -> None:
        """Something changed: a round at the next interval."""
        self._wake.set()

    async def run(self) -> None:
        self._wake.set()          # a new leader checks everything once
        while True:
            await wait_event(self._wake, self.next_timer())   # or sooner if something time-based is due
            self._wake.clear()
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as e:     # a bug in a round or the API server away: the next round retries
                log.warning("status: %s round failed (%s: %s); retrying", self.what, type(e).__name__, e)
                self._wake.set()
            await asyncio.sleep(self.interval_s)   # bursts of changes coalesce into one round per interval

    def next_timer(self) -> float | None:
        """Seconds until a round is due without a change (None: only on changes)."""
        return None

    async def round(self) -> int:
        """One pass; returns how many objects were written."""
        raise NotImplementedError

    async def patch(self, key: ConfigKey, path: str, body: Object) -> bool:
        """Merge-patch ``body`` (``{"status": ...}``) into ``key``'s status; False when the object is gone
        or the write failed (logged; the next round retries)."""
        query = urllib.parse.urlencode({"fieldManager": self.manager})
        try:
            obj = await call(self.api, "PATCH", f"{path}?{query}", body, content_type=MERGE_PATCH)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            status = status_of(e)
            if status == 404:      # deleted meanwhile: its watch event removes it
                return False
            why = f"API server answered {status} ({e})" if status else f"{type(e).__name__}: {e}"
            log.warning("status: writing the %s of %s %s/%s failed: %s", self.what, key.kind, key.namespace,
                        key.name, why)
            return False
        self.writes += 1
        self.statuses[key] = obj.get("status") or {}
        return True


class AnalysisStatusWriter(StatusWriter):
    """Keeps ``status.validationMessages`` of the objects ``statuses`` knows equal to ``analyze()``'s
    findings while :meth:`run` runs (on the leader). ``statuses`` maps each object the config source read
    (and Mizzen stores) to its ``status`` as last read; the writer updates it with what it wrote."""

    what = "validationMessages"

    def __init__(self, api: client.ApiClient, statuses: dict[ConfigKey, Object],
                 stored: Callable[[], Iterable[ConfigKey]],
                 analyze: Callable[[], Awaitable[Sequence[Finding]]], manager: str,
                 interval_s: float = DEFAULT_INTERVAL_S) -> None:
        super().__init__(api, statuses, manager, interval_s)
        self.stored = stored
        self.analyze = analyze

    async def round(self) -> int:
        """One analysis and the writes it needs; returns how many objects were written."""
        self.rounds += 1
        want = validation_messages(await self.analyze())
        written = 0
        for key in sorted(set(self.stored()), key=lambda k: (k.kind, k.namespace, k.name)):
            path = status_path(key)
            if path is None or key not in self.statuses:
                continue
            messages = want.get(key, [])
            have = (self.statuses.get(key) or {}).get("validationMessages") or []
            if have == messages:
                continue
            if await self._write(key, path, messages):
                written += 1
                await asyncio.sleep(1.0 / WRITES_PER_SECOND)
        return written

    async def _write(self, key: ConfigKey, path: str, messages: list[Object]) -> bool:
        others = {k for k in self.statuses.get(key) or {} if k != "validationMessages"}
        # cleared and nothing else in the status: the status goes, so no manager keeps owning an empty one
        body: dict[str, Any] = {"status": {"validationMessages": messages} if messages else
                                ({"validationMessages": None} if others else None)}
        if not await self.patch(key, path, body):
            return False
        log.info("status: %s %s/%s validationMessages %s", key.kind, key.namespace, key.name,
                 ", ".join(m["type"]["code"] for m in messages) or "cleared")
        return True
