"""The sans-I/O ADS state machine (xds/ads.py), driven directly with requests and snapshots: no sockets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DiscoveryRequest
from google.rpc import status_pb2
from xds_testlib import eds_cluster, listener, load_assignment, resources, route_config

from mizzen.xds import NACKED, STALE, SYNCED, SnapshotCache
from mizzen.xds.ads import (
    AdsStream,
    DeltaDiffs,
    DeltaResponse,
    Response,
    SharedNonces,
    SotwResponse,
    resource_version,
)
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, ResourceSet
from mizzen.xds.status import ProxyStatus, SyncStatus, TypeStatus

NODE = "sidecar~127.0.0.1~t1.default~default.svc.cluster.local"


def mesh(clusters: Iterable[str] = ("a", "b"), *, body: str = "v1", ep_port: int = 80) -> ResourceSet:
    names = list(clusters)
    return resources(
        clusters=[eds_cluster(n) for n in names],
        endpoints=[load_assignment(n, [("127.0.0.2", ep_port)]) for n in names],
        listeners=[listener("l1", "127.0.0.1", 15001, "r1")],
        routes=[route_config("r1", body=body)],
    )


class World:
    """A cache plus one stream's state machine; ``push`` sets the snapshot and feeds it to the stream."""

    def __init__(self, *, delta: bool, diffs: DeltaDiffs | None = None, stream_id: int = 1,
                 nonces: SharedNonces | None = None) -> None:
        self.cache = SnapshotCache()
        self.status = ProxyStatus(NODE, stream_id)
        self.events = SyncStatus(self.cache)
        self.ads = AdsStream(self.status, delta=delta, diffs=diffs, events=self.events, nonces=nonces)

    def push(self, rs: ResourceSet) -> list[Response]:
        self.cache.set_snapshot(NODE, rs)
        return self.ads.set_snapshot(self.cache.get(NODE))

    def state(self, type_url: str) -> str:
        snap = self.cache.get(NODE)
        return self.status.of(type_url).state(snap.version(type_url) if snap else None)


def delta_req(type_url: str, *, sub: Iterable[str] = (), unsub: Iterable[str] = (), nonce: str = "",
              initial: Mapping[str, str] | None = None, error: str | None = None) -> DeltaDiscoveryRequest:
    req = DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=list(sub),
                                resource_names_unsubscribe=list(unsub), response_nonce=nonce,
                                initial_resource_versions=dict(initial or {}))
    if error is not None:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return req


def sotw_req(type_url: str, names: Iterable[str] = (), *, version: str = "", nonce: str = "",
             error: str | None = None) -> DiscoveryRequest:
    req = DiscoveryRequest(type_url=type_url, resource_names=list(names), version_info=version,
                           response_nonce=nonce)
    if error is not None:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return req


def only_delta(out: list[Response]) -> list[DeltaResponse]:
    assert all(isinstance(r, DeltaResponse) for r in out)
    return [r for r in out if isinstance(r, DeltaResponse)]


def sent(r: DeltaResponse) -> list[str]:
    return [p.name for p in r.resources]


def subscribe_all(w: World) -> dict[str, DeltaResponse]:
    """Subscribe like Envoy on delta (CDS/LDS wildcard, EDS/RDS by name) and ACK every response."""
    got: dict[str, DeltaResponse] = {}
    for t, names in ((CLUSTER, ()), (ENDPOINT, ("a", "b")), (LISTENER, ()), (ROUTE, ("r1",))):
        (r,) = only_delta(w.ads.delta_request(delta_req(t, sub=names)))
        assert w.ads.delta_request(delta_req(t, nonce=r.nonce)) == []
        got[t] = r
    return got


# --- delta ---

def test_delta_initial_subscriptions_get_everything_then_acks_are_synced() -> None:
    w = World(delta=True)
    w.push(mesh())
    got = subscribe_all(w)
    assert sent(got[CLUSTER]) == ["a", "b"] and sent(got[ENDPOINT]) == ["a", "b"]
    assert sent(got[LISTENER]) == ["l1"] and sent(got[ROUTE]) == ["r1"]
    snap = w.cache.get(NODE)
    assert snap is not None and got[CLUSTER].version == snap.version(CLUSTER)   # system_version_info
    assert all(w.state(t) == SYNCED for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE))
    assert w.ads.subscribed() == {CLUSTER: None, ENDPOINT: frozenset({"a", "b"}), LISTENER: None,
                                  ROUTE: frozenset({"r1"})}


