"""Bounded load on the control plane: a token-bucket rate limiter for admitting new xDS streams (Istio's
``PILOT_MAX_REQUESTS_PER_SECOND``; the settings are read with :mod:`mizzen.config.env`)."""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger(__name__)

__all__ = ["RateLimiter"]


class RateLimiter:
    """``await acquire()`` returns at most ``rate`` times per second on average, ``burst`` at once; waiters
    are served in arrival order."""

    def __init__(self, rate: float, burst: int = 1) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._lock = asyncio.Lock()
        self.waited = 0   # acquisitions that had to wait

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now

    async def acquire(self) -> None:
        async with self._lock:   # FIFO: one waiter at a time sleeps for its token
            self._refill()
            if self._tokens < 1:
                self.waited += 1
            while self._tokens < 1:   # a loop's timer may fire a little early (uvloop's clock is in ms)
                await asyncio.sleep((1 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1
