"""Debouncer timing and merging with small real times."""

from __future__ import annotations

import asyncio
import time

import pytest

from mizzen.xds import Debouncer


class Recorder:
    def __init__(self, work: float = 0.0, fail_first: bool = False) -> None:
        self.calls: list[tuple[float, frozenset[str]]] = []
        self.running = 0
        self.max_running = 0
        self.work = work
        self.fail_first = fail_first

    async def __call__(self, keys: frozenset[str]) -> None:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            self.calls.append((time.monotonic(), keys))
            await asyncio.sleep(self.work)
            if self.fail_first and len(self.calls) == 1:
                raise RuntimeError("push failed")
        finally:
            self.running -= 1


async def test_burst_is_merged_into_one_push_after_quiet_time() -> None:
    rec = Recorder()
    d: Debouncer[frozenset[str]] = Debouncer(rec, merge=frozenset.union, quiet=0.05, max_delay=1.0)
    t0 = time.monotonic()
    for k in ("a", "b", "c"):
        d.trigger(frozenset([k]))
        await asyncio.sleep(0.01)
    d.trigger(frozenset())   # "something changed", no key
    await d.flush()
    assert [keys for _, keys in rec.calls] == [frozenset({"a", "b", "c"})]
    waited = rec.calls[0][0] - t0
    assert 0.07 <= waited < 0.5, waited          # 30 ms of events + 50 ms quiet
    assert d.pushes == 1 and d.merged_events == 4
    await d.close()


async def test_max_delay_bounds_latency_under_constant_events() -> None:
    rec = Recorder()
    d: Debouncer[frozenset[int]] = Debouncer(rec, merge=frozenset.union, quiet=0.05, max_delay=0.12)  # type: ignore[arg-type]
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < 0.4:      # never quiet for 50 ms
        d.trigger(frozenset([i]))
        i += 1
        await asyncio.sleep(0.01)
    await d.flush()
    assert len(rec.calls) >= 3
    assert rec.calls[0][0] - t0 < 0.2        # first push forced by max_delay, not by quiet time
    merged: set[object] = set()
    for _, keys in rec.calls:
        assert not merged & keys             # each key pushed once
        merged |= keys
    assert merged == set(range(i))
    await d.close()


async def test_pushes_never_overlap_and_events_during_a_push_start_the_next_round() -> None:
    rec = Recorder(work=0.1)
    d: Debouncer[frozenset[str]] = Debouncer(rec, merge=frozenset.union, quiet=0.01, max_delay=0.05)
    d.trigger(frozenset(["x"]))
    await asyncio.sleep(0.05)                 # first push is running now
    assert rec.running == 1
    d.trigger(frozenset(["y"]))
    d.trigger(frozenset(["z"]))
    await asyncio.sleep(0.02)
    assert len(rec.calls) == 1                # not started while the first runs
    await d.flush()
    assert [keys for _, keys in rec.calls] == [frozenset({"x"}), frozenset({"y", "z"})]
    assert rec.max_running == 1
    await d.close()


async def test_failed_push_is_logged_and_debouncer_keeps_working(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(fail_first=True)
    d: Debouncer[frozenset[str]] = Debouncer(rec, merge=frozenset.union, quiet=0.01, max_delay=0.05)
    d.trigger(frozenset(["a"]))
    await d.flush()
    d.trigger(frozenset(["b"]))
    await d.flush()
    assert [keys for _, keys in rec.calls] == [frozenset({"a"}), frozenset({"b"})]
    assert "debounced push failed" in caplog.text
    await d.close()
    with pytest.raises(RuntimeError):
        d.trigger(frozenset(["c"]))


def test_rejects_bad_times() -> None:
    with pytest.raises(ValueError):
        Debouncer(Recorder(), merge=frozenset.union, quiet=1.0, max_delay=0.5)


@pytest.mark.parametrize("lead", [0.005, 0.0])   # 0: the control plane's default (the loop's next turn)
async def test_lead_pushes_the_first_event_after_quiet_at_once_and_debounces_the_rest(lead: float) -> None:
    rec = Recorder()
    d: Debouncer[frozenset[str]] = Debouncer(rec, merge=frozenset.union, quiet=0.2, max_delay=1.0, lead=lead)
    t0 = time.monotonic()
    d.trigger(frozenset(["first"]))
    await asyncio.sleep(0.05)
    assert [k for _, k in rec.calls] == [frozenset({"first"})]
    assert rec.calls[0][0] - t0 < 0.05                 # not the 0.2 s quiet time
    # events right after that push are debounced as usual (a burst still coalesces)
    for k in ("b", "c", "d"):
        d.trigger(frozenset([k]))
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert len(rec.calls) == 1                         # still waiting for 0.2 s of quiet
    await d.flush()
    assert [k for _, k in rec.calls] == [frozenset({"first"}), frozenset({"b", "c", "d"})]
    # after a quiet period, the next single event leads again
    await asyncio.sleep(0.25)
    t1 = time.monotonic()
    d.trigger(frozenset(["later"]))
    await d.flush()
    assert rec.calls[-1][1] == frozenset({"later"}) and rec.calls[-1][0] - t1 < 0.05
    await d.close()


async def test_lead_must_not_exceed_quiet() -> None:
    with pytest.raises(ValueError):
        Debouncer(Recorder(), merge=frozenset.union, quiet=0.01, max_delay=1.0, lead=0.05)
