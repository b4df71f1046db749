"""SnapshotCache: content-hash versions that survive a restart (other process, other hash seed), and per-type
content shared across nodes (one object for alike nodes, overlays for nodes differing in a few resources)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from google.protobuf.message import Message

from mizzen.xds import Snapshot, SnapshotCache
from mizzen.xds.canonical import canonical_bytes
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ResourceSet

# Builds a listener whose typed_configs hold maps (Struct fields, filter_metadata) inside Any payloads, packed
# the usual non-deterministic way, then prints the cache's versions.
SCRIPT = r"""
import json, sys
from google.protobuf import any_pb2, struct_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from mizzen.xds.resources import LISTENER, ResourceSet
from mizzen.xds import SnapshotCache

def build():
    md = base_pb2.Metadata()
    for i in range(40):
        s = struct_pb2.Struct()
        s.update({f"key{j}": j for j in range(40)})
        md.filter_metadata[f"filter{i}"].CopyFrom(s)
    packed = any_pb2.Any()
    packed.Pack(md)
    lis = listener_pb2.Listener(name="l")
    lis.listener_filters.add(name="f", typed_config=packed)
    lis.metadata.typed_filter_metadata["x"].CopyFrom(packed)
    return lis

cache = SnapshotCache()
cache.set_snapshot("n", ResourceSet({LISTENER: {"l": build()}}))
print(json.dumps(cache.get("n").versions()))
"""


def versions_in_subprocess(seed: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60,
                         check=True).stdout
    result: dict[str, str] = json.loads(out)
    return result


def test_versions_are_identical_across_processes_with_different_hash_seeds() -> None:
    a, b, c = (versions_in_subprocess(seed) for seed in ("1", "2", "3"))
    assert a == b == c
    assert set(a) == {LISTENER}


def test_canonical_bytes_does_not_touch_the_callers_message() -> None:
    from envoy.config.core.v3 import base_pb2
    from envoy.config.listener.v3 import listener_pb2
    from google.protobuf import any_pb2, struct_pb2

    s = struct_pb2.Struct()
    s.update({"a": 1, "b": 2})
    md = base_pb2.Metadata()
    md.filter_metadata["f"].CopyFrom(s)
    packed = any_pb2.Any()
    packed.Pack(md)
    lis = listener_pb2.Listener(name="l")
    lis.listener_filters.add(name="f", typed_config=packed)
    before = lis.SerializeToString()
    out = canonical_bytes(lis)
    assert lis.SerializeToString() == before
    back = listener_pb2.Listener()
    back.ParseFromString(out)
    inner = base_pb2.Metadata()
    assert back.listener_filters[0].typed_config.Unpack(inner) and inner == md


def test_equal_content_in_new_objects_reuses_the_canonical_digest() -> None:
    from envoy.config.listener.v3 import listener_pb2

    cache = SnapshotCache()
    cache.set_snapshot("n", ResourceSet({LISTENER: {"l": listener_pb2.Listener(name="l")}}))
    first = cache.get("n")
    cache.set_snapshot("n", ResourceSet({LISTENER: {"l": listener_pb2.Listener(name="l")}}))
    same = cache.get("n")
    assert first is not None and same is not None
    assert same.serial == first.serial and same.versions() == first.versions()   # nothing to push
    assert cache.memo_stats()["entries"] == 1   # the old message is let go: one copy held, not two
    cache.set_snapshot("n", ResourceSet({LISTENER: {"l": listener_pb2.Listener(name="l", stat_prefix="x")}}))
    second = cache.get("n")
    assert second is not None and second.serial > first.serial


# --- per-type sharing across nodes -----------------------------------------------------------------------

def _clusters(n: int) -> dict[str, Message]:
    from envoy.config.cluster.v3 import cluster_pb2

    return {f"outbound|80||svc{i:04d}.default": cluster_pb2.Cluster(name=f"outbound|80||svc{i:04d}.default")
            for i in range(n)}


def _assignments(n: int, port: int = 80) -> dict[str, Message]:
    from envoy.config.endpoint.v3 import endpoint_pb2

    out: dict[str, Message] = {}
    for i in range(n):
        cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=f"outbound|80||svc{i:04d}.default")
        sa = cla.endpoints.add().lb_endpoints.add().endpoint.address.socket_address
        sa.address, sa.port_value = f"10.0.{i // 250}.{i % 250}", port
        out[cla.cluster_name] = cla
    return out


def _fresh_versions(node: str, rs: ResourceSet) -> dict[str, str]:
    """Versions of ``rs`` packed on its own in a new cache (no sharing, nothing memoized)."""
    cache = SnapshotCache()
    cache.set_snapshot(node, rs)
    snap = cache.get(node)
    assert snap is not None
    return snap.versions()


def _wire(snap: Snapshot | None, type_url: str) -> list[bytes]:
    assert snap is not None
    return [a.SerializeToString() for a in snap.of(type_url).select(None)]


def test_nodes_with_the_same_eds_objects_share_one_type_snapshot_and_stay_independent() -> None:
    eds = _assignments(300)
    cache = SnapshotCache()
    cache.set_snapshot("a", ResourceSet({ENDPOINT: dict(eds), LISTENER: {"l": _listener("a")}}))
    cache.set_snapshot("b", ResourceSet({ENDPOINT: dict(eds), LISTENER: {"l": _listener("b")}}))
    a, b = cache.get("a"), cache.get("b")
    assert a is not None and b is not None
    assert a.of(ENDPOINT) is b.of(ENDPOINT)                   # one shared object, not a copy per node
    assert a.of(LISTENER) is not b.of(LISTENER) and a.version(LISTENER) != b.version(LISTENER)
    assert cache.memo_stats()["misses"] == 302                # 300 assignments packed once, 2 listeners

    changed = dict(eds)
    changed.update(_assignments(1, port=81))                  # b's first endpoint moves to port 81
    cache.set_snapshot("b", ResourceSet({ENDPOINT: changed, LISTENER: {"l": _listener("b")}}))
    a2, b2 = cache.get("a"), cache.get("b")
    assert a2 is a                                           # a is untouched: same snapshot, same content
    assert b2 is not None and b2.serial > b.serial and b2.version(ENDPOINT) != a.version(ENDPOINT)
    assert b2.version(LISTENER) == b.version(LISTENER)
    assert a.version(ENDPOINT) == _fresh_versions("x", ResourceSet({ENDPOINT: eds}))[ENDPOINT]
    assert b2.version(ENDPOINT) == _fresh_versions("x", ResourceSet({ENDPOINT: changed}))[ENDPOINT]
    assert _wire(b2, ENDPOINT) == _wire(_set_alone("x", ResourceSet({ENDPOINT: changed})), ENDPOINT)
    assert _wire(a2, ENDPOINT) == _wire(_set_alone("x", ResourceSet({ENDPOINT: eds})), ENDPOINT)

    cache.clear("a")
    cache.clear("b")
    assert cache.memo_stats()["entries"] == 0 and cache.memo_stats()["shared_types"] == 0


def _listener(name: str) -> Message:
    from envoy.config.listener.v3 import listener_pb2

    return listener_pb2.Listener(name=name, stat_prefix=name)


def _set_alone(node: str, rs: ResourceSet) -> Snapshot | None:
    cache = SnapshotCache()
    cache.set_snapshot(node, rs)
    return cache.get(node)


def test_a_node_differing_in_a_few_resources_gets_an_overlay_with_exact_versions_and_content() -> None:
    from envoy.config.cluster.v3 import cluster_pb2

    shared = _clusters(200)
    own = {f"inbound|{n}||": cluster_pb2.Cluster(name=f"inbound|{n}||", alt_stat_name=n) for n in "abc"}
    # each node: a few clusters of its own sorted before the shared ones, one replaced and one dropped
    nodes: dict[str, dict[str, Message]] = {}
    for n in "abc":
        mine = {f"inbound|{n}||": own[f"inbound|{n}||"], **shared}
        nodes[n] = mine
    nodes["b"]["outbound|80||svc0100.default"] = cluster_pb2.Cluster(name="outbound|80||svc0100.default",
                                                                    alt_stat_name="b")
    del nodes["c"]["outbound|80||svc0199.default"]
    cache = SnapshotCache()
    for n, cds in nodes.items():
        cache.set_snapshot(n, ResourceSet({CLUSTER: cds}))
    stats = cache.memo_stats()
    assert stats["shared_types"] == 1 and stats["overlays"] == 2
    assert stats["misses"] == 200 + 3 + 1    # the shared ones packed once; a, b, c's own; b's replacement
    for n, cds in nodes.items():
        snap = cache.get(n)
        assert snap is not None
        alone = _set_alone(n, ResourceSet({CLUSTER: cds}))
        assert alone is not None and snap.versions() == alone.versions()
        assert _wire(snap, CLUSTER) == _wire(alone, CLUSTER)
        ts = snap.of(CLUSTER)
        assert len(ts.resources) == len(cds) and set(ts.resources) == set(cds)
        wanted = frozenset({"outbound|80||svc0100.default", "outbound|80||svc0199.default", "nope"})
        assert [a.SerializeToString() for a in ts.select(wanted)] == [
            a.SerializeToString() for a in alone.of(CLUSTER).select(wanted)]
    assert len({cache.get(n).version(CLUSTER) for n in nodes}) == 3   # type: ignore[union-attr]

    cache.clear("a")           # the node whose content the others overlay leaves: theirs is unaffected
    for n in "bc":
        assert _wire(cache.get(n), CLUSTER) == _wire(_set_alone(n, ResourceSet({CLUSTER: nodes[n]})), CLUSTER)
    cache.clear("b")
    cache.clear("c")
    assert cache.memo_stats() == {"entries": 0, "hits": stats["hits"], "misses": stats["misses"],
                                  "shared_types": 0, "overlays": 0}


def test_alike_nodes_set_in_a_row_share_one_overlay_and_release_it_with_the_last_of_them() -> None:
    """A push hands many nodes the same objects for a type that differs from a shared content in a few
    resources (one cluster changed out of many): the overlay is worked out once and shared, not per node."""
    from envoy.config.cluster.v3 import cluster_pb2

    shared = _clusters(200)
    cache = SnapshotCache()
    for n in "abc":
        cache.set_snapshot(n, ResourceSet({CLUSTER: shared}))
    edited = {**shared, "outbound|80||svc0100.default": cluster_pb2.Cluster(
        name="outbound|80||svc0100.default", alt_stat_name="edited")}
    for n in "abc":
        cache.set_snapshot(n, ResourceSet({CLUSTER: edited}))
    snaps = [cache.get(n) for n in "abc"]
    assert all(s is not None for s in snaps)
    ts = snaps[0].of(CLUSTER)   # type: ignore[union-attr]
    assert all(s.of(CLUSTER) is ts for s in snaps)   # type: ignore[union-attr]   # one TypeSnapshot
    stats = cache.memo_stats()
    assert stats["overlays"] == 1 and stats["shared_types"] == 1 and stats["misses"] == 200 + 1
    alone = _set_alone("a", ResourceSet({CLUSTER: edited}))
    assert alone is not None and snaps[0].versions() == alone.versions()   # type: ignore[union-attr]
    assert _wire(snaps[0], CLUSTER) == _wire(alone, CLUSTER)
    assert cache.resources("c", CLUSTER)["outbound|80||svc0100.default"].alt_stat_name == "edited"  # type: ignore[attr-defined]

    for n in "abc":
        cache.clear(n)
    assert cache.memo_stats() == {"entries": 0, "hits": stats["hits"], "misses": stats["misses"],
                                  "shared_types": 0, "overlays": 0}
    cache.set_snapshot("d", ResourceSet({CLUSTER: edited}))   # after the release: packed again, exactly
    assert _wire(cache.get("d"), CLUSTER) == _wire(alone, CLUSTER)


def test_a_node_moving_from_shared_to_its_own_content_releases_the_old_one() -> None:
    cache = SnapshotCache()
    one, two = _assignments(100), _assignments(100, port=90)
    cache.set_snapshot("a", ResourceSet({ENDPOINT: one}))
    cache.set_snapshot("b", ResourceSet({ENDPOINT: one}))
    cache.set_snapshot("a", ResourceSet({ENDPOINT: two}))     # every resource differs: its own full content
    cache.set_snapshot("b", ResourceSet({ENDPOINT: two}))
    a, b = cache.get("a"), cache.get("b")
    assert a is not None and b is not None and a.of(ENDPOINT) is b.of(ENDPOINT)
    assert cache.memo_stats()["entries"] == 100 and cache.memo_stats()["shared_types"] == 1


def test_overlays_match_unshared_packing_for_random_edits() -> None:
    import random

    from envoy.config.cluster.v3 import cluster_pb2

    rng = random.Random(7)
    shared = _clusters(120)
    names = list(shared)
    cache = SnapshotCache()
    cache.set_snapshot("base", ResourceSet({CLUSTER: shared}))
    for trial in range(60):
        cds = dict(shared)
        for _ in range(rng.randint(1, 12)):
            op = rng.random()
            name = rng.choice(names)
            if op < 0.4:
                cds.pop(name, None)
            elif op < 0.7:
                cds[name] = cluster_pb2.Cluster(name=name, alt_stat_name=f"t{trial}")
            else:
                new = f"{rng.choice(['A', 'inbound', 'outbound|80||svc0050.z', 'zz'])}{trial}.{rng.random()}"
                cds[new] = cluster_pb2.Cluster(name=new)
        if rng.random() < 0.5:
            cds = dict(sorted(cds.items(), reverse=rng.random() < 0.3))
        node = f"n{trial}"
        cache.set_snapshot(node, ResourceSet({CLUSTER: cds}))
        snap, alone = cache.get(node), _set_alone(node, ResourceSet({CLUSTER: cds}))
        assert snap is not None and alone is not None
        assert snap.versions() == alone.versions(), trial
        assert _wire(snap, CLUSTER) == _wire(alone, CLUSTER)
        assert dict(snap.of(CLUSTER).resources).keys() == cds.keys()
    assert cache.memo_stats()["overlays"] > 30     # most trials were overlays on the base, not copies


def test_set_types_replaces_only_the_given_types_for_many_nodes_sharing_one_content() -> None:
    from envoy.config.endpoint.v3 import endpoint_pb2
    from envoy.config.listener.v3 import listener_pb2

    from mizzen.xds.resources import ENDPOINT

    cache = SnapshotCache()
    clusters = _clusters(100)
    cla = {n: endpoint_pb2.ClusterLoadAssignment(cluster_name=n) for n in clusters}
    for node in ("a", "b", "c"):
        cache.set_snapshot(node, ResourceSet({CLUSTER: clusters, ENDPOINT: cla,
                                              LISTENER: {"l": listener_pb2.Listener(name=node)}}))
    before = {n: cache.get(n) for n in "abc"}
    changed = dict(cache.resources("a", ENDPOINT))
    first = next(iter(changed))
    changed[first] = endpoint_pb2.ClusterLoadAssignment(cluster_name=first, endpoints=[{}])
    cache.set_types(["a", "b"], ResourceSet({ENDPOINT: changed}))
    a, b, c = (cache.get(n) for n in "abc")
    assert a is not None and b is not None and c is not None
    assert c is before["c"]                                                   # not named: untouched
    for new, node in ((a, "a"), (b, "b")):
        old = before[node]
        assert old is not None and new.serial > old.serial
        assert new.of(CLUSTER) is old.of(CLUSTER) and new.of(LISTENER) is old.of(LISTENER)
        assert new.version(ENDPOINT) != old.version(ENDPOINT)
    assert a.of(ENDPOINT) is b.of(ENDPOINT)                                  # packed once, shared
    assert cache.resources("b", ENDPOINT)[first] is changed[first]
    assert cache.memo_stats()["overlays"] >= 1                               # a small overlay, not a copy


def test_the_pack_digest_is_blake2b_and_keeps_the_gil() -> None:
    """The digest of a packed resource is blake2b of its bytes (as before), computed without releasing the
    GIL: with no forced switches (a long switch interval), a thread waiting for the GIL does not run during
    it, while it does during hashlib's one-shot hash of the same bytes (which releases it)."""
    import hashlib
    import threading
    import time

    from mizzen.xds.cache import digest_holding_gil

    for n in (0, 1, 2046, 2047, 2048, 4095, 4096, 100_003):
        data = os.urandom(n)
        assert digest_holding_gil(data) == hashlib.blake2b(data, digest_size=16).digest()

    data = os.urandom(8 << 20)
    ticks = [0]
    stop = threading.Event()

    def other() -> None:
        while not stop.is_set():
            ticks[0] += 1
            time.sleep(0.0001)   # releases the GIL; wants it back 0.1 ms later

    interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)   # longer than the hash takes, short enough if anything else holds the GIL
    thread = threading.Thread(target=other, daemon=True)
    try:
        thread.start()
        time.sleep(0.01)
        before = ticks[0]
        digest_holding_gil(data)
        held = ticks[0] - before
        released = 0
        for _ in range(5):   # the control: hashlib's one-shot hash lets the waiting thread run
            before = ticks[0]
            hashlib.blake2b(data, digest_size=16).digest()
            released = ticks[0] - before
            if released:
                break
    finally:
        stop.set()
        sys.setswitchinterval(interval)
        thread.join()
    assert held == 0
    assert released > 0
