"""Leader election on a ``coordination.k8s.io/v1`` Lease with client-go's semantics, as Istio's
``pkg/leaderelection`` runs it for the work only one control-plane replica may do.

One :class:`LeaderElection` is one Lease (Istio's election ids: :data:`NAMESPACE_CONTROLLER` for the
``istio-ca-root-cert`` publisher, :data:`VALIDATION_CONTROLLER` for the webhooks' caBundle patch,
:data:`STATUS_CONTROLLER` for the ``Reconciled`` distribution status, :data:`ANALYZE_CONTROLLER` for the
analysis messages written to config objects' status), in the control plane's namespace, held by
:func:`holder_identity` (``$POD_NAME``, as istiod). The timing is Istio's: a lease of ``ttl`` (30 s;
``$MIZZEN_LEADER_ELECTION_TTL`` for tests), a renew deadline of ttl/2 and a retry period of ttl/4.

The protocol is client-go's ``tryAcquireOrRenew``:

* read the Lease; absent: create it holding it (a 409 means another replica created it first: not ours);
* held by another whose record this replica has seen unchanged for less than the record's
  ``leaseDurationSeconds`` (measured on the local monotonic clock from when the record was first seen, so
  no clock skew between replicas matters): not ours;
* else write it back holding it (``renewTime`` now; ``acquireTime`` and ``leaseTransitions`` +1 when the
  holder changes), with the read ``resourceVersion``: a 409 means another replica wrote in between.

A candidate tries every retry period (+ up to 20 % jitter). A leader renews every retry period; a renewal
round retries until the renew deadline, counted from the round's start (one retry period after the last
successful renewal was sent). So the leader gives up at the latest ``retry + renew deadline`` (3/4 of the
lease) after sending its last successful renewal, cancels its leader-only tasks and waits for them (at most
1/8 of the lease), all before another replica may take the Lease (a full lease after it saw that
renewal). Leader-only work is coroutine factories (:meth:`LeaderElection.add_run_function`)
started as tasks on acquiring (restarted if one fails) and cancelled on loss; then the replica campaigns
again. A stopped replica (cancelled :meth:`~LeaderElection.run`) releases a Lease it holds (client-go's
``ReleaseOnCancel``), so a rolling restart does not wait a lease out.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import os
import random
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

from mizzen.config.durations import parse_duration
from mizzen.kube.rest import Object, call, status_of

__all__ = [
    "ANALYZE_CONTROLLER",
    "NAMESPACE_CONTROLLER",
    "STATUS_CONTROLLER",
    "TTL_ENV",
    "VALIDATION_CONTROLLER",
    "ElectionError",
    "LeaderElection",
    "RunFunction",
    "Timing",
    "holder_identity",
    "timing_from_env",
]

log = logging.getLogger(__name__)

NAMESPACE_CONTROLLER = "istio-namespace-controller-election"
VALIDATION_CONTROLLER = "istio-validation-controller-election"
STATUS_CONTROLLER = "istio-status-leader"          # Istio's status distribution (PILOT_ENABLE_STATUS)
ANALYZE_CONTROLLER = "istio-analyze-leader"        # Istio's in-cluster analysis (PILOT_ENABLE_ANALYSIS)
TTL_ENV = "MIZZEN_LEADER_ELECTION_TTL"

RunFunction = Callable[[], Coroutine[Any, Any, None]]


class ElectionError(ValueError):
    """A bad election setting (a one-line reason)."""


@dataclass(frozen=True)
class Timing:
    """client-go's LeaseDuration, RenewDeadline and RetryPeriod, in seconds."""

    lease_duration_s: float = 30.0
    renew_deadline_s: float = 15.0
    retry_period_s: float = 7.5

    @classmethod
    def from_ttl(cls, ttl_s: float) -> Timing:
        """Istio's: renew deadline ttl/2, retry period ttl/4."""
        return cls(ttl_s, ttl_s / 2, ttl_s / 4)

    def __post_init__(self) -> None:
        if not 0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ElectionError("leader election: want 0 < retry period < renew deadline < lease duration")
        if self.lease_duration_s < 1:
            raise ElectionError("leader election: the lease lasts at least 1s")


