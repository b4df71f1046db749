"""What the ADS server's shared caches keep (xds/retention.py): response bodies, delta diffs and bodies and
shared nonces are held while their content is some node's current snapshot, dropped as soon as no node holds
it (fuzzing 10,000 configs in 90 s grew the control plane by ~90 MB through caches bounded by age), and never
what a connected stream still needs (a stream behind, a NACK's recovery). No sockets, no clock."""

from __future__ import annotations

from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DiscoveryRequest
from google.rpc import status_pb2
from xds_testlib import eds_cluster, listener, load_assignment, resources, route_config

from mizzen.xds import NACKED, SYNCED, SnapshotCache
from mizzen.xds.ads import AdsStream, DeltaResponse, Response, SotwResponse, delta_target
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, ResourceSet
from mizzen.xds.server import AdsServer
from mizzen.xds.status import ProxyStatus, SyncStatus

A = "sidecar~127.0.0.1~a.default~default.svc.cluster.local"
B = "sidecar~127.0.0.2~b.default~default.svc.cluster.local"


def mesh(body: str = "v1", clusters: tuple[str, ...] = ("a", "b")) -> ResourceSet:
    return resources(
        clusters=[eds_cluster(n) for n in clusters],
        endpoints=[load_assignment(n, [("127.0.0.2", 80)]) for n in clusters],
        listeners=[listener("l1", "127.0.0.1", 15001, "r1")],
        routes=[route_config("r1", body=body)],
    )


class Mesh:
    """One snapshot cache, the server's shared caches following it, and one stream per node."""

    def __init__(self, *, delta: bool, nodes: tuple[str, ...] = (A, B)) -> None:
        self.cache = SnapshotCache()
        self.server = AdsServer(self.cache)   # its shared caches and encoder only: no sockets
        self.events = SyncStatus(self.cache)
        self.streams = {n: AdsStream(ProxyStatus(n, i + 1), delta=delta, diffs=self.server.diffs,
                                     events=self.events, nonces=self.server.nonces)
                        for i, n in enumerate(nodes)}

    def set(self, node: str, rs: ResourceSet) -> None:
        self.cache.set_snapshot(node, rs)

    def deliver(self, node: str) -> list[Response]:
        """The stream takes its node's current snapshot; its responses are encoded (as the server writes)."""
        out = self.streams[node].set_snapshot(self.cache.get(node))
        for r in out:
            self.server.encode(r)
        return out

    def push(self, node: str, rs: ResourceSet) -> list[Response]:
        self.set(node, rs)
        return self.deliver(node)

    def subscribe(self, node: str) -> None:
        """Subscribe like Envoy (CDS/LDS wildcard, EDS/RDS by name) and ACK every response."""
        ads = self.streams[node]
        for t, names in ((CLUSTER, ()), (ENDPOINT, ("a", "b")), (LISTENER, ()), (ROUTE, ("r1",))):
            if ads.delta:
                (r,) = ads.delta_request(DeltaDiscoveryRequest(type_url=t, resource_names_subscribe=names))
                self.server.encode(r)
                assert ads.delta_request(DeltaDiscoveryRequest(type_url=t, response_nonce=r.nonce)) == []
            else:
                (r,) = ads.sotw_request(DiscoveryRequest(type_url=t, resource_names=names))
                assert isinstance(r, SotwResponse)
                self.server.encode(r)
                assert ads.sotw_request(DiscoveryRequest(type_url=t, resource_names=names,
                                                         version_info=r.tsnap.version,
                                                         response_nonce=r.nonce)) == []

    def ack(self, node: str, responses: list[Response]) -> None:
        ads = self.streams[node]
        for r in responses:
            if isinstance(r, DeltaResponse):
                ads.delta_request(DeltaDiscoveryRequest(type_url=r.type_url, response_nonce=r.nonce))
            else:
                ads.sotw_request(DiscoveryRequest(type_url=r.type_url, version_info=r.tsnap.version,
                                                  response_nonce=r.nonce,
                                                  resource_names=r.names or ()))

    def route_version(self, node: str) -> str:
        snap = self.cache.get(node)
        assert snap is not None
        return snap.version(ROUTE)

    def targets(self) -> set[tuple[str, str]]:
        """Every (type, version) some entry of the shared caches delivers."""
        s = self.server
        out = {delta_target(k) for k in s.diffs._lru}
        out |= {t for c in (s.bodies, s.delta_bodies) for t in c._targets.values()}
        assert s.nonces is not None
        out |= {t for _serial, t in s.nonces._serials.values()}
        return out

    def live(self) -> set[tuple[str, str]]:
        snaps = [self.cache.get(n) for n in self.cache.node_ids()]
        return {(t, ts.version) for snap in snaps if snap is not None for t, ts in snap.types.items()}


