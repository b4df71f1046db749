"""``mizzen.asyncwait.wait_event``: True when the event is set, False on the timeout, and a cancel that
arrives in the same loop turn as the event is set still ends the waiting task (Python 3.11's
``asyncio.wait_for`` swallows that cancel, so a loop around it never stops)."""

from __future__ import annotations

import asyncio

import pytest

from mizzen.asyncwait import wait_event


async def test_set_before_during_and_never() -> None:
    ev = asyncio.Event()
    assert await wait_event(ev, 0.01) is False
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, ev.set)
    assert await wait_event(ev, 5) is True
    assert await wait_event(ev, 0) is True     # already set: no wait at all
    ev.clear()
    loop.call_later(0.01, ev.set)
    assert await wait_event(ev, None) is True  # no timeout: until it is set


async def test_a_cancel_as_the_event_is_set_stops_a_loop_around_it() -> None:
    ev = asyncio.Event()
    rounds = 0

    async def loop_until_cancelled() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            await wait_event(ev, 10)
            ev.clear()

    task = asyncio.create_task(loop_until_cancelled())
    await asyncio.sleep(0.01)           # waiting on the event
    ev.set()                            # the event and the cancel in the same turn
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)   # (the outer wait only bounds a hang)
    assert task.cancelled() and rounds == 1