def timing_from_env() -> Timing:
    """``$MIZZEN_LEADER_ELECTION_TTL`` (a duration like 30s) or Istio's 30 s."""
    raw = os.environ.get(TTL_ENV, "").strip()
    if not raw:
        return Timing()
    ttl = parse_duration(raw)
    if ttl is None or ttl < 1:
        raise ElectionError(f"${TTL_ENV}={raw!r} is not a duration of at least 1s (like 30s)")
    return Timing.from_ttl(ttl)


def holder_identity() -> str:
    """``$POD_NAME`` (istiod's identity in its elections), else ``<hostname>-<pid>`` outside a pod."""
    return os.environ.get("POD_NAME", "").strip() or f"{socket.gethostname()}-{os.getpid()}"


def _micro_time(t: dt.datetime) -> str:
    """Kubernetes' MicroTime: RFC 3339 with microseconds, UTC."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElection:
    """Campaigns for one Lease until cancelled; runs the leader-only functions while it holds it."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str, identity: str,
                 timing: Timing | None = None) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing or Timing()
        self.leading = False
        self.terms = 0                       # how often this replica became leader
        self.holder: str | None = None       # the holder it last saw
        self.changed = asyncio.Event()       # set (and replaced) whenever leading flips; for waiters
        self._run_fns: list[tuple[str, RunFunction]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._observed: Object | None = None     # the Lease spec last seen
        self._observed_at = 0.0                  # monotonic time it was first seen
        self._renewed_at = 0.0                   # monotonic time the last successful write was sent
        self._last_error = ""

    @property
    def _collection(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"

    def add_run_function(self, name: str, fn: RunFunction) -> None:
        """Run ``fn()`` as a task whenever this replica leads (started now if it already does)."""
        self._run_fns.append((name, fn))
        if self.leading:
            self._tasks.append(self._start(name, fn))

    # --- the loop -------------------------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            while True:
                await self._acquire()
                self._lead()
                await self._renew_until_lost()
                await self._stop_leading()
                log.error("leader election %s: lost the lease (term %d); campaigning again", self.name,
                          self.terms)
        finally:
            was_leading = self.leading
            await self._stop_leading()
            if was_leading:
                await self._release()

    async def _acquire(self) -> None:
        t = self.timing
        while True:
            if await self._attempt(t.retry_period_s):
                return
            await asyncio.sleep(t.retry_period_s * random.uniform(1.0, 1.2))

    async def _renew_until_lost(self) -> None:
        t = self.timing
        while True:
            # rounds are timed from when the last successful renewal was sent, not from its answer, so a
            # slow answer cannot stretch the time this replica leads on an old renewal
            await asyncio.sleep(max(0.0, self._renewed_at + t.retry_period_s - time.monotonic()))
            deadline = self._renewed_at + t.retry_period_s + t.renew_deadline_s
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("leader election %s: could not renew within %.1fs", self.name,
                                t.renew_deadline_s)
                    return
                if await self._attempt(min(left, t.retry_period_s)):
                    break
                if self.holder not in (None, "", self.identity):
                    return                       # another replica holds it now
                await asyncio.sleep(min(t.retry_period_s, max(0.0, deadline - time.monotonic())))

    async def _attempt(self, timeout_s: float) -> bool:
        """One tryAcquireOrRenew, bounded by ``timeout_s``; errors are logged (once per kind) and False."""
        try:
            ok = await asyncio.wait_for(self._try_acquire_or_renew(), timeout=max(0.05, timeout_s))
        except TimeoutError:
            self._note_error("the API server did not answer in time")
            return False
        except asyncio.CancelledError:
            raise
        except Exception as e:   # the API server unreachable or refusing: retried, like client-go
            status = status_of(e)
            self._note_error(f"API server answered {status}" if status else f"{type(e).__name__}: {e}")
            return False
        self._last_error = ""
        return ok

    def _note_error(self, what: str) -> None:
        if what != self._last_error:
            log.warning("leader election %s: %s; retrying", self.name, what)
            self._last_error = what

    async def _try_acquire_or_renew(self) -> bool:
        now, sent = dt.datetime.now(dt.UTC), time.monotonic()
        try:
            lease = await call(self.api, "GET", f"{self._collection}/{self.name}",
                               timeout_s=self.timing.retry_period_s)
        except Exception as e:
            if status_of(e) != 404:
                raise
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(now, None)}
            try:
                created = await call(self.api, "POST", self._collection, body,
                                     timeout_s=self.timing.retry_period_s)
            except Exception as e2:
                if status_of(e2) == 409:
                    return False     # another replica created it first
                raise
            self._observe(created)
            self._renewed_at = sent
            return True
        self._observe(lease)
        spec: Object = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity:
            duration = float(spec.get("leaseDurationSeconds") or 0)
            if self._observed_at + duration > time.monotonic():
                return False
        lease["spec"] = self._spec(now, spec)
        try:
            updated = await call(self.api, "PUT", f"{self._collection}/{self.name}", lease,
                                 timeout_s=self.timing.retry_period_s)
        except Exception as e:
            if status_of(e) == 409:
                return False         # written by another replica since we read it
            raise
        self._observe(updated)
        self._renewed_at = sent
        return True

    def _spec(self, now: dt.datetime, old: Object | None) -> Object:
        same = old is not None and old.get("holderIdentity") == self.identity
        transitions = int((old or {}).get("leaseTransitions") or 0)
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": math.ceil(self.timing.lease_duration_s),
            "acquireTime": (old or {}).get("acquireTime") if same else _micro_time(now),
            "renewTime": _micro_time(now),
            "leaseTransitions": transitions if same or old is None else transitions + 1,
        }

    def _observe(self, lease: Object) -> None:
        spec = lease.get("spec") or {}
        if spec != self._observed:
            self._observed = spec
            self._observed_at = time.monotonic()
        self.holder = spec.get("holderIdentity") or None

    # --- leading --------------------------------------------------------------------------------------------
    def _lead(self) -> None:
        self.leading = True
        self.terms += 1
        self._flip()
        log.info("leader election %s: %s is the leader (term %d)", self.name, self.identity, self.terms)
        self._tasks = [self._start(name, fn) for name, fn in self._run_fns]

    def _start(self, name: str, fn: RunFunction) -> asyncio.Task[None]:
        return asyncio.create_task(self._supervise(name, fn), name=f"{self.name}: {name}")

    async def _supervise(self, name: str, fn: RunFunction) -> None:
        delay = 0.5
        while True:
            try:
                await fn()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.error("leader election %s: %s failed (%s: %s); restarting in %.1fs", self.name, name,
                          type(e).__name__, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _stop_leading(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.timing.lease_duration_s / 8)
            for task in pending:
                log.warning("leader election %s: task %s did not stop in time", self.name, task.get_name())
        if self.leading:
            self.leading = False
            self._flip()

    def _flip(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def _release(self) -> None:
        """Give the Lease up (holder empty, 1 s), so another replica takes over without waiting it out."""
        with contextlib.suppress(Exception):
            lease = await call(self.api, "GET", f"{self._collection}/{self.name}", timeout_s=2.0)
            spec: Object = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            now = _micro_time(dt.datetime.now(dt.UTC))
            lease["spec"] = {"leaseDurationSeconds": 1, "acquireTime": now, "renewTime": now,
                             "leaseTransitions": spec.get("leaseTransitions") or 0}
            await call(self.api, "PUT", f"{self._collection}/{self.name}", lease, timeout_s=2.0)
            log.info("leader election %s: released the lease", self.name)