def test_delta_sends_only_changed_resources_and_removals() -> None:
    w = World(delta=True)
    w.push(mesh())
    subscribe_all(w)
    out = only_delta(w.push(mesh(ep_port=81)))   # endpoints of a and b change, nothing else
    assert [(r.type_url, sent(r), r.removed) for r in out] == [(ENDPOINT, ["a", "b"], ())]
    w.ads.delta_request(delta_req(ENDPOINT, nonce=out[0].nonce))
    out = only_delta(w.push(mesh(("a",), ep_port=81)))   # cluster b deleted
    assert [(r.type_url, sent(r), r.removed) for r in out] == [(CLUSTER, [], ("b",)), (ENDPOINT, [], ("b",))]
    assert w.push(mesh(("a",), ep_port=81)) == []   # no change, no response


def test_delta_changed_cluster_is_followed_by_its_endpoints_and_new_names_are_answered() -> None:
    w = World(delta=True)
    w.push(mesh())
    subscribe_all(w)
    out = only_delta(w.push(mesh(("a", "b", "c"))))
    # the new cluster c goes out, then EDS for it is not subscribed yet: Envoy asks for it
    assert [(r.type_url, sent(r)) for r in out] == [(CLUSTER, ["c"])]
    w.ads.delta_request(delta_req(CLUSTER, nonce=out[0].nonce))
    (eds,) = only_delta(w.ads.delta_request(delta_req(ENDPOINT, sub=["c"])))
    assert sent(eds) == ["c"] and eds.removed == ()
    # unsubscribing is not answered, and a later change to c's endpoints is not sent
    assert w.ads.delta_request(delta_req(ENDPOINT, unsub=["c"], nonce=eds.nonce)) == []
    out = only_delta(w.push(mesh(("a", "b", "c"), ep_port=82)))
    assert [(r.type_url, sent(r)) for r in out] == [(ENDPOINT, ["a", "b"])]


def test_delta_initial_resource_versions_avoid_resending_what_the_proxy_has() -> None:
    first = World(delta=True)
    first.push(mesh())
    had = {p.name: resource_version(p) for p in subscribe_all(first)[CLUSTER].resources}
    # reconnect (new stream, same content): the proxy announces its versions, gets an empty response
    w = World(delta=True, stream_id=2)
    w.push(mesh())
    (r,) = only_delta(w.ads.delta_request(delta_req(CLUSTER, initial=had)))
    assert sent(r) == [] and r.removed == ()
    # a proxy that has a cluster we no longer have, and an old version of another, is corrected
    w2 = World(delta=True, stream_id=3)
    w2.push(mesh())
    (r,) = only_delta(w2.ads.delta_request(delta_req(CLUSTER, initial={"a": had["a"], "b": "old", "z": "1"})))
    assert sent(r) == ["b"] and r.removed == ("z",)


def test_delta_reconnect_cds_after_eds_resends_the_endpoints_for_warming() -> None:
    first = World(delta=True)
    first.push(mesh())
    got = subscribe_all(first)
    had = {t: {p.name: resource_version(p) for p in r.resources} for t, r in got.items()}
    # Envoy reconnects and happens to ask for EDS (with what it has) before CDS
    w = World(delta=True, stream_id=2)
    w.push(mesh())
    (eds,) = only_delta(w.ads.delta_request(delta_req(ENDPOINT, sub=["a", "b"], initial=had[ENDPOINT])))
    assert sent(eds) == []
    out = only_delta(w.ads.delta_request(delta_req(CLUSTER, initial=had[CLUSTER])))
    assert [(r.type_url, sent(r)) for r in out] == [(CLUSTER, []), (ENDPOINT, ["a", "b"])]


def test_delta_nack_keeps_last_good_and_is_not_resent_until_a_change() -> None:
    w = World(delta=True)
    w.push(mesh())
    subscribe_all(w)
    (bad,) = only_delta(w.push(mesh(body="bad")))
    assert bad.type_url == ROUTE
    assert w.ads.delta_request(delta_req(ROUTE, nonce=bad.nonce, error="route r1: bad")) == []
    assert w.state(ROUTE) == NACKED
    nack = w.status.of(ROUTE).nack
    assert nack is not None and nack.message == "route r1: bad" and nack.version == bad.version
    assert w.push(mesh(body="bad")) == []            # same snapshot: nothing resent
    # back to the content Envoy kept: the diff against what it holds is empty, the new version still goes out
    (kept,) = only_delta(w.push(mesh(body="v1")))
    assert sent(kept) == [] and w.state(ROUTE) == STALE
    w.ads.delta_request(delta_req(ROUTE, nonce=kept.nonce))
    assert w.state(ROUTE) == SYNCED
    (bad,) = only_delta(w.push(mesh(body="bad")))
    w.ads.delta_request(delta_req(ROUTE, nonce=bad.nonce, error="route r1: bad"))
    (fixed,) = only_delta(w.push(mesh(body="v2")))   # a fix: the resource is sent
    assert sent(fixed) == ["r1"]
    w.ads.delta_request(delta_req(ROUTE, nonce=fixed.nonce))
    assert w.state(ROUTE) == SYNCED


