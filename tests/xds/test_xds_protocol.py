"""ADS protocol edge cases with a fake client over a real gRPC channel (no Envoy)."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryResponse
from xds_harness import Harness
from xds_testlib import (
    NODE,
    FakeAdsClient,
    eds_cluster,
    listener,
    load_assignment,
    names_of,
    resources,
    route_config,
)

from mizzen.xds import NACKED, NOT_SENT, STALE, SYNCED, SnapshotCache, SyncStatus
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, ResourceSet


def config(body: str = "v1", extra_cluster: bool = False) -> ResourceSet:
    clusters = [eds_cluster("a"), eds_cluster("b")] + ([eds_cluster("c")] if extra_cluster else [])
    return resources(
        clusters=clusters,
        endpoints=[load_assignment("a", [("127.0.0.2", 80)]), load_assignment("b", [("127.0.0.3", 80)])],
        listeners=[listener("l1", "127.0.0.1", 15001, "r1")],
        routes=[route_config("r1", body=body), route_config("r2", body="other")],
    )


SUBSCRIPTIONS: tuple[tuple[str, list[str]], ...] = (
    (CLUSTER, ["a", "b"]), (ENDPOINT, ["a", "b"]), (LISTENER, []), (ROUTE, ["r1"]))


async def sync_all(c: FakeAdsClient, status: SyncStatus) -> dict[str, DiscoveryResponse]:
    """Subscribe to the four types like Envoy and ACK everything; CDS/LDS are wildcard."""
    out = {}
    for t, names in SUBSCRIPTIONS:
        c.send(t, names=names if t in (ENDPOINT, ROUTE) else [])
        out[t] = r = await c.recv()
        c.ack(r, names=names if t in (ENDPOINT, ROUTE) else [])
    await status.wait_synced([NODE], timeout=2)
    return out


async def test_initial_wildcard_and_named_then_ack_is_synced(harness: Harness) -> None:
    harness.on_connect_snapshot = lambda _n: config()
    c = FakeAdsClient(harness.target, metadata={"NAMESPACE": "default", "LABELS": {"app": "t1"}})
    try:
        c.send(CLUSTER)
        cds = await c.recv()
        assert harness.connects == [(NODE, {"NAMESPACE": "default", "LABELS": {"app": "t1"}})]
        assert cds.type_url == CLUSTER and cds.nonce
        assert sorted(names_of(cds)) == ["a", "b"]
        snap = harness.cache.get(NODE)
        assert snap is not None and cds.version_info == snap.version(CLUSTER)
        assert harness.ads.status.type_state(NODE, CLUSTER) == STALE   # sent, not acked yet
        c.send(ENDPOINT, names=["a", "missing"], version=cds.version_info, nonce="")  # initial EDS request
        c.ack(cds)
        eds = await c.recv()
        assert eds.type_url == ENDPOINT and names_of(eds) == ["a"]     # only requested names that exist
        c.ack(eds, names=["a", "missing"])
        c.send(LISTENER)
        lds = await c.recv()
        c.ack(lds)
        c.send(ROUTE, names=["r1"])
        rds = await c.recv()
        assert names_of(rds) == ["r1"]
        c.ack(rds, names=["r1"])
        await harness.ads.status.wait_synced([NODE], timeout=2)
        await c.expect_silence()   # ACKs are not answered
        doc = harness.ads.status.to_dict()
        assert [d["proxy"] for d in doc] == [NODE]
        assert {t: v["status"] for t, v in doc[0]["types"].items()} == {
            "CDS": SYNCED, "EDS": SYNCED, "LDS": SYNCED, "RDS": SYNCED}
        assert doc[0]["types"]["RDS"]["acked"] == snap.version(ROUTE)
        assert doc[0]["metadata"]["LABELS"] == {"app": "t1"}
        assert json.loads(json.dumps(doc)) == doc     # served as-is by /debug/syncz
        assert doc[0]["connected_at"].endswith("Z") and doc[0]["types"]["CDS"]["nack"] is None
    finally:
        await c.close()
    for _ in range(50):
        if harness.disconnects:
            break
        await asyncio.sleep(0.02)
    assert harness.disconnects == [NODE]
    assert harness.ads.status.to_dict() == []


async def test_new_name_triggers_response_and_removal_does_not(harness: Harness) -> None:
    harness.cache.set_snapshot(NODE, config())
    c = FakeAdsClient(harness.target)
    try:
        c.send(ROUTE, names=["r1"])
        r = await c.recv()
        assert names_of(r) == ["r1"]
        c.send(ROUTE, names=["r1", "r2"], version=r.version_info, nonce=r.nonce)   # ACK + new name
        r2 = await c.recv()
        assert sorted(names_of(r2)) == ["r1", "r2"] and r2.nonce != r.nonce
        assert r2.version_info == r.version_info
        # the version was ACKed, but the response carrying r2 was not yet: not synced
        assert harness.ads.status.type_state(NODE, ROUTE) == STALE
        c.send(ROUTE, names=["r2"], version=r2.version_info, nonce=r2.nonce)        # ACK + fewer names
        await c.expect_silence()
        assert harness.ads.status.type_state(NODE, ROUTE) == SYNCED
    finally:
        await c.close()


async def test_stale_nonce_is_ignored(harness: Harness) -> None:
    harness.cache.set_snapshot(NODE, config("v1"))
    c = FakeAdsClient(harness.target)
    try:
        r1 = (await sync_all(c, harness.ads.status))[ROUTE]
        harness.cache.set_snapshot(NODE, config("v2"))
        r2 = await c.recv()
        assert r2.version_info != r1.version_info
        # an ACK for the older response arrives late: ignored, it must not mark the proxy synced at v1
        c.ack(r1, names=["r1"])
        c.send(ROUTE, names=["r1", "r2"], version=r1.version_info, nonce=r1.nonce)
        await c.expect_silence()
        assert harness.ads.status.type_state(NODE, ROUTE) == STALE
        ps = harness.ads.status.proxy(NODE)
        assert ps is not None and ps.of(ROUTE).acked_version == r1.version_info
        c.ack(r2, names=["r1"])
        await harness.ads.status.wait_synced([NODE], timeout=2)
    finally:
        await c.close()


async def test_nack_is_recorded_and_not_resent_until_snapshot_changes(harness: Harness) -> None:
    harness.cache.set_snapshot(NODE, config("v1"))
    c = FakeAdsClient(harness.target)
    try:
        good = (await sync_all(c, harness.ads.status))[ROUTE]
        harness.cache.set_snapshot(NODE, config("bad"))
        bad = await c.recv()
        c.send(ROUTE, names=["r1"], version=good.version_info, nonce=bad.nonce, error="invalid regex")
        await c.expect_silence()          # the rejected config is not pushed again
        status = harness.ads.status
        assert status.type_state(NODE, ROUTE) == NACKED
        rds = status.to_dict()[0]["types"]["RDS"]
        assert rds["acked"] == good.version_info and rds["sent"] == bad.version_info
        assert rds["nack"]["message"] == "invalid regex" and rds["nack"]["version"] == bad.version_info
        with pytest.raises(TimeoutError, match="NACKED"):
            await status.wait_synced([NODE], timeout=0.2)
        harness.cache.set_snapshot(NODE, config("fixed"))
        fixed = await c.recv()
        assert fixed.version_info not in (good.version_info, bad.version_info)
        assert status.type_state(NODE, ROUTE) == STALE
        c.ack(fixed, names=["r1"])
        await status.wait_synced([NODE], timeout=2)
        assert status.to_dict()[0]["types"]["RDS"]["nack"] is None
    finally:
        await c.close()


async def test_reconnect_with_current_version_gets_a_response(harness: Harness) -> None:
    harness.cache.set_snapshot(NODE, config())
    c1 = FakeAdsClient(harness.target)
    first = await sync_all(c1, harness.ads.status)
    await c1.close()
    c2 = FakeAdsClient(harness.target)
    try:
        # Envoy reports the versions it has and no nonce: still answered (else it would never finish init)
        for t, names in SUBSCRIPTIONS:
            c2.send(t, names=names if t in (ENDPOINT, ROUTE) else [], version=first[t].version_info)
            again = await c2.recv()
            assert again.type_url == t and again.version_info == first[t].version_info
            assert names_of(again) == names_of(first[t])
            c2.ack(again, names=names if t in (ENDPOINT, ROUTE) else [])
        await harness.ads.status.wait_synced([NODE], timeout=2)
    finally:
        await c2.close()


async def test_two_streams_for_one_node_newest_wins(harness: Harness) -> None:
    harness.cache.set_snapshot(NODE, resources(clusters=[eds_cluster("a")]))
    old = FakeAdsClient(harness.target)
    new = FakeAdsClient(harness.target)
    try:
        old.send(CLUSTER)
        r_old = await old.recv()
        new.send(CLUSTER)
        r_new = await new.recv()
        status = harness.ads.status
        old.ack(r_old)
        await asyncio.sleep(0.1)
        assert status.type_state(NODE, CLUSTER) == STALE    # the old stream's ACK does not count
        new.ack(r_new)
        await status.wait_synced([NODE], timeout=2)
        await old.close()
        await asyncio.sleep(0.1)
        assert harness.disconnects == []                      # the node is still connected
        assert status.connected() == [NODE] and status.is_synced(NODE)
        assert status.to_dict()[0]["streams"] == 1
    finally:
        await new.close()
    for _ in range(50):
        if harness.disconnects:
            break
        await asyncio.sleep(0.02)
    assert harness.disconnects == [NODE]


async def test_changes_are_pushed_in_cds_eds_lds_rds_order_and_noop_is_silent(harness: Harness) -> None:
    harness.cache.set_snapshot(NODE, config("v1"))
    c = FakeAdsClient(harness.target)
    try:
        # subscribe in "wrong" order; the push after a change must still be make-before-break
        for t, names in ((ROUTE, ["r1"]), (LISTENER, []), (ENDPOINT, ["a", "b"]), (CLUSTER, [])):
            c.send(t, names=names)
            r = await c.recv()
            c.ack(r, names=names)
        # every CDS response is followed by the endpoints (cluster warming), even when they did not change
        r = await c.recv()
        assert r.type_url == ENDPOINT and sorted(names_of(r)) == ["a", "b"]
        c.ack(r, names=["a", "b"])
        await harness.ads.status.wait_synced([NODE], timeout=2)
        harness.cache.set_snapshot(NODE, config("v1"))   # same content
        await c.expect_silence(0.2)
        new = resources(
            clusters=[eds_cluster("a"), eds_cluster("b"), eds_cluster("c")],
            endpoints=[load_assignment("a", [("127.0.0.9", 80)]), load_assignment("b", [("127.0.0.3", 80)])],
            listeners=[listener("l1", "127.0.0.1", 15002, "r1")],
            routes=[route_config("r1", body="v2"), route_config("r2", body="other")],
        )
        harness.cache.set_snapshot(NODE, new)
        order = [(await c.recv()).type_url for _ in range(4)]
        assert order == [CLUSTER, ENDPOINT, LISTENER, ROUTE]
    finally:
        await c.close()


async def test_waits_for_first_snapshot_when_on_connect_sets_none(harness: Harness) -> None:
    c = FakeAdsClient(harness.target)
    try:
        c.send(LISTENER)
        await c.expect_silence(0.2)
        assert harness.ads.status.type_state(NODE, LISTENER) == NOT_SENT
        harness.cache.set_snapshot(NODE, config())
        r = await c.recv()
        assert names_of(r) == ["l1"]
    finally:
        await c.close()


async def test_first_request_without_node_is_rejected(harness: Harness) -> None:
    c = FakeAdsClient(harness.target)
    try:
        c.send(CLUSTER, with_node=False)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.recv()
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await c.close()


async def test_on_connect_value_error_rejects_stream(harness: Harness) -> None:
    def bad(node: str) -> None:
        raise ValueError(f"bad node id {node}")
    harness.on_connect_snapshot = bad
    c = FakeAdsClient(harness.target, node_id="nonsense")
    try:
        c.send(CLUSTER)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.recv()
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "bad node id" in (e.value.details() or "")
    finally:
        await c.close()


async def test_delta_first_request_without_node_is_rejected(harness: Harness) -> None:
    from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

    async with grpc.aio.insecure_channel(harness.target) as ch:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch).DeltaAggregatedResources(
            iter([discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER)]))
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call.read()
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_versions_are_content_hashes_and_memoized() -> None:
    a, b = SnapshotCache(), SnapshotCache()
    a.set_snapshot(NODE, config())
    b.set_snapshot(NODE, config())    # equal content, distinct objects
    sa, sb = a.get(NODE), b.get(NODE)
    assert sa is not None and sb is not None
    assert sa.versions() == sb.versions()
    b.set_snapshot(NODE, config("changed"))
    sc = b.get(NODE)
    assert sc is not None and sc.version(ROUTE) != sa.version(ROUTE)
    assert sc.version(CLUSTER) == sa.version(CLUSTER)
    # the same message objects reused for many nodes are serialized once
    shared = config()
    cache = SnapshotCache()
    for i in range(20):
        cache.set_snapshot(f"n{i}", shared)
    stats = cache.memo_stats()
    assert stats["misses"] == 7 and stats["hits"] == 19 * 7
    cache.clear("n0")
    assert cache.get("n0") is None and cache.memo_stats()["entries"] == 7
    for i in range(1, 20):
        cache.clear(f"n{i}")
    assert cache.memo_stats()["entries"] == 0


async def test_nodes_with_equal_content_share_one_serialized_response(harness: Harness) -> None:
    other = NODE.replace("t1.default", "t2.default")
    harness.cache.set_snapshot(NODE, config())
    harness.cache.set_snapshot(other, config())       # equal content, distinct objects
    c1, c2 = FakeAdsClient(harness.target), FakeAdsClient(harness.target, node_id=other)
    try:
        c1.send(CLUSTER)
        r1 = await c1.recv()
        c2.send(CLUSTER)
        r2 = await c2.recv()
        # the same content on two streams: the same nonce too (shared nonces), so one byte string for both
        assert r1.version_info == r2.version_info and r1.nonce == r2.nonce
        assert r1.SerializeToString() == r2.SerializeToString() and r1.control_plane.identifier == "mizzen"
        assert harness.ads.bodies.misses == 1 and harness.ads.bodies.hits == 1
    finally:
        await c1.close()
        await c2.close()


async def test_only_changed_types_are_pushed(harness: Harness) -> None:
    harness.cache.set_snapshot(NODE, config())
    c = FakeAdsClient(harness.target)
    try:
        await sync_all(c, harness.ads.status)
        changed = resources(
            clusters=[eds_cluster("a"), eds_cluster("b")],
            endpoints=[load_assignment("a", [("127.0.0.2", 81)]), load_assignment("b", [("127.0.0.3", 80)])],
            listeners=[listener("l1", "127.0.0.1", 15001, "r1")],
            routes=[route_config("r1", body="v1"), route_config("r2", body="other")],
        )
        harness.cache.set_snapshot(NODE, changed)
        eds = await c.recv()
        assert eds.type_url == ENDPOINT and names_of(eds) == ["a", "b"]
        await c.expect_silence(0.2)
        assert harness.ads.status.type_state(NODE, ENDPOINT) == STALE
        assert harness.ads.status.type_state(NODE, CLUSTER) == SYNCED
    finally:
        await c.close()
