"""The control-plane process's event loop: uvloop's (libuv, in C) when it is installed, else asyncio's.

grpc.aio runs on any asyncio loop (its completion queue wakes the loop through a file descriptor it watches
with ``add_reader``), and with thousands of ADS streams the loop's own bookkeeping (``_run_once``, handles,
the selector) is a measurable share of a push round in asyncio's Python implementation (bench/README.md).
``MIZZEN_EVENT_LOOP=asyncio`` forces asyncio's own loop (comparisons, debugging).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["ENV", "loop_factory", "run"]

ENV = "MIZZEN_EVENT_LOOP"
T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's ``new_event_loop`` unless ``$MIZZEN_EVENT_LOOP`` is ``asyncio`` or uvloop is not installed
    (None: asyncio's default)."""
    if os.environ.get(ENV, "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop :func:`loop_factory` chooses."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
