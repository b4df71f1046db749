"""What the ADS server's shared caches keep: each entry while the content it delivers can still be sent.

Every entry of the shared caches (serialized response bodies, delta diffs and their bodies, shared nonces)
delivers one *target*: a type URL and a type snapshot's version, the version a stream is brought to. Streams
are only ever brought to their node's current snapshot, so once no node's current snapshot holds a target
(every node moved past it, or left) nothing will ask for its entries again: :class:`SnapshotCache` reports it
retired and they are dropped at once, however fast or slow pushes come. A stream behind keeps what it needs
itself (the type snapshot it holds, which its next diff starts from); a NACKed version is not sent again.
Content that comes back later (a config flipped back) is simply built again.

A cache not following a snapshot cache (tests of the state machine alone) keeps everything up to its count
or byte bound.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol

__all__ = ["Retained", "RetireSource", "Target"]

Target = tuple[str, str]   # (type URL, type snapshot version)


class RetireSource(Protocol):
    """What a cache follows: :class:`SnapshotCache` (``is_live``, ``on_retire``)."""

    def is_live(self, type_url: str, version: str) -> bool: ...

    def on_retire(self, callback: Callable[[str, str], None]) -> None: ...


class Retained:
    """Base of a cache whose entries each deliver one target: indexes keys by target, drops a target's keys
    when it is retired (``_forget(key)``, defined by the cache) and keeps no entry for a retired target."""

    def __init__(self) -> None:
        self._live: Callable[[str, str], bool] | None = None
        self._by_target: dict[Target, set[Hashable]] = {}
        self.retired = 0   # entries dropped because their target was retired

    def follow(self, source: RetireSource) -> None:
        """Keep entries only while ``source`` says their target is live."""
        self._live = source.is_live
        source.on_retire(self.retire)

    def keeps(self, target: Target) -> bool:
        """Whether an entry for ``target`` may be kept (it is some node's current content)."""
        return self._live is None or self._live(*target)

    def retire(self, type_url: str, version: str) -> None:
        keys = self._by_target.pop((type_url, version), None)
        if keys:
            for key in keys:
                self._forget(key)
            self.retired += len(keys)

    def _index(self, target: Target, key: Hashable) -> None:
        self._by_target.setdefault(target, set()).add(key)

    def _unindex(self, target: Target, key: Hashable) -> None:
        keys = self._by_target.get(target)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_target[target]

    def _forget(self, key: Hashable) -> None:
        raise NotImplementedError
