"""The Kubernetes JWT authenticator of the CA and the secure xDS port (istiod's ``kubeauth``
``KubeJWTAuthenticator`` with ``pkg/k8s/tokenreview``).

A pod's agent sends its projected service-account token (audience ``istio-ca``, bound to the pod) as
``authorization: Bearer``. :class:`KubeJWTAuthenticator` has the API server check it with a real
``TokenReview`` naming the audiences it accepts; the API server answers whether the signature, expiry,
audience and bound object (a deleted pod's token is dead) hold, and who the caller is:
``system:serviceaccount:<namespace>:<service account>`` (it must be in the ``system:serviceaccounts``
group) and, for a pod-bound token, the pod's name in ``extra["authentication.kubernetes.io/pod-name"]``.
The caller's identity is ``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``; the CA signs only
that, and the xDS port holds the stream to that namespace, service account and (when bound) pod.

Results are cached briefly (``cache_ttl_s``, 10 s by default, never past the token's own ``exp``) in a
bounded map keyed by the token's SHA-256 digest, so an agent's CA call and xDS streams cost one review;
concurrent requests with one token share one review. A failed API call (the API server away, missing RBAC:
:func:`mizzen.kube.rbac.tokenreview_rbac`) is not cached. The token itself is never logged, cached or put
in a message. The control plane's API client needs ``create`` on ``tokenreviews``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from mizzen.security.authn import (
    LOCAL_CREDENTIAL_PREFIX,
    AuthenticationError,
    Caller,
    RequestContext,
    bearer_token,
)
from mizzen.security.identity import DEFAULT_TRUST_DOMAIN, Identity, IdentityError

log = logging.getLogger(__name__)

__all__ = ["ISTIO_CA_AUDIENCE", "POD_NAME_EXTRA", "KubeJWTAuthenticator", "token_expiry"]

ISTIO_CA_AUDIENCE = "istio-ca"
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"
_MAX_ERROR = 200


@dataclass(frozen=True)
class _Entry:
    expires: float                      # time.monotonic()
    caller: Caller | None
    error: str = ""


def token_expiry(token: str) -> float | None:
    """The JWT's ``exp`` (seconds since the epoch), read without verifying (only to bound the cache), or
    None when the token is not a JWT with one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        exp = payload.get("exp") if isinstance(payload, dict) else None
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _MAX_ERROR else line[:_MAX_ERROR] + "..."


class KubeJWTAuthenticator:
    """Bearer tokens that are not the local runner's pod credentials, checked by TokenReview."""

    name = "kube-jwt"

    def __init__(self, api: client.ApiClient, trust_domain: str = DEFAULT_TRUST_DOMAIN,
                 audiences: Sequence[str] = (ISTIO_CA_AUDIENCE,), *, cache_ttl_s: float = 10.0,
                 cache_size: int = 4096, timeout_s: float = 10.0) -> None:
        self.authn = client.AuthenticationV1Api(api)
        self.trust_domain = trust_domain
        self.audiences = tuple(audiences)
        self.cache_ttl_s = cache_ttl_s
        self.cache_size = cache_size
        self.timeout_s = timeout_s
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Future[_Entry]] = {}
        self.reviews = 0                # TokenReviews sent (tests, debugging)

    async def authenticate(self, request: RequestContext) -> Caller | None:
        token = bearer_token(request)
        if token is None or token.startswith(LOCAL_CREDENTIAL_PREFIX):
            return None
        if token.count(".") != 2:
            raise AuthenticationError("the bearer token is not a Kubernetes service-account token "
                                      "(not a JWT)")
        digest = hashlib.sha256(token.encode()).digest()
        entry = self._cached(digest)
        if entry is None:
            pending = self._inflight.get(digest)
            if pending is not None:
                entry = await asyncio.shield(pending)
            else:
                future: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
                self._inflight[digest] = future
                try:
                    entry = await self._review(token)
                    future.set_result(entry)
                    self._store(digest, entry, token_expiry(token))
                except BaseException as e:                 # the review itself failed: not cached
                    if not future.done():                  # waiters get one line too (not a hang)
                        future.set_exception(e if isinstance(e, AuthenticationError) else
                                             AuthenticationError("the token review was interrupted"))
                        future.exception()                 # retrieved: no "never retrieved" warning
                    raise
                finally:
                    self._inflight.pop(digest, None)
        if entry.caller is None:
            raise AuthenticationError(entry.error)
        return entry.caller

    def _cached(self, digest: bytes) -> _Entry | None:
        entry = self._cache.get(digest)
        if entry is None:
            return None
        if entry.expires <= time.monotonic():
            del self._cache[digest]
            return None
        self._cache.move_to_end(digest)
        return entry

    def _store(self, digest: bytes, entry: _Entry, exp: float | None) -> None:
        if entry.expires <= time.monotonic():
            return
        if exp is not None:   # never trust a cached answer past the token's own expiry
            until = min(entry.expires, time.monotonic() + exp - time.time())
            entry = _Entry(until, entry.caller, entry.error)
        self._cache[digest] = entry
        self._cache.move_to_end(digest)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def _review(self, token: str) -> _Entry:
        spec = client.V1TokenReviewSpec(token=token, audiences=list(self.audiences))
        body = client.V1TokenReview(spec=spec)
        self.reviews += 1
        try:
            review = await asyncio.wait_for(self.authn.create_token_review(body), self.timeout_s)
        except ApiException as e:
            log.warning("TokenReview failed: %s %s", e.status, _one_line(e.reason or ""))
            raise AuthenticationError(f"cannot review the token with the Kubernetes API server: {e.status} "
                                      f"{_one_line(e.reason or '')}") from None
        except (TimeoutError, OSError, aiohttp.ClientError, client.exceptions.OpenApiException) as e:
            log.warning("TokenReview failed: %s", type(e).__name__)
            raise AuthenticationError("cannot review the token with the Kubernetes API server: "
                                      f"{type(e).__name__}") from None
        return self._result(review.status)

    def _result(self, status: Any) -> _Entry:
        expires = time.monotonic() + self.cache_ttl_s
        audiences = ", ".join(self.audiences)
        if status is None:
            return _Entry(expires, None, "the Kubernetes token review returned no status")
        if status.error:
            return _Entry(expires, None, f"the Kubernetes service-account token is not valid for audience "
                                         f"{audiences}: {_one_line(status.error)}")
        if not status.authenticated:
            return _Entry(expires, None, f"the Kubernetes service-account token is not valid for audience "
                                         f"{audiences}")
        if status.audiences is not None and not set(status.audiences) & set(self.audiences):
            return _Entry(expires, None, f"the Kubernetes token is not for audience {audiences}")
        user = status.user
        groups = (user.groups or []) if user is not None else []
        if SERVICE_ACCOUNTS_GROUP not in groups:
            return _Entry(expires, None, "the Kubernetes token is not a service account's")
        parts = (user.username or "").split(":")
        if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
            return _Entry(expires, None, "the Kubernetes token review names no service account "
                                         "(username is not system:serviceaccount:<namespace>:<name>)")
        namespace, service_account = parts[2], parts[3]
        try:
            identity = Identity(namespace, service_account, self.trust_domain)
        except IdentityError as e:
            return _Entry(expires, None, f"the Kubernetes token's service account: {e}")
        pods = (user.extra or {}).get(POD_NAME_EXTRA) or []
        pod = f"{namespace}/{pods[0]}" if pods else None
        return _Entry(expires, Caller(identities=(identity,), authenticator=self.name, pod=pod))
