"""The sans-I/O ADS state machine: what one xDS stream asked for, was sent and ACKed, and what to send next.

One :class:`AdsStream` per stream, state-of-the-world or delta (incremental). It is fed the stream's requests
(:meth:`AdsStream.sotw_request`, :meth:`AdsStream.delta_request`) and the node's snapshots
(:meth:`AdsStream.set_snapshot`) and answers with the responses to write, in order; it does no I/O and keeps
no clock other than the timestamps it records into the stream's :class:`ProxyStatus`.

Semantics (Envoy's xDS protocol, as go-control-plane's ``pkg/server/{sotw,delta}/v3`` and istiod serve it):

- Nonces: a nonce names one response on its stream; a request naming an older nonce than the latest one of
  its type is stale (SotW: ignored; delta: its ACK/NACK part is ignored, its subscription changes kept).
  With a :class:`SharedNonces`, every stream sent the same content (same type, version and names; or the same
  delta diff) gets the same nonce, so the server writes one shared byte string to all of them: a nonce is
  only compared within its stream and type, and there each new one is greater than the last (a content sent
  again after newer ones gets a new serial). Without one, or for content without a key, ``<stream>.<n>``.
- ACK/NACK: a NACK (``error_detail``) is recorded with Envoy's message and nothing is resent until the
  snapshot or the subscription changes, so the proxy keeps its last good config.
- Subscriptions: wildcard (``*``, or an empty first request for LDS/CDS) or names. SotW replaces the set
  with each request and answers when names are added; delta adds/removes with resource_names_subscribe /
  unsubscribe and answers for newly subscribed names.
- Versions: a type's version is its content hash (``system_version_info`` in delta); a delta resource's
  version is the hash of its own bytes, so a reconnecting proxy's ``initial_resource_versions`` avoid
  resending what it has. Delta responses carry only changed resources and ``removed_resources``.
- Order: snapshot changes go out CDS, EDS, LDS, RDS (make-before-break), and a CDS response is followed by
  the endpoints of the clusters it carried (Envoy warms a changed cluster until its EDS arrives).

Delta diffs are shared: when a stream's known resources are exactly an earlier type snapshot (the common case
after any full response), the diff is keyed by (old version, new version, subscription) in a
:class:`DeltaDiffs` cache, so thousands of alike streams cost one diff and, in the server, one serialization.
The diff object carries what the proxy holds after it, shared too, so the next alike stream of a push round
(same holdings object, same type snapshot) finds it by identity: a delta send costs about a SotW one.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mizzen.xds.cache import Packed, Snapshot, TypeSnapshot, ordered_types
from mizzen.xds.resources import CLUSTER, ENDPOINT, SHORT
from mizzen.xds.retention import Retained, Target
from mizzen.xds.status import WILDCARD_TYPES, Nack, ProxyStatus, TypeStatus

log = logging.getLogger(__name__)

__all__ = [
    "AdsStream",
    "DeltaDiffs",
    "DeltaResponse",
    "Response",
    "SharedNonces",
    "SotwResponse",
    "StreamEvents",
    "delta_target",
    "resource_version",
]

WILDCARD = "*"
_MAX_PENDING = 16   # delta responses remembered per type for their ACK/NACK (Envoy ACKs in order)


def resource_version(p: Packed) -> str:
    """A delta resource's version: the hash of its deterministic (process-independent) bytes."""
    return p.digest.hex()


@dataclass(slots=True, eq=False)
class SotwResponse:
    """A state-of-the-world DiscoveryResponse: ``tsnap``'s resources selected by ``names`` (None: all)."""

    type_url: str
    tsnap: TypeSnapshot
    names: frozenset[str] | None
    nonce: str
    shared: bool = False             # the nonce is the content's shared one (same bytes for every stream)


@dataclass(slots=True, eq=False)
class DeltaResponse:
    """A DeltaDiscoveryResponse. ``key`` identifies the content (equal keys, equal bytes) or is None."""

    type_url: str
    version: str                     # system_version_info: the type snapshot's content version
    resources: tuple[Packed, ...]
    removed: tuple[str, ...]
    nonce: str
    key: Hashable | None = None
    shared: bool = False


Response = SotwResponse | DeltaResponse


