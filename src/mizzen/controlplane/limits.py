"""Bounded load on the control plane: a token-bucket rate limiter for admitting new xDS streams (Istio's
``PILOT_MAX_REQUESTS_PER_SECOND``) and reading Istio's numeric environment settings."""

from __future__ import annotations

import asyncio
import logging
import os
import time

from mizzen.config.durations import parse_duration

log = logging.getLogger(__name__)

__all__ = ["RateLimiter", "env_duration", "env_float", "env_int"]


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        log.warning("%s=%r is not a number; using %s", name, raw, default)
        return default
    return value if value >= 0 else default


def env_int(name: str, default: int) -> int:
    return int(env_float(name, float(default)))


def env_duration(name: str, default: float) -> float:
    """A duration setting in seconds, written as Istio's are (Go's ``5s``, ``500ms``; a bare number is
    seconds)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    value = parse_duration(raw)
    if value is None:
        try:
            value = float(raw)
        except ValueError:
            log.warning("%s=%r is not a duration; using %ss", name, raw, default)
            return default
    return value if value >= 0 else default


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