def test_delta_stale_nonce_ack_is_ignored_but_subscriptions_apply() -> None:
    w = World(delta=True)
    w.push(mesh())
    subscribe_all(w)
    (r1,) = only_delta(w.push(mesh(body="v2")))
    (r2,) = only_delta(w.push(mesh(body="v3")))
    assert w.ads.delta_request(delta_req(ROUTE, nonce="ffff.1")) == []   # unknown nonce
    assert w.state(ROUTE) == STALE
    w.ads.delta_request(delta_req(ROUTE, nonce=r1.nonce))   # ACK of an older response: not the latest
    assert w.state(ROUTE) == STALE
    w.ads.delta_request(delta_req(ROUTE, nonce=r2.nonce))
    assert w.state(ROUTE) == SYNCED


def test_delta_explicit_wildcard_and_named_subscription() -> None:
    w = World(delta=True)
    w.push(mesh(("a", "b", "c")))
    (r,) = only_delta(w.ads.delta_request(delta_req(ENDPOINT, sub=["*"])))
    assert sent(r) == ["a", "b", "c"]
    w2 = World(delta=True, stream_id=2)
    w2.push(mesh(("a", "b", "c")))
    (r,) = only_delta(w2.ads.delta_request(delta_req(CLUSTER, sub=["b"])))   # named CDS (like gRPC)
    assert sent(r) == ["b"]
    out = only_delta(w2.push(mesh(("a", "c"))))   # b deleted: removed, a and c never sent (not asked)
    assert [(r.type_url, sent(r), r.removed) for r in out] == [(CLUSTER, [], ("b",))]


def test_delta_alike_streams_share_one_diff() -> None:
    diffs = DeltaDiffs()
    worlds = [World(delta=True, diffs=diffs, stream_id=i) for i in range(1, 4)]
    shared = mesh()
    initial = set()
    for w in worlds:
        w.push(shared)
        initial.add(subscribe_all(w)[CLUSTER].key)
    assert len(initial) == 1 and None not in initial   # fresh subscriptions share their (full) diff too
    changed = mesh(ep_port=90)
    misses = diffs.misses
    keys = set()
    for w in worlds:
        (r,) = only_delta(w.push(changed))
        assert sent(r) == ["a", "b"]
        keys.add(r.key)
    assert len(keys) == 1 and diffs.misses - misses == 1   # computed once, reused twice


def test_delta_streams_of_one_cache_share_a_step_only_with_the_same_holdings_and_subscription() -> None:
    # Alike nodes share TypeSnapshots: the streams of a push round holding the same content take one diff
    # object (found by identity); a stream subscribed to other names gets its own, whatever the order.
    cache, diffs = SnapshotCache(), DeltaDiffs()
    nodes = [f"{NODE}-{i}" for i in range(3)]
    events = SyncStatus(cache)
    streams = [AdsStream(ProxyStatus(n, i + 1), delta=True, diffs=diffs, events=events)
               for i, n in enumerate(nodes)]

    def push(rs: ResourceSet) -> list[list[DeltaResponse]]:
        for n in nodes:
            cache.set_snapshot(n, rs)   # the same messages: one TypeSnapshot per type for all three
        return [only_delta(ads.set_snapshot(cache.get(ads.node_id))) for ads in streams]

    push(mesh(("a", "b", "c")))
    for ads, eds in zip(streams, (["a", "b"], ["a", "b", "c"], ["a", "b"]), strict=True):
        for t, names in ((CLUSTER, []), (ENDPOINT, eds)):
            (r,) = only_delta(ads.delta_request(delta_req(t, sub=names)))
            assert ads.delta_request(delta_req(t, nonce=r.nonce)) == []
    misses = diffs.misses
    first, other, second = push(mesh(("a", "b", "c"), ep_port=90))
    assert [(r.type_url, sent(r)) for r in first] == [(ENDPOINT, ["a", "b"])] == \
        [(r.type_url, sent(r)) for r in second]
    assert [(r.type_url, sent(r)) for r in other] == [(ENDPOINT, ["a", "b", "c"])]
    assert first[0].key is second[0].key and first[0].key != other[0].key
    assert diffs.misses - misses == 2
    for ads, (r,) in zip(streams, (first, other, second), strict=True):
        assert ads.delta_request(delta_req(ENDPOINT, nonce=r.nonce)) == []
        snap = cache.get(ads.node_id)
        assert snap is not None and ads.status.of(ENDPOINT).state(snap.version(ENDPOINT)) == SYNCED
    # A changed cluster: its (unchanged) endpoints follow, forced, in one diff object for the alike streams
    changed = mesh(("a", "b", "c"), ep_port=90)
    changed.by_type[CLUSTER]["a"].connect_timeout.seconds = 2
    first, other, second = push(changed)
    assert all([(r.type_url, sent(r)) for r in out] == [(CLUSTER, ["a"]), (ENDPOINT, ["a"])]
               for out in (first, other, second))
    assert first[1].key is second[1].key and first[1].key != other[1].key


