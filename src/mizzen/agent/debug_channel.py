"""The agent's debug channel to the control plane: how ``mizzen proxy-config`` and ``mizzen logs -c
istio-proxy`` reach a pod on a Kubernetes cluster.

istioctl reaches a pod's Envoy admin by port-forwarding through the API server to the kubelet; the test
cluster has no kubelet port-forward, and an agent's admin proxy (``:15004``) takes the control plane's API
token, which a pod does not hold. The agent already holds an authenticated channel to the control plane (its
xDS over TLS, with the pod's token); this is a second stream on that TLS port and with that credential
(``mizzen.debug.v1.ProxyDebug/Connect``), opened by the agent, in the spirit of Istio's debug-over-xDS
(``istio.io/debug``) but pointing the other way. The control plane authenticates it exactly like an xDS
stream (the node must be the token's pod: :func:`mizzen.security.xdsauth.check_node`) and can then ask the
agent, over it, for:

* ``admin``: an allow-listed Envoy admin request (:func:`mizzen.agent.admin_proxy.admin_call`: the same list
  as the admin proxy, config_dump redacted);
* ``logs``: the tail of Envoy's log (the ``istio-proxy`` container's Envoy output), or what was written
  after a byte offset (``logs -f``).

Messages are JSON objects, one per gRPC message: the agent's first is ``{"node": id, "metadata": {...}}``;
requests are ``{"id", "kind", ...}`` and answers ``{"id", "status", "contentType", "body"}``. Nothing can be
pushed to the agent but these read-only requests and log-level changes; it reconnects with a backoff
(0.5 s doubling to 10 s) while it runs. Pods that never open it (local mode) keep the admin proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from mizzen.agent.admin_proxy import admin_call
from mizzen.security.nodeagent.upstream import ControlPlaneTls, TokenFileError

log = logging.getLogger(__name__)

__all__ = ["CONNECT_METHOD", "MAX_LOG_BYTES", "DebugChannel", "read_log"]

CONNECT_METHOD = "/mizzen.debug.v1.ProxyDebug/Connect"
MAX_LOG_BYTES = 4 * 1024 * 1024          # one answer carries at most this much log
BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 10.0

Answer = dict[str, Any]


def read_log(path: Path, tail: int | None, offset: int | None) -> Answer:
    """Envoy's log as ``{"lines", "offsets"}``: the last ``tail`` lines (all, capped), or what follows
    ``offset``; ``offsets`` is where the next read starts. A missing log is empty."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            start = offset if offset is not None and 0 <= offset <= size else max(0, size - MAX_LOG_BYTES)
            if offset is not None and offset > size:       # rotated meanwhile: start over
                start = max(0, size - MAX_LOG_BYTES)
            f.seek(start)
            data = f.read(MAX_LOG_BYTES)
    except FileNotFoundError:
        return {"lines": [], "offsets": [0]}
    end = start + len(data)
    if not data.endswith(b"\n"):                          # keep a partial last line for the next read
        cut = data.rfind(b"\n") + 1
        data, end = data[:cut], start + cut
    lines = data.decode("utf-8", "replace").splitlines()
    if tail is not None and offset is None:
        lines = lines[-tail:] if tail > 0 else []
    return {"lines": lines, "offsets": [end]}


class DebugChannel:
    """``start()``/``stop()``; answers the control plane's requests for this agent's Envoy."""

    def __init__(self, tls: ControlPlaneTls, node_id: str, metadata: Mapping[str, str], admin_socket: Path,
                 log_path: Path, timeout_s: float = 10.0) -> None:
        self.tls, self.node_id, self.metadata = tls, node_id, dict(metadata)
        self.admin_socket, self.log_path = admin_socket, log_path
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.answered = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"debug channel {self.node_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = BACKOFF_START_S
        while True:
            try:
                await self._session()
                backoff = BACKOFF_START_S
            except grpc.aio.AioRpcError as e:
                log.info("debug channel to %s ended: %s %s", self.tls.target, e.code().name, e.details())
                if e.code() == grpc.StatusCode.UNIMPLEMENTED:      # a control plane without it: stay quiet
                    backoff = BACKOFF_MAX_S
            except TokenFileError as e:
                log.warning("debug channel: %s", e)
            self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _session(self) -> None:
        outbox: asyncio.Queue[bytes] = asyncio.Queue()
        outbox.put_nowait(json.dumps({"node": self.node_id, "metadata": self.metadata}).encode())

        async def sending() -> AsyncIterator[bytes]:
            while True:
                yield await outbox.get()

        call = self.tls.channel().stream_stream(CONNECT_METHOD)(sending(), metadata=self.tls.metadata())
        tasks: set[asyncio.Task[None]] = set()
        try:
            async for raw in call:
                self.connected.set()
                task = asyncio.create_task(self._answer(raw, outbox.put_nowait))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            call.cancel()
            for t in tasks:
                t.cancel()

    async def _answer(self, raw: bytes, send: Callable[[bytes], None]) -> None:
        try:
            req = json.loads(raw)
            rid = req["id"]
        except (ValueError, KeyError, TypeError):
            log.warning("debug channel: a malformed request was ignored")
            return
        try:
            answer = await self.handle(req)
        except Exception as e:      # one bad request must not end the channel
            answer = {"status": 500, "contentType": "application/json",
                      "body": json.dumps({"error": f"the agent failed: {type(e).__name__}"})}
        self.answered += 1
        send(json.dumps({"id": rid, **answer}).encode())

    async def handle(self, req: Mapping[str, Any]) -> Answer:
        kind = req.get("kind")
        if kind == "admin":
            query = {str(k): str(v) for k, v in (req.get("query") or {}).items()}
            status, ctype, body = await admin_call(self.admin_socket, str(req.get("method") or "GET"),
                                                   str(req.get("path") or ""), query, self.timeout)
            return {"status": status, "contentType": ctype, "body": body}
        if kind == "logs":
            tail, offset = req.get("tail"), req.get("offset")
            lines: Answer = await asyncio.to_thread(read_log, self.log_path,
                                                    tail if isinstance(tail, int) else None,
                                                    offset if isinstance(offset, int) else None)
            return {"status": 200, "contentType": "application/json", "body": json.dumps(lines)}
        return {"status": 400, "contentType": "application/json",
                "body": json.dumps({"error": f"unknown request kind {kind!r}"})}
