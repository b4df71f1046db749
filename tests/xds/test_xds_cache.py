"""SnapshotCache versions: content hashes that survive a restart (other process, other hash seed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mizzen.core.resources import LISTENER, ResourceSet
from mizzen.xds import SnapshotCache
from mizzen.xds.canonical import canonical_bytes

# Builds a listener whose typed_configs hold maps (Struct fields, filter_metadata) inside Any payloads, packed
# the usual non-deterministic way, then prints the cache's versions.
SCRIPT = r"""
import json, sys
from google.protobuf import any_pb2, struct_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from mizzen.core.resources import LISTENER, ResourceSet
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
    assert cache.get("n") is first       # same content: same snapshot object, nothing to push
    cache.set_snapshot("n", ResourceSet({LISTENER: {"l": listener_pb2.Listener(name="l", stat_prefix="x")}}))
    second = cache.get("n")
    assert second is not None and second is not first and second.serial > first.serial  # type: ignore[union-attr]
