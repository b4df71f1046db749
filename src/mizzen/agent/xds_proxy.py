"""The agent's xDS proxy (pilot-agent's ``XDS`` socket): ADS served on a local Unix socket, forwarded to
the control plane.

Local xDS clients (a proxyless gRPC application through its bootstrap's ``server_uri``) talk to the agent
only, over a socket in the agent's directory (mode 0600), so what the agent uses to reach the control plane
stays its own business: plaintext to ``upstream``, or with ``tls`` (a
:class:`~mizzen.security.nodeagent.upstream.ControlPlaneTls`) over the control plane's TLS port with
the pod credential, as Istio's xds-proxy does for Envoy and proxyless gRPC alike. Each stream,
state-of-the-world or delta, is forwarded as one upstream stream, message bytes untouched in both
directions; when either side ends, the other is ended with the same status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from mizzen.security.nodeagent.upstream import ControlPlaneTls, TokenFileError

log = logging.getLogger(__name__)

__all__ = ["ADS_SERVICE", "XdsProxy"]

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_METHODS = ("StreamAggregatedResources", "DeltaAggregatedResources")
_MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class XdsProxy:
    """``await start()`` serves ``socket_path``; ``await stop()`` ends every stream and removes the socket."""

    def __init__(self, socket_path: Path, upstream: str, tls: ControlPlaneTls | None = None,
                 bind_path: str | None = None) -> None:
        self.socket_path = socket_path
        self.upstream = upstream            # host:port of the control plane's xDS server
        self.tls = tls
        self.bind_path = bind_path          # where to bind when socket_path is too long for sun_path
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None
        self.streams = 0                    # streams forwarded so far

    @property
    def server_uri(self) -> str:
        """The gRPC target of the socket, for a client's bootstrap."""
        return f"unix://{self.socket_path.resolve()}"

    async def start(self) -> None:
        opts = [("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES)]
        if self.tls is None:
            self._channel = grpc.aio.insecure_channel(self.upstream, options=opts)
        server = grpc.aio.server(options=opts)
        # no (de)serializers: messages pass through as bytes
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ADS_SERVICE, {
            m: grpc.stream_stream_rpc_method_handler(self._handler(m)) for m in _METHODS}),))
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        bind = self.bind_path or str(self.socket_path.resolve())
        if not server.add_insecure_port(f"unix:{bind}"):
            raise OSError(f"cannot listen on {self.socket_path}")
        await server.start()
        os.chmod(bind, 0o600)
        self._server = server
        log.info("xDS proxy: %s -> %s%s", self.socket_path, self.upstream, " (TLS)" if self.tls else "")

    async def stop(self, grace: float = 0.5) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        if self.tls is not None:
            await self.tls.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def __aenter__(self) -> XdsProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _handler(self, method: str):  # type: ignore[no-untyped-def]
        async def forward(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
            await self._forward(method, requests, context)
        return forward

    async def _forward(self, method: str, requests: AsyncIterator[bytes],
                       context: grpc.aio.ServicerContext) -> None:
        self.streams += 1
        if self.tls is not None:
            try:
                metadata = self.tls.metadata()           # a token file is read again for every stream
            except TokenFileError as e:
                log.warning("xDS proxy: %s", e)
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
            call = self.tls.channel().stream_stream(f"/{ADS_SERVICE}/{method}")(
                _relay(requests), metadata=metadata)
        else:
            assert self._channel is not None
            call = self._channel.stream_stream(f"/{ADS_SERVICE}/{method}")(_relay(requests))
        try:
            async for response in call:
                await context.write(response)
        except grpc.aio.AioRpcError as e:
            log.info("xDS proxy: upstream %s ended: %s %s", method, e.code().name, e.details())
            await context.abort(e.code(), e.details() or "")
        except asyncio.CancelledError:   # the local client went away
            call.cancel()
            raise


async def _relay(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for req in requests:
        yield req
