"""A small, bounded load generator in the spirit of fortio (``-c`` connections, ``-n`` requests, qps 0).

Each of ``concurrency`` workers owns one client connection (as fortio does) and takes requests from a shared
budget of ``total``; optional HTTP proxy (a sidecar's outbound listener). Used by ``mizzen load`` and tests.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx


@dataclass
class LoadResult:
    codes: Counter[int] = field(default_factory=Counter)   # status code -> count (0 = connection error)
    latencies: list[float] = field(default_factory=list)   # seconds, successful round trips
    flags: Counter[str] = field(default_factory=Counter)    # Envoy signals seen, e.g. overflow
    elapsed: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.codes.values())

    def percent(self, code: int) -> float:
        return 100.0 * self.codes[code] / self.total if self.total else 0.0

    def summary(self) -> str:
        lines = [f"Code {code} : {n} ({100.0 * n / self.total:.1f} %)"
                 for code, n in sorted(self.codes.items())]
        if self.latencies:
            lat = sorted(self.latencies)
            p50 = lat[len(lat) // 2]
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            lines.append(f"latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, {self.total} requests "
                         f"in {self.elapsed:.2f} s")
        return "\n".join(lines)


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
                except httpx.HTTPError:
                    result.codes[0] += 1
                    continue
                result.codes[resp.status_code] += 1
                if resp.headers.get("x-envoy-overloaded"):
                    result.flags["overflow"] += 1
                if resp.status_code < 500:
                    result.latencies.append(time.monotonic() - t0)

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(0)
    t_start = time.monotonic()
    start.set()
    await asyncio.gather(*tasks)
    result.elapsed = time.monotonic() - t_start
    return result
