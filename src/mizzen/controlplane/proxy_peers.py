"""Debug requests for a pod whose agent is connected to *another* control-plane replica: how
``mizzen proxy-config`` and ``mizzen logs -c istio-proxy`` asked of one replica reach every pod.

An agent opens its debug channel (:mod:`mizzen.agent.debug_channel`) to whichever replica its xDS
connection landed on; the CLI talks to one replica's API. When the replica asked has no channel for the
pod, :class:`ProxyDebugHub` forwards the request to its peers, found as Istio's own peers are: the
endpoints of istiod's Service (its EndpointSlices, port ``https-dns``/15012, the TLS gRPC port, minus this
replica's own pod). The peer answers from its own channels only (no second hop), so a request reaches at
most every replica once.

The forward is a unary gRPC call (``mizzen.debug.v1.ProxyDebug/Forward``) on the peer's TLS port, the
peer's certificate verified against the mesh roots for istiod's name, as agents verify it. It carries a
peer token: an HMAC over a short expiry and a nonce, keyed by a digest of the CA's signing key, which every
replica of a cluster shares (``istio-ca-secret``) and nothing else holds. The token expires after
:data:`TOKEN_TTL_S`, is never logged, and proves "a replica of this control plane"; the peer then answers
only the read-only, allow-listed requests the debug channel carries.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization

from mizzen.security.authn import AUTHORIZATION, AuthenticationError, Caller, RequestContext, bearer_token
from mizzen.security.identity import Identity
from mizzen.security.serving import ISTIOD_SAN

log = logging.getLogger(__name__)

__all__ = ["FORWARD_METHOD", "PEER_TOKEN_PREFIX", "TOKEN_TTL_S", "PeerAuthenticator", "Peers", "peer_key",
           "peer_token"]

FORWARD_METHOD = "/mizzen.debug.v1.ProxyDebug/Forward"
PEER_TOKEN_PREFIX = "mizzen-peer."
TOKEN_TTL_S = 60
GONE = "gone"      # a peer's answer when it has no channel for the pod either


def peer_key(ca_key: Any) -> bytes:
    """The replicas' shared HMAC key: a digest of the CA's signing key (PKCS#8 DER), never the key."""
    der = ca_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    return hashlib.sha256(b"mizzen-peer-debug/v1\0" + der).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def peer_token(key: bytes, now: float | None = None) -> str:
    """A bearer token valid for :data:`TOKEN_TTL_S` seconds at the peers sharing ``key``."""
    body = _b64(json.dumps({"exp": int((now or time.time()) + TOKEN_TTL_S),
                            "n": secrets.token_hex(8)}).encode())
    mac = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
    return f"{PEER_TOKEN_PREFIX}{body}.{mac}"


class PeerAuthenticator:
    """Accepts peer tokens made with ``key()`` (the current CA's); the caller is the control plane's own
    identity (istiod's service account)."""

    name = "control-plane-peer"

    def __init__(self, key: Callable[[], bytes], identity: Identity) -> None:
        self.key = key
        self.identity = identity

    async def authenticate(self, request: RequestContext) -> Caller | None:
        token = bearer_token(request)
        if token is None or not token.startswith(PEER_TOKEN_PREFIX):
            return None
        body, _, mac = token[len(PEER_TOKEN_PREFIX):].rpartition(".")
        want = hmac.new(self.key(), body.encode(), hashlib.sha256).hexdigest()
        if not body or not hmac.compare_digest(want, mac):
            raise AuthenticationError("the peer token is not valid (not signed by this mesh's CA)")
        try:
            exp = float(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["exp"])
        except (ValueError, KeyError, TypeError):
            raise AuthenticationError("the peer token is malformed") from None
        now = time.time()
        if not now <= exp <= now + TOKEN_TTL_S + 30:
            raise AuthenticationError("the peer token has expired")
        return Caller(identities=(self.identity,), authenticator=self.name)


class Peers:
    """The other replicas, asked in turn: ``addresses()`` (``host:port`` of their TLS gRPC ports),
    ``roots()`` (the mesh roots their certificates are verified with), ``key()`` (the peer token key)."""

    def __init__(self, addresses: Callable[[], Sequence[str]], roots: Callable[[], str],
                 key: Callable[[], bytes], timeout_s: float = 10.0) -> None:
        self.addresses, self.roots, self.key = addresses, roots, key
        self.timeout_s = timeout_s
        self._channels: dict[str, tuple[str, grpc.aio.Channel]] = {}
        self._old: list[grpc.aio.Channel] = []
        self.forwarded = 0

    def __bool__(self) -> bool:
        return bool(self.addresses())

    def _channel(self, target: str) -> grpc.aio.Channel:
        roots = self.roots()
        have = self._channels.get(target)
        if have is not None and have[0] == roots:
            return have[1]
        if have is not None:
            self._old.append(have[1])      # a call on it may still run; closed at close()
        channel = grpc.aio.secure_channel(
            target, grpc.ssl_channel_credentials(root_certificates=roots.encode()),
            options=[("grpc.ssl_target_name_override", ISTIOD_SAN), ("grpc.default_authority", ISTIOD_SAN)])
        self._channels[target] = (roots, channel)
        return channel

    async def ask(self, namespace: str, pod: str, request: dict[str, Any]) -> dict[str, Any] | None:
        """The answer of the first peer holding the pod's channel; None when none does (or none answered)."""
        payload = json.dumps({"namespace": namespace, "pod": pod, "request": request}).encode()
        for target in self.addresses():
            call = self._channel(target).unary_unary(FORWARD_METHOD)
            try:
                raw = await call(payload, timeout=self.timeout_s,
                                 metadata=((AUTHORIZATION, f"Bearer {peer_token(self.key())}"),))
                answer = json.loads(raw)
            except grpc.aio.AioRpcError as e:
                log.info("debug forward to peer %s: %s %s", target, e.code().name, e.details())
                continue
            except ValueError:
                log.info("debug forward to peer %s: not a JSON answer", target)
                continue
            if isinstance(answer, dict) and not answer.get(GONE):
                self.forwarded += 1
                return answer
        return None

    async def ask_all(self, request: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
        """Every peer's answer to a request about no pod (``{"kind": "syncz"}``), asked concurrently; and
        the peers that gave none."""
        payload = json.dumps({"namespace": "", "pod": "", "request": request}).encode()

        async def one(target: str) -> dict[str, Any] | None:
            call = self._channel(target).unary_unary(FORWARD_METHOD)
            try:
                answer = json.loads(await call(payload, timeout=self.timeout_s, metadata=(
                    (AUTHORIZATION, f"Bearer {peer_token(self.key())}"),)))
            except grpc.aio.AioRpcError as e:
                log.info("%s from peer %s: %s %s", request.get("kind"), target, e.code().name, e.details())
                return None
            except ValueError:
                log.info("%s from peer %s: not a JSON answer", request.get("kind"), target)
                return None
            return answer if isinstance(answer, dict) else None

        targets = list(self.addresses())
        results = await asyncio.gather(*(one(t) for t in targets))
        answers = [a for a in results if a is not None]
        return answers, [t for t, a in zip(targets, results, strict=True) if a is None]

    async def close(self) -> None:
        for channel in [*(c for _, c in self._channels.values()), *self._old]:
            with contextlib.suppress(Exception):
                await channel.close()
        self._channels.clear()
        self._old.clear()