def test_the_cache_retires_a_version_when_no_node_holds_it() -> None:
    cache = SnapshotCache()
    retired: list[tuple[str, str]] = []
    cache.on_retire(lambda t, v: retired.append((t, v)))
    cache.set_snapshot(A, mesh())
    cache.set_snapshot(B, mesh())
    v1 = cache.get(A).version(ROUTE)   # type: ignore[union-attr]
    assert cache.is_live(ROUTE, v1)
    cache.set_snapshot(A, mesh("v2"))
    assert retired == [] and cache.is_live(ROUTE, v1)         # B still holds v1
    cache.set_snapshot(A, mesh("v2"))                         # the same versions again: nothing changes
    assert retired == []
    cache.set_types([B], resources(routes=[route_config("r1", body="v2")]))
    assert retired == [(ROUTE, v1)] and not cache.is_live(ROUTE, v1)
    v2 = cache.get(A).version(ROUTE)   # type: ignore[union-attr]
    cluster_version = cache.get(A).version(CLUSTER)   # type: ignore[union-attr]
    cache.clear(A)
    assert cache.is_live(ROUTE, v2)
    cache.clear(B)
    assert {(ROUTE, v2), (CLUSTER, cluster_version)} <= set(retired)
    assert not cache.is_live(ROUTE, v2) and not cache.is_live(CLUSTER, cluster_version)


def test_delta_caches_hold_only_current_content_however_many_pushes() -> None:
    m = Mesh(delta=True)
    for n in (A, B):
        m.push(n, mesh())
        m.subscribe(n)
    sizes = []
    for i in range(40):
        for n in (A, B):
            m.ack(n, m.push(n, mesh(f"v{i + 2}")))
        assert m.targets() <= m.live()
        sizes.append((len(m.server.diffs), len(m.server.delta_bodies), len(m.server.nonces or ())))
    assert sizes[-1] == sizes[0] and m.server.delta_bodies.size < 10_000, sizes   # flat, not one per push
    assert m.server.diffs.retired > 0 and m.server.delta_bodies.retired > 0


def test_sotw_bodies_hold_only_current_content_and_a_late_encode_keeps_nothing() -> None:
    m = Mesh(delta=False)
    for n in (A, B):
        m.push(n, mesh())
        m.subscribe(n)
    held = len(m.server.bodies)
    for i in range(20):
        for n in (A, B):
            m.ack(n, m.push(n, mesh(f"v{i + 2}")))
        assert m.targets() <= m.live() and len(m.server.bodies) == held
    # a response written after its node moved on (queued behind other writes) is encoded, not kept
    (late,) = m.push(A, mesh("late"))
    m.set(A, mesh("later"))
    m.set(B, mesh("later"))
    body, count = m.server.encode(late)
    assert count == 1 and body and m.targets() <= m.live()


def test_a_stream_behind_and_a_nack_still_get_their_diffs() -> None:
    """B's node moves on while B's stream is behind, and B NACKs: what B needs is kept or rebuilt, right."""
    m = Mesh(delta=True)
    for n in (A, B):
        m.push(n, mesh())
        m.subscribe(n)
    m.set(B, mesh("v2", clusters=("a",)))      # B's stream has not taken it yet
    for i in range(3):                         # A moves on: v1 (B's stream's content) is no node's now
        m.ack(A, m.push(A, mesh(f"x{i}")))
    out = m.deliver(B)                         # B: v1 -> v2, diffs built from what the stream holds
    by_type = {r.type_url: r for r in out if isinstance(r, DeltaResponse)}
    assert by_type[CLUSTER].removed == ("b",) and by_type[ROUTE].resources[0].name == "r1"
    ads = m.streams[B]
    ads.delta_request(DeltaDiscoveryRequest(type_url=ROUTE, response_nonce=by_type[ROUTE].nonce,
                                            error_detail=status_pb2.Status(code=3, message="bad route")))
    assert ads.status.of(ROUTE).state(m.route_version(B)) == NACKED
    m.set(A, mesh("v3", clusters=("a",)))      # the diffs of v2 are gone with it
    m.set(B, mesh("v3", clusters=("a",)))
    assert not any(v == by_type[ROUTE].version for _t, v in m.targets())
    (r,) = [r for r in m.deliver(B) if r.type_url == ROUTE]
    assert isinstance(r, DeltaResponse) and [p.name for p in r.resources] == ["r1"]   # from what B kept
    ads.delta_request(DeltaDiscoveryRequest(type_url=ROUTE, response_nonce=r.nonce))
    assert ads.status.of(ROUTE).state(m.route_version(B)) == SYNCED
    assert m.targets() <= m.live()


def test_a_cache_not_following_a_snapshot_cache_is_bounded_by_count() -> None:
    from mizzen.xds.ads import DeltaDiffs, SharedNonces, _Diff

    diffs, nonces = DeltaDiffs(max_entries=8), SharedNonces(max_entries=8)
    for i in range(50):
        key = (ROUTE, f"old{i}", None, f"new{i}", None, frozenset())
        diffs.put(key, _Diff((), ()))
        nonces.serial(key, 0, delta_target(key))
    assert len(diffs) == 8 and len(nonces) == 8
    assert diffs._by_target.keys() == {delta_target(k) for k in diffs._lru}   # the index follows evictions
