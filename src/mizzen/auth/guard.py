"""The HTTP guard in front of the control plane's API and every agent's admin proxy (an aiohttp middleware).

For every request, in order:

1. ``Host`` must name the address actually served (its IP, or ``localhost`` when that is loopback, with the
   served port): a page whose DNS name was rebound to 127.0.0.1 sends its own name and is refused (403).
2. Except on the open paths (readiness, ``/version``, ``/metrics``, the console's login), ``Authorization:
   Bearer <token>`` must carry the API token (constant-time compare), or - without an Authorization header -
   the console's session cookie must name a live session (``session_valid``); missing or wrong is 401 with a
   one-line hint.
3. Writes (POST, PUT, PATCH, DELETE) with an ``Origin`` other than the served one are refused (403), and
   POST/PUT/PATCH must be ``Content-Type: application/json`` (415): a browser cannot send that cross-site
   without a CORS preflight, which nothing here answers.

A request over a Unix socket listener (the control plane's ``<state dir>/api.sock``, mode 0600) is already
authenticated by the socket's file permissions and cannot come from a browser: it skips steps 1 and 2.

Nothing here logs a request's headers, so the token never reaches a log.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web

from mizzen.auth.token import token_matches

__all__ = ["OPEN_PATHS", "Guard", "host_allowed", "over_unix_socket"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# what stays open: readiness (kubelet-style probes), the version (harmless; istiod serves it openly on
# 15014 too) and Prometheus metrics
OPEN_PATHS = frozenset({"/ready", "/healthz", "/healthz/ready", "/version", "/metrics", "/stats/prometheus",
                        "/console/login"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``127.0.0.1:15014`` / ``[::1]:80`` / ``localhost`` -> (host, port or None); None if malformed."""
    value = value.strip()
    if not value:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else ""
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            host, port_text = value, ""
    if port_text:
        if not port_text.isdigit():
            return None
        return host.lower(), int(port_text)
    return host.lower(), None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def host_allowed(header: str, served: Iterable[tuple[str, int]]) -> bool:
    """Whether a ``Host`` header names one of the ``(address, port)`` pairs served: the same IP (any IP
    literal for a wildcard bind), or ``localhost`` for a loopback one, with the same port (no port = 80)."""
    parsed = _split_host(header)
    if parsed is None:
        return False
    host, port = parsed
    port = 80 if port is None else port
    asked = _ip(host)
    for bound_host, bound_port in served:
        if port != bound_port:
            continue
        bound = _ip(bound_host)
        if bound is None:
            if host == bound_host.lower():
                return True
            continue
        if asked is not None and (bound.is_unspecified or asked == bound):
            return True
        if host == "localhost" and (bound.is_loopback or bound.is_unspecified):
            return True
    return False


def over_unix_socket(request: web.Request) -> bool:
    """Whether the request came over a Unix socket listener (authenticated by the socket's permissions)."""
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    return sock is not None and getattr(sock, "family", None) == socket.AF_UNIX


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


@dataclass
class Guard:
    """``web.Application(middlewares=[guard.middleware])``. ``served`` returns the ``(address, port)`` pairs
    this server listens on (read per request: ports may be ephemeral); ``hint`` says how to get the token."""

    token: str
    served: Callable[[], Iterable[tuple[str, int]]]
    hint: str = "set $MIZZEN_TOKEN or use the token file in the state dir"
    open_paths: frozenset[str] = field(default=OPEN_PATHS)
    session_cookie: str = ""                                   # the console's cookie name ("" = none)
    session_valid: Callable[[str], bool] | None = None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = self.check(request)
        if refused is not None:
            return refused
        return await handler(request)

    def check(self, request: web.Request) -> web.Response | None:
        """The refusal for this request, or None when it may go on."""
        host = request.headers.get("Host", "")
        if over_unix_socket(request):
            return self._check_write(request, host)
        if not host_allowed(host, self.served()):
            return _error(403, f"Host {host!r} is not an address this server serves (DNS rebinding guard); "
                               "use the IP address and port it listens on")
        if request.path in self.open_paths and request.method in ("GET", "HEAD"):
            return None
        auth = request.headers.get("Authorization", "")
        scheme, _, presented = auth.partition(" ")
        if not auth and self.session_cookie and self.session_valid is not None:
            session = request.cookies.get(self.session_cookie, "")
            if session and self.session_valid(session):
                return self._check_write(request, host)
        if not auth:
            return _error(401, f"this API needs its token (Authorization: Bearer): {self.hint}",
                          **{"WWW-Authenticate": 'Bearer realm="mizzen"'})
        if scheme.lower() != "bearer" or not token_matches(presented.strip(), self.token):
            return _error(401, f"the API token was refused (not this server's token): {self.hint}",
                          **{"WWW-Authenticate": 'Bearer realm="mizzen", error="invalid_token"'})
        return self._check_write(request, host)

    @staticmethod
    def _check_write(request: web.Request, host: str) -> web.Response | None:
        if request.method in WRITE_METHODS:
            origin = request.headers.get("Origin")
            if origin is not None and origin.rstrip("/").lower() != f"http://{host}".lower():
                return _error(403, f"cross-origin write refused (Origin {origin!r})")
            if request.method in BODY_METHODS and request.content_type != "application/json":
                return _error(415, "writes must be sent as Content-Type: application/json "
                                   f"(got {request.content_type or 'none'!r})")
        return None