class StreamEvents(Protocol):
    """What an :class:`AdsStream` reports about its status (:class:`SyncStatus` implements it)."""

    def sent(self, ps: ProxyStatus, ts: TypeStatus) -> None: ...
    def acked(self, ps: ProxyStatus, ts: TypeStatus) -> None: ...
    def nacked(self, ps: ProxyStatus, ts: TypeStatus) -> None: ...
    def moved(self, ps: ProxyStatus) -> None: ...


class _NoEvents:
    def sent(self, ps: ProxyStatus, ts: TypeStatus) -> None:
        pass

    def acked(self, ps: ProxyStatus, ts: TypeStatus) -> None:
        pass

    def nacked(self, ps: ProxyStatus, ts: TypeStatus) -> None:
        pass

    def moved(self, ps: ProxyStatus) -> None:
        pass


_NO_EVENTS = _NoEvents()
_NO_TYPES: Mapping[str, TypeSnapshot] = {}


class SharedNonces(Retained):
    """Nonces shared by the streams sent the same content (see the module docstring), keyed by content key:
    a global serial per key, renewed when a stream already used a later one for that type. Kept while the
    content's target is live (``xds.retention``); LRU, bounded in entries."""

    def __init__(self, max_entries: int = 16384) -> None:
        super().__init__()
        self._serials: OrderedDict[Hashable, tuple[int, Target]] = OrderedDict()
        self._counter = itertools.count(1)
        self.max_entries = max_entries

    def __len__(self) -> int:
        return len(self._serials)

    def serial(self, key: Hashable, after: int, target: Target) -> int:
        """The shared serial of ``key`` (content delivering ``target``), greater than ``after`` (the stream's
        last serial for the type)."""
        hit = self._serials.get(key)
        if hit is not None and hit[0] > after:
            return hit[0]
        serial = next(self._counter)
        if not self.keeps(target):
            self._forget(key)
            return serial
        if hit is None:
            self._index(target, key)
        self._serials[key] = (serial, target)
        self._serials.move_to_end(key)
        if len(self._serials) > self.max_entries:
            self._forget(next(iter(self._serials)))
        return serial

    def _forget(self, key: Hashable) -> None:
        hit = self._serials.pop(key, None)
        if hit is not None:
            self._unindex(hit[1], key)


# --- delta: what the proxy holds ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _SnapKnown:
    """The proxy holds exactly ``tsnap``'s resources within subscription ``sub`` (None: all of them).
    Immutable: one is shared by the streams brought to that content by the same diff (``_Diff.after``)."""

    tsnap: TypeSnapshot
    sub: frozenset[str] | None

    def get(self, name: str) -> str | None:
        if self.sub is not None and name not in self.sub:
            return None
        p = self.tsnap.resources.get(name)
        return resource_version(p) if p is not None else None

    def names(self) -> Iterable[str]:
        res = self.tsnap.resources
        return res if self.sub is None else (n for n in self.sub if n in res)

    def to_dict(self) -> dict[str, str]:
        res = self.tsnap.resources
        return {n: resource_version(res[n]) for n in self.names()}


_Known = _SnapKnown | dict[str, str]


@dataclass(frozen=True, slots=True)
class _Diff:
    """What one delta response carries, and what goes with it, all shared by the streams sent it: computed
    once per content, so each stream's send is a lookup."""

    resources: tuple[Packed, ...]
    removed: tuple[str, ...]
    key: tuple[Any, ...] | None = None   # the content's key (None: this stream's own diff); one object
    after: _SnapKnown | None = None      # what the proxy holds once it has it (None: what it holds now)
    names: frozenset[str] = frozenset()  # the names of ``resources`` (a CDS diff's: the EDS to follow it)


_NO_DIFF = _Diff((), ())   # the proxy holds exactly the content already


