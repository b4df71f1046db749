"""Per-node immutable xDS snapshots with content-hash versions, and change notification for the ADS server.

A type's version is a hash of its resources serialized deterministically and sorted by name (nested ``Any``
payloads canonicalized, see ``canonical``), so a restarted control plane that generates the same config
announces the same versions. Each resource is serialized and packed into an ``Any`` once (memoized by message
identity). Per-type content is shared across nodes: nodes handed the same message objects share one
``TypeSnapshot``; a node that differs from such a shared one in a few resources gets a small overlay on it.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import operator
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from google.protobuf import any_pb2
from google.protobuf.message import Message

from mizzen.xds.canonical import canonical_bytes
from mizzen.xds.resources import PUSH_ORDER, ResourceSet

log = logging.getLogger(__name__)

__all__ = [
    "OverlayResources", "Packed", "Snapshot", "SnapshotCache", "TypeSnapshot", "digest_holding_gil",
    "ordered_types", "version_of",
]


@dataclass(frozen=True)
class Packed:
    """One resource, serialized once: its ``Any`` and the digest of its deterministic bytes."""

    name: str
    any: any_pb2.Any
    digest: bytes


def version_of(packed: Iterable[Packed]) -> str:
    """Content version of a set of resources: hash over (name, digest), sorted by name."""
    entries = sorted(packed, key=lambda p: p.name)
    # 96 bits: responses are shared across nodes by version
    return hashlib.blake2b(b"".join(map(_entry, entries)), digest_size=12).hexdigest()


def _entry(p: Packed) -> bytes:
    """The bytes one resource contributes to its type's version."""
    return p.name.encode() + b"\0" + p.digest


EMPTY_VERSION = version_of(())
_NO_TYPES: Mapping[str, TypeSnapshot] = {}


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
_GIL_CHUNK = 2047   # hashlib releases the GIL while hashing 2,048 bytes or more in one update() call


def digest_holding_gil(data: bytes) -> bytes:
    """blake2b (16 bytes) of ``data``, fed in chunks too small for hashlib to release the GIL.

    The push packs resources on the event loop's thread; a hash that releases the GIL for each large
    resource (route configurations, listeners: tens of KiB) lets another thread take it, and the loop then
    waits for it back (up to the interpreter's 5 ms switch interval each time, under load): measured as the
    largest site of loop stalls during a push. Hashing ~1 GB/s, holding the GIL through it costs less.
    """
    h = hashlib.blake2b(digest_size=16)
    if len(data) <= _GIL_CHUNK:
        h.update(data)
    else:
        view = memoryview(data)
        for i in range(0, len(data), _GIL_CHUNK):
            h.update(view[i:i + _GIL_CHUNK])
    return h.digest()


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
        local = digest_holding_gil(data)
        digest = self._canonical.get(local)
        if digest is None:   # first time these bytes are seen: hash the process-independent form
            if len(self._canonical) >= _CANONICAL_MEMO_MAX:
                self._canonical.clear()
            digest = self._canonical[local] = digest_holding_gil(canonical_bytes(msg))
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



# Per-type sharing. A node's resources of one type are looked up by the identity of their messages: the same
# objects in the same order (alike proxies of one push) reuse one _Full. Otherwise, if most of them match a
# _Full in one run (e.g. 3,500 shared outbound clusters around a few of the node's own inbound ones), the node
# gets an _Overlay: the _Full's packed resources minus a few names plus its own few.
_OVERLAY_MIN = 64   # smaller types are simply packed in full
_PROBES = (2, 3, 4, 1)   # positions len // k probed to find a _Full sharing messages with the node's


