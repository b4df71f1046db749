"""Per-proxy xDS sync status (what was sent, acked, NACKed, per type) for ``/debug/syncz`` and for waiting.

The ADS server records every response and ACK/NACK here, one :class:`ProxyStatus` per stream; the view of a
node is its newest live stream. Status is computed against the node's current snapshot in the cache:
SYNCED (acked == sent == snapshot version), STALE, NACKED or NOT SENT. A NACK keeps Envoy's message and a
readable ``reason`` extracted from it (:func:`nack_reason`: Envoy puts a config dump first and truncates the
whole message at 4 KiB, so the reason often comes last or not at all).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mizzen.xds.cache import EMPTY_VERSION, SnapshotCache, ordered_types
from mizzen.xds.resources import CLUSTER, LISTENER, SHORT

__all__ = ["NACKED", "NOT_SENT", "STALE", "SYNCED", "WILDCARD_TYPES", "Nack", "ProxyStatus", "SyncStatus",
           "TypeStatus", "nack_reason"]

SYNCED = "SYNCED"
STALE = "STALE"
NACKED = "NACKED"
NOT_SENT = "NOT SENT"

_REPORTED = ("CDS", "EDS", "LDS", "RDS")
# Types where an empty resource_names list means "everything" (legacy SotW wildcard); for the others
# (EDS, RDS, SDS) an empty list means the proxy wants nothing.
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


MAX_REASON = 500
_PROTO_FAILED = "Proto constraint validation failed ("
_DUMP_NAME = re.compile(r'^\s*name: "([^"]*)"', re.M)


def nack_reason(message: str) -> str:
    """The readable part of Envoy's NACK message, at most 500 characters.

    Proto validation errors are ``<config dump>: Proto constraint validation failed (A | caused by B | ...)``:
    the last cause is the reason. Envoy truncates the message at 4 KiB, which can cut that part off: then
    the reason says so and names the rejected resource. Other messages (a listener that cannot bind, a
    missing certificate file) are readable already: their lines are joined.
    """
    i = message.find(_PROTO_FAILED)
    if i >= 0:
        chain = message[i + len(_PROTO_FAILED):].rstrip()
        chain = chain[:-1] if chain.endswith(")") else chain
        causes = [c.strip() for c in chain.split("| caused by") if c.strip()]
        reason = f"invalid config: {causes[-1]}" if causes else "invalid config"
        if len(causes) > 1:
            reason += f" (in {causes[0].split(':')[0]})"
    elif message.startswith("goo.gle/debugonly") or (
            message.rstrip().endswith("...(truncated)") and _DUMP_NAME.search(message)):
        m = _DUMP_NAME.search(message)
        name = f' "{m.group(1)}"' if m else ""
        reason = (f"Envoy rejected the resource{name}, but its message was cut off at 4 KiB before the "
                  "reason (run the config through `envoy --mode validate`, or look for the field in the "
                  "rejected version)")
    else:
        reason = "; ".join(line.strip() for line in message.strip().splitlines() if line.strip())
    return reason if len(reason) <= MAX_REASON else reason[:MAX_REASON - 3] + "..."


@dataclass
class Nack:
    version: str          # the rejected version (what we sent)
    nonce: str
    message: str          # Envoy's error_detail.message
    time: float

    @property
    def reason(self) -> str:
        return nack_reason(self.message)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "nonce": self.nonce, "reason": self.reason, "message": self.message,
                "time": _iso(self.time)}


@dataclass(slots=True)
class TypeStatus:
    """One type on one stream. ``requested`` is set once the proxy subscribed to the type."""

    type_url: str
    requested: bool = False
    sent_version: str | None = None
    nonce: str | None = None
    sent_at: float | None = None
    acked_version: str | None = None
    acked_nonce: str | None = None   # SYNCED needs the latest response itself ACKed (not an older one)
    acked_at: float | None = None
    nack: Nack | None = None       # last NACK not yet superseded by an ACK
    # the proxy's latest request for this (non-wildcard) type names nothing: Envoy dropped its last watch
    # (e.g. the last EDS cluster went away). It then holds nothing of the type and ACKs no further response,
    # so there is nothing to be out of sync with.
    unsubscribed: bool = False
    responses: int = 0             # responses of this type sent on the stream

    def state(self, snapshot_version: str | None) -> str:
        if self.sent_version is None:
            return NOT_SENT
        if self.nack is not None and self.nack.nonce == self.nonce:
            return NACKED
        if self.unsubscribed:
            return SYNCED
        if (self.acked_nonce == self.nonce and self.acked_version == self.sent_version
                and snapshot_version in (None, self.sent_version)):
            return SYNCED
        return STALE

    def to_dict(self, snapshot_version: str | None) -> dict[str, Any]:
        return {
            "status": self.state(snapshot_version),
            "sent": self.sent_version,
            "sent_at": _iso(self.sent_at),
            "acked": self.acked_version,
            "acked_at": _iso(self.acked_at),
            "nonce": self.nonce,
            "snapshot": snapshot_version,
            "nack": self.nack.to_dict() if self.nack is not None else None,
            "subscribed": not self.unsubscribed,
        }


@dataclass(slots=True)
class ProxyStatus:
    node_id: str
    stream_id: int
    metadata: dict[str, Any] = field(default_factory=dict)
    peer: str = ""
    connected_at: float = field(default_factory=time.time)
    types: dict[str, TypeStatus] = field(default_factory=dict)
    delta: bool = False            # the stream speaks delta (incremental) xDS, else state-of-the-world

    def of(self, type_url: str) -> TypeStatus:
        ts = self.types.get(type_url)
        if ts is None:
            ts = self.types[type_url] = TypeStatus(type_url)
        return ts


def _answer_pending(ps: ProxyStatus) -> bool:
    """Some subscribed type's latest response on the stream has no ACK yet (none came, or a NACK did): the
    node is not SYNCED (the first thing :meth:`SyncStatus.is_synced` checks per type)."""
    for ts in ps.types.values():
        if ts.requested and ts.acked_nonce != ts.nonce and not ts.unsubscribed:
            return True
    return False


@dataclass
class _Waiter:
    remaining: set[str]
    dirty: set[str] = field(default_factory=set)
    event: asyncio.Event = field(default_factory=asyncio.Event)


class SyncStatus:
    """All connected proxies' sync state; the server writes it, debug endpoints and waiters read it."""

    def __init__(self, cache: SnapshotCache) -> None:
        self._cache = cache
        self._streams: dict[str, list[ProxyStatus]] = {}   # node id -> live streams, oldest first
        self._waiters: list[_Waiter] = []

    # --- written by the server ---
    def connect(self, ps: ProxyStatus) -> None:
        self._streams.setdefault(ps.node_id, []).append(ps)
        self.notify(ps.node_id)

    def disconnect(self, ps: ProxyStatus) -> bool:
        """Drop a stream; True when it was the node's last live stream."""
        streams = self._streams.get(ps.node_id, [])
        if ps in streams:
            streams.remove(ps)
        last = not streams
        if last:
            self._streams.pop(ps.node_id, None)
        self.notify(ps.node_id)
        return last

    def notify(self, node_id: str) -> None:
        """Something about ``node_id`` changed that can make it synced (an ACK, a NACK, a connect or
        disconnect): wake the waiters interested in it."""
        for w in self._waiters:
            if node_id in w.remaining:
                w.dirty.add(node_id)
                w.event.set()

    # The stream's events (``ads.StreamEvents``), one call each: subclasses (metrics) hear them without
    # walking the stream's types. A response sent cannot make a proxy synced: no waiter wakes for it.
    def sent(self, ps: ProxyStatus, ts: TypeStatus) -> None:
        """A response of ``ts``'s type was recorded on ``ps``'s stream (before its write)."""

    def acked(self, ps: ProxyStatus, ts: TypeStatus) -> None:
        # (while another response on the stream awaits its answer the node cannot be SYNCED: the waiters
        # are not woken to re-check it, once per response of a push instead of once per ACK)
        if self._waiters and not _answer_pending(ps):
            self.notify(ps.node_id)

    def nacked(self, ps: ProxyStatus, ts: TypeStatus) -> None:
        """``ts.nack`` is the new NACK (Envoy may repeat one for the same nonce)."""
        if self._waiters:
            self.notify(ps.node_id)

    def moved(self, ps: ProxyStatus) -> None:
        """The stream's status changed otherwise (an emptied subscription, a version reached without a
        response)."""
        if self._waiters:
            self.notify(ps.node_id)

    def written(self, node_id: str, type_url: str, started: float) -> None:
        """A response of ``type_url`` was written to ``node_id``'s stream (its write began at ``started``,
        ``time.monotonic()``). For observers (metrics); nothing here."""

    def write_timeout(self, node_id: str, type_url: str) -> None:
        """Writing a response to ``node_id`` took longer than the server's write timeout (the stream is
        closed). For observers (metrics); nothing here."""

    # --- read side ---
    def proxy(self, node_id: str) -> ProxyStatus | None:
        """The authoritative (newest live) stream of a node."""
        streams = self._streams.get(node_id)
        return streams[-1] if streams else None

    def connected(self) -> list[str]:
        return sorted(self._streams)

    def type_state(self, node_id: str, type_url: str) -> str:
        ps = self.proxy(node_id)
        if ps is None:
            return NOT_SENT
        ts = ps.types.get(type_url)
        if ts is None:
            return NOT_SENT
        snap = self._cache.get(node_id)
        return ts.state(snap.version(type_url) if snap else None)

    def is_synced(self, node_id: str) -> bool:
        """Connected, and every type the proxy subscribed to is acked at the snapshot's version.

        Wildcard types (CDS, LDS) that have resources must have been requested; named types (EDS, RDS) count
        once requested (Envoy asks for them while applying CDS/LDS, before it ACKs those).
        """
        streams = self._streams.get(node_id)
        if not streams:
            return False
        snap = self._cache.get(node_id)
        if snap is None:
            return False
        proxy_types = streams[-1].types
        snap_types = snap.types
        for type_url, ts in proxy_types.items():
            tsnap = snap_types.get(type_url)
            sent = ts.sent_version
            if (tsnap is not None and sent == tsnap.version and ts.acked_version == sent
                    and ts.acked_nonce == ts.nonce and ts.nack is None and ts.requested):
                continue   # the common case, ACKed at the snapshot's version: SYNCED without state()
            if not ts.requested:
                if type_url in WILDCARD_TYPES and tsnap is not None and tsnap.resources:
                    return False
                continue
            if ts.acked_nonce != ts.nonce and not ts.unsubscribed:
                return False   # its latest response not ACKed (yet, or NACKed, or none sent): not SYNCED
            if ts.state(tsnap.version if tsnap is not None else EMPTY_VERSION) != SYNCED:
                return False
        for type_url in WILDCARD_TYPES:   # never requested, but there is something to send
            if type_url in proxy_types:
                continue
            tsnap = snap_types.get(type_url)
            if tsnap is not None and tsnap.resources:
                return False
        return True

    def synced_at(self, node_id: str) -> float | None:
        """When the node's last needed ACK arrived (None unless synced)."""
        if not self.is_synced(node_id):
            return None
        ps = self.proxy(node_id)
        assert ps is not None
        times = [ts.acked_at for ts in ps.types.values() if ts.requested and ts.acked_at is not None]
        return max(times) if times else None

    async def wait_synced(self, node_ids: Iterable[str], timeout: float) -> None:
        """Wait until every node has ACKed its current snapshot; raise TimeoutError naming the laggards.

        Each node counts once it is seen synced; only nodes with news are re-checked (cheap for 1000s).
        """
        w = _Waiter({n for n in node_ids if not self.is_synced(n)})
        self._waiters.append(w)
        try:
            # one timeout for the whole wait (asyncio.wait_for per wake-up made a task and a timer each
            # time: hundreds per push round of 5,000 streams, on the event loop's thread)
            async with asyncio.timeout(timeout):
                while w.remaining:
                    await w.event.wait()
                    w.event.clear()
                    dirty, w.dirty = w.dirty, set()
                    w.remaining -= {n for n in dirty if self.is_synced(n)}
        except TimeoutError:
            laggards = self.describe(sorted(w.remaining)[:5])
            raise TimeoutError(f"{len(w.remaining)} not synced after {timeout}s: {laggards}") from None
        finally:
            self._waiters.remove(w)

    def describe(self, node_ids: Iterable[str]) -> str:
        parts = []
        for n in node_ids:
            ps = self.proxy(n)
            if ps is None:
                parts.append(f"{n}: not connected")
                continue
            states = {SHORT.get(t, t): self.type_state(n, t) for t in ordered_types(ps.types)}
            parts.append(f"{n}: {states}")
        return "; ".join(parts)

    def to_dict(self) -> list[dict[str, Any]]:
        """The ``/debug/syncz`` document: one entry per connected proxy, sorted by id."""
        out: list[dict[str, Any]] = []
        for node_id in sorted(self._streams):
            ps = self.proxy(node_id)
            assert ps is not None
            snap = self._cache.get(node_id)
            types: dict[str, Any] = {}
            for type_url in ordered_types(set(ps.types) | set(SHORT)):
                short = SHORT.get(type_url, type_url)
                if short not in _REPORTED and type_url not in ps.types:
                    continue
                ver = snap.version(type_url) if snap is not None else None
                types[short] = ps.of(type_url).to_dict(ver) if type_url in ps.types else TypeStatus(
                    type_url).to_dict(ver)
            out.append({
                "proxy": node_id,
                "connected_at": _iso(ps.connected_at),
                "peer": ps.peer,
                "streams": len(self._streams[node_id]),
                "xds": "delta" if ps.delta else "sotw",
                "synced": self.is_synced(node_id),
                "metadata": ps.metadata,
                "types": types,
            })
        return out
