"""A response write that takes longer than the server's write timeout (istiod's PILOT_XDS_SEND_TIMEOUT) ends
the stream and counts in ``pilot_xds_write_timeout``; writes to a proxy that reads are not affected."""

from __future__ import annotations

import asyncio
import time

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from xds_harness import HOST
from xds_testlib import FakeAdsClient, eds_cluster, resources

from mizzen.controlplane.metrics import Metrics, ObservedStatus
from mizzen.xds import AdsServer, SnapshotCache, serve
from mizzen.xds.resources import CLUSTER

BIG_NODE = "sidecar~127.0.0.1~big.default~default.svc.cluster.local"
SMALL_NODE = "sidecar~127.0.0.2~small.default~default.svc.cluster.local"


def big_clusters(count: int = 400, pad: int = 64 * 1024) -> list[cluster_pb2.Cluster]:
    """~25 MiB of clusters: far more than a client's HTTP/2 flow-control window."""
    out = []
    for i in range(count):
        c = eds_cluster(f"outbound|80||big-{i}.default.svc.cluster.local")
        md = struct_pb2.Struct()
        md.update({"pad": f"{i}-" + "x" * pad})
        c.metadata.filter_metadata["bench"].CopyFrom(md)
        out.append(c)
    return out


def counter(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    return value or 0.0


async def test_a_write_that_exceeds_the_timeout_ends_the_stream_and_is_counted() -> None:
    cache = SnapshotCache()
    metrics = Metrics()
    status = ObservedStatus(cache, metrics)
    big = resources(clusters=big_clusters())
    small = resources(clusters=[eds_cluster("outbound|80||small.default.svc.cluster.local")])

    async def on_connect(node_id: str, _md: dict[str, object]) -> None:
        cache.set_snapshot(node_id, big if node_id == BIG_NODE else small)

    # generous: a loaded machine must not time out the reader
    ads = AdsServer(cache, on_connect=on_connect, status=status, write_timeout=3.0)
    gs = await serve(ads, HOST, 0)
    target = f"{HOST}:{ads.port}"
    # a proxy that reads: answered, nothing counted
    reader = FakeAdsClient(target, SMALL_NODE)
    # a proxy that asks for everything and never reads: the server's write stalls on flow control
    stalled = grpc.aio.insecure_channel(target, options=[("grpc.http2.bdp_probe", 0),
                                                         ("grpc.max_receive_message_length", 1 << 30)])
    sent = asyncio.Queue[discovery_pb2.DiscoveryRequest]()
    req = discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
    req.node.id = BIG_NODE
    sent.put_nowait(req)

    async def requests():  # type: ignore[no-untyped-def]
        while True:
            yield await sent.get()

    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(stalled).StreamAggregatedResources(requests())
    try:
        reader.send(CLUSTER)
        resp = await reader.recv(20.0)
        reader.ack(resp)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and (
                counter(metrics, "pilot_xds_write_timeout_total") < 1 or status.proxy(BIG_NODE) is not None):
            await asyncio.sleep(0.05)
        assert counter(metrics, "pilot_xds_write_timeout_total") == 1
        assert status.proxy(BIG_NODE) is None, "the stalled stream was not closed"
        assert status.proxy(SMALL_NODE) is not None
        await status.wait_synced([SMALL_NODE], timeout=20)
        assert b"pilot_xds_write_timeout 1.0" in metrics.exposition()
        # pilot_xds_push_time: observed per response written (the reader's CDS)
        assert metrics.registry.get_sample_value("pilot_xds_push_time_count", {"type": "cds"}) == 1
    finally:
        call.cancel()
        await stalled.close()
        await reader.close()
        await ads.shutdown(gs, 0.5)
