"""The agent's SDS server: Envoy's ``SecretDiscoveryService`` on a Unix socket, as pilot-agent's.

Envoy asks for ``default`` (the workload certificate chain and key) and ``ROOTCA`` (the trust bundle) over
state-of-the-world ``StreamSecrets`` (one stream per subscription, or several names on one; both work).
Every stream answers its requested names once the :class:`SecretManager` has a certificate, and again after
every rotation; ACKs and NACKs are matched by nonce (a stale nonce is ignored, a NACK is logged). Unknown
names are logged and left out. The socket is 0600 (its directory 0700 when created here): only the
pod's Envoy (same user) connects. ``pushes`` counts responses sent; per rotation, ``push_latencies_s``
records the time from the new certificate to the response on the wire and ``ack_latencies_s`` to Envoy's
ACK of it (the SDS push time as Envoy sees it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2

from mizzen.security.nodeagent.cache import ROOT_SECRET, WORKLOAD_SECRET, SecretManager, WorkloadSecret

log = logging.getLogger(__name__)

__all__ = ["SECRET_TYPE", "SdsServer", "secret_resource"]

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
_CHANGE = object()
_EOF = object()


def secret_resource(name: str, secret: WorkloadSecret) -> secret_pb2.Secret | None:
    """The Envoy Secret for ``default`` or ``ROOTCA``; None for any other name."""
    if name == WORKLOAD_SECRET:
        return secret_pb2.Secret(name=name, tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=secret.chain_pem.encode()),
            private_key=base_pb2.DataSource(inline_bytes=secret.key_pem)))
    if name == ROOT_SECRET:
        return secret_pb2.Secret(name=name, validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_bytes=secret.roots.pem.encode())))
    return None


class SdsServer(sds_pb2_grpc.SecretDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, manager: SecretManager) -> None:
        self.manager = manager
        self.socket_path: Path | None = None
        self.pushes = 0
        self.nacks = 0
        self.push_latencies_s: list[float] = []
        self.ack_latencies_s: list[float] = []
        self._server: grpc.aio.Server | None = None
        self._nonces = itertools.count(1)
        self._changed_at: float | None = None
        self._unsubscribe = manager.subscribe(self._on_change)

    def _on_change(self) -> None:
        self._changed_at = time.monotonic()

    async def start(self, socket_path: Path) -> None:
        if not socket_path.parent.exists():
            socket_path.parent.mkdir(parents=True, mode=0o700)   # an existing (caller's) dir is left as is
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()          # a stale socket from a previous agent
        server = grpc.aio.server()
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(self, server)
        server.add_insecure_port(f"unix:{socket_path}")
        await server.start()
        os.chmod(socket_path, 0o600)
        self._server, self.socket_path = server, socket_path

    async def stop(self, grace: float = 0.5) -> None:
        self._unsubscribe()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self.socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()

    def _response(self, names: list[str], secret: WorkloadSecret) -> discovery_pb2.DiscoveryResponse:
        resources = []
        for name in names:
            resource = secret_resource(name, secret)
            if resource is None:
                log.warning("SDS: unknown secret %r requested (only %s and %s are served)", name,
                            WORKLOAD_SECRET, ROOT_SECRET)
                continue
            packed = any_pb2.Any()
            packed.Pack(resource)
            resources.append(packed)
        return discovery_pb2.DiscoveryResponse(version_info=secret.version, resources=resources,
                                               type_url=SECRET_TYPE, nonce=str(next(self._nonces)))

    async def StreamSecrets(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: Any,
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        queue: asyncio.Queue[object] = asyncio.Queue()

        async def read() -> None:
            try:
                async for request in request_iterator:
                    queue.put_nowait(request)
            except (grpc.aio.AioRpcError, asyncio.CancelledError):
                pass
            finally:
                queue.put_nowait(_EOF)

        unsubscribe = self.manager.subscribe(lambda: queue.put_nowait(_CHANGE))
        reader = asyncio.create_task(read())
        names: list[str] | None = None
        last_nonce = ""
        sent_version = ""
        pushed_change_at: float | None = None           # the rotation whose response awaits an ACK
        try:
            while True:
                item = await queue.get()
                if item is _EOF:
                    return
                if item is not _CHANGE:
                    assert isinstance(item, discovery_pb2.DiscoveryRequest)
                    if item.response_nonce and item.response_nonce != last_nonce:
                        continue                                   # answers an older response
                    if item.HasField("error_detail"):
                        self.nacks += 1
                        log.warning("SDS: Envoy rejected secrets %s: %s", list(item.resource_names),
                                    item.error_detail.message)
                    elif item.response_nonce and pushed_change_at is not None:
                        self.ack_latencies_s.append(time.monotonic() - pushed_change_at)
                    pushed_change_at = None
                    requested = sorted(set(item.resource_names))
                    if requested == names and item.response_nonce:
                        continue                                   # an ACK (or NACK) of what we sent
                    names = requested
                    sent_version = ""                              # new names: answer even if unchanged
                if not names:
                    continue
                secret = await self.manager.wait_ready()
                if secret.version == sent_version:
                    continue
                response = self._response(names, secret)
                last_nonce, sent_version = response.nonce, secret.version
                yield response
                self.pushes += 1
                if item is _CHANGE and self._changed_at is not None:
                    self.push_latencies_s.append(time.monotonic() - self._changed_at)
                    pushed_change_at = self._changed_at
        finally:
            unsubscribe()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def FetchSecrets(
        self, request: discovery_pb2.DiscoveryRequest, context: Any,
    ) -> discovery_pb2.DiscoveryResponse:
        secret = await self.manager.wait_ready()
        return self._response(sorted(set(request.resource_names)), secret)
