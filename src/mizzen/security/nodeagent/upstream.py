"""The agent's TLS connection to the control plane (xDS and the CA on istiod's 15012), as pilot-agent's.

The control plane's certificate is verified against the mesh roots for istiod's name
(``istiod.istio-system.svc``), whatever address it is dialled at. The roots start as the ones the runner
handed over with the pod credential and follow every certificate response after that (a root rotation adds
the next root before it signs anything), so a new channel is made when they change; streams already open
keep theirs. The pod credential goes with every call as ``authorization: Bearer`` (as Istio's agent sends its
service-account token) and is never logged.

A credential is a string (the local runner's pod credential, fixed for the pod's life) or a
:class:`TokenFile`: on Kubernetes the projected service-account token, which the kubelet rotates, so it is
re-read for every call (:func:`credential_value`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from mizzen.security.authn import AUTHORIZATION
from mizzen.security.serving import ISTIOD_SAN

log = logging.getLogger(__name__)

__all__ = ["ControlPlaneTls", "Credential", "TokenFile", "TokenFileError", "credential_value"]


class TokenFileError(RuntimeError):
    """The token file cannot be read, or is empty (one line; never the token)."""


class TokenFile:
    """A bearer token kept in a file that its owner replaces (the kubelet's projected token): each
    :meth:`read` reads it again; when a read fails after a good one (the file being swapped), the last good
    token is used and the failure logged once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: str | None = None
        self.reads = 0

    def read(self) -> str:
        try:
            text = self.path.read_text().strip()
            if not text:
                raise TokenFileError(f"token file {self.path} is empty")
        except (OSError, UnicodeDecodeError, TokenFileError) as e:
            why = str(e) if isinstance(e, TokenFileError) else \
                f"token file {self.path}: cannot read it ({type(e).__name__})"
            if self._last is None:
                raise TokenFileError(why) from None
            log.warning("%s; using the token read before", why)
            return self._last
        self._last = text
        self.reads += 1
        return text


Credential = str | TokenFile


def credential_value(credential: Credential) -> str:
    """The bearer value to send now (a token file is read again)."""
    return credential if isinstance(credential, str) else credential.read()


class ControlPlaneTls:
    def __init__(self, target: str, roots_pem: str, credential: Credential, server_name: str = ISTIOD_SAN,
                 options: Sequence[tuple[str, Any]] = ()) -> None:
        self.target = target
        self.server_name = server_name
        self._credential = credential
        self._roots = roots_pem
        self._options = list(options)
        self._channel: grpc.aio.Channel | None = None
        self._channel_roots = ""
        self._old: list[grpc.aio.Channel] = []
        self._lock = threading.Lock()
        self.channels_made = 0

    @property
    def roots_pem(self) -> str:
        return self._roots

    def update_roots(self, roots_pem: str) -> None:
        """The mesh roots changed (a certificate response): new calls use a channel that trusts them."""
        with self._lock:
            self._roots = roots_pem

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((AUTHORIZATION, f"Bearer {credential_value(self._credential)}"),)

    def channel(self) -> grpc.aio.Channel:
        """A channel trusting the current roots (the same one while they do not change)."""
        with self._lock:
            if self._channel is None or self._channel_roots != self._roots:
                if self._channel is not None:
                    self._old.append(self._channel)      # its open streams go on; closed at close()
                creds = grpc.ssl_channel_credentials(root_certificates=self._roots.encode())
                self._channel = grpc.aio.secure_channel(
                    self.target, creds,
                    options=[("grpc.ssl_target_name_override", self.server_name),
                             ("grpc.default_authority", self.server_name), *self._options])
                self._channel_roots = self._roots
                self.channels_made += 1
            return self._channel

    async def close(self) -> None:
        with self._lock:
            channels = [*self._old, *([self._channel] if self._channel is not None else [])]
            self._old, self._channel = [], None
        for ch in channels:
            await ch.close()
