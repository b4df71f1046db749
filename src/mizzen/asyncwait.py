"""Waiting for an ``asyncio.Event`` with a timeout, without losing a cancellation.

On Python 3.11, ``asyncio.wait_for(event.wait(), t)`` returns normally when the event is set in the same
loop turn as the waiting task is cancelled (CPython gh-86296, fixed in 3.12): the cancel is swallowed, so a
``while True`` loop around it keeps going and whoever cancelled it (a stop) waits forever. ``asyncio.timeout``
re-raises a cancel it did not cause, so waits built on it end with the task.
"""

from __future__ import annotations

import asyncio

__all__ = ["wait_event"]


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait up to ``timeout`` seconds (None: for as long as it takes) for ``event``; whether it is set. A
    cancel always propagates."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(None if timeout is None else max(0.0, timeout)):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
