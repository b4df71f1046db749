"""The SDS server's protocol against a raw gRPC client on its Unix socket: the first response waits for the
certificate, ACKs are silent, a NACK is counted and logged, a stale nonce is ignored, new names are answered,
unknown names are left out, a rotation is pushed, FetchSecrets answers once. The private key never reaches a
log."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.rpc import status_pb2
from security_kit import FAST

from mizzen.security.ca import CertificateAuthority
from mizzen.security.identity import Identity
from mizzen.security.nodeagent.cache import SecretManager, SecretManagerOptions
from mizzen.security.nodeagent.sds import SECRET_TYPE, SdsServer
from mizzen.security.pki import KeyAlgorithm, load_certs

REVIEWS = Identity("bookinfo", "bookinfo-reviews")


class DirectSigner:
    """The CA in process (a seam fake for the CA client; the gRPC path has its own tests)."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca

    async def sign(self, csr_pem: bytes, ttl_s: int) -> list[str]:
        return self.ca.sign(csr_pem, [REVIEWS], dt.timedelta(seconds=ttl_s))


class Stream:
    def __init__(self, stub: sds_pb2_grpc.SecretDiscoveryServiceStub) -> None:
        self.requests: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self.call = stub.StreamSecrets(self._gen())
        self.responses: asyncio.Queue[discovery_pb2.DiscoveryResponse] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for resp in self.call:
            self.responses.put_nowait(resp)

    async def _gen(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while (r := await self.requests.get()) is not None:
            yield r

    def send(self, names: list[str], nonce: str = "", version: str = "", error: str = "") -> None:
        req = discovery_pb2.DiscoveryRequest(resource_names=names, type_url=SECRET_TYPE, response_nonce=nonce,
                                             version_info=version)
        if error:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self.requests.put_nowait(req)

    async def recv(self, timeout: float = 5.0) -> discovery_pb2.DiscoveryResponse:
        return await asyncio.wait_for(self.responses.get(), timeout)

    async def silent(self, seconds: float = 0.4) -> None:
        await asyncio.sleep(seconds)
        assert self.responses.empty(), "no response expected"

    async def close(self) -> None:
        self.requests.put_nowait(None)
        self.call.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await self.reader


def names(resp: discovery_pb2.DiscoveryResponse) -> list[str]:
    out = []
    for a in resp.resources:
        s = secret_pb2.Secret()
        a.Unpack(s)
        out.append(s.name)
    return out


@pytest.fixture
async def sds(tmp_path: Path) -> AsyncIterator[tuple[SdsServer, SecretManager, Path]]:
    ca = CertificateAuthority.self_signed(tmp_path / "state", FAST)
    manager = SecretManager(REVIEWS, DirectSigner(ca), SecretManagerOptions(
        ttl=dt.timedelta(seconds=6), key_algorithm=KeyAlgorithm.ECDSA))
    server = SdsServer(manager)
    sock = tmp_path / "sds" / "socket"
    await server.start(sock)
    try:
        yield server, manager, sock
    finally:
        await manager.stop()
        await server.stop()


Served = tuple[SdsServer, SecretManager, Path]


async def test_stream_protocol(sds: Served, caplog: pytest.LogCaptureFixture) -> None:
    server, manager, sock = sds
    caplog.set_level(logging.DEBUG)
    async with grpc.aio.insecure_channel(f"unix:{sock}") as channel:
        s = Stream(sds_pb2_grpc.SecretDiscoveryServiceStub(channel))
        s.send(["default"])
        await s.silent(0.3)             # no certificate yet: Envoy's stream waits (its listener warms)
        await manager.start()
        first = await s.recv()
        assert names(first) == ["default"] and first.type_url == SECRET_TYPE
        secret = secret_pb2.Secret()
        first.resources[0].Unpack(secret)
        leaf = load_certs(secret.tls_certificate.certificate_chain.inline_bytes)[0]
        assert format(leaf.serial_number, "x") == manager.current.leaf.serial  # type: ignore[union-attr]
        assert b"PRIVATE KEY" in secret.tls_certificate.private_key.inline_bytes

        s.send(["default"], nonce=first.nonce, version=first.version_info)          # ACK: nothing back
        await s.silent(0.3)
        s.send(["default", "ROOTCA", "file-cert:/etc/x"], nonce="stale-nonce")     # stale: ignored
        await s.silent(0.3)
        s.send(["default", "ROOTCA", "file-cert:/etc/x"], nonce=first.nonce)       # new names: answered
        both = await s.recv()
        assert names(both) == ["ROOTCA", "default"], "unknown names are left out"
        s.send(["default", "ROOTCA", "file-cert:/etc/x"], nonce=both.nonce, error="bad cert")   # NACK
        await s.silent(0.3)
        assert server.nacks == 1

        rotated = await s.recv(timeout=8)        # a 6 s certificate renews at about 3 s: pushed
        assert rotated.version_info != both.version_info and names(rotated) == ["ROOTCA", "default"]
        s.send(["default", "ROOTCA", "file-cert:/etc/x"], nonce=rotated.nonce, version=rotated.version_info)
        await s.close()

        fetched = await sds_pb2_grpc.SecretDiscoveryServiceStub(channel).FetchSecrets(
            discovery_pb2.DiscoveryRequest(resource_names=["ROOTCA"], type_url=SECRET_TYPE), timeout=5)
        assert names(fetched) == ["ROOTCA"]
    assert "PRIVATE KEY" not in caplog.text and "unknown secret 'file-cert:/etc/x'" in caplog.text
    assert "Envoy rejected secrets" in caplog.text and "bad cert" in caplog.text
