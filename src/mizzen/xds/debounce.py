"""Debouncing of config/registry change events into pushes (like istiod's PILOT_DEBOUNCE_AFTER/MAX).

Events carry a value describing what changed (the control plane's push request); values are folded together
with ``merge`` and handed to a single async push callback after ``quiet`` seconds without new events, or at
the latest ``max_delay`` after the first pending event.
Pushes never run concurrently: events arriving during a push start the next round after it. With ``lead``,
the first event after a quiet period is pushed after only ``lead`` seconds (one ``kubectl apply`` reaches the
proxies at once); events that follow it are debounced as usual, so bursts still coalesce.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

__all__ = ["Debouncer"]

R = TypeVar("R")


class Debouncer(Generic[R]):
    """``trigger(value)`` from the event loop; ``push(merged value)`` runs debounced, one at a time."""

    def __init__(
        self,
        push: Callable[[R], Awaitable[None]],
        *,
        merge: Callable[[R, R], R],
        quiet: float = 0.1,
        max_delay: float = 1.0,
        lead: float | None = None,
    ) -> None:
        if quiet < 0 or max_delay < quiet or (lead is not None and not 0 <= lead <= quiet):
            raise ValueError("want 0 <= quiet <= max_delay and 0 <= lead <= quiet")
        self.lead = lead
        self._leading = False              # the pending batch began after a quiet period
        self._last_push_end = float("-inf")
        self._push = push
        self._merge = merge
        self.quiet = quiet
        self.max_delay = max_delay
        self._pending: R | None = None
        self._events = 0
        self._first_at: float | None = None
        self._last_at = 0.0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.pushes = 0               # completed push callbacks
        self.merged_events = 0        # events folded into those pushes

    def trigger(self, value: R) -> None:
        """Record a change; must be called on the running loop."""
        if self._closed:
            raise RuntimeError("debouncer is closed")
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._pending = value if self._pending is None else self._merge(self._pending, value)
        self._events += 1
        if self._first_at is None:
            self._first_at = now
            self._leading = self.lead is not None and now - self._last_push_end >= self.quiet
        self._last_at = now
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="debouncer")

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    async def flush(self) -> None:
        """Wait until every event triggered so far has been pushed."""
        await self._idle.wait()

    async def close(self) -> None:
        """Stop; pending events are dropped, a running push is cancelled."""
        self._closed = True
        task = self._task
        # Python 3.11's wait_for can swallow a cancel that races with its inner wait finishing: cancel again
        # until the task is really done (asyncio.wait never raises the task's CancelledError at us).
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
        self._idle.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            await self._wake.wait()
            while True:   # wait for quiet time, bounded by max_delay since the first pending event
                assert self._first_at is not None
                if self._leading and self.lead is not None:
                    deadline = self._first_at + self.lead
                else:
                    deadline = min(self._last_at + self.quiet, self._first_at + self.max_delay)
                left = deadline - loop.time()
                if left <= 0:
                    break
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await self._wake.wait()
            value, events = self._pending, self._events
            self._pending, self._events, self._first_at, self._leading = None, 0, None, False
            self._wake.clear()
            try:
                if value is not None:
                    await self._push(value)
            except Exception:
                log.exception("debounced push failed (%d events merged)", events)
            self.pushes += 1
            self.merged_events += events
            self._last_push_end = loop.time()
            if self._first_at is None:
                self._idle.set()

