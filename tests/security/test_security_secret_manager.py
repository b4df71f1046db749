"""The agent's SecretManager against a real CA over gRPC on a Unix socket: first fetch, rotation at about half
the TTL with a fresh key, a CA outage (the still-valid certificate keeps being served, retries back off, the
next fetch succeeds when the CA is back), a CA answering for the wrong identity, proxy-config secret rows."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from security_kit import FAST

from mizzen.security.authn import LocalCredentialAuthenticator, LocalCredentials
from mizzen.security.ca import CertificateAuthority
from mizzen.security.caserver import CAService
from mizzen.security.identity import Identity
from mizzen.security.nodeagent.cache import SecretManager, SecretManagerOptions
from mizzen.security.nodeagent.caclient import CAClient
from mizzen.security.pki import KeyAlgorithm

REVIEWS = Identity("bookinfo", "bookinfo-reviews")


def options(ttl_s: float) -> SecretManagerOptions:
    return SecretManagerOptions(ttl=dt.timedelta(seconds=ttl_s), key_algorithm=KeyAlgorithm.ECDSA,
                                backoff_start_s=0.1, backoff_max_s=0.8)


@dataclass
class World:
    ca: CertificateAuthority
    creds: LocalCredentials
    socket: Path
    service: CAService | None = None

    async def start_ca(self) -> None:
        self.service = CAService(self.ca, [LocalCredentialAuthenticator(self.creds)])
        await self.service.serve(f"unix:{self.socket}")

    async def stop_ca(self) -> None:
        if self.service is not None:
            await self.service.stop(grace=0)
            self.service = None

    def client(self) -> CAClient:
        token = self.creds.issue(REVIEWS.namespace, "reviews-v1-abc", REVIEWS.service_account)
        return CAClient(f"unix:{self.socket}", token, timeout_s=2.0)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(CertificateAuthority.self_signed(tmp_path, FAST), LocalCredentials(), tmp_path / "ca.sock")
    await w.start_ca()
    try:
        yield w
    finally:
        await w.stop_ca()


async def test_rotates_at_about_half_the_ttl_with_a_new_key(world: World) -> None:
    client = world.client()
    manager = SecretManager(REVIEWS, client, options(4))
    changes: list[float] = []
    manager.subscribe(lambda: changes.append(time.monotonic()))
    assert [r.status for r in manager.secret_items()] == ["WARMING", "WARMING"]
    try:
        await manager.start()
        first = await manager.wait_ready(timeout=10)
        deadline = time.monotonic() + 10
        while (manager.current is first) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        second = manager.current
        assert second is not None and second is not first, "rotated within 10 s"
        now = dt.datetime.now(dt.UTC)
        assert now < first.leaf.not_after, "renewed before the old certificate expired"
        lived = (second.leaf.not_before - first.leaf.not_before).total_seconds()
        assert 1 <= lived <= 3, f"renewed after about half the 4 s TTL, not {lived}s"
        assert second.key_pem != first.key_pem and second.leaf.serial != first.leaf.serial
        assert len(changes) >= 2
        rows = manager.secret_items()
        assert [(r.resource_name, r.type, r.status, r.valid_cert) for r in rows] == [
            ("default", "Cert Chain", "ACTIVE", True), ("ROOTCA", "CA", "ACTIVE", True)]
        assert rows[0].identity == REVIEWS.uri and rows[0].serial_number == manager.current.leaf.serial
        assert rows[1].serial_number == format(world.ca.material.cert.serial_number, "x")
        assert set(rows[0].as_dict()) >= {"resourceName", "serialNumber", "notAfter", "validCert"}
    finally:
        await manager.stop()
        await client.close()


async def test_ca_outage_keeps_serving_the_valid_certificate_and_recovers(world: World) -> None:
    client = world.client()
    manager = SecretManager(REVIEWS, client, options(6))
    try:
        await manager.start()
        first = await manager.wait_ready(timeout=10)
        await world.stop_ca()
        # past the renewal point (about 3 s): retries fail, the first certificate is still served and valid
        await asyncio.sleep(4.5)
        assert manager.current is first
        assert dt.datetime.now(dt.UTC) < first.leaf.not_after
        assert manager.stats.failures >= 2, manager.stats
        assert "UNAVAILABLE" in manager.stats.last_error
        await world.start_ca()
        deadline = time.monotonic() + 5
        while manager.current is first and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert manager.current is not first, "a new certificate once the CA is back"
        assert manager.current is not None and manager.current.leaf.valid_at(dt.datetime.now(dt.UTC))
    finally:
        await manager.stop()
        await client.close()


async def test_backoff_never_outlasts_the_served_certificate(world: World) -> None:
    """A long backoff (3 s) must not carry the retry past the expiry of the certificate being served: the
    CA is back right after the first failed renewal, and the renewal lands before the old certificate ends."""
    client = world.client()
    manager = SecretManager(REVIEWS, client, SecretManagerOptions(
        ttl=dt.timedelta(seconds=6), key_algorithm=KeyAlgorithm.ECDSA, backoff_start_s=3.0, jitter_ratio=0))
    try:
        await manager.start()
        first = await manager.wait_ready(timeout=10)
        await world.stop_ca()
        deadline = time.monotonic() + 8
        while manager.stats.failures == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert manager.stats.failures >= 1
        await world.start_ca()
        while manager.current is first and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        renewed_at = dt.datetime.now(dt.UTC)
        assert manager.current is not first, "renewed once the CA was back"
        assert renewed_at < first.leaf.not_after, "renewed before the served certificate expired"
    finally:
        await manager.stop()
        await client.close()


class WrongIdentitySigner:
    """A CA that answers with a certificate for someone else (a seam fake: the signer protocol)."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca
        self.calls = 0

    async def sign(self, csr_pem: bytes, ttl_s: int) -> list[str]:
        from security_kit import csr_for
        self.calls += 1
        other = Identity("bookinfo", "someone-else")
        return self.ca.sign(csr_for(other), [other], dt.timedelta(seconds=ttl_s))


async def test_a_certificate_not_for_us_is_never_served(world: World) -> None:
    signer = WrongIdentitySigner(world.ca)
    manager = SecretManager(REVIEWS, signer, options(60))
    try:
        await manager.start()
        deadline = time.monotonic() + 5
        while signer.calls < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert signer.calls >= 2 and manager.current is None
        assert "not for the key we sent" in manager.stats.last_error
    finally:
        await manager.stop()
