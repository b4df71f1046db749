"""The agent's TLS connection to the control plane (xDS and the CA on istiod's 15012), as pilot-agent's.

The control plane's certificate is verified against the mesh roots for istiod's name
(``istiod.istio-system.svc``), whatever address it is dialled at. The roots start as the ones the runner
handed over with the pod credential and follow every certificate response after that (a root rotation adds
the next root before it signs anything), so a new channel is made when they change; streams already open
keep theirs. The pod credential goes with every call as ``authorization: Bearer`` (as Istio's agent sends its
service-account token) and is never logged.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import grpc

from mizzen.security.authn import AUTHORIZATION
from mizzen.security.serving import ISTIOD_SAN

__all__ = ["ControlPlaneTls"]


class ControlPlaneTls:
    def __init__(self, target: str, roots_pem: str, credential: str, server_name: str = ISTIOD_SAN,
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
        return ((AUTHORIZATION, f"Bearer {self._credential}"),)

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