class _Full:
    """One per-type content shared by every node (and overlay) that holds it. Holds its messages, so the ids
    it is keyed and indexed by stay valid while it lives."""

    __slots__ = ("ids", "key", "msgs", "names", "order", "position", "refs", "tsnap", "type_url")

    def __init__(self, type_url: str, names: tuple[str, ...], ids: tuple[int, ...],
                 msgs: tuple[Message, ...], tsnap: TypeSnapshot) -> None:
        self.type_url, self.names, self.ids, self.msgs, self.tsnap = type_url, names, ids, msgs, tsnap
        self.key = (type_url, ids)
        self.refs = 0
        self.order: tuple[list[str], bytes, list[int]] | None = None   # built when first used as a base
        self.position: dict[int, int] | None = None                        # id(message) -> index, idem

    def index_of(self, msg_id: int) -> int | None:
        if self.position is None:
            self.position = dict(zip(self.ids, range(len(self.ids)), strict=True))
        return self.position.get(msg_id)

    def sorted_entries(self) -> tuple[list[str], bytes, list[int]]:
        """(names sorted, their version entries concatenated, the offset of each entry plus the end)."""
        if self.order is None:
            packed = self.tsnap.resources
            names = sorted(packed)
            entries = [_entry(packed[n]) for n in names]
            self.order = (names, b"".join(entries), list(itertools.accumulate(map(len, entries), initial=0)))
        return self.order


class _Overlay:
    """A node's per-type content: a _Full's resources with the names ``removed`` left out plus ``extra``."""

    __slots__ = ("base", "msgs", "refs", "tsnap")

    def __init__(self, base: _Full, msgs: tuple[Message, ...], tsnap: TypeSnapshot) -> None:
        self.base, self.msgs, self.tsnap = base, msgs, tsnap
        self.refs = 0


class OverlayResources(Mapping[str, Packed]):
    """Read-only view of a shared mapping with a few names removed and a few added (or replaced)."""

    __slots__ = ("_base", "_extra", "_removed")

    def __init__(self, base: Mapping[str, Packed], removed: frozenset[str], extra: dict[str, Packed]) -> None:
        self._base, self._removed, self._extra = base, removed, extra   # extra's names: none kept from base

    def __getitem__(self, name: str) -> Packed:
        p = self._extra.get(name)
        if p is not None:
            return p
        if name in self._removed:
            raise KeyError(name)
        return self._base[name]

    def __iter__(self) -> Iterator[str]:
        removed = self._removed
        yield from (n for n in self._base if n not in removed)
        yield from self._extra

    def __len__(self) -> int:
        return len(self._base) - len(self._removed) + len(self._extra)

    @property
    def removed(self) -> frozenset[str]:
        return self._removed

    @property
    def added(self) -> list[str]:
        """The names of this view's own resources, in the order they were given."""
        return list(self._extra)


_Shared = _Full | _Overlay