class DeltaDiffs(Retained):
    """Delta diffs shared by every stream, keyed by content (the key's [0] and [3] are the type URL and the
    version it brings a stream to): kept while that target is live (``xds.retention``: a diff serves the
    streams brought to some node's current content, and it holds the resources it carries), LRU, bounded in
    entries. Also interns subscription sets, so alike streams' keys compare by identity."""

    def __init__(self, max_entries: int = 4096) -> None:
        super().__init__()
        self._lru: OrderedDict[Hashable, _Diff] = OrderedDict()
        self._subs: dict[frozenset[str], frozenset[str]] = {}
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        # type URL -> (what the proxy held, the type snapshot, the subscription, the forced names, the diff)
        # of the type's last kept diff, found by identity: a push round's alike streams hold the same
        # _SnapKnown (the last diff's ``after``), get the same TypeSnapshot and are forced the same names (a
        # CDS diff's ``names``, for its EDS), in a row; dropped with its key
        self.recent: dict[str, tuple[_SnapKnown, TypeSnapshot, frozenset[str] | None, frozenset[str],
                                     _Diff]] = {}

    def __len__(self) -> int:
        return len(self._lru)

    def intern(self, sub: frozenset[str] | None) -> frozenset[str] | None:
        if sub is None:
            return None
        if len(self._subs) > 4 * self.max_entries:
            self._subs.clear()
        return self._subs.setdefault(sub, sub)

    def get(self, key: tuple[Any, ...]) -> _Diff | None:
        hit = self._lru.get(key)
        if hit is not None:
            self._lru.move_to_end(key)
            self.hits += 1
        return hit

    def put(self, key: tuple[Any, ...], diff: _Diff) -> bool:
        """Keep ``diff`` under ``key`` if its target is live (True if kept)."""
        self.misses += 1
        target = delta_target(key)
        if not self.keeps(target):
            return False
        if key not in self._lru:
            self._index(target, key)
        self._lru[key] = diff
        self._lru.move_to_end(key)
        while len(self._lru) > self.max_entries:
            self._forget(next(iter(self._lru)))
        return key in self._lru

    def _forget(self, key: Hashable) -> None:
        if self._lru.pop(key, None) is not None:
            assert isinstance(key, tuple)
            self._unindex(delta_target(key), key)
            recent = self.recent.get(key[0])
            if recent is not None and recent[4].key == key:
                del self.recent[key[0]]


def delta_target(key: tuple[Any, ...]) -> Target:
    """The (type URL, version) a shared delta diff's key brings a stream to."""
    return key[0], key[3]


# A delta response awaiting its ACK/NACK: (the type version it brings the proxy to, what the proxy held
# before it: restored on its NACK)
_Pending = tuple[str, _Known]
_NO_NAMES: frozenset[str] = frozenset()


@dataclass(slots=True)
class _DeltaWatch:
    status: TypeStatus
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    known: _Known = field(default_factory=dict)
    force: bool = False                                 # respond even if nothing changed (initial request)
    # send these even if the proxy has their version (empty: _NO_NAMES, one object compared by identity)
    force_names: frozenset[str] = _NO_NAMES
    pending: OrderedDict[str, _Pending] = field(default_factory=OrderedDict)   # by nonce, oldest first
    held: str | None = None       # a NACKed type version: not sent again until the snapshot or names change

    @property
    def sub(self) -> frozenset[str] | None:
        return None if self.wildcard else self.names


# --- state of the world -------------------------------------------------------------------------------------

@dataclass(slots=True)
class _SotwWatch:
    names: frozenset[str] | None      # None = wildcard
    status: TypeStatus
    force: bool = False               # respond even if the version is unchanged (initial request, new names)
    send_all: bool = False            # next response carries all resources of the type (EDS after a CDS push)
    raw: list[str] | None = None                    # the names of the latest request, as sent
    requested: frozenset[str] | None = None         # ... as a subscription (None = wildcard)


