"""State-of-the-world ADS server (grpc.aio): subscriptions, nonces, ACK/NACK, pushes from the SnapshotCache.

One :class:`_Stream` per Envoy connection serializes everything that happens on it (requests and snapshot
changes) through one queue, so per-type protocol state needs no locks. The server knows nothing of the mesh:
the owner's ``on_connect`` callback must ``set_snapshot`` the node before its first response goes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format

from mizzen.core.resources import CLUSTER, ENDPOINT, SHORT
from mizzen.xds.cache import Snapshot, SnapshotCache, TypeSnapshot, ordered_types
from mizzen.xds.status import WILDCARD_TYPES, Nack, ProxyStatus, SyncStatus, TypeStatus

log = logging.getLogger(__name__)

__all__ = ["AdsServer", "OnConnect", "OnDisconnect", "ResponseBodies", "serve"]

OnConnect = Callable[[str, dict[str, Any]], Awaitable[None]]
OnDisconnect = Callable[[str], Awaitable[None]]

MAX_MESSAGE_BYTES = 256 * 1024 * 1024

_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_CONTROL_PLANE = base_pb2.ControlPlane(identifier="mizzen")
_CHANGE = object()   # queue marker: the node's snapshot changed
_EOF = object()      # queue marker: the client closed its side


@dataclass
class _Watch:
    """A subscription on one stream: requested names (None = wildcard) and the status it reports into."""

    names: frozenset[str] | None
    status: TypeStatus
    force: bool = False       # respond even if the version did not change (initial request, new names)
    send_all: bool = False    # next response carries every resource of the type (EDS after a CDS push)


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """Serves snapshots from ``cache`` over ADS; records sync state in ``status``.

    ``on_connect(node_id, metadata)`` is awaited for every new stream after its first request and before any
    response: it should ``set_snapshot`` the node (a ValueError rejects the stream with INVALID_ARGUMENT).
    ``on_disconnect(node_id)`` runs when the node's last stream ends, unless it reconnected meanwhile.
    Serve with :func:`serve` (it registers serializers for the pre-serialized responses); stop with
    :meth:`shutdown`.
    """

    def __init__(
        self,
        cache: SnapshotCache,
        *,
        on_connect: OnConnect | None = None,
        on_disconnect: OnDisconnect | None = None,
        status: SyncStatus | None = None,
    ) -> None:
        self.cache = cache
        self.status = status if status is not None else SyncStatus(cache)
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.port: int | None = None           # set by serve()
        self._stream_ids = itertools.count(1)
        self._background: set[asyncio.Task[None]] = set()
        self._live: set[_Stream] = set()
        self.bodies = ResponseBodies()
        self.responses_sent = 0

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        stream = _Stream(self, next(self._stream_ids), context)
        self._live.add(stream)
        try:
            # CancelledError: the client went away or the server is stopping; the stream cleaned up already
            with contextlib.suppress(asyncio.CancelledError):
                await stream.run(request_iterator)
        finally:
            self._live.discard(stream)

    @property
    def stream_count(self) -> int:
        return len(self._live)

    async def shutdown(self, grpc_server: grpc.aio.Server, grace: float = 1.0) -> None:
        """End every stream cleanly (status OK: proxies reconnect, to us or a successor), then stop gRPC."""
        for stream in list(self._live):
            stream.queue.put_nowait(_EOF)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._live and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await grpc_server.stop(grace)

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "delta xDS is not supported; use SotW ADS")

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


class ResponseBodies:
    """Serialized DiscoveryResponses minus the nonce, shared by every stream: a version is a content hash, so
    (type, version, requested names) identifies the bytes. Thousands of proxies with the same clusters cost
    one serialization. LRU, bounded in bytes."""

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self._lru: OrderedDict[tuple[str, str, frozenset[str] | None], tuple[bytes, int]] = OrderedDict()
        self._bytes = 0
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0

    def get(self, tsnap: TypeSnapshot, names: frozenset[str] | None) -> tuple[bytes, int]:
        """(body bytes, resource count) for the resources of ``tsnap`` selected by ``names``."""
        key = (tsnap.type_url, tsnap.version, names)
        hit = self._lru.get(key)
        if hit is not None:
            self._lru.move_to_end(key)
            self.hits += 1
            return hit
        self.misses += 1
        resources = tsnap.select(names)
        body = discovery_pb2.DiscoveryResponse(
            version_info=tsnap.version, type_url=tsnap.type_url, resources=resources,
            control_plane=_CONTROL_PLANE).SerializeToString()
        entry = self._lru[key] = (body, len(resources))
        self._bytes += len(body)
        while self._bytes > self.max_bytes and len(self._lru) > 1:
            _, (old, _n) = self._lru.popitem(last=False)
            self._bytes -= len(old)
        return entry


class _Stream:
    def __init__(self, server: AdsServer, stream_id: int, context: grpc.aio.ServicerContext) -> None:
        self.server = server
        self.id = stream_id
        self.context = context
        self.node_id = ""
        self.ps: ProxyStatus | None = None
        self.snapshot: Snapshot | None = None
        self.watches: dict[str, _Watch] = {}
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.change_pending = False
        self.nonces = itertools.count(1)

    async def run(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest]) -> None:
        tasks = [asyncio.create_task(self._read(requests))]
        try:
            first = await self.queue.get()
            if not isinstance(first, discovery_pb2.DiscoveryRequest):
                return
            if not first.node.id:
                await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first request must carry node.id")
            self.node_id = first.node.id
            node = first.node
            metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
            self.ps = ProxyStatus(self.node_id, self.id, metadata=metadata, peer=self.context.peer())
            self.server.status.connect(self.ps)
            log.info("ADS stream %d: %s connected from %s", self.id, self.node_id, self.ps.peer)
            if self.server.on_connect is not None:
                try:
                    await self.server.on_connect(self.node_id, metadata)
                except ValueError as e:
                    log.warning("rejecting %s: %s", self.node_id, e)
                    await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
                except Exception as e:
                    log.exception("on_connect(%s) failed", self.node_id)
                    await self.context.abort(grpc.StatusCode.INTERNAL, f"on_connect failed: {e}")
            changed = self.server.cache.changed(self.node_id)   # taken before reading, so no change is lost
            self.snapshot = self.server.cache.get(self.node_id)
            tasks.append(asyncio.create_task(self._watch_changes(changed)))
            item: object = first
            while True:
                if isinstance(item, discovery_pb2.DiscoveryRequest):
                    await self._on_request(item)
                elif item is _CHANGE:
                    self.change_pending = False
                    await self._on_change()
                else:
                    return   # _EOF: the client half-closed
                item = await self.queue.get()
        finally:
            for t in tasks:
                t.cancel()
            if self.ps is not None:
                last = self.server.status.disconnect(self.ps)
                log.info("ADS stream %d: %s disconnected%s", self.id, self.node_id,
                         "" if last else " (another stream of this node remains)")
                if last:
                    self.server._disconnected(self.node_id)

    async def _read(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest]) -> None:
        try:
            async for req in requests:
                self.queue.put_nowait(req)
        except Exception as e:   # stream broken: end like EOF; cancellation of this task passes through
            log.debug("ADS stream %d: read ended: %r", self.id, e)
        self.queue.put_nowait(_EOF)

    async def _watch_changes(self, changed: asyncio.Event) -> None:
        while True:
            await changed.wait()
            changed = self.server.cache.changed(self.node_id)
            if not self.change_pending:
                self.change_pending = True
                self.queue.put_nowait(_CHANGE)

    # --- protocol ------------------------------------------------------------------------------------------
    async def _on_request(self, req: discovery_pb2.DiscoveryRequest) -> None:
        type_url = req.type_url
        if not type_url:
            log.warning("ADS stream %d (%s): request without type_url ignored", self.id, self.node_id)
            return
        assert self.ps is not None
        names = _requested_names(type_url, req.resource_names)
        watch = self.watches.get(type_url)
        if watch is None:
            watch = self.watches[type_url] = _Watch(names, self.ps.of(type_url))
        ts = watch.status
        ts.requested = True
        ts.unsubscribed = names == frozenset()
        short = SHORT.get(type_url, type_url)
        if not req.response_nonce:
            # Initial request for the type on this stream (also after a reconnect, carrying the version the
            # proxy already has): always answer, even if the version is unchanged, or Envoy stays warming.
            log.debug("%s %s: initial request (has %r) names=%s", self.node_id, short, req.version_info,
                      names)
            watch.names = names
            watch.force = True
            await self._maybe_send(type_url)
            return
        if req.response_nonce != ts.nonce:
            # No response for a stale nonce; but an emptied subscription still counts: Envoy drops its last
            # EDS/RDS watch with the nonce it had, and does not ACK the (empty) response already in flight
            if ts.unsubscribed:
                watch.names = names
                self.server.status.notify(self.node_id)
            log.debug("%s %s: stale nonce %s (latest %s) ignored", self.node_id, short, req.response_nonce,
                      ts.nonce)
            return
        now = time.time()
        if req.HasField("error_detail"):
            msg = req.error_detail.message
            ts.nack = Nack(ts.sent_version or "", ts.nonce or "", msg, now)
            ts.acked_version = req.version_info or None
            log.warning("%s NACKed %s version %s (keeps %r): %s", self.node_id, short, ts.sent_version,
                        req.version_info, msg)
        else:
            ts.acked_version = req.version_info
            ts.acked_nonce = req.response_nonce
            ts.acked_at = now
            ts.nack = None
            log.debug("%s ACKed %s version %s", self.node_id, short, req.version_info)
        self.server.status.notify(self.node_id)
        if _adds_names(watch.names, names):
            watch.force = True
        watch.names = names
        await self._maybe_send(type_url)

    async def _on_change(self) -> None:
        self.snapshot = self.server.cache.get(self.node_id)
        for type_url in ordered_types(self.watches):   # make-before-break: CDS, EDS, LDS, RDS
            await self._maybe_send(type_url)

    async def _maybe_send(self, type_url: str) -> None:
        """Respond if forced or if the snapshot's version differs from the last one sent (never a NACKed
        version again: after a NACK sent == snapshot until the snapshot changes)."""
        watch = self.watches[type_url]
        snap = self.snapshot
        ts = watch.status
        if snap is None or not ts.requested:
            return   # no config yet: answered when the first snapshot arrives
        tsnap = snap.of(type_url)
        if not watch.force and tsnap.version == ts.sent_version:
            return
        watch.force = False
        names = None if watch.send_all else watch.names
        watch.send_all = False
        nonce = f"{self.id:x}.{next(self.nonces):x}"
        body, count = self.server.bodies.get(tsnap, names)
        ts.sent_version, ts.nonce, ts.sent_at = tsnap.version, nonce, time.time()
        self.server.status.notify(self.node_id)
        log.debug("%s <- %s version %s nonce %s (%d resources)", self.node_id, SHORT.get(type_url, type_url),
                  tsnap.version, nonce, count)
        # a serialized DiscoveryResponse: the shared body plus this response's nonce field
        await self.context.write(body + discovery_pb2.DiscoveryResponse(nonce=nonce).SerializeToString())
        self.server.responses_sent += 1
        if type_url == CLUSTER and ENDPOINT in self.watches:
            # Envoy warms every added or changed cluster until it gets an EDS response for it, and a changed
            # cluster re-requests the same names (which looks like an ACK). Like istiod, follow every CDS
            # push with the endpoints, all of them, so warming never waits for a request we would not answer.
            eds = self.watches[ENDPOINT]
            eds.force = eds.send_all = True
            await self._maybe_send(ENDPOINT)


def _requested_names(type_url: str, names: Any) -> frozenset[str] | None:
    """None for a wildcard subscription, else the requested names."""
    if "*" in names:
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


def _serialize(msg: bytes | Any) -> bytes:
    if isinstance(msg, bytes):
        return msg
    out: bytes = msg.SerializeToString()
    return out


def _grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def serve(server: AdsServer, host: str, port: int) -> grpc.aio.Server:
    """Start a grpc.aio server for ``server`` on host:port (0 = any free port; the bound one is in
    ``server.port`` and logged). Stop it with ``await grpc_server.stop(grace)``."""
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
    bound = grpc_server.add_insecure_port(_grpc_address(host, port))
    if not bound:
        raise OSError(f"cannot bind xDS server to {host}:{port}")
    server.port = bound
    await grpc_server.start()
    log.info("xDS (ADS) server listening on %s", _grpc_address(host, bound))
    return grpc_server
