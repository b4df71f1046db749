"""The agent's ``SecretManager`` (pilot-agent's SecretManagerClient): the workload certificate and roots.

It generates a key and a CSR for the pod's identity, has the CA sign it, and caches the result as two
secrets under Istio's names: ``default`` (certificate chain + private key) and ``ROOTCA`` (the trust bundle).
It renews when the certificate has lived ``grace_ratio`` (0.5, Istio's SECRET_GRACE_PERIOD_RATIO) of its
validity, with a little jitter, using a fresh key each time. While the CA is away it retries with exponential
backoff (``backoff_start_s`` doubling to ``backoff_max_s``, but never more than a quarter of the served
certificate's remaining validity, so a CA that returns before the expiry is used in time) and keeps serving
the certificate it has.
Subscribers (the SDS server) are called after every change. The private key never leaves memory except
to Envoy over the SDS socket, and is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509

from mizzen.security.bundle import TrustBundle
from mizzen.security.identity import Identity
from mizzen.security.nodeagent.caclient import CertificateSigner
from mizzen.security.pki import (
    CertInfo,
    KeyAlgorithm,
    PKIError,
    cert_info,
    generate_key,
    load_certs,
    load_private_key,
    make_csr,
    private_key_pem,
    public_keys_match,
)

log = logging.getLogger(__name__)

__all__ = [
    "ROOT_SECRET",
    "WORKLOAD_SECRET",
    "SecretItem",
    "SecretManager",
    "SecretManagerOptions",
    "WorkloadSecret",
]

WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"


@dataclass(frozen=True)
class WorkloadSecret:
    """One issued certificate with its key and the roots that came with it."""

    key_pem: bytes
    chain_pem: str                     # leaf first, then intermediates (no root)
    roots: TrustBundle
    leaf: CertInfo
    identity: Identity

    @property
    def version(self) -> str:
        """Changes whenever the certificate or the roots change (the SDS version)."""
        h = hashlib.sha256(self.chain_pem.encode() + self.roots.pem.encode())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class SecretItem:
    """One row of ``proxy-config secret`` (istioctl's columns), plus the identity."""

    resource_name: str
    type: str                          # "Cert Chain" or "CA"
    status: str                        # "ACTIVE" (served) or "WARMING" (not fetched yet)
    valid_cert: bool
    serial_number: str
    not_after: str
    not_before: str
    identity: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"resourceName": self.resource_name, "type": self.type, "status": self.status,
                "validCert": self.valid_cert, "serialNumber": self.serial_number, "notAfter": self.not_after,
                "notBefore": self.not_before, "identity": self.identity}


@dataclass(frozen=True)
class SecretManagerOptions:
    ttl: dt.timedelta = dt.timedelta(hours=24)       # requested validity (the CA may shorten it)
    grace_ratio: float = 0.5
    jitter_ratio: float = 0.01
    key_algorithm: KeyAlgorithm = KeyAlgorithm.RSA
    backoff_start_s: float = 0.5
    backoff_max_s: float = 30.0


class SecretError(Exception):
    pass


def _parse_response(chain: list[str], key_pem: bytes, identity: Identity) -> WorkloadSecret:
    """Check Istio's response chain ``[leaf, (chain), roots]`` against our key and identity."""
    try:
        certs = [c for pem in chain[:-1] for c in load_certs(pem, "CA response certificate")]
        roots = TrustBundle.from_pem(chain[-1], "CA response root")
    except PKIError as e:
        raise SecretError(str(e)) from None
    leaf = certs[0]
    if not public_keys_match(load_private_key(key_pem), leaf):
        raise SecretError("CA response: the certificate is not for the key we sent")
    info = cert_info(leaf)
    if info.uris != (identity.uri,):
        raise SecretError(f"CA response: certificate identity {', '.join(info.uris) or 'none'} is not "
                          f"{identity.uri}")
    # the leaf must chain to one of the roots through the intermediates given
    current: x509.Certificate = leaf
    for _ in range(len(certs) + 1):
        if roots.issuer_of(current) is not None or roots.contains(current):
            break
        nxt = next((c for c in certs[1:] if c.subject == current.issuer), None)
        if nxt is None or nxt is current:
            raise SecretError("CA response: the certificate does not chain to the roots sent with it")
        current = nxt
    chain_pem = "".join(pem if pem.endswith("\n") else pem + "\n" for pem in chain[:-1])
    return WorkloadSecret(key_pem=key_pem, chain_pem=chain_pem, roots=roots, leaf=info, identity=identity)


@dataclass
class _Stats:
    fetches: int = 0
    failures: int = 0
    last_error: str = ""
    served_serials: list[str] = field(default_factory=list)