class AdsStream:
    """Protocol state of one ADS stream (``delta`` picks the variant). Not thread-safe; no I/O.

    ``events`` hears what changed ``status``, one call per event and no walk over the stream's types (a
    :class:`SyncStatus`: its waiters, metrics): ``sent`` (a response recorded; it cannot make the stream
    synced), ``acked``, ``nacked`` and ``moved`` (the status changed otherwise: an unsubscribe, a version
    reached without a response). ``diffs`` is shared between streams to share delta diffs.
    """

    def __init__(self, status: ProxyStatus, *, delta: bool = False, diffs: DeltaDiffs | None = None,
                 events: StreamEvents | None = None, clock: Callable[[], float] = time.time,
                 nonces: SharedNonces | None = None) -> None:
        self.status = status
        self.node_id: str = status.node_id   # (read per message: an attribute, not a property)
        self.nonces = nonces
        self._serials: dict[str, int] = {}   # type URL -> the last shared serial sent on this stream
        self.delta = delta
        self.diffs = diffs if diffs is not None else DeltaDiffs()
        self.snapshot: Snapshot | None = None
        self._events: StreamEvents = events if events is not None else _NO_EVENTS
        self._clock = clock
        self._sotw: dict[str, _SotwWatch] = {}
        self._delta: dict[str, _DeltaWatch] = {}
        self._nonces = itertools.count(1)
        self._order: list[str] = []          # the subscribed types in push order

    def subscribed(self) -> dict[str, frozenset[str] | None]:
        """type URL -> subscribed names (None: wildcard), for debugging and tests."""
        if self.delta:
            return {t: w.sub for t, w in self._delta.items()}
        return {t: w.names for t, w in self._sotw.items()}

    def _nonce(self, type_url: str = "", key: Hashable | None = None, version: str = "") -> tuple[str, bool]:
        """(nonce, shared): the content's shared nonce if it has a key (content bringing the stream to
        ``version``) and the stream shares nonces."""
        if key is None or self.nonces is None:
            return f"{self.status.stream_id:x}.{next(self._nonces):x}", False
        serial = self._serials[type_url] = self.nonces.serial(key, self._serials.get(type_url, 0),
                                                              (type_url, version))
        return f"{serial:x}", True

    def set_snapshot(self, snapshot: Snapshot | None) -> list[Response]:
        """The node's snapshot changed (or arrived): the responses it causes, in push order."""
        old, self.snapshot = self.snapshot, snapshot
        out: list[Response] = []
        watches: Mapping[str, object] = self._delta if self.delta else self._sotw
        if len(self._order) != len(watches):   # a type subscribed since (types are never dropped)
            self._order = ordered_types(watches)
        send = self._delta_send if self.delta else self._sotw_send
        # A type whose content is the very object the previous snapshot had is skipped: every request and
        # snapshot since was answered against it already (a send left pending only waits for a snapshot),
        # so sending for it again would find nothing to send (alike nodes share their TypeSnapshots)
        same = old.types if old is not None and snapshot is not None else _NO_TYPES
        types = snapshot.types if snapshot is not None else _NO_TYPES
        for type_url in self._order:
            tsnap = types.get(type_url)
            if tsnap is None or same.get(type_url) is not tsnap:
                out += send(type_url)
        return out

    # --- state of the world ---------------------------------------------------------------------------------
    def sotw_request(self, req: Any) -> list[Response]:
        """A DiscoveryRequest arrived: the responses to write."""
        type_url: str = req.type_url
        if not type_url:
            log.warning("ADS stream %d (%s): request without type_url ignored", self.status.stream_id,
                        self.node_id)
            return []
        watch = self._sotw.get(type_url)
        # (the repeated field compares equal to a list, never to a tuple; no copy of it for an ACK)
        if watch is not None and req.resource_names == watch.raw:
            names = watch.requested   # the same list as last time (an ACK): the same set, not rebuilt
        else:
            raw = list(req.resource_names)
            # shared by alike streams (their responses then name one set: compared by identity downstream)
            names = self.diffs.intern(_requested_names(type_url, raw))
            if watch is None:
                watch = self._sotw[type_url] = _SotwWatch(names, self.status.of(type_url))
            watch.raw, watch.requested = raw, names
        ts = watch.status
        ts.requested = True
        ts.unsubscribed = names is not None and not names
        nonce: str = req.response_nonce
        if not nonce:
            # Initial request for the type on this stream (also after a reconnect, carrying the version the
            # proxy already has): always answer, even if the version is unchanged, or Envoy stays warming.
            log.debug("%s %s: initial request (has %r) names=%s", self.node_id, SHORT.get(type_url, type_url),
                      req.version_info, names)
            watch.names = names
            watch.force = True
            return self._sotw_send(type_url)
        if nonce != ts.nonce:
            # No response for a stale nonce; but an emptied subscription still counts: Envoy drops its last
            # EDS/RDS watch with the nonce it had, and does not ACK the (empty) response already in flight
            if ts.unsubscribed:
                watch.names = names
                self._events.moved(self.status)
            log.debug("%s %s: stale nonce %s (latest %s) ignored", self.node_id,
                      SHORT.get(type_url, type_url), nonce, ts.nonce)
            return []
        if req.HasField("error_detail"):
            self._nack(ts, req.error_detail.message, req.version_info or None)
        else:
            self._ack(ts, req.version_info, nonce)
        if names is not watch.names:
            if _adds_names(watch.names, names):
                watch.force = True
            watch.names = names
        elif self.snapshot is not None and not watch.force and not watch.send_all:
            tsnap = self.snapshot.types.get(type_url)
            if tsnap is not None and tsnap.version == ts.sent_version:
                return []   # an ACK of the current version (the common case): nothing to send
        return self._sotw_send(type_url)

    def _sotw_send(self, type_url: str) -> list[Response]:
        """Respond if forced or if the snapshot's version differs from the last one sent (never a NACKed
        version again: after a NACK sent == snapshot until the snapshot changes)."""
        watch = self._sotw[type_url]
        snap = self.snapshot
        ts = watch.status
        if snap is None or not ts.requested:
            return []   # no config yet: answered when the first snapshot arrives
        tsnap = snap.types.get(type_url) or snap.of(type_url)
        if not watch.force and tsnap.version == ts.sent_version:
            return []
        watch.force = False
        names = None if watch.send_all else watch.names
        watch.send_all = False
        nonce, shared = self._nonce(type_url, (type_url, tsnap.version, names), tsnap.version)
        self._sent(ts, tsnap.version, nonce)
        out: list[Response] = [SotwResponse(type_url, tsnap, names, nonce, shared)]
        if type_url == CLUSTER and ENDPOINT in self._sotw:
            # Envoy warms every added or changed cluster until it gets an EDS response for it, and a changed
            # cluster re-requests the same names (which looks like an ACK). Like istiod, follow every CDS
            # push with the endpoints, all of them, so warming never waits for a request we would not answer.
            eds = self._sotw[ENDPOINT]
            eds.force = eds.send_all = True
            out += self._sotw_send(ENDPOINT)
        return out

    # --- delta ----------------------------------------------------------------------------------------------
    def delta_request(self, req: Any) -> list[Response]:
        """A DeltaDiscoveryRequest arrived: the responses to write."""
        type_url: str = req.type_url
        if not type_url:
            log.warning("ADS stream %d (%s): delta request without type_url ignored", self.status.stream_id,
                        self.node_id)
            return []
        watch = self._delta.get(type_url)
        # (an ACK has neither: no lists built for it)
        subscribe = list(req.resource_names_subscribe) if req.resource_names_subscribe else []
        unsubscribe = list(req.resource_names_unsubscribe) if req.resource_names_unsubscribe else []
        if watch is None:
            # First request for the type on this stream: what the proxy already has (after a reconnect),
            # and wildcard if asked with "*", or legacy-style with no names for LDS/CDS.
            watch = self._delta[type_url] = _DeltaWatch(self.status.of(type_url))
            watch.status.requested = True
            watch.known = dict(req.initial_resource_versions)
            watch.wildcard = WILDCARD in subscribe or (not subscribe and type_url in WILDCARD_TYPES)
            watch.force = True
            log.debug("%s %s: initial delta request (has %d) wildcard=%s subscribe=%d", self.node_id,
                      SHORT.get(type_url, type_url), len(watch.known), watch.wildcard, len(subscribe))
        elif nonce := req.response_nonce:
            pending = watch.pending.get(nonce)
            if pending is None:
                log.debug("%s %s: unknown or stale nonce %s ignored", self.node_id,
                          SHORT.get(type_url, type_url), nonce)
            elif req.HasField("error_detail"):
                self._delta_nack(watch, nonce, pending)
                self._nack(watch.status, req.error_detail.message, None)
            else:
                settled = watch.pending
                while settled.popitem(last=False)[0] != nonce:   # Envoy answers in order: older ones too
                    pass
                self._ack(watch.status, pending[0], nonce)
        if (subscribe or unsubscribe) and self._delta_subscribe(watch, subscribe, unsubscribe):
            watch.held = None
            # an emptied subscription: the proxy holds nothing of the type, nothing to be out of sync with
            watch.status.unsubscribed = not watch.wildcard and not watch.names
        elif not watch.force:
            return []   # an ACK or NACK: snapshot changes are sent when they happen
        return self._delta_send(type_url)

    def _delta_subscribe(self, watch: _DeltaWatch, subscribe: list[str], unsubscribe: list[str]) -> bool:
        """Apply subscription changes (True if any); the proxy forgets what it unsubscribes. Newly subscribed
        names are unknown to it, so the next diff carries them (if they exist)."""
        if not subscribe and not unsubscribe:
            return False
        names = set(watch.names)
        if WILDCARD in unsubscribe:
            watch.wildcard = False
        if WILDCARD in subscribe:
            watch.wildcard = True
        gone = [n for n in unsubscribe if n != WILDCARD and n in names]
        names.difference_update(gone)
        names.update(n for n in subscribe if n != WILDCARD)
        if gone and not watch.wildcard:
            known = watch.known.to_dict() if isinstance(watch.known, _SnapKnown) else dict(watch.known)
            for n in gone:
                known.pop(n, None)
            watch.known = known
        watch.names = self.diffs.intern(frozenset(names)) or frozenset()   # shared: keys compare by identity
        return True

    def _delta_nack(self, watch: _DeltaWatch, nonce: str, pending: _Pending) -> None:
        """Envoy rejected that response (and kept what it had): forget what it carried, so the next change
        sends it again, fixed or not. Nothing is resent now."""
        last = next(reversed(watch.pending))
        watch.known = pending[1] if nonce == last else {}
        watch.pending.clear()
        watch.held = pending[0]

    def _delta_send(self, type_url: str) -> list[Response]:
        watch = self._delta[type_url]
        snap = self.snapshot
        if snap is None:
            return []
        tsnap = snap.types.get(type_url) or snap.of(type_url)
        version = tsnap.version
        forced = watch.force_names
        if watch.held == version and not forced:
            return []
        watch.held = None
        sub = None if watch.wildcard else watch.names
        known = watch.known
        diff = self._delta_diff(tsnap, sub, known, forced)
        initial = watch.force
        if not (diff.resources or diff.removed or initial) and not self._delta_unchanged(watch, tsnap, diff):
            return []
        watch.force = False
        if forced:
            watch.force_names = _NO_NAMES
        nonce, shared = self._nonce(type_url, diff.key, version)
        pending = watch.pending
        pending[nonce] = (version, known)
        if len(pending) > _MAX_PENDING:
            pending.popitem(last=False)
        if diff.after is not None:
            watch.known = diff.after
        self._sent(watch.status, version, nonce)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s <- delta %s version %s nonce %s (%d resources, %d removed)", self.node_id,
                      SHORT.get(type_url, type_url), version, nonce, len(diff.resources), len(diff.removed))
        out: list[Response] = [
            DeltaResponse(type_url, version, diff.resources, diff.removed, nonce, diff.key, shared)]
        if type_url == CLUSTER and (diff.resources or initial) and ENDPOINT in self._delta:
            # A changed cluster warms until its endpoints arrive: send them even if the proxy has them. After
            # the initial CDS request (a reconnect), all of them: Envoy may not ask again (as istiod does).
            eds = self._delta[ENDPOINT]
            clusters = diff.names   # (shared: alike streams' EDS diffs are then found by identity too)
            if initial:
                clusters = clusters.union(snap.of(ENDPOINT).resources if eds.wildcard else eds.names)
            force = clusters if eds.wildcard or clusters <= eds.names else clusters & eds.names
            if force:
                eds.force_names = eds.force_names | force if eds.force_names else force
                out += self._delta_send(ENDPOINT)
        return out

    def _delta_unchanged(self, watch: _DeltaWatch, tsnap: TypeSnapshot, diff: _Diff) -> bool:
        """Nothing the proxy subscribed to changed, though the type's version may have (resources it did not
        ask for): it holds the new version already, so the status moves on without a response. True if an
        (empty) response must go out anyway: after a NACK, back to the content the proxy kept."""
        ts = watch.status
        if tsnap.version == ts.sent_version:
            return False
        if ts.nack is not None and ts.nack.nonce == ts.nonce:
            return True
        ts.sent_version = tsnap.version
        if ts.acked_nonce is not None and ts.acked_nonce == ts.nonce:
            ts.acked_version = tsnap.version
        elif watch.pending:
            last = next(reversed(watch.pending))
            watch.pending[last] = (tsnap.version, watch.pending[last][1])
        if diff.after is not None:
            watch.known = diff.after
        self._events.moved(self.status)
        return False

    def _delta_diff(self, tsnap: TypeSnapshot, sub: frozenset[str] | None, known: _Known,
                    forced: frozenset[str]) -> _Diff:
        """What the proxy holding ``known`` gets of ``tsnap`` within ``sub`` (plus the ``forced`` names): one
        shared :class:`_Diff` per content (its key: the type, what the proxy holds, the version it gets, the
        subscription and the forced names) unless the proxy's holdings are its own (a reconnect's)."""
        version = tsnap.version
        diffs = self.diffs
        step = isinstance(known, _SnapKnown)   # from shared holdings: maybe the type's last stream's step
        if step:
            assert isinstance(known, _SnapKnown)
            recent = diffs.recent.get(tsnap.type_url)
            if (recent is not None and recent[0] is known and recent[1] is tsnap and recent[2] is sub
                    and recent[3] is forced):
                diffs.hits += 1
                return recent[4]
            if not forced and known.tsnap.version == version and known.sub == sub:
                return _NO_DIFF
            key: tuple[Any, ...] = (tsnap.type_url, known.tsnap.version, known.sub, version, sub, forced)
        elif not known:   # a fresh subscription: everything, the same for every alike stream
            key = (tsnap.type_url, None, None, version, sub, forced)
        else:
            return _compute_diff(tsnap, sub, known, forced, None)
        diff = diffs.get(key)
        kept = diff is not None
        if diff is None:
            diff = _compute_diff(tsnap, sub, known, forced, key)
            kept = diffs.put(key, diff)
        if step and kept:
            assert isinstance(known, _SnapKnown)
            diffs.recent[tsnap.type_url] = (known, tsnap, sub, forced, diff)
        return diff

    # --- shared ---------------------------------------------------------------------------------------------
    def _sent(self, ts: TypeStatus, version: str, nonce: str) -> None:
        ts.sent_version, ts.nonce, ts.sent_at = version, nonce, self._clock()
        ts.responses += 1
        self._events.sent(self.status, ts)

    def _ack(self, ts: TypeStatus, version: str, nonce: str) -> None:
        ts.acked_version = version
        ts.acked_nonce = nonce
        ts.acked_at = self._clock()
        ts.nack = None
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s ACKed %s version %s", self.node_id, SHORT.get(ts.type_url, ts.type_url), version)
        self._events.acked(self.status, ts)

    def _nack(self, ts: TypeStatus, message: str, keeps: str | None) -> None:
        short = SHORT.get(ts.type_url, ts.type_url)
        ts.nack = Nack(ts.sent_version or "", ts.nonce or "", message, self._clock())
        if keeps is not None or not self.delta:
            ts.acked_version = keeps
        # the reason only: Envoy's message can carry a 4 KiB config dump (it is in /debug/syncz)
        log.warning("%s NACKed %s version %s (keeps %r): %s", self.node_id, short, ts.sent_version,
                    ts.acked_version, ts.nack.reason)
        self._events.nacked(self.status, ts)


