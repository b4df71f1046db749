"""Per-node immutable xDS snapshots with content-hash versions, and change notification for the ADS server.

A type's version is a hash of its resources serialized deterministically and sorted by name (nested ``Any``
payloads canonicalized, see ``canonical``), so a restarted control plane that generates the same config
announces the same versions. Each resource is serialized and packed into an ``Any`` once; messages reused
across snapshots (same object) are memoized by identity, and content already seen skips canonicalization.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from google.protobuf import any_pb2
from google.protobuf.message import Message

from mizzen.core.resources import PUSH_ORDER, ResourceSet
from mizzen.xds.canonical import canonical_bytes

log = logging.getLogger(__name__)

__all__ = ["Packed", "Snapshot", "SnapshotCache", "TypeSnapshot", "ordered_types", "version_of"]


@dataclass(frozen=True)
class Packed:
    """One resource, serialized once: its ``Any`` and the digest of its deterministic bytes."""

    name: str
    any: any_pb2.Any
    digest: bytes


def version_of(packed: Iterable[Packed]) -> str:
    """Content version of a set of resources: hash over (name, digest), sorted by name."""
    h = hashlib.blake2b(digest_size=12)   # 96 bits: responses are shared across nodes by version
    for p in sorted(packed, key=lambda p: p.name):
        h.update(p.name.encode())
        h.update(b"\0")
        h.update(p.digest)
    return h.hexdigest()


EMPTY_VERSION = version_of(())


@dataclass(frozen=True)
class TypeSnapshot:
    """All resources of one type for one node, with their content version."""

    type_url: str
    version: str
    resources: Mapping[str, Packed]

    def select(self, names: Iterable[str] | None) -> list[any_pb2.Any]:
        """Resources to send: all of them (``names`` None = wildcard) or the requested ones that exist."""
        if names is None:
            return [self.resources[n].any for n in sorted(self.resources)]
        return [self.resources[n].any for n in sorted(names) if n in self.resources]


@dataclass(frozen=True)
class Snapshot:
    """One node's full, immutable configuration; ``serial`` increases with every set_snapshot on the cache."""

    node_id: str
    serial: int
    types: Mapping[str, TypeSnapshot] = field(default_factory=dict)

    def of(self, type_url: str) -> TypeSnapshot:
        ts = self.types.get(type_url)
        return ts if ts is not None else TypeSnapshot(type_url, EMPTY_VERSION, {})

    def version(self, type_url: str) -> str:
        return self.of(type_url).version

    def versions(self) -> dict[str, str]:
        return {t: ts.version for t, ts in self.types.items()}


def ordered_types(type_urls: Iterable[str]) -> list[str]:
    """Type URLs in make-before-break push order (CDS, EDS, LDS, RDS, SDS), unknown ones after, sorted."""
    rank = {t: i for i, t in enumerate(PUSH_ORDER)}
    return sorted(set(type_urls), key=lambda t: (rank.get(t, len(rank)), t))


_CANONICAL_MEMO_MAX = 200_000


