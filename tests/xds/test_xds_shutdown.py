"""A stopping ADS server refuses new streams (like istiod's graceful stop): a proxy that reconnects while the
old streams are being ended gets UNAVAILABLE and retries elsewhere, instead of being served by a control plane
that is going away (whose config may already be partly torn down)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from xds_harness import HOST
from xds_testlib import FakeAdsClient, eds_cluster, resources

from mizzen.xds import AdsServer, SnapshotCache, serve
from mizzen.xds.resources import CLUSTER

HELD = "sidecar~127.0.0.1~held.default~default.svc.cluster.local"
LATE = "sidecar~127.0.0.2~late.default~default.svc.cluster.local"


async def test_a_stream_that_arrives_during_shutdown_is_refused_unavailable() -> None:
    cache = SnapshotCache()
    entered, release = asyncio.Event(), asyncio.Event()

    async def on_connect(node_id: str, _md: dict[str, object]) -> None:
        if node_id == HELD:   # keeps a live stream, so shutdown waits for it: the window a reconnect hits
            entered.set()
            await release.wait()
        cluster = eds_cluster("outbound|80||a.default.svc.cluster.local")
        cache.set_snapshot(node_id, resources(clusters=[cluster]))

    ads = AdsServer(cache, on_connect=on_connect)
    gs = await serve(ads, HOST, 0)
    target = f"{HOST}:{ads.port}"
    held = FakeAdsClient(target, HELD)
    late: FakeAdsClient | None = None
    stopping: asyncio.Task[None] | None = None
    try:
        held.send(CLUSTER)
        await asyncio.wait_for(entered.wait(), 10)
        stopping = asyncio.create_task(ads.shutdown(gs, grace=10.0))
        await asyncio.sleep(0.05)
        assert not stopping.done(), "shutdown must still be waiting for the held stream"
        late = FakeAdsClient(target, LATE)
        late.send(CLUSTER)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await late.recv(timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (refused.value.details() or "")
        assert cache.get(LATE) is None   # on_connect never ran for it
    finally:
        release.set()
        if stopping is not None:
            await asyncio.wait_for(stopping, 20)
        else:
            await ads.shutdown(gs, 1.0)
        for client in (held, late):
            if client is not None:
                await client.close()
