"""The control plane's end of the agents' debug channels (:mod:`mizzen.agent.debug_channel`): how
``mizzen proxy-config`` and ``mizzen logs -c istio-proxy`` reach a pod's Envoy on a Kubernetes cluster.

Why this path: istioctl reaches a pod's Envoy admin by port-forwarding through the API server to the kubelet
(``istioctl proxy-config`` reads ``localhost:15000`` of the pod); the test cluster's node agent has no
port-forward, and the agent's admin proxy takes the control plane's API token, which no pod holds. Every
agent on a cluster already authenticates to the control plane (its projected token, TLS port 15012), so it
opens a debug stream there and the control plane asks over it. The stream is authenticated like an xDS
stream (:func:`mizzen.security.xdsauth.check_node`: the node must be the token's namespace, service account
and bound pod), so a pod can only ever answer for itself; the users' side is the control plane's API, behind
its token (:mod:`mizzen.auth`). The kubelet-style alternative (an authenticated port in the node agent) would
put a second credential and a second listener on every node, for the same allow-listed calls.

HTTP (under the API guard):

* ``GET|POST /debug/proxy-admin/{namespace}/{pod}/{admin path}``: the agent's allow-listed admin call
  (:func:`mizzen.agent.admin_proxy.admin_call`; config_dump redacted). ``/apis/pods`` items name it as the
  pod's ``admin``, so ``mizzen proxy-config endpoints|secret|log|bootstrap|all`` use it unchanged.
* :meth:`ProxyDebugHub.logs`: Envoy's log (the ``istio-proxy`` container) for ``/apis/pods/.../logs``.

A pod with no connected channel is a 503 with one line saying so, unless a peer replica holds it
(:mod:`.proxy_peers`: two or more replicas, each agent connected to one): then the request is forwarded there.
The same peer call answers ``{"kind": "syncz"}`` with the peer's own ``/debug/syncz`` entries (each naming
its replica, ``istiod``), so ``mizzen proxy-status`` asked of one replica lists the proxies of every
replica, as istioctl asks every istiod (:meth:`ProxyDebugHub.peer_syncz`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web

from mizzen.agent.debug_channel import CONNECT_METHOD
from mizzen.controlplane.proxy_peers import FORWARD_METHOD, GONE, PeerAuthenticator, Peers
from mizzen.security.authn import AuthenticationError, Authenticator, authenticate
from mizzen.security.xdsauth import NodeDenied, check_node, is_tls, request_context

log = logging.getLogger(__name__)

__all__ = ["ADMIN_PREFIX", "ProxyDebugHub", "admin_path"]

ADMIN_PREFIX = "/debug/proxy-admin"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def admin_path(namespace: str, pod: str) -> str:
    """The API path through which a pod's admin is reached (``/apis/pods`` items' ``admin``)."""
    return f"{ADMIN_PREFIX}/{namespace}/{pod}"


class ChannelGone(Exception):
    """The pod has no debug channel (or it closed while a request waited)."""


@dataclass
class _Session:
    node_id: str
    outbox: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)


class ProxyDebugHub:
    """Connected agents by ``(namespace, pod)``; serve :meth:`rpc_handler` on the TLS gRPC port and
    :meth:`routes` on the API."""

    def __init__(self, authenticators: Callable[[], Sequence[Authenticator]],
                 timeout_s: float = 10.0) -> None:
        self.authenticators = authenticators       # the identity's current list (built and grown at start)
        self.timeout_s = timeout_s
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._ids = itertools.count(1)
        self.peers: Peers | None = None                       # the other replicas (set on a cluster)
        self.peer_authenticator: PeerAuthenticator | None = None
        self.instance = ""                                    # this replica's name (its pod), on a cluster
        self.syncz: Callable[[], list[dict[str, Any]]] | None = None   # this replica's /debug/syncz entries

    def connected(self, namespace: str, pod: str) -> bool:
        return (namespace, pod) in self._sessions

    # --- the agents' side (gRPC) ----------------------------------------------------------------------------
    def rpc_handler(self) -> grpc.GenericRpcHandler:
        service, _, method = CONNECT_METHOD.strip("/").rpartition("/")
        handler = grpc.stream_stream_rpc_method_handler(self.connect)
        forward = grpc.unary_unary_rpc_method_handler(self.forwarded)
        return grpc.method_handlers_generic_handler(
            service, {method: handler, FORWARD_METHOD.rpartition("/")[2]: forward})

    async def forwarded(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        """A peer replica's forward (:mod:`.proxy_peers`): answered from this replica's channels only."""
        if not is_tls(context) or self.peer_authenticator is None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "forwards are taken from peer replicas "
                                "over TLS only")
        assert self.peer_authenticator is not None
        try:
            caller = await self.peer_authenticator.authenticate(request_context(context))
        except AuthenticationError as e:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
        if caller is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a peer token is required")
        try:
            msg = json.loads(raw)
            ns, pod, req = str(msg["namespace"]), str(msg["pod"]), dict(msg["request"])
        except (ValueError, KeyError, TypeError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "want {namespace, pod, request}")
            raise AssertionError("unreachable") from None
        if req.get("kind") == "syncz":
            return json.dumps({"entries": self.syncz() if self.syncz is not None else [],
                               "istiod": self.instance}).encode()
        if req.get("kind") not in ("admin", "logs"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unknown request kind")
        try:
            answer = await self.ask(ns, pod, req, forward=False)
        except ChannelGone:
            answer = {GONE: True}
        except TimeoutError:
            answer = {"status": 504, "contentType": "application/json", "body": json.dumps(
                {"error": f"pod {ns}/{pod}'s agent did not answer in {self.timeout_s:g} s"})}
        answer.pop("id", None)
        return json.dumps(answer).encode()

    async def connect(self, requests: AsyncIterator[bytes],
                      context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
        if not is_tls(context):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                "the debug channel is served over TLS only")
        try:
            hello = json.loads(await requests.__anext__())
            node_id, metadata = str(hello["node"]), dict(hello.get("metadata") or {})
        except (StopAsyncIteration, ValueError, KeyError, TypeError, AttributeError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be "
                                '{"node": <node id>, "metadata": {...}}')
            raise AssertionError("unreachable") from None
        try:
            caller = await authenticate(self.authenticators(), request_context(context))
            check_node(caller, node_id, metadata)
        except AuthenticationError as e:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
        except NodeDenied as e:
            await context.abort(e.code, str(e))
        pod, _, namespace = node_id.split("~")[2].partition(".")
        key = (namespace, pod)
        session = _Session(node_id)
        old = self._sessions.get(key)
        self._sessions[key] = session
        if old is not None:
            self._fail(old)
        log.info("debug channel: %s/%s connected", namespace, pod)
        reader = asyncio.create_task(self._read(requests, session))
        get: asyncio.Future[bytes] | None = None
        try:
            while not reader.done():
                get = asyncio.ensure_future(session.outbox.get())
                done, _ = await asyncio.wait({get, reader}, return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    message, get = get.result(), None
                    yield message
        finally:
            if get is not None:
                get.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            if self._sessions.get(key) is session:
                del self._sessions[key]
            self._fail(session)
            log.info("debug channel: %s/%s disconnected", namespace, pod)

    async def _read(self, requests: AsyncIterator[bytes], session: _Session) -> None:
        async for raw in requests:
            try:
                answer = json.loads(raw)
                future = session.pending.pop(int(answer["id"]), None)
            except (ValueError, KeyError, TypeError):
                continue
            if future is not None and not future.done():
                future.set_result(answer)

    @staticmethod
    def _fail(session: _Session) -> None:
        for future in session.pending.values():
            if not future.done():
                future.set_exception(ChannelGone("the pod's debug channel closed"))
        session.pending.clear()

    async def ask(self, namespace: str, pod: str, request: dict[str, Any],
                  forward: bool = True) -> dict[str, Any]:
        """Send one request to the pod's agent and wait for its answer (ChannelGone / TimeoutError); a pod
        connected to a peer replica is asked through it (``forward``)."""
        session = self._sessions.get((namespace, pod))
        if session is None and forward and self.peers:
            answer = await self.peers.ask(namespace, pod, request)
            if answer is not None:
                return answer
            raise ChannelGone(f"pod {namespace}/{pod} has no debug channel to any control-plane replica (no "
                              "sidecar, or not started yet)")
        if session is None:
            raise ChannelGone(f"pod {namespace}/{pod} has no debug channel to this control plane (no "
                              "sidecar, not started yet, or connected to another replica)")
        rid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        session.pending[rid] = future
        session.outbox.put_nowait(json.dumps({"id": rid, **request}).encode())
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        finally:
            session.pending.pop(rid, None)

    async def peer_syncz(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The other replicas' ``/debug/syncz`` entries, and the peers that did not answer."""
        if not self.peers:
            return [], []
        entries: list[dict[str, Any]] = []
        answers, silent = await self.peers.ask_all({"kind": "syncz"})
        for answer in answers:
            got = answer.get("entries")
            if isinstance(got, list):
                entries.extend(e for e in got if isinstance(e, dict))
        return entries, silent

    # --- the users' side (HTTP, behind the API guard) -------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        path = ADMIN_PREFIX + "/{namespace}/{pod}/{admin:.*}"
        return [web.get(path, self.admin), web.post(path, self.admin)]

    async def admin(self, request: web.Request) -> web.Response:
        ns, pod = request.match_info["namespace"], request.match_info["pod"]
        req = {"kind": "admin", "method": request.method, "path": "/" + request.match_info["admin"],
               "query": dict(request.query)}
        return await self._answer(ns, pod, req)

    async def logs(self, namespace: str, pod: str, tail: int | None, offset: int | None) -> web.Response:
        """Envoy's log lines of the pod (``{"lines", "offsets"}``, as ``/apis/pods/.../logs``)."""
        return await self._answer(namespace, pod, {"kind": "logs", "tail": tail, "offset": offset})

    async def _answer(self, namespace: str, pod: str, req: dict[str, Any]) -> web.Response:
        try:
            answer = await self.ask(namespace, pod, req)
        except ChannelGone as e:
            return web.json_response({"error": str(e)}, status=503)
        except TimeoutError:
            return web.json_response({"error": f"pod {namespace}/{pod}'s agent did not answer in "
                                               f"{self.timeout_s:g} s"}, status=504)
        ctype = str(answer.get("contentType") or "text/plain")
        return web.Response(status=int(answer.get("status") or 502), text=str(answer.get("body") or ""),
                            content_type=ctype.split(";")[0])
