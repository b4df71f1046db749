"""Istio's IstioCertificateService/CreateCertificate over real gRPC: a pod credential from the runner's
LocalCredentials buys a certificate for the pod's own service account only; every failure is a gRPC status
with one clear line."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from security_kit import FAST, csr_for, leaf_of, verify_chain

from mizzen.security import caproto
from mizzen.security.authn import LocalCredentialAuthenticator, LocalCredentials
from mizzen.security.ca import CertificateAuthority
from mizzen.security.caserver import CAService
from mizzen.security.identity import Identity
from mizzen.security.nodeagent.caclient import CAClient, CAClientError

REVIEWS = Identity("bookinfo", "bookinfo-reviews")
RATINGS = Identity("bookinfo", "bookinfo-ratings")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[CAService, LocalCredentials, str]]:
    creds = LocalCredentials()
    ca = CertificateAuthority.self_signed(tmp_path, FAST)
    service = CAService(ca, [LocalCredentialAuthenticator(creds)])
    port = await service.serve("127.0.0.1:0")
    try:
        yield service, creds, f"127.0.0.1:{port}"
    finally:
        await service.stop()


async def test_pod_credential_gets_its_own_identity(served: tuple[CAService, LocalCredentials, str]) -> None:
    service, creds, target = served
    token = creds.issue("bookinfo", "reviews-v1-abc", "bookinfo-reviews")
    client = CAClient(target, token, metadata={"WorkloadName": "reviews-v1"})
    try:
        chain = await client.sign(csr_for(REVIEWS), ttl_s=30)
    finally:
        await client.close()
    assert verify_chain(chain) == [REVIEWS.uri]
    leaf = leaf_of(chain)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(seconds=30)
    assert service.issued == 1


async def test_refusals_map_to_grpc_codes(served: tuple[CAService, LocalCredentials, str],
                                          caplog: pytest.LogCaptureFixture) -> None:
    service, creds, target = served
    token = creds.issue("bookinfo", "reviews-v1-abc", "bookinfo-reviews")
    caplog.set_level(logging.DEBUG)

    async def attempt(credential: str, csr: bytes, ttl_s: int = 60) -> CAClientError:
        client = CAClient(target, credential)
        try:
            with pytest.raises(CAClientError) as e:
                await client.sign(csr, ttl_s)
        finally:
            await client.close()
        return e.value

    e = await attempt(token, csr_for(RATINGS))
    assert e.code is grpc.StatusCode.PERMISSION_DENIED
    assert str(e) == (f"CA {target}: PERMISSION_DENIED: CSR requests identity {RATINGS.uri} but the caller "
                      f"is authenticated as {REVIEWS.uri}")
    e = await attempt("mizzen-pod.forged", csr_for(REVIEWS))
    assert e.code is grpc.StatusCode.UNAUTHENTICATED and "not valid (unknown or revoked)" in str(e)
    e = await attempt("some-other-kind-of-token", csr_for(REVIEWS))
    assert e.code is grpc.StatusCode.UNAUTHENTICATED and "no credential that the CA accepts" in str(e)
    e = await attempt(token, b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n")
    assert e.code is grpc.StatusCode.INVALID_ARGUMENT and "not a valid PEM certificate request" in str(e)
    e = await attempt(token, csr_for(REVIEWS), ttl_s=10**9)
    assert e.code is grpc.StatusCode.INVALID_ARGUMENT and "greater than the max allowed TTL" in str(e)

    assert creds.revoke("bookinfo", "reviews-v1-abc")
    e = await attempt(token, csr_for(REVIEWS))
    assert e.code is grpc.StatusCode.UNAUTHENTICATED
    assert service.issued == 0
    assert token not in caplog.text and token.split(".", 1)[1] not in caplog.text, "credentials never logged"


Served = tuple[CAService, LocalCredentials, str]


async def test_no_credential_at_all_over_the_raw_method(served: Served) -> None:
    _, _, target = served
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(caproto.CREATE_CERTIFICATE,
                                   request_serializer=caproto.IstioCertificateRequest.SerializeToString,
                                   response_deserializer=caproto.IstioCertificateResponse.FromString)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call(caproto.IstioCertificateRequest(csr=csr_for(REVIEWS).decode()), timeout=10)
    assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_wire_format_matches_istio_field_numbers() -> None:
    req = caproto.IstioCertificateRequest(csr="C", validity_duration=86400)
    req.metadata.update({"WorkloadName": "w"})
    wire = req.SerializeToString()
    # field 1 (csr, length-delimited) = 0x0a, field 3 (validity_duration, varint) = 0x18, field 4 = 0x22
    assert wire.startswith(b"\x0a\x01C\x18") and b"\x22" in wire
    resp = caproto.IstioCertificateResponse(cert_chain=["a", "b"])
    assert resp.SerializeToString() == b"\x0a\x01a\x0a\x01b"
    assert caproto.IstioCertificateRequest.DESCRIPTOR.full_name == "istio.v1.auth.IstioCertificateRequest"
