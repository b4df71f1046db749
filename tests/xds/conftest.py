"""Fixtures for the xDS tests: an ADS server on a real loopback port with a fresh cache."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from xds_harness import HOST, Harness

from mizzen.xds import AdsServer, SnapshotCache, serve


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    cache = SnapshotCache()
    h: Harness

    async def on_connect(node_id: str, metadata: dict[str, Any]) -> None:
        h.connects.append((node_id, metadata))
        rs = h.on_connect_snapshot(node_id)
        if rs is not None:
            cache.set_snapshot(node_id, rs)

    async def on_disconnect(node_id: str) -> None:
        h.disconnects.append(node_id)

    ads = AdsServer(cache, on_connect=on_connect, on_disconnect=on_disconnect)
    gs = await serve(ads, HOST, 0)
    h = Harness(cache, ads, gs, f"{HOST}:{ads.port}")
    try:
        yield h
    finally:
        await ads.shutdown(gs, 0.5)