# --- state of the world ---

def test_sotw_full_state_and_nack_not_resent() -> None:
    w = World(delta=False)
    w.push(mesh())
    (cds,) = w.ads.sotw_request(sotw_req(CLUSTER))
    assert isinstance(cds, SotwResponse) and cds.names is None
    out = w.ads.sotw_request(sotw_req(ENDPOINT, ["a", "b"]))
    assert [r.type_url for r in out] == [ENDPOINT]
    w.ads.sotw_request(sotw_req(CLUSTER, version=cds.tsnap.version, nonce=cds.nonce))
    out = w.push(mesh(("a", "b", "c")))
    # CDS then all endpoints (warming), whole state each time
    assert [(r.type_url, r.names) for r in out if isinstance(r, SotwResponse)] == [(CLUSTER, None),
                                                                                    (ENDPOINT, None)]
    cds2 = out[0]
    assert w.ads.sotw_request(sotw_req(CLUSTER, version=cds.tsnap.version, nonce=cds2.nonce,
                                       error="bad cluster")) == []
    assert w.state(CLUSTER) == NACKED
    assert w.status.of(CLUSTER).acked_version == cds.tsnap.version   # what Envoy kept
    assert w.ads.sotw_request(sotw_req(CLUSTER, nonce="stale")) == []


class Recorder(SyncStatus):
    """The stream events an AdsStream reports, in order."""

    def __init__(self, cache: SnapshotCache) -> None:
        super().__init__(cache)
        self.seen: list[tuple[str, str]] = []

    def sent(self, ps: ProxyStatus, ts: TypeStatus) -> None:
        self.seen.append(("sent", ts.type_url))

    def acked(self, ps: ProxyStatus, ts: TypeStatus) -> None:
        self.seen.append(("acked", ts.type_url))
        super().acked(ps, ts)

    def nacked(self, ps: ProxyStatus, ts: TypeStatus) -> None:
        self.seen.append(("nacked", ts.type_url))
        super().nacked(ps, ts)

    def moved(self, ps: ProxyStatus) -> None:
        self.seen.append(("moved", ""))
        super().moved(ps)


def test_stream_events_one_per_response_ack_and_nack_and_an_ack_keeps_the_subscription_set() -> None:
    w = World(delta=False)
    rec = w.events = Recorder(w.cache)
    w.ads = AdsStream(w.status, events=rec)
    w.push(mesh())
    (eds,) = w.ads.sotw_request(sotw_req(ENDPOINT, ["a", "b"]))
    assert isinstance(eds, SotwResponse)
    subscription = w.ads.subscribed()[ENDPOINT]
    ack = sotw_req(ENDPOINT, ["a", "b"], version=eds.tsnap.version, nonce=eds.nonce)
    assert w.ads.sotw_request(ack) == []
    assert w.ads.subscribed()[ENDPOINT] is subscription   # the same names: the set is not rebuilt
    (eds2,) = w.push(mesh(ep_port=81))
    w.ads.sotw_request(sotw_req(ENDPOINT, ["a", "b"], nonce=eds2.nonce, error="bad endpoint"))
    w.ads.sotw_request(sotw_req(ENDPOINT, ["b"], nonce="stale"))   # not an unsubscribe: nothing
    w.ads.sotw_request(sotw_req(ENDPOINT, [], nonce="stale"))      # emptied: the status moved
    assert rec.seen == [("sent", ENDPOINT), ("acked", ENDPOINT), ("sent", ENDPOINT), ("nacked", ENDPOINT),
                        ("moved", "")]


