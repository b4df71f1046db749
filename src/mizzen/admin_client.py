"""Synchronous client for one proxy's admin interface, as ``mizzen proxy-config`` reaches it (like istioctl
reaching a pod's Envoy admin).

A target is the agent's admin proxy (``http://<pod ip>:15004``, ``host:port`` without a scheme) - requests
carry the API token - or Envoy's admin Unix socket itself (a path: only its owner can connect, so no token).
Errors are the control-plane client's: :class:`~mizzen.client.Unreachable`, :class:`~mizzen.client.ApiError`.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mizzen.auth.token import TokenSource
from mizzen.client import UNIX_SCHEME, ApiError, http_call

__all__ = ["AdminClient", "AdminTarget", "parse_admin_target"]


@dataclass(frozen=True)
class AdminTarget:
    """Either ``url`` (an HTTP admin proxy) or ``socket`` (a Unix socket path)."""

    url: str = ""
    socket: str = ""

    def __str__(self) -> str:
        return self.url or self.socket


def parse_admin_target(text: str) -> AdminTarget:
    """``/path/admin.sock`` or ``unix:///path`` -> socket; ``http://h:p`` -> URL; ``h:p`` -> ``http://h:p``."""
    text = text.strip()
    if text.startswith(UNIX_SCHEME):
        return AdminTarget(socket=text[len(UNIX_SCHEME):])
    if text.startswith(("/", "./", "../", "~")) or Path(text).is_socket():
        return AdminTarget(socket=str(Path(text).expanduser()))
    if "://" in text:
        parsed = urllib.parse.urlsplit(text)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"admin address {text!r}: want http://host:port, host:port or a socket path")
        return AdminTarget(url=f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"admin address {text!r}: want host:port, http://host:port or a socket path")
    return AdminTarget(url=f"http://{text}")


class AdminClient:
    """Allow-listed admin calls on one target (``str(target)`` names it in errors)."""

    def __init__(self, target: AdminTarget, token: TokenSource | None, timeout: float = 10.0) -> None:
        self.target, self.token, self.timeout = target, token, timeout

    def _call(self, method: str, path: str) -> str:
        base = self.target.url or f"{UNIX_SCHEME}{self.target.socket}"
        text: str = http_call(base, method, path, None, self.token if self.target.url else None, self.timeout,
                              what=f"the proxy's agent at {self.target}", raw_text=True)
        return text

    def _json(self, path: str) -> Any:
        text = self._call("GET", path)
        try:
            return json.loads(text)
        except ValueError:
            raise ApiError(502, [f"{self.target}{path}: answer is not JSON"]) from None

    def clusters(self) -> list[dict[str, Any]]:
        """Envoy's live view of its clusters and hosts (``/clusters?format=json``): health, outlier checks."""
        body = self._json("/clusters?format=json")
        statuses = body.get("cluster_statuses") if isinstance(body, Mapping) else None
        return [c for c in statuses or [] if isinstance(c, dict)]

    def config_dump(self) -> dict[str, Any]:
        """Envoy's ``/config_dump`` (secrets redacted by the agent)."""
        body = self._json("/config_dump")
        return dict(body) if isinstance(body, Mapping) else {}

    def logging(self, level: str | None = None) -> str:
        """The loggers and their levels; with ``level`` (``debug`` or ``logger:level,...``) set them first.
        Through the agent, ``GET /logging`` lists; Envoy's own socket takes POST for both."""
        if level:
            key = "paths" if ":" in level else "level"
            return self._call("POST", "/logging?" + urllib.parse.urlencode({key: level}))
        return self._call("GET" if self.target.url else "POST", "/logging")