class SecretManager:
    """Fetches, caches and rotates one workload's certificate. ``start()``/``stop()`` or ``async with``."""

    def __init__(self, identity: Identity, signer: CertificateSigner,
                 options: SecretManagerOptions | None = None) -> None:
        self.identity = identity
        self.signer = signer
        self.options = options or SecretManagerOptions()
        self.stats = _Stats()
        self._current: WorkloadSecret | None = None
        self._ready = asyncio.Event()
        self._subscribers: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()

    async def __aenter__(self) -> SecretManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start fetching in the background; :meth:`wait_ready` waits for the first certificate."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"secret-manager {self.identity}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_ready(self, timeout: float | None = None) -> WorkloadSecret:
        await asyncio.wait_for(self._ready.wait(), timeout)
        assert self._current is not None
        return self._current

    @property
    def current(self) -> WorkloadSecret | None:
        return self._current

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (in the event loop) after every change; returns the unsubscribe function."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)
        return unsubscribe

    # --- the loop -----------------------------------------------------------------------------------------
    def _renew_delay(self, secret: WorkloadSecret, now: dt.datetime) -> float:
        lifetime = (secret.leaf.not_after - secret.leaf.not_before).total_seconds()
        jitter = self._rng.uniform(-1.0, 1.0) * self.options.jitter_ratio * lifetime
        renew_at = secret.leaf.not_before + dt.timedelta(seconds=lifetime * self.options.grace_ratio + jitter)
        return max(0.0, (renew_at - now).total_seconds())

    async def _fetch(self) -> WorkloadSecret:
        key = await asyncio.to_thread(generate_key, self.options.key_algorithm)
        key_pem = private_key_pem(key)
        csr = make_csr(key, self.identity)
        chain = await self.signer.sign(csr, int(self.options.ttl.total_seconds()))
        return _parse_response(chain, key_pem, self.identity)

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                secret = await self._fetch()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the CA being away or answering garbage: retry, keep what we serve
                failures += 1
                self.stats.failures += 1
                self.stats.last_error = str(e).splitlines()[0] if str(e) else type(e).__name__
                delay = min(self.options.backoff_max_s, self.options.backoff_start_s * 2 ** (failures - 1))
                still = ""
                if self._current is not None:
                    left = (self._current.leaf.not_after - dt.datetime.now(dt.UTC)).total_seconds()
                    still = f"; serving serial {self._current.leaf.serial} ({max(0.0, left):.0f}s left)"
                    # never back off past the served certificate's expiry: at least 4 retries in what is left
                    if left > 0:
                        delay = min(delay, max(0.05, left / 4))
                log.warning("secret %s: fetch failed (%s), retrying in %.1fs%s", self.identity,
                            self.stats.last_error, delay, still)
                await asyncio.sleep(delay)
                continue
            failures = 0
            self.stats.fetches += 1
            self._install(secret)
            await asyncio.sleep(self._renew_delay(secret, dt.datetime.now(dt.UTC)))

    def _install(self, secret: WorkloadSecret) -> None:
        old = self._current
        self._current = secret
        self.stats.served_serials.append(secret.leaf.serial)
        log.info("secret %s: serving serial %s until %s%s", self.identity, secret.leaf.serial,
                 secret.leaf.not_after.isoformat(), f" (was {old.leaf.serial})" if old else "")
        self._ready.set()
        for callback in list(self._subscribers):
            try:
                callback()
            except Exception:
                log.exception("secret subscriber failed")

    # --- what proxy-config secret shows -------------------------------------------------------------------
    def secret_items(self, now: dt.datetime | None = None) -> list[SecretItem]:
        """``default`` then one ``ROOTCA`` row per trusted root (several during a root rotation)."""
        now = now or dt.datetime.now(dt.UTC)
        current = self._current
        if current is None:
            return [SecretItem(WORKLOAD_SECRET, "Cert Chain", "WARMING", False, "", "", "",
                               self.identity.uri),
                    SecretItem(ROOT_SECRET, "CA", "WARMING", False, "", "", "")]
        leaf = current.leaf
        rows = [SecretItem(WORKLOAD_SECRET, "Cert Chain", "ACTIVE", leaf.valid_at(now), leaf.serial,
                           leaf.not_after.isoformat(), leaf.not_before.isoformat(), ",".join(leaf.uris))]
        for root in current.roots:
            info = cert_info(root)
            rows.append(SecretItem(ROOT_SECRET, "CA", "ACTIVE", info.valid_at(now), info.serial,
                                   info.not_after.isoformat(), info.not_before.isoformat(), info.subject))
        return rows
