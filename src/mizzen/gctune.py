"""Garbage-collector settings for the long-lived control-plane process.

With thousands of xDS streams the process holds hundreds of thousands of long-lived container objects,
and CPython's default collector (a young-generation pass every 700 allocations, a full pass whenever the
old generation grew by a quarter) spent a third of a push round's CPU walking them (bench/README.md).
:func:`configure` collects once and freezes what startup built (moved out of every later collection),
and raises the young-generation threshold: objects freed by reference counting never reach a collection,
so fewer, larger passes over the few survivors cost far less in total. :func:`refreeze_if_grown` repeats
the collect-and-freeze after the tracked set grew a lot (thousands of proxies connected): one deliberate
full collection instead of the automatic ones, which would otherwise keep rescanning the same objects.
Cyclic garbage is still collected: only what survived a full collection is frozen.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger(__name__)

__all__ = ["ROUND_YOUNG", "THRESHOLDS", "PushWindow", "configure", "refreeze_if_grown",
           "refreeze_periodically"]

THRESHOLDS = (50_000, 20, 10)     # young passes every 50,000 net allocations (default 700, 10, 10)
REFREEZE_MIN_NEW = 100_000        # tracked objects outside the frozen set that justify a refreeze
REFREEZE_RATIO = 0.5              # ... and at least this share of the frozen set
ROUND_YOUNG = 500_000             # young threshold while a push round is in flight (PushWindow)


def configure() -> None:
    """Collect, freeze what exists, raise the young-generation threshold. Call once startup is done."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


def refreeze_if_grown(min_new: int = REFREEZE_MIN_NEW, ratio: float = REFREEZE_RATIO) -> bool:
    """A full collection then a freeze, if the objects tracked outside the frozen set grew past ``min_new``
    and ``ratio`` of the frozen set (a single pass of a few hundred milliseconds for ~500k objects, instead
    of the automatic ones). True if it ran."""
    unfrozen = sum(len(gc.get_objects(generation)) for generation in (1, 2))
    frozen = gc.get_freeze_count()
    if unfrozen < min_new or unfrozen < ratio * frozen:
        return False
    t0 = time.process_time()
    gc.collect()
    gc.freeze()
    log.info("gc: %d objects frozen (%d new) in %.0f ms CPU", gc.get_freeze_count(), unfrozen,
             (time.process_time() - t0) * 1000)
    return True


async def refreeze_periodically(period: float = 30.0) -> None:
    """:func:`refreeze_if_grown` every ``period`` seconds, until cancelled."""
    while True:
        await asyncio.sleep(period)
        refreeze_if_grown()


class PushWindow:
    """A higher young-generation threshold while a push round is in flight: the ADS server's ``on_round``.

    During a round every stream's pending read renews grpc.aio's state for it (~20 tracked objects per ACK),
    so with 5,000 streams a young pass falls inside nearly every round and rescans ~150k live objects
    (~110 ms, bench/README.md), delaying the proxies still waiting. Raised to ``young`` while responses
    await their ACKs, the threshold is restored ``grace`` seconds after the last ACK came (the round's
    waiters run first; the pass, if due, then runs after the round), or after ``max_hold`` seconds at the
    latest (a proxy that never answers does not keep it raised). The pass is moved, not saved: cyclic
    garbage is still collected, at most one round later."""

    def __init__(self, young: int = ROUND_YOUNG, grace: float = 0.1, max_hold: float = 5.0) -> None:
        self.young = young
        self.grace = grace
        self.max_hold = max_hold
        self.raised = 0                      # rounds that raised the threshold (observability, tests)
        self._base: tuple[int, int, int] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def active(self) -> bool:
        """The threshold is raised now."""
        return self._base is not None

    def __call__(self, busy: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if busy:
            if self._base is None:
                base = gc.get_threshold()
                self._base = (base[0], base[1], base[2])
                gc.set_threshold(max(self.young, base[0]), base[1], base[2])
                self.raised += 1
            self._timer = asyncio.get_running_loop().call_later(self.max_hold, self._restore)
        elif self._base is not None:
            self._timer = asyncio.get_running_loop().call_later(self.grace, self._restore)

    def _restore(self) -> None:
        self._timer = None
        if self._base is not None:
            gc.set_threshold(*self._base)
            self._base = None