class _Memo:
    """Identity memo of packed resources, reference-counted by the snapshots that use them."""

    def __init__(self) -> None:
        # id(message) -> (message kept alive so the id stays valid, type_url, packed, refcount)
        self._by_id: dict[int, tuple[Message, str, Packed, int]] = {}
        # digest of this process's bytes -> digest of the canonical bytes (content seen before, new object)
        self._canonical: dict[bytes, bytes] = {}
        self.hits = 0
        self.misses = 0

    def pack(self, type_url: str, name: str, msg: Message) -> Packed:
        key = id(msg)
        hit = self._by_id.get(key)
        if hit is not None:  # the memo holds the message, so its id cannot have been reused
            self._by_id[key] = (msg, hit[1], hit[2], hit[3] + 1)
            if hit[1] == type_url and hit[2].name == name:
                self.hits += 1
                return hit[2]
        self.misses += 1
        data = msg.SerializeToString(deterministic=True)
        local = hashlib.blake2b(data, digest_size=16).digest()
        digest = self._canonical.get(local)
        if digest is None:   # first time these bytes are seen: hash the process-independent form
            if len(self._canonical) >= _CANONICAL_MEMO_MAX:
                self._canonical.clear()
            digest = self._canonical[local] = hashlib.blake2b(canonical_bytes(msg), digest_size=16).digest()
        packed = Packed(name, any_pb2.Any(type_url=type_url, value=data), digest)
        if hit is None:
            self._by_id[key] = (msg, type_url, packed, 1)
        return packed

    def release(self, msgs: Iterable[Message]) -> None:
        for msg in msgs:
            key = id(msg)
            hit = self._by_id.get(key)
            if hit is None:
                continue
            if hit[3] <= 1:
                del self._by_id[key]
            else:
                self._by_id[key] = (hit[0], hit[1], hit[2], hit[3] - 1)

    def __len__(self) -> int:
        return len(self._by_id)


class _Entry:
    __slots__ = ("changed", "messages", "snapshot")

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.messages: list[Message] = []     # the source messages of ``snapshot`` (for memo release)
        self.changed = asyncio.Event()


class SnapshotCache:
    """Node id -> current :class:`Snapshot`. All methods must be called from the event loop's thread.

    Messages handed to :meth:`set_snapshot` must not be mutated afterwards (they are memoized by identity).
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._memo = _Memo()
        self._serial = 0

    def set_snapshot(self, node_id: str, resources: ResourceSet) -> None:
        """Replace the node's snapshot and wake its streams (no-op for streams if no version changed)."""
        memo = self._memo
        types: dict[str, TypeSnapshot] = {}
        messages: list[Message] = []
        for type_url, by_name in resources.by_type.items():
            packed: dict[str, Packed] = {}
            for name, msg in by_name.items():
                packed[name] = memo.pack(type_url, name, msg)
                messages.append(msg)
            types[type_url] = TypeSnapshot(type_url, version_of(packed.values()), packed)
        entry = self._entries.get(node_id)
        if entry is None:
            entry = self._entries[node_id] = _Entry()
        old = entry.snapshot
        memo.release(entry.messages)
        entry.messages = messages
        if old is not None and _same_versions(old, types):
            return  # identical content: keep the old snapshot object, nothing to push
        self._serial += 1
        entry.snapshot = Snapshot(node_id, self._serial, types)
        log.debug("snapshot %s for %s: %s", self._serial, node_id, entry.snapshot.versions())
        self._wake(entry)

    def get(self, node_id: str) -> Snapshot | None:
        entry = self._entries.get(node_id)
        return entry.snapshot if entry is not None else None

    def clear(self, node_id: str) -> None:
        """Forget the node's snapshot (its connected streams keep what they have and wait for a new one)."""
        entry = self._entries.pop(node_id, None)
        if entry is not None:
            self._memo.release(entry.messages)
            entry.messages = []
            entry.changed.set()

    def changed(self, node_id: str) -> asyncio.Event:
        """An event set at the next snapshot change of ``node_id``; fetch it before reading :meth:`get`."""
        entry = self._entries.get(node_id)
        if entry is None:
            entry = self._entries[node_id] = _Entry()
        return entry.changed

    def node_ids(self) -> list[str]:
        return [n for n, e in self._entries.items() if e.snapshot is not None]

    def memo_stats(self) -> dict[str, int]:
        return {"entries": len(self._memo), "hits": self._memo.hits, "misses": self._memo.misses}

    @staticmethod
    def _wake(entry: _Entry) -> None:
        ev, entry.changed = entry.changed, asyncio.Event()
        ev.set()


def _same_versions(old: Snapshot, types: Mapping[str, TypeSnapshot]) -> bool:
    if set(old.types) != set(types):
        return False
    return all(old.types[t].version == ts.version for t, ts in types.items())
