"""The ADS server's I/O (grpc.aio): state-of-the-world and delta (incremental) streams, both driven by the
sans-I/O state machine in ``ads``.

One :class:`_Stream` per connection serializes everything that happens on it (requests and snapshot changes)
through one queue, feeds it to its :class:`AdsStream` and writes the responses that come back, pre-serialized
and shared between streams where the content is the same: with shared nonces (the default) the whole message,
nonce included, is one byte string written to every stream that gets that content. The server knows nothing
of the mesh: the owner's ``on_connect`` callback must ``set_snapshot`` the node before its first response goes
out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format

from mizzen.xds.ads import (
    AdsStream,
    DeltaDiffs,
    DeltaResponse,
    Response,
    SharedNonces,
    SotwResponse,
    delta_target,
    resource_version,
)
from mizzen.xds.cache import SnapshotCache, TypeSnapshot
from mizzen.xds.resources import SHORT
from mizzen.xds.retention import Retained, Target
from mizzen.xds.status import ProxyStatus, SyncStatus

log = logging.getLogger(__name__)

__all__ = ["AdsServer", "Authorize", "DeltaBodies", "OnConnect", "OnDisconnect", "ResponseBodies",
           "StreamDenied", "serve"]

OnConnect = Callable[[str, dict[str, Any]], Awaitable[None]]
OnDisconnect = Callable[[str], Awaitable[None]]
# (node id, metadata, gRPC context) -> the stream's principal (None: anonymous); raises StreamDenied
Authorize = Callable[[str, dict[str, Any], grpc.aio.ServicerContext], Awaitable[Hashable | None]]


class StreamDenied(Exception):
    """Raised by an ``authorize`` callback: the stream ends with ``code`` and this one-line message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code

MAX_MESSAGE_BYTES = 256 * 1024 * 1024