def _run(a: tuple[int, ...], i: int, b: tuple[int, ...], j: int) -> int:
    """Length of the common run of ``a[i:]`` and ``b[j:]`` (galloping, then binary search, over slice
    comparisons, which run in C)."""
    limit = min(len(a) - i, len(b) - j)
    good, step = 0, 1
    while True:
        probe = min(good + step, limit)
        if a[i + good:i + probe] != b[j + good:j + probe]:
            break
        good = probe
        if good == limit:
            return good
        step *= 2
    lo, hi = good, probe - 1   # a[i:i+lo] == b[j:j+lo]; the run ends before probe
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[i + lo:i + mid] == b[j + lo:j + mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _overlay_version(base: _Full, removed: Iterable[str], extra: Mapping[str, Packed]) -> str:
    """version_of the base's resources minus ``removed`` plus ``extra``, hashing the base's sorted entries
    in slices instead of sorting and encoding every resource again."""
    names, blob, offsets = base.sorted_entries()
    events = sorted([(bisect_left(names, n), 1, n) for n in removed]
                    + [(bisect_left(names, n), 0, n) for n in extra])   # inserts before the removal at pos
    h = hashlib.blake2b(digest_size=12)
    view = memoryview(blob)
    cursor = 0
    for pos, kind, name in events:
        if pos > cursor:
            h.update(view[offsets[cursor]:offsets[pos]])
            cursor = pos
        if kind == 0:
            h.update(_entry(extra[name]))
        else:
            cursor = pos + 1
    h.update(view[offsets[cursor]:])
    return h.hexdigest()


class _Entry:
    __slots__ = ("held", "snapshot")

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.held: dict[str, _Shared] = {}   # type -> the shared per-type content this node references


class SnapshotCache:
    """Node id -> current :class:`Snapshot`. All methods must be called from the event loop's thread (watchers
    run in it).

    Messages handed to :meth:`set_snapshot` must not be mutated afterwards (they are memoized by identity).
    Nodes whose resources of a type are the same objects share one :class:`TypeSnapshot`.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._memo = _Memo()
        self._serial = 0
        self._fulls: dict[tuple[str, tuple[int, ...]], _Full] = {}
        self._member: dict[str, dict[int, _Full]] = {}   # type -> id(message) -> a live _Full holding it
        # type -> the live content acquired last, with the messages and names it was acquired for (the
        # next node's are checked against them first)
        self._last: dict[str, tuple[_Shared, tuple[Message, ...], tuple[str, ...]]] = {}
        self._overlays = 0
        # node id -> callbacks run (synchronously, in order) at each snapshot change of the node: a stream's
        # own wake-up, no task or event per node and change
        self._watchers: dict[str, list[Callable[[], None]]] = {}
        # (type URL, version) -> how many nodes' current snapshots hold it (see xds.retention)
        self._live: dict[tuple[str, str], int] = {}
        self._retire: list[Callable[[str, str], None]] = []

    def is_live(self, type_url: str, version: str) -> bool:
        """Whether some node's current snapshot holds ``version`` of ``type_url``."""
        return (type_url, version) in self._live

    def on_retire(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(type_url, version)`` when no node's current snapshot holds that version any more
        (every node holding it moved on or was cleared): what delivers it will not be sent again."""
        self._retire.append(callback)

    def _install(self, entry: _Entry, snapshot: Snapshot | None) -> None:
        """Make ``snapshot`` the entry's current one, counting the versions it holds and retiring those no
        node holds any more."""
        old, entry.snapshot = entry.snapshot, snapshot
        live = self._live
        # a type whose content is the very object it was (alike nodes share them) keeps its count
        old_types = old.types if old is not None else _NO_TYPES
        new_types = snapshot.types if snapshot is not None else _NO_TYPES
        for t, ts in new_types.items():
            if old_types.get(t) is not ts:
                key = (t, ts.version)
                live[key] = live.get(key, 0) + 1
        for t, ts in old_types.items():
            if new_types.get(t) is ts:
                continue
            key = (t, ts.version)
            n = live[key] - 1
            if n:
                live[key] = n
                continue
            del live[key]
            for callback in self._retire:
                try:
                    callback(t, ts.version)
                except Exception:
                    log.exception("retire callback for %s %s failed", t, ts.version)

    def set_snapshot(self, node_id: str, resources: ResourceSet) -> None:
        """Replace the node's snapshot and wake its streams (no-op for streams if no version changed)."""
        self._set(node_id, {t: self._acquire(t, by_name) for t, by_name in resources.by_type.items()}, True)

    def set_types(self, node_ids: Iterable[str], resources: ResourceSet) -> None:
        """Replace only the types in ``resources`` for every node in ``node_ids`` (their other types keep
        their snapshots). The content is packed once and shared by all of them."""
        acquired = {t: self._acquire(t, by_name) for t, by_name in resources.by_type.items()}
        for node_id in node_ids:
            entry = self._entries.get(node_id)
            if entry is None:
                entry = self._entries[node_id] = _Entry()
            old = entry.snapshot
            held = dict(entry.held)
            types = dict(old.types) if old is not None else {}
            same = old is not None
            for t, shared in acquired.items():
                shared.refs += 1
                previous = held.get(t)
                held[t] = shared
                if same and (t not in types or types[t].version != shared.tsnap.version):
                    same = False
                types[t] = shared.tsnap
                if previous is not None:
                    self._release(previous)
            entry.held = held
            if same and old is not None:
                entry.snapshot = Snapshot(node_id, old.serial, types)   # same versions: nothing to push
                continue
            self._serial += 1
            self._install(entry, Snapshot(node_id, self._serial, types))
            self._wake(node_id)
        for shared in acquired.values():   # drop the acquisition reference; the nodes hold their own
            self._release(shared)

    def resources(self, node_id: str, type_url: str) -> dict[str, Message]:
        """The messages the node's current snapshot of ``type_url`` was built from, by name (to derive an
        updated set from; never mutate them)."""
        entry = self._entries.get(node_id)
        shared = entry.held.get(type_url) if entry is not None else None
        if shared is None:
            return {}
        if isinstance(shared, _Full):
            return dict(zip(shared.names, shared.msgs, strict=True))
        base = shared.base
        out = dict(zip(base.names, base.msgs, strict=True))
        view = shared.tsnap.resources
        assert isinstance(view, OverlayResources)
        for name in view.removed:
            del out[name]
        out.update(zip(view.added, shared.msgs, strict=True))
        return out

    def _set(self, node_id: str, held: dict[str, _Shared], replace_all: bool) -> None:
        entry = self._entries.get(node_id)
        if entry is None:
            entry = self._entries[node_id] = _Entry()
        old = entry.snapshot
        if not replace_all:
            held = {**entry.held, **held}
            for t, shared in held.items():
                if entry.held.get(t) is shared:
                    shared.refs += 1   # kept: released below with the rest of the old holdings
        for shared in entry.held.values():   # after acquiring: content the node keeps is not rebuilt
            if shared.refs > 1:
                shared.refs -= 1   # (_release's common case, without the call)
            else:
                self._release(shared)
        entry.held = held   # (kept even when the versions stay: alike nodes of this push reuse it)
        # the node's types, and whether they bring the same versions as its current snapshot (one walk)
        types: dict[str, TypeSnapshot] = {}
        olds = old.types if old is not None else _NO_TYPES
        same = old is not None and len(olds) == len(held)
        for t, shared in held.items():
            ts = types[t] = shared.tsnap
            if same:   # the same count and every type in both: the same types
                o = olds.get(t)
                if o is None or (o is not ts and o.version != ts.version):
                    same = False
        if same and old is not None:
            # identical content: nothing to push, but hold the new objects only (the old ones are freed)
            entry.snapshot = Snapshot(node_id, old.serial, types)   # same versions: counted already
            return
        self._serial += 1
        snapshot = Snapshot(node_id, self._serial, types)
        self._install(entry, snapshot)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("snapshot %s for %s: %s", self._serial, node_id, snapshot.versions())
        self._wake(node_id)

    def get(self, node_id: str) -> Snapshot | None:
        entry = self._entries.get(node_id)
        return entry.snapshot if entry is not None else None

    def clear(self, node_id: str) -> None:
        """Forget the node's snapshot (its connected streams keep what they have and wait for a new one)."""
        entry = self._entries.pop(node_id, None)
        if entry is not None:
            self._install(entry, None)
            for shared in entry.held.values():
                self._release(shared)
            entry.held = {}
            self._wake(node_id)

    def watch(self, node_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` at every later snapshot change of ``node_id`` (also :meth:`clear`), from the
        thread that makes it; it must not block. Returns the function that stops watching."""
        self._watchers.setdefault(node_id, []).append(callback)

        def unwatch() -> None:
            callbacks = self._watchers.get(node_id)
            if callbacks is not None and callback in callbacks:
                callbacks.remove(callback)
                if not callbacks:
                    del self._watchers[node_id]

        return unwatch

    def node_ids(self) -> list[str]:
        return [n for n, e in self._entries.items() if e.snapshot is not None]

    def memo_stats(self) -> dict[str, int]:
        """entries: messages packed and held; hits/misses: resources reused / packed; shared_types: distinct
        per-type contents held (each shared by any number of nodes); overlays: per-node variants of them."""
        return {"entries": len(self._memo), "hits": self._memo.hits, "misses": self._memo.misses,
                "shared_types": len(self._fulls), "overlays": self._overlays}

    # --- per-type sharing --------------------------------------------------------------------------------
    def _acquire(self, type_url: str, by_name: Mapping[str, Message]) -> _Shared:
        msgs = tuple(by_name.values())
        names = tuple(by_name)
        last = self._last.get(type_url)
        # (equal names: as many messages as last time, so the identity walk covers them all)
        if last is not None and last[2] == names and all(map(operator.is_, msgs, last[1])):
            # the same objects as the type's last content (alike nodes of a push in a row): no ids to key
            # by, and an overlay is shared rather than worked out again
            self._memo.hits += len(msgs)
            last[0].refs += 1
            return last[0]
        ids = tuple(map(id, msgs))
        full = self._fulls.get((type_url, ids))
        shared: _Shared | None = full if full is not None and full.names == names else None
        if shared is not None:
            self._memo.hits += len(msgs)
        else:
            if len(msgs) >= _OVERLAY_MIN:
                base = self._find_base(type_url, ids)
                if base is not None:
                    shared = self._overlay(type_url, base, names, ids, msgs)
            if shared is None:
                shared = self._full(type_url, names, ids, msgs)
        self._last[type_url] = (shared, msgs, names)
        shared.refs += 1
        return shared

    def _full(self, type_url: str, names: tuple[str, ...], ids: tuple[int, ...],
              msgs: tuple[Message, ...]) -> _Full:
        pack = self._memo.pack
        packed = {name: pack(type_url, name, msg) for name, msg in zip(names, msgs, strict=True)}
        full = _Full(type_url, names, ids, msgs, TypeSnapshot(type_url, version_of(packed.values()), packed))
        self._fulls.setdefault(full.key, full)   # (names differing with the same ids: not interned)
        self._member.setdefault(type_url, {}).update(dict.fromkeys(ids, full))
        return full

    def _find_base(self, type_url: str, ids: tuple[int, ...]) -> _Full | None:
        member = self._member.get(type_url)
        if not member:
            return None
        for k in _PROBES:
            base = member.get(ids[len(ids) // k if k > 1 else 0])
            if base is not None:
                return base
        return None

    def _overlay(self, type_url: str, base: _Full, names: tuple[str, ...], ids: tuple[int, ...],
                 msgs: tuple[Message, ...]) -> _Overlay | None:
        """The node's content as ``base`` minus some resources plus some of its own: runs of the same
        objects under the same names are shared. None if more than a quarter of it would differ."""
        n, m = len(ids), len(base.ids)
        budget = m // 4
        own: list[int] = []          # node indexes not in a shared run
        gone: list[int] = []         # base indexes skipped
        i = j = 0
        while i < n:
            run = _run(ids, i, base.ids, j) if j < m else 0
            if run:
                if names[i:i + run] != base.names[j:j + run]:
                    return None
                i += run
                j += run
                continue
            k = base.index_of(ids[i])
            if k is None or k < j:
                own.append(i)
                i += 1
            else:
                gone.extend(range(j, k))
                j = k
            if len(own) + len(gone) > budget:
                return None
        gone.extend(range(j, m))
        if len(own) + len(gone) > budget:
            return None
        pack = self._memo.pack
        mine = tuple(msgs[x] for x in own)
        extra = {names[x]: pack(type_url, names[x], msgs[x]) for x in own}
        removed = frozenset(base.names[x] for x in gone)
        self._memo.hits += n - len(own)
        version = _overlay_version(base, removed, extra)
        base.refs += 1
        self._overlays += 1
        resources = OverlayResources(base.tsnap.resources, removed, extra)
        return _Overlay(base, mine, TypeSnapshot(type_url, version, resources))

    def _release(self, shared: _Shared) -> None:
        shared.refs -= 1
        if shared.refs > 0:
            return
        last = self._last.get(shared.tsnap.type_url)
        if last is not None and last[0] is shared:
            del self._last[shared.tsnap.type_url]
        self._memo.release(shared.msgs)
        if isinstance(shared, _Overlay):
            self._overlays -= 1
            self._release(shared.base)
            return
        if self._fulls.get(shared.key) is shared:
            del self._fulls[shared.key]
        member = self._member[shared.type_url]
        for i in shared.ids:
            if member.get(i) is shared:
                del member[i]

    def _wake(self, node_id: str) -> None:
        callbacks = self._watchers.get(node_id)
        if not callbacks:
            return
        for callback in tuple(callbacks):
            try:
                callback()
            except Exception:
                log.exception("snapshot watcher of %s failed", node_id)

