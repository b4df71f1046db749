"""A push round's span as the ADS server sees it (responses written, answers pending: ``on_round``), and the
raised young-generation threshold that follows it (``gctune.PushWindow``), over a real gRPC channel."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest
from test_xds_protocol import config
from xds_harness import Harness
from xds_testlib import NODE, FakeAdsClient

from mizzen import gctune
from mizzen.xds.resources import CLUSTER


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    """The process's gc thresholds, put back after the test whatever it did."""
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        yield gc.get_threshold()
    finally:
        gc.set_threshold(*before)


async def test_round_spans_written_responses_until_answered(harness: Harness,
                                                             thresholds: tuple[int, int, int]) -> None:
    calls: list[bool] = []
    window = gctune.PushWindow(young=123_456, grace=1.0, max_hold=10.0)

    def on_round(busy: bool) -> None:
        calls.append(busy)
        window(busy)

    harness.ads.on_round = on_round
    harness.on_connect_snapshot = lambda _n: config()
    c = FakeAdsClient(harness.target)
    try:
        c.send(CLUSTER)
        cds = await c.recv()
        # written and not yet answered: the round is in flight and the threshold raised
        assert calls == [True] and harness.ads.awaiting == 1
        assert gc.get_threshold() == (123_456, 10, 10) and window.active
        c.ack(cds)
        for _ in range(100):
            if calls == [True, False]:
                break
            await asyncio.sleep(0.01)
        assert calls == [True, False] and harness.ads.awaiting == 0
        assert window.active   # restored only after the grace, once the round's waiters ran
        await asyncio.sleep(1.3)
        assert gc.get_threshold() == thresholds and not window.active

        harness.cache.set_snapshot(NODE, config(extra_cluster=True))   # the next round
        cds2 = await c.recv()
        assert calls == [True, False, True] and window.raised == 2
        c.ack(cds2)
        await asyncio.sleep(1.5)
        assert calls == [True, False, True, False] and gc.get_threshold() == thresholds
    finally:
        await c.close()


async def test_unanswered_response_restores_after_max_hold_and_disconnect_ends_round(
        harness: Harness, thresholds: tuple[int, int, int]) -> None:
    window = gctune.PushWindow(young=222_222, grace=0.05, max_hold=1.0)
    calls: list[bool] = []

    def on_round(busy: bool) -> None:
        calls.append(busy)
        window(busy)

    harness.ads.on_round = on_round
    harness.on_connect_snapshot = lambda _n: config()
    c = FakeAdsClient(harness.target)
    try:
        c.send(CLUSTER)
        await c.recv()            # never ACKed: a proxy that does not answer
        assert gc.get_threshold()[0] == 222_222
        await asyncio.sleep(1.5)
        assert gc.get_threshold() == thresholds and harness.ads.awaiting == 1   # max_hold, not the ACK
    finally:
        await c.close()
    for _ in range(200):
        if harness.ads.awaiting == 0:
            break
        await asyncio.sleep(0.01)
    assert harness.ads.awaiting == 0 and calls == [True, False]   # the stream's end closes its round