_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_CONTROL_PLANE = base_pb2.ControlPlane(identifier="mizzen")
_CHANGE = object()   # queue marker: the node's snapshot changed
_EOF = object()      # queue marker: the client closed its side


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """Serves snapshots from ``cache`` over ADS (state-of-the-world and delta); records sync state in
    ``status``.

    ``on_connect(node_id, metadata)`` is awaited for every new stream after its first request and before any
    response: it should ``set_snapshot`` the node (a ValueError rejects the stream with INVALID_ARGUMENT).
    ``on_disconnect(node_id)`` runs when the node's last stream ends, unless it reconnected meanwhile.
    ``authorize(node_id, metadata, context)`` runs first: it returns the stream's principal (who it speaks
    for; None = anonymous) or raises :class:`StreamDenied`. A node is held by one principal: a new stream
    of the same principal (or any identified one, for a node only anonymous streams hold) replaces the old
    streams; a stream of another principal, or an anonymous one for a node an identified stream holds, is
    refused with PERMISSION_DENIED. Serve with :func:`serve` (it registers serializers for the
    pre-serialized responses); stop with :meth:`shutdown`.
    """

    def __init__(
        self,
        cache: SnapshotCache,
        *,
        on_connect: OnConnect | None = None,
        on_disconnect: OnDisconnect | None = None,
        status: SyncStatus | None = None,
        write_timeout: float = 0.0,
        authorize: Authorize | None = None,
        shared_nonces: bool = True,
    ) -> None:
        self.cache = cache
        # like istiod's PILOT_XDS_SEND_TIMEOUT (0: none): a response whose write takes longer ends its stream
        # (the proxy reconnects) and is counted (SyncStatus.write_timeout)
        self.write_timeout = write_timeout
        self.authorize = authorize
        self.replaced = 0                      # streams ended because their node reconnected (same identity)
        self.status = status if status is not None else SyncStatus(cache)
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.port: int | None = None           # set by serve()
        self.tls_port: int | None = None       # set by serve() with tls
        self._stream_ids = itertools.count(1)
        self._background: set[asyncio.Task[None]] = set()
        self._live: set[_Stream] = set()
        # node id -> its streams that passed _claim (a reconnect looks up its node's, not every live stream)
        self._claimed: dict[str, set[_Stream]] = {}
        # shared by every stream, each entry kept while its content is some node's current one
        self.bodies = ResponseBodies()
        self.delta_bodies = DeltaBodies()
        self.diffs = DeltaDiffs()
        self.nonces = SharedNonces() if shared_nonces else None
        for shared in (self.bodies, self.delta_bodies, self.diffs, self.nonces):
            if shared is not None:
                shared.follow(cache)
        self.responses_sent = 0
        self.resources_sent = 0                # resources carried by every response written (both protocols)
        # A push round's span: called with True when a stream has a response written and not yet answered
        # (ACK/NACK) while none had, with False when the last such answer came (mizzen.gctune.PushWindow)
        self.on_round: Callable[[bool], None] | None = None
        self.awaiting = 0                      # streams with a written response not yet answered
        self.closing = False                   # shutdown began: new streams are refused (UNAVAILABLE)

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        await self._serve_stream(request_iterator, context, delta=False)

    async def DeltaAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        await self._serve_stream(request_iterator, context, delta=True)

    async def _serve_stream(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                            *, delta: bool) -> None:
        if self.closing:
            # like istiod's graceful stop: no new stream once shutdown began; the proxy retries and reaches
            # the successor, keeping the config it has meanwhile
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the control plane is shutting down")
        stream = _Stream(self, next(self._stream_ids), context, delta=delta)
        self._live.add(stream)
        try:
            # CancelledError: the client went away or the server is stopping; the stream cleaned up already
            with contextlib.suppress(asyncio.CancelledError):
                await stream.run(requests)
        finally:
            self._live.discard(stream)
            claimed = self._claimed.get(stream.node_id)
            if claimed is not None:
                claimed.discard(stream)
                if not claimed:
                    del self._claimed[stream.node_id]

    @property
    def stream_count(self) -> int:
        return len(self._live)

    async def shutdown(self, grpc_server: grpc.aio.Server, grace: float = 1.0) -> None:
        """Refuse new streams, end every stream cleanly (status OK: proxies reconnect, to a successor), then
        stop gRPC."""
        self.closing = True
        for stream in list(self._live):
            stream.queue.put_nowait(_EOF)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._live and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await grpc_server.stop(grace)

    def _claim(self, stream: _Stream, principal: Hashable | None) -> str | None:
        """Give ``stream``'s node to ``principal``: ends replaced streams; the refusal text, or None. The
        node's other claimed streams are looked up by its id (a scan of every live stream per connect made a
        reconnect storm of 5,000 proxies quadratic: 17 % of a 5,000-stream bench run's samples)."""
        claimed = self._claimed.setdefault(stream.node_id, set())
        others = [s for s in claimed if s is not stream]
        for other in others:
            if other.principal is not None and other.principal != principal:
                return (f"node {stream.node_id} is connected with another identity; a stream for it must "
                        "present that identity")
        if principal is not None:
            for other in others:
                log.info("ADS stream %d: %s reconnected with the same identity (stream %d): ending the old "
                         "stream", other.id, stream.node_id, stream.id)
                other.queue.put_nowait(_EOF)
                self.replaced += 1
        claimed.add(stream)   # its ProxyStatus is set next, without an await between
        return None

    def _disconnected(self, node_id: str) -> None:
        """Run on_disconnect in the background: the stream's own task may already be cancelled."""
        if self.on_disconnect is None:
            return
        task = asyncio.get_running_loop().create_task(self._call_disconnect(node_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _call_disconnect(self, node_id: str) -> None:
        assert self.on_disconnect is not None
        if self.status.proxy(node_id) is not None:
            log.debug("%s reconnected before on_disconnect ran: skipped", node_id)
            return
        try:
            await self.on_disconnect(node_id)
        except Exception:
            log.exception("on_disconnect(%s) failed", node_id)

    def _awaiting(self, delta: int) -> None:
        self.awaiting += delta
        if self.on_round is not None and self.awaiting == (1 if delta > 0 else 0):
            self.on_round(delta > 0)

    def encode(self, resp: Response) -> tuple[bytes, int]:
        """A response's wire bytes (the shared body plus its nonce) and its resource count."""
        if isinstance(resp, SotwResponse):
            if resp.shared:
                return self.bodies.whole(resp)
            body, count = self.bodies.get(resp.tsnap, resp.names)
            tail = discovery_pb2.DiscoveryResponse(nonce=resp.nonce).SerializeToString()
        else:
            if resp.shared:
                return self.delta_bodies.whole(resp)
            body, count = self.delta_bodies.get(resp)
            tail = discovery_pb2.DeltaDiscoveryResponse(nonce=resp.nonce).SerializeToString()
        return body + tail, count


class _Lru(Retained):
    """Serialized bodies by content key, kept while the content's target is live (``xds.retention``: a body
    serves the streams brought to some node's current content; superseded versions are never sent again, so
    they would only hold memory), LRU, bounded in bytes. Also the whole message for the content's shared
    nonce (the body plus that nonce), one per key."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__()
        self._lru: OrderedDict[Hashable, tuple[bytes, int]] = OrderedDict()
        self._targets: dict[Hashable, Target] = {}
        self._whole: dict[Hashable, tuple[str, bytes]] = {}   # key -> (nonce, body + nonce)
        self._bytes = 0
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        # type URL -> (key, type snapshot, names, nonce, whole message, count) of the type's last whole
        # message, found by identity (the streams of a push round ask for the same one in a row); dropped
        # with its key (delta: its key object, shared by the streams sent that diff; no snapshot or names)
        self._recent: dict[str, tuple[Hashable, Any, Any, str, bytes, int]] = {}

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._bytes

    def lookup(self, key: Hashable) -> tuple[bytes, int] | None:
        hit = self._lru.get(key)
        if hit is not None:
            self._lru.move_to_end(key)
            self.hits += 1
        return hit

    def store(self, key: Hashable, target: Target, entry: tuple[bytes, int]) -> tuple[bytes, int]:
        """Keep ``entry`` (content delivering ``target``) under ``key``, if its target is live."""
        self.misses += 1
        if key in self._lru:
            self._forget(key)
        if not self.keeps(target):
            return entry
        self._lru[key] = entry
        self._targets[key] = target
        self._index(target, key)
        self._bytes += len(entry[0])
        while len(self._lru) > 1 and self._bytes > self.max_bytes:
            self._forget(next(iter(self._lru)))
        return entry

    def _forget(self, key: Hashable) -> None:
        hit = self._lru.pop(key, None)
        if hit is None:
            return
        self._unindex(self._targets.pop(key), key)
        self._bytes -= len(hit[0])
        whole = self._whole.pop(key, None)
        if whole is not None:
            self._bytes -= len(whole[1])
            self._drop_recent(key)

    def _drop_recent(self, key: Hashable) -> None:
        if isinstance(key, tuple):
            recent = self._recent.get(key[0])
            if recent is not None and recent[0] == key:
                del self._recent[key[0]]

    def _with_nonce(self, key: Hashable, entry: tuple[bytes, int], nonce: str,
                    tail: bytes) -> tuple[bytes, int]:
        """``entry``'s body plus ``tail`` (the serialized nonce), kept for the next stream with that nonce."""
        whole = self._whole.get(key)
        if whole is not None and whole[0] == nonce:
            return whole[1], entry[1]
        data = entry[0] + tail
        if key in self._lru:   # kept (and counted) only while its body is
            if whole is not None:
                self._bytes -= len(whole[1])
                self._drop_recent(key)   # that nonce's message is replaced
            self._whole[key] = (nonce, data)
            self._bytes += len(data)
        return data, entry[1]


class ResponseBodies(_Lru):
    """Serialized DiscoveryResponses minus the nonce, shared by every stream: a version is a content hash, so
    (type, version, requested names) identifies the bytes. Thousands of proxies with the same clusters cost
    one serialization. LRU, bounded in bytes."""

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        super().__init__(max_bytes)

    def get(self, tsnap: TypeSnapshot, names: frozenset[str] | None) -> tuple[bytes, int]:
        """(body bytes, resource count) for the resources of ``tsnap`` selected by ``names``."""
        key = (tsnap.type_url, tsnap.version, names)
        hit = self.lookup(key)
        if hit is not None:
            return hit
        resources = tsnap.select(names)
        body = discovery_pb2.DiscoveryResponse(
            version_info=tsnap.version, type_url=tsnap.type_url, resources=resources,
            control_plane=_CONTROL_PLANE).SerializeToString()
        return self.store(key, (tsnap.type_url, tsnap.version), (body, len(resources)))

    def whole(self, resp: SotwResponse) -> tuple[bytes, int]:
        """The whole message for a response with a shared nonce: one byte string for every stream."""
        recent = self._recent.get(resp.type_url)
        if (recent is not None and recent[1] is resp.tsnap and recent[2] is resp.names
                and recent[3] == resp.nonce):
            self.hits += 1   # the same content as the type's last response (a push round): no key, no LRU
            return recent[4], recent[5]
        key = (resp.tsnap.type_url, resp.tsnap.version, resp.names)
        whole = self._whole.get(key)
        if whole is not None and whole[0] == resp.nonce:
            hit = self.lookup(key)
            if hit is not None:
                self._recent[resp.type_url] = (key, resp.tsnap, resp.names, resp.nonce, whole[1], hit[1])
                return whole[1], hit[1]
        entry = self.get(resp.tsnap, resp.names)
        tail = discovery_pb2.DiscoveryResponse(nonce=resp.nonce).SerializeToString()
        data, count = self._with_nonce(key, entry, resp.nonce, tail)
        if key in self._whole:   # kept: the next stream sent this content takes the fast path above
            self._recent[resp.type_url] = (key, resp.tsnap, resp.names, resp.nonce, data, count)
        return data, count


class DeltaBodies(_Lru):
    """Serialized DeltaDiscoveryResponses minus the nonce, shared by streams whose diff has the same key."""

    def __init__(self, max_bytes: int = 128 << 20) -> None:
        super().__init__(max_bytes)

    def get(self, resp: DeltaResponse) -> tuple[bytes, int]:
        if resp.key is not None:
            hit = self.lookup(resp.key)
            if hit is not None:
                return hit
        body = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=resp.version, type_url=resp.type_url,
            resources=[discovery_pb2.Resource(name=p.name, version=resource_version(p), resource=p.any)
                       for p in resp.resources],
            removed_resources=resp.removed, control_plane=_CONTROL_PLANE).SerializeToString()
        entry = (body, len(resp.resources))
        if resp.key is None:
            return entry
        assert isinstance(resp.key, tuple)
        return self.store(resp.key, delta_target(resp.key), entry)

    def whole(self, resp: DeltaResponse) -> tuple[bytes, int]:
        """The whole message for a response with a shared nonce (it has a key): one byte string for all."""
        key = resp.key
        recent = self._recent.get(resp.type_url)
        if recent is not None and recent[0] is key and recent[3] == resp.nonce:
            self.hits += 1   # the type's last message (a push round: alike streams share the key object)
            return recent[4], recent[5]
        whole = self._whole.get(key)
        if whole is not None and whole[0] == resp.nonce:
            hit = self.lookup(key)
            if hit is not None:
                self._recent[resp.type_url] = (key, None, None, resp.nonce, whole[1], hit[1])
                return whole[1], hit[1]
        entry = self.get(resp)
        tail = discovery_pb2.DeltaDiscoveryResponse(nonce=resp.nonce).SerializeToString()
        data, count = self._with_nonce(key, entry, resp.nonce, tail)
        if key in self._whole:   # kept: the next stream sent this content takes the fast path above
            self._recent[resp.type_url] = (key, None, None, resp.nonce, data, count)
        return data, count


class _Mailbox:
    """A stream's queue, for its one consumer: ``asyncio.Queue``'s ``put_nowait``/``get``/``empty`` without
    its bookkeeping (size bounds, ``task_done``, several getters): a deque and at most one waiter."""

    __slots__ = ("_items", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._items: deque[object] = deque()
        # kept: asyncio.get_running_loop() makes a getpid() system call on Python 3.11, at every wait
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: object) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> object:
        while not self._items:
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        return self._items.popleft()


class _Stream:
    def __init__(self, server: AdsServer, stream_id: int, context: grpc.aio.ServicerContext,
                 *, delta: bool) -> None:
        self.server = server
        self.id = stream_id
        self.context = context
        self.delta = delta
        self.node_id = ""
        self.principal: Hashable | None = None
        self.ps: ProxyStatus | None = None
        self.ads: AdsStream | None = None
        self.queue = _Mailbox(asyncio.get_running_loop())
        self.change_pending = False
        self.timed_out = False
        self.unanswered = 0   # responses written and not yet answered by a request (an ACK or NACK)
        # Once set, the reader hands requests to the state machine itself and queues only the responses to
        # write (an ACK, the common case, costs no hop to the stream's task).
        self.inline: Callable[[Any], list[Response]] | None = None

    async def run(self, requests: AsyncIterator[Any]) -> None:
        reader = asyncio.create_task(self._read(requests))
        unwatch: Callable[[], None] | None = None
        try:
            first = await self.queue.get()
            if first is _EOF:
                return
            node = first.node   # type: ignore[attr-defined]
            if not node.id:
                await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first request must carry node.id")
            self.node_id = node.id
            metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
            if self.server.authorize is not None:
                try:
                    self.principal = await self.server.authorize(self.node_id, metadata, self.context)
                except StreamDenied as e:
                    log.warning("ADS stream %d: refused %s from %s: %s", self.id, self.node_id,
                                self.context.peer(), e)
                    await self.context.abort(e.code, str(e))
            refused = self.server._claim(self, self.principal)
            if refused is not None:
                log.warning("ADS stream %d: refused %s from %s: %s", self.id, self.node_id,
                            self.context.peer(), refused)
                await self.context.abort(grpc.StatusCode.PERMISSION_DENIED, refused)
            self.ps = ProxyStatus(self.node_id, self.id, metadata=metadata, peer=self.context.peer(),
                                  delta=self.delta)
            self.server.status.connect(self.ps)
            log.info("ADS stream %d%s: %s connected from %s", self.id, " (delta)" if self.delta else "",
                     self.node_id, self.ps.peer)
            if self.server.on_connect is not None:
                try:
                    await self.server.on_connect(self.node_id, metadata)
                except ValueError as e:
                    log.warning("rejecting %s: %s", self.node_id, e)
                    await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
                except Exception as e:
                    log.exception("on_connect(%s) failed", self.node_id)
                    await self.context.abort(grpc.StatusCode.INTERNAL, f"on_connect failed: {e}")
            ads = self.ads = AdsStream(self.ps, delta=self.delta, diffs=self.server.diffs,
                                       events=self.server.status, nonces=self.server.nonces)
            unwatch = self.server.cache.watch(self.node_id, self._changed)   # before reading: none is lost
            ads.snapshot = self.server.cache.get(self.node_id)
            on_request = ads.delta_request if self.delta else ads.sotw_request
            item: object = first
            while True:
                if item is _CHANGE:
                    self.change_pending = False
                    await self._write(ads.set_snapshot(self.server.cache.get(self.node_id)))
                elif item is _EOF:
                    return   # the client half-closed
                elif isinstance(item, list):
                    await self._write(item)
                else:
                    await self._write(on_request(item))
                if self.inline is None and self.queue.empty():   # requests read meanwhile are handled
                    self.inline = on_request
                item = await self.queue.get()
        finally:
            reader.cancel()
            if self.unanswered:
                self.unanswered = 0
                self.server._awaiting(-1)
            if unwatch is not None:
                unwatch()
            if self.ps is not None:
                last = self.server.status.disconnect(self.ps)
                log.info("ADS stream %d: %s disconnected%s", self.id, self.node_id,
                         "" if last else " (another stream of this node remains)")
                if last:
                    self.server._disconnected(self.node_id)

    async def _write(self, responses: list[Response]) -> None:
        server = self.server
        # whether the status hears each write (its ``written`` is more than SyncStatus's no-op: metrics)
        observed = type(server.status).written is not SyncStatus.written
        for resp in responses:
            data, count = server.encode(resp)
            # counted before the write: its answer may be read before the write's completion comes back
            if not self.unanswered:
                server._awaiting(1)
            self.unanswered += 1
            started = time.monotonic() if observed else 0.0
            if server.write_timeout > 0:
                await self._write_bounded(data, resp.type_url)
            else:
                await self.context.write(data)
            server.responses_sent += 1
            server.resources_sent += count
            if observed:
                server.status.written(self.node_id, resp.type_url, started)

    async def _write_bounded(self, data: bytes, type_url: str) -> None:
        """Write, or end the stream if that takes longer than the server's write timeout."""
        task = asyncio.current_task()
        assert task is not None
        timer = asyncio.get_running_loop().call_later(self.server.write_timeout, self._write_timed_out, task,
                                                      type_url)
        try:
            await self.context.write(data)
        finally:
            timer.cancel()

    def _write_timed_out(self, task: asyncio.Task[Any], type_url: str) -> None:
        self.timed_out = True
        log.warning("ADS stream %d (%s): writing %s took over %.3gs: stream closed", self.id, self.node_id,
                    SHORT.get(type_url, type_url), self.server.write_timeout)
        self.server.status.write_timeout(self.node_id, type_url)
        task.cancel()

    async def _read(self, requests: AsyncIterator[Any]) -> None:
        # grpc.aio's context.read() directly (its request iterator wraps it in one more coroutine per
        # message); a request iterator that is not grpc's (tests) is iterated
        read: Callable[[], Awaitable[Any]] = (self.context.read if _is_grpc_receiver(requests)
                                              else requests.__anext__)
        eof = grpc.aio.EOF
        try:
            while True:
                try:
                    req = await read()
                except StopAsyncIteration:
                    break
                if req is eof:
                    break
                if self.unanswered:
                    self.unanswered -= 1
                    if not self.unanswered:
                        self.server._awaiting(-1)
                handle = self.inline
                if handle is None:
                    self.queue.put_nowait(req)
                    continue
                try:
                    responses = handle(req)
                except Exception:
                    log.exception("ADS stream %d (%s): request failed", self.id, self.node_id)
                    break
                req = None   # not kept alive (and tracked by the gc) while the next read waits
                if responses:
                    self.queue.put_nowait(responses)
        except Exception as e:   # stream broken: end like EOF; cancellation of this task passes through
            log.debug("ADS stream %d: read ended: %r", self.id, e)
        self.queue.put_nowait(_EOF)

    def _changed(self) -> None:
        """The node's snapshot changed (a cache watcher): one wake-up queued, however many changes."""
        if not self.change_pending:
            self.change_pending = True
            self.queue.put_nowait(_CHANGE)



def _is_grpc_receiver(requests: AsyncIterator[Any]) -> bool:
    """``requests`` is grpc.aio's own iterator over the call's messages (so ``context.read()`` reads them)."""
    return type(requests).__module__.startswith("grpc.")


def _serialize(msg: bytes | Any) -> bytes:
    if isinstance(msg, bytes):
        return msg
    out: bytes = msg.SerializeToString()
    return out


def _grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def serve(server: AdsServer, host: str, port: int, *,
                tls: tuple[grpc.ServerCredentials, int] | None = None,
                handlers: tuple[grpc.GenericRpcHandler, ...] = ()) -> grpc.aio.Server:
    """Start a grpc.aio server for ``server`` on host:port (0 = any free port; the bound one is in
    ``server.port`` and logged), and with ``tls=(credentials, port)`` also on a TLS port (the bound one in
    ``server.tls_port``); ``handlers`` are more services on the same ports (the CA). Stop it with
    ``await grpc_server.stop(grace)``."""
    grpc_server = grpc.aio.server(options=[
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.keepalive_time_ms", 30_000),        # notice proxies that vanished without closing
        ("grpc.keepalive_timeout_ms", 10_000),
    ])
    # Registered by hand (not add_..._to_server) so responses can be written as pre-serialized bytes.
    grpc_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, {
        "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            server.StreamAggregatedResources,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=_serialize),
        "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
            server.DeltaAggregatedResources,
            request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
            response_serializer=_serialize),
    }),))
    if handlers:
        grpc_server.add_generic_rpc_handlers(handlers)
    bound = grpc_server.add_insecure_port(_grpc_address(host, port))
    if not bound:
        raise OSError(f"cannot bind xDS server to {host}:{port}")
    server.port = bound
    if tls is not None:
        tls_bound = grpc_server.add_secure_port(_grpc_address(host, tls[1]), tls[0])
        if not tls_bound:
            raise OSError(f"cannot bind the xDS TLS port to {host}:{tls[1]}")
        server.tls_port = tls_bound
    await grpc_server.start()
    log.info("xDS (ADS) server listening on %s%s", _grpc_address(host, bound),
             f", TLS on {_grpc_address(host, server.tls_port)}" if server.tls_port else "")
    return grpc_server