async def test_waiters_wake_on_acks_not_on_sends() -> None:
    import asyncio

    w = World(delta=False)
    rec = w.events = Recorder(w.cache)
    w.ads = AdsStream(w.status, events=rec)
    rec.connect(w.status)
    w.push(mesh())
    waiter = asyncio.create_task(rec.wait_synced([NODE], timeout=5))
    await asyncio.sleep(0)
    (rds,) = w.ads.sotw_request(sotw_req(ROUTE, ["r1"]))
    assert isinstance(rds, SotwResponse)
    assert rec._waiters and not rec._waiters[0].dirty     # a send cannot make the node synced
    got = {ROUTE: rds}
    for t, names in ((CLUSTER, ()), (ENDPOINT, ("a", "b")), (LISTENER, ())):
        (r,) = w.ads.sotw_request(sotw_req(t, names))
        assert isinstance(r, SotwResponse)
        got[t] = r
    for t, r in got.items():
        assert isinstance(r, SotwResponse)
        w.ads.sotw_request(sotw_req(t, r.names or (), version=r.tsnap.version, nonce=r.nonce))
    await asyncio.wait_for(waiter, 5)


# --- shared nonces: one byte string per content for every stream ---

def _sotw_subscribed(w: World) -> dict[str, Response]:
    got: dict[str, Response] = {}
    for t, names in ((CLUSTER, ()), (ENDPOINT, ("a", "b")), (LISTENER, ()), (ROUTE, ("r1",))):
        (r,) = w.ads.sotw_request(sotw_req(t, names))
        assert isinstance(r, SotwResponse)
        assert w.ads.sotw_request(sotw_req(t, names, version=r.tsnap.version, nonce=r.nonce)) == []
        got[t] = r
    return got


def test_shared_nonces_give_alike_streams_the_same_bytes_and_stay_increasing_per_stream() -> None:
    from mizzen.xds.server import AdsServer

    nonces = SharedNonces()
    a, b = World(delta=False, stream_id=1, nonces=nonces), World(delta=False, stream_id=2, nonces=nonces)
    server = AdsServer(a.cache)   # only its encoder: no sockets (its bodies kept while a's cache holds them)
    for w in (a, b):
        w.push(mesh())
    got_a, got_b = _sotw_subscribed(a), _sotw_subscribed(b)
    for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
        ra, rb = got_a[t], got_b[t]
        assert ra.nonce == rb.nonce and ra.shared and rb.shared
        assert server.encode(ra)[0] is server.encode(rb)[0]   # one byte string for both streams
    # A -> B -> A: the content A again gets a new nonce (greater than B's), so B's ACK, if late, is stale
    (r1,) = a.push(mesh(body="v2"))
    (r2,) = a.push(mesh())
    assert r1.type_url == r2.type_url == ROUTE and r1.nonce != r2.nonce != got_a[ROUTE].nonce
    assert int(got_a[ROUTE].nonce, 16) < int(r1.nonce, 16) < int(r2.nonce, 16)
    assert a.ads.sotw_request(sotw_req(ROUTE, ["r1"], nonce=r1.nonce)) == []   # stale: not an ACK
    assert a.state(ROUTE) == STALE
    a.ads.sotw_request(sotw_req(ROUTE, ["r1"], version=r2.tsnap.version, nonce=r2.nonce))
    assert a.state(ROUTE) == SYNCED
    # stream b reaches the same content later: it shares a's latest nonce for it
    (rb1,) = b.push(mesh(body="v2"))
    (rb2,) = b.push(mesh())
    assert rb2.nonce == r2.nonce and server.encode(rb2)[0] == server.encode(r2)[0]
    assert int(rb1.nonce, 16) < int(rb2.nonce, 16)


def test_shared_nonces_on_delta_follow_the_shared_diff() -> None:
    nonces, diffs = SharedNonces(), DeltaDiffs()
    a = World(delta=True, stream_id=1, nonces=nonces, diffs=diffs)
    b = World(delta=True, stream_id=2, nonces=nonces, diffs=diffs)
    for w in (a, b):
        w.push(mesh())
    got_a, got_b = subscribe_all(a), subscribe_all(b)
    assert all(got_a[t].nonce == got_b[t].nonce and got_a[t].shared for t in got_a)
    (ra,) = only_delta(a.push(mesh(body="v2")))
    (rb,) = only_delta(b.push(mesh(body="v2")))
    assert ra.key == rb.key and ra.nonce == rb.nonce
    a.ads.delta_request(delta_req(ROUTE, nonce=ra.nonce, error="route r1: bad"))
    assert a.state(ROUTE) == NACKED and b.state(ROUTE) != NACKED   # a nonce is judged per stream

