"""The agent's CA client: ``istio.v1.auth.IstioCertificateService/CreateCertificate`` with the pod's
credential as ``authorization: Bearer`` (a token file is read again for each call: the kubelet rotates it).
Any failure becomes one :class:`CAClientError` line (the gRPC code and the CA's message; never the
credential)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import grpc
from google.protobuf import struct_pb2

from mizzen.security import caproto
from mizzen.security.authn import AUTHORIZATION
from mizzen.security.nodeagent.upstream import (
    ControlPlaneTls,
    Credential,
    TokenFileError,
    credential_value,
)

__all__ = ["CAClient", "CAClientError", "CertificateSigner"]


class CAClientError(Exception):
    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class CertificateSigner(Protocol):
    """Anything that turns a CSR into Istio's chain ``[leaf, (chain), roots]``: the CA client, or a test's."""

    async def sign(self, csr_pem: bytes, ttl_s: int) -> list[str]: ...


class CAClient:
    """Plaintext to ``target`` (tests, a CA on a Unix socket), or with ``tls`` over the control plane's TLS
    port (the agent; ``tls`` also carries the credential and follows root changes)."""

    def __init__(self, target: str, credential: Credential, *, timeout_s: float = 10.0,
                 metadata: Mapping[str, str] | None = None, tls: ControlPlaneTls | None = None) -> None:
        self.target = target                 # host:port or unix:/path
        self._credential = credential
        self.timeout_s = timeout_s
        self.metadata = dict(metadata or {})  # node metadata sent with the request (WorkloadName, ...)
        self.tls = tls
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None

    def _stub(self) -> Any:
        if self.tls is not None:
            channel = self.tls.channel()         # new roots: a new channel (the TLS helper owns it)
            if channel is not self._channel:
                self._channel, self._call = channel, None
        elif self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target)
        if self._call is None:
            assert self._channel is not None
            self._call = self._channel.unary_unary(
                caproto.CREATE_CERTIFICATE,
                request_serializer=caproto.IstioCertificateRequest.SerializeToString,
                response_deserializer=caproto.IstioCertificateResponse.FromString,
            )
        return self._call

    async def sign(self, csr_pem: bytes, ttl_s: int) -> list[str]:
        request = caproto.IstioCertificateRequest(csr=csr_pem.decode(), validity_duration=ttl_s)
        if self.metadata:
            meta = struct_pb2.Struct()
            meta.update(self.metadata)
            request.metadata.CopyFrom(meta)
        try:
            bearer = credential_value(self._credential)      # a token file is read again for every call
        except TokenFileError as e:
            raise CAClientError(f"CA {self.target}: {e}") from None
        try:
            response = await self._stub()(request, timeout=self.timeout_s,
                                          metadata=((AUTHORIZATION, f"Bearer {bearer}"),))
        except grpc.aio.AioRpcError as e:
            raise CAClientError(f"CA {self.target}: {e.code().name}: {e.details()}", e.code()) from None
        chain = list(response.cert_chain)
        if len(chain) < 2:
            raise CAClientError(f"CA {self.target}: response has {len(chain)} certificate(s); expected "
                                "the leaf and the root")
        return chain

    async def close(self) -> None:
        if self.tls is not None:
            await self.tls.close()
        elif self._channel is not None:
            await self._channel.close()
        self._channel = self._call = None
