"""Running a long-lived component in the foreground until SIGINT/SIGTERM (``mizzen controlplane``,
``mizzen agent``): start it, announce it, wait for the signal, stop it in order."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

__all__ = ["run_until_signal"]


async def run_until_signal(start: Callable[[], Awaitable[object]], stop: Callable[[], Awaitable[object]],
                           announce: Callable[[], None] = lambda: None) -> None:
    """``await start()``, call ``announce()``, wait for SIGINT or SIGTERM, then ``await stop()`` (always)."""
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    try:
        await start()
        announce()
        await stopped.wait()
    finally:
        await stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