def _compute_diff(tsnap: TypeSnapshot, sub: frozenset[str] | None, known: _Known, forced: frozenset[str],
                  key: tuple[Any, ...] | None) -> _Diff:
    """Resources of ``tsnap`` within ``sub`` whose version the proxy does not have (plus ``forced`` ones),
    and the names it has within ``sub`` that no longer exist."""
    res: Mapping[str, Packed] = tsnap.resources
    wanted: Iterable[str] = sorted(res) if sub is None else sorted(n for n in sub if n in res)
    after = _SnapKnown(tsnap, sub)
    if isinstance(known, _SnapKnown) and known.sub == sub:
        old = known.tsnap.resources
        changed = [res[n] for n in wanted
                   if n in forced or (o := old.get(n)) is None or o.digest != res[n].digest]
        gone = ((n for n in old if n not in res) if sub is None
                else (n for n in sub if n in old and n not in res))
        return _Diff(tuple(changed), tuple(sorted(gone)), key, after, frozenset(p.name for p in changed))
    have = known if isinstance(known, dict) else known.to_dict()
    changed = [res[n] for n in wanted if n in forced or have.get(n) != resource_version(res[n])]
    removed = sorted(n for n in have if n not in res and (sub is None or n in sub))
    return _Diff(tuple(changed), tuple(removed), key, after, frozenset(p.name for p in changed))


def _requested_names(type_url: str, names: Iterable[str]) -> frozenset[str] | None:
    """SotW: None for a wildcard subscription, else the requested names."""
    names = list(names)
    if WILDCARD in names:
        return None
    if not names:
        return None if type_url in WILDCARD_TYPES else frozenset()
    return frozenset(names)


def _adds_names(old: frozenset[str] | None, new: frozenset[str] | None) -> bool:
    if new is None:
        return old is not None
    if old is None:
        return False
    return not new <= old
