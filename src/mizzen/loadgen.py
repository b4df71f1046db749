"""A small, bounded load generator in the spirit of fortio (``-c`` connections, ``-n`` requests, qps 0).

Each of ``concurrency`` workers owns one client connection (as fortio does) and takes requests from a shared
budget of ``total``; optional HTTP proxy (a sidecar's outbound listener). Used by ``mizzen load`` and tests.

Requests that get no HTTP answer count as code -1 (fortio's), with the error kept. 5xx answers are sorted by
cause with :func:`envoy_reason`, which reads what Envoy itself puts in a local reply: the
``x-envoy-overloaded`` header (circuit-breaker overflow, response flag UO) and the fixed body texts of its
local replies (``no healthy upstream`` = UH, ``upstream connect error ... reset reason: connection failure``
= UF, ``fault filter abort`` = FI); a 5xx carrying ``x-envoy-upstream-service-time`` came from the upstream
application itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

ERROR_CODE = -1      # fortio's code for a request that got no HTTP response

OVERFLOW = "overflow (UO)"
NO_HEALTHY_UPSTREAM = "no healthy upstream (UH)"
CONNECT_FAILURE = "upstream connect failure (UF)"
UPSTREAM_RESET = "upstream reset (UR)"
FAULT_ABORT = "fault injection abort (FI)"
FROM_APP = "from the application"
OTHER = "other"


def envoy_reason(status: int, headers: Mapping[str, str], body: str) -> str:
    """Why a 5xx happened, from what Envoy put in the response (see the module docstring)."""
    if headers.get("x-envoy-overloaded"):
        return OVERFLOW
    text = body.strip().lower()
    if text.startswith("no healthy upstream"):
        return NO_HEALTHY_UPSTREAM
    if text.startswith("fault filter abort"):
        return FAULT_ABORT
    if text.startswith("upstream connect error or disconnect/reset before headers"):
        if "overflow" in text:
            return OVERFLOW
        if "connection failure" in text or "connection_failure" in text or "delayed connect error" in text:
            return CONNECT_FAILURE
        return UPSTREAM_RESET
    if "x-envoy-upstream-service-time" in headers:
        return FROM_APP
    return OTHER


@dataclass
class LoadResult:
    codes: Counter[int] = field(default_factory=Counter)   # status code -> count (-1 = no HTTP response)
    latencies: list[float] = field(default_factory=list)   # seconds, successful round trips
    flags: Counter[str] = field(default_factory=Counter)    # Envoy signals seen, e.g. overflow
    reasons: dict[int, Counter[str]] = field(default_factory=dict)   # 5xx code -> envoy_reason -> count
    errors: Counter[str] = field(default_factory=Counter)   # connection-level errors, by message
    elapsed: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.codes.values())

    def percent(self, code: int) -> float:
        return 100.0 * self.codes[code] / self.total if self.total else 0.0

    def summary(self) -> str:
        lines = []
        for code, n in sorted(self.codes.items()):
            line = f"Code {code} : {n} ({100.0 * n / self.total:.1f} %)"
            why = self.reasons.get(code)
            if why:
                line += " [" + ", ".join(f"{r}: {k}" for r, k in why.most_common()) + "]"
            elif code == ERROR_CODE and self.errors:
                line += " [" + ", ".join(f"{e}: {k}" for e, k in self.errors.most_common(3)) + "]"
            lines.append(line)
        if self.latencies:
            lat = sorted(self.latencies)
            p50 = lat[len(lat) // 2]
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            lines.append(f"latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, {self.total} requests "
                         f"in {self.elapsed:.2f} s")
        return "\n".join(lines)


def _error_text(e: Exception) -> str:
    """``ConnectError: [Errno -2] Name or service not known`` (one line, bounded)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:160] if text else type(e).__name__


async def run_load(url: str, *, concurrency: int = 1, total: int = 1, proxy: str | None = None,
                   headers: Mapping[str, str] | None = None, timeout: float = 10.0,
                   deadline: float = 60.0) -> LoadResult:
    """Send ``total`` GETs with ``concurrency`` connections; stops early once ``deadline`` seconds pass."""
    if concurrency < 1 or total < 0:
        raise ValueError("concurrency must be >= 1 and total >= 0")
    result = LoadResult()
    budget = iter(range(total))
    stop_at = time.monotonic() + deadline
    start = asyncio.Event()

    async def worker() -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(proxy=proxy, limits=limits, timeout=timeout, trust_env=False) as client:
            await start.wait()
            for _ in budget:
                if time.monotonic() > stop_at:
                    return
                t0 = time.monotonic()
                try:
                    resp = await client.get(url, headers=dict(headers or {}))
                except httpx.HTTPError as e:
                    result.codes[ERROR_CODE] += 1
                    result.errors[_error_text(e)] += 1
                    continue
                result.codes[resp.status_code] += 1
                if resp.headers.get("x-envoy-overloaded"):
                    result.flags["overflow"] += 1
                if resp.status_code >= 500:
                    reason = envoy_reason(resp.status_code, resp.headers, resp.text[:512])
                    result.reasons.setdefault(resp.status_code, Counter())[reason] += 1
                if resp.status_code < 500:
                    result.latencies.append(time.monotonic() - t0)

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(0)
    t_start = time.monotonic()
    start.set()
    await asyncio.gather(*tasks)
    result.elapsed = time.monotonic() - t_start
    return result
