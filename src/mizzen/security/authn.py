"""Who is calling the CA: the :class:`Authenticator` interface and the local per-pod credentials.

Istio's CA runs every request through a list of authenticators (client certificate, Kubernetes JWT via
TokenReview, ...); the first that recognises the request's credential yields a :class:`Caller` with the
identities it proved. Mizzen does the same: :func:`authenticate` tries each in order. An authenticator
returns ``None`` for a credential that is not its kind, and raises :class:`AuthenticationError` for one that
is its kind but is not valid. A Kubernetes ``TokenReview`` authenticator slots in as one more implementation
(async, so it may call the API server).

Locally (no Kubernetes), the runner is the kubelet: for each pod it starts it issues a credential bound to the
pod's namespace and service account (:class:`LocalCredentials`), hands it to the pod's agent, and revokes it
when the pod goes. The agent presents it as ``authorization: Bearer <credential>``, as Istio's agent presents
its service-account token. Credentials are random, stored only as SHA-256 digests, and never logged. With a
``path`` (the control plane's ``<state dir>/credentials.json``, 0600) the digests are persisted, so a
restarted control plane (or the demo's warm spare taking over) still accepts the credentials its pods hold;
a lookup that misses re-reads the file when another process changed it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509

from mizzen.security.files import write_private_file
from mizzen.security.identity import DEFAULT_TRUST_DOMAIN, Identity, IdentityError

log = logging.getLogger(__name__)
__all__ = [
    "AUTHORIZATION",
    "LOCAL_CREDENTIAL_PREFIX",
    "AuthenticationError",
    "Authenticator",
    "Caller",
    "LocalCredentialAuthenticator",
    "LocalCredentials",
    "RequestContext",
    "authenticate",
    "bearer_token",
]

AUTHORIZATION = "authorization"
BEARER = "Bearer "
LOCAL_CREDENTIAL_PREFIX = "mizzen-pod."


class AuthenticationError(Exception):
    """The caller's credential is missing or not valid (one line; never the credential itself)."""


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the identities it proved, by which authenticator, and the pod if known."""

    identities: tuple[Identity, ...]
    authenticator: str
    pod: str | None = None           # "<namespace>/<pod name>" when the credential names one


@dataclass(frozen=True)
class RequestContext:
    """What a request carries to authenticate with: its metadata (lower-case keys) and, over mTLS, the
    peer's verified certificate chain (empty until the CA is served over TLS)."""

    metadata: Mapping[str, str]
    peer_certificates: tuple[x509.Certificate, ...] = ()


class Authenticator(Protocol):
    name: str

    async def authenticate(self, request: RequestContext) -> Caller | None: ...


def bearer_token(request: RequestContext) -> str | None:
    value = request.metadata.get(AUTHORIZATION, "")
    return (value[len(BEARER):].strip() or None) if value.startswith(BEARER) else None


async def authenticate(authenticators: Sequence[Authenticator], request: RequestContext) -> Caller:
    """The caller according to the first authenticator that recognises its credential."""
    for authenticator in authenticators:
        caller = await authenticator.authenticate(request)
        if caller is not None:
            return caller
    names = ", ".join(a.name for a in authenticators) or "none configured"
    raise AuthenticationError(f"no credential that the CA accepts (authenticators: {names}); send "
                              "'authorization: Bearer <pod credential>'")


@dataclass(frozen=True)
class _Grant:
    namespace: str
    pod: str
    service_account: str


def _digest(credential: str) -> bytes:
    return hashlib.sha256(credential.encode()).digest()


class LocalCredentials:
    """The runner's per-pod credentials: issue when a pod starts, revoke when it stops. Thread-safe.
    ``path``: persist the digests there (0600), and load what an earlier process persisted."""

    def __init__(self, path: Path | None = None) -> None:
        self._by_digest: dict[bytes, _Grant] = {}
        self._by_pod: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()
        self.path = path
        self._loaded_mtime: int | None = None
        if path is not None:
            self._load()

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_digest)

    def _mtime(self) -> int | None:
        assert self.path is not None
        try:
            return self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def _load(self) -> None:
        """(Re)read the persisted digests; a corrupt file is reported in one line and ignored (the pods
        then get new credentials from the runner)."""
        assert self.path is not None
        mtime = self._mtime()
        by_digest: dict[bytes, _Grant] = {}
        if mtime is not None:
            try:
                raw = json.loads(self.path.read_text())
                for hex_digest, grant in raw.get("pods", {}).items():
                    g = _Grant(str(grant["namespace"]), str(grant["pod"]), str(grant["serviceAccount"]))
                    Identity(g.namespace, g.service_account)
                    by_digest[bytes.fromhex(hex_digest)] = g
            except (OSError, ValueError, KeyError, TypeError, AttributeError, IdentityError) as e:
                log.warning("pod credentials: %s is unreadable (%s); ignored", self.path, type(e).__name__)
                by_digest = {}
        with self._lock:
            self._by_digest = by_digest
            self._by_pod = {(g.namespace, g.pod): d for d, g in by_digest.items()}
            self._loaded_mtime = mtime

    def _save_locked(self) -> None:
        if self.path is None:
            return
        body = {"pods": {d.hex(): {"namespace": g.namespace, "pod": g.pod,
                                   "serviceAccount": g.service_account}
                         for d, g in sorted(self._by_digest.items())}}
        write_private_file(self.path, json.dumps(body, indent=1).encode())
        self._loaded_mtime = self._mtime()

    def issue(self, namespace: str, pod: str, service_account: str) -> str:
        """A new credential for the pod (replacing any earlier one) bound to its service account."""
        Identity(namespace, service_account)          # validates both names
        credential = LOCAL_CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            old = self._by_pod.pop((namespace, pod), None)
            if old is not None:
                self._by_digest.pop(old, None)
            digest = _digest(credential)
            self._by_digest[digest] = _Grant(namespace, pod, service_account)
            self._by_pod[(namespace, pod)] = digest
            self._save_locked()
        return credential

    def revoke(self, namespace: str, pod: str) -> bool:
        with self._lock:
            digest = self._by_pod.pop((namespace, pod), None)
            if digest is None:
                return False
            self._by_digest.pop(digest, None)
            self._save_locked()
            return True

    def lookup(self, credential: str) -> _Grant | None:
        # a dict lookup on a SHA-256 digest: timing reveals nothing usable about the stored credentials
        digest = _digest(credential)
        with self._lock:
            grant = self._by_digest.get(digest)
        if grant is None and self.path is not None:
            with contextlib.suppress(OSError):
                if self._mtime() != self._loaded_mtime:   # another process issued or revoked meanwhile
                    self._load()
                    with self._lock:
                        grant = self._by_digest.get(digest)
        return grant


class LocalCredentialAuthenticator:
    """Accepts the runner's per-pod credentials; the identity is the pod's service account."""

    name = "local-credential"

    def __init__(self, credentials: LocalCredentials, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> None:
        self.credentials = credentials
        self.trust_domain = trust_domain

    async def authenticate(self, request: RequestContext) -> Caller | None:
        token = bearer_token(request)
        if token is None or not token.startswith(LOCAL_CREDENTIAL_PREFIX):
            return None
        grant = self.credentials.lookup(token)
        if grant is None:
            raise AuthenticationError("the pod credential is not valid (unknown or revoked)")
        identity = Identity(grant.namespace, grant.service_account, self.trust_domain)
        return Caller(identities=(identity,), authenticator=self.name, pod=f"{grant.namespace}/{grant.pod}")
