"""A size cap for Envoy's own log file (``--log-path``): rotate it to ``<log>.1`` and have Envoy reopen it.

Envoy never rotates its application log; a proxy that NACKs config over and over writes megabytes of config
dumps. :func:`watch_log` checks the size every few seconds and, over the cap, renames the file to ``<log>.1``
(replacing the previous one) and calls ``reopen`` (the agent POSTs Envoy's admin ``/reopen_logs``, which
reopens the application log too), so the log takes at most about twice the cap on disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_LOG_BYTES", "rotate_if_over", "watch_log"]

DEFAULT_MAX_LOG_BYTES = 10 * 1024 * 1024
CHECK_INTERVAL_S = 2.0


async def rotate_if_over(path: Path, max_bytes: int, reopen: Callable[[], Awaitable[None]]) -> bool:
    """Rotate ``path`` to ``<path>.1`` if it is larger than ``max_bytes``; True when it did."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size <= max_bytes:
        return False
    os.replace(path, path.with_name(path.name + ".1"))
    try:
        await reopen()
    except Exception as e:   # Envoy down or restarting: it opens a new file when it starts again
        log.warning("could not make Envoy reopen %s: %s", path, e)
    log.info("rotated %s (%d bytes, cap %d)", path, size, max_bytes)
    return True


async def watch_log(path: Path, max_bytes: int, reopen: Callable[[], Awaitable[None]],
                    interval: float = CHECK_INTERVAL_S) -> None:
    """Keep ``path`` under ``max_bytes`` until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            await rotate_if_over(path, max_bytes, reopen)
        except OSError as e:
            log.warning("could not rotate %s: %s", path, e)
