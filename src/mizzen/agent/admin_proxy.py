"""The agent's admin proxy: the only way to Envoy's admin interface (a 0600 Unix socket) from outside the
agent's user, like ``istioctl proxy-config`` reaching a pod's admin through its agent.

Served on ``<admin host>:15004`` (Istio's pilot-agent debug port) behind :class:`mizzen.auth.guard.Guard`
(the control plane's API token; Host, Origin and Content-Type checks). Allow-listed:

* ``GET /config_dump`` (``resource``, ``mask``, ``name_regex``, ``include_eds``), with every secret redacted
  (private keys, passwords, session ticket keys, and any inline ``inline_bytes``/``inline_string`` inside a
  TLS secret);
* ``GET /clusters``, ``/stats``, ``/server_info``, ``/certs``; ``GET /logging`` (the current levels);
* ``POST /logging?level=L`` or ``?paths=logger:L,...`` (change log levels);
* open (no token): ``GET /ready`` and ``GET /stats/prometheus``.

Everything else (``/quitquitquit``, ``/drain_listeners``, ``/runtime_modify``, ``/healthcheck/fail`` ...)
answers 404 here; the agent itself uses the socket directly.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from mizzen.auth.guard import Guard

log = logging.getLogger(__name__)

__all__ = ["REDACTED", "AdminProxy", "admin_call", "redact_secrets"]

REDACTED = "[redacted]"
# fields whose data sources are secrets wherever they appear (Envoy's "sensitive" fields)
SENSITIVE_KEYS = frozenset({"private_key", "password", "session_ticket_keys", "hmac_secret", "client_secret",
                            "token_secret", "generic_secret", "pkey", "private_key_provider"})
# inside these, every inline value is treated as secret
SECRET_SCOPES = frozenset({"secret", "tls_certificate", "tls_certificates", "generic_secret",
                           "session_ticket_keys", "dynamic_active_secrets", "dynamic_warming_secrets",
                           "static_secrets"})
INLINE_KEYS = frozenset({"inline_bytes", "inline_string", "inlineBytes", "inlineString"})
# certificates are public: kept (``proxy-config secret`` reads serials and validity from them)
PUBLIC_KEYS = frozenset({"certificate_chain", "trusted_ca"})
QUERY_ALLOWED: dict[str, frozenset[str]] = {
    "/config_dump": frozenset({"resource", "mask", "name_regex", "include_eds"}),
    "/clusters": frozenset({"format"}),
    "/stats": frozenset({"filter", "format", "usedonly", "type", "histogram_buckets"}),
    "/stats/prometheus": frozenset({"usedonly", "filter", "text_readouts"}),
    "/server_info": frozenset(),
    "/certs": frozenset(),
    "/ready": frozenset(),
}
LEVEL = re.compile(r"^(trace|debug|info|warning|warn|error|critical|off)$")
LOGGER_LEVEL = re.compile(r"^[A-Za-z0-9_.]+:(trace|debug|info|warning|warn|error|critical|off)$")


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", lambda m: "_" + m.group(1).lower(), key)


def redact_secrets(value: Any, in_secret: bool = False) -> Any:
    """A copy of an admin JSON document with every secret value replaced by :data:`REDACTED`."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            name = _snake(k)
            if name in SENSITIVE_KEYS:
                out[k] = _redact_all(v)
            elif k in INLINE_KEYS and in_secret:
                out[k] = REDACTED
            elif name in PUBLIC_KEYS:
                out[k] = v
            else:
                out[k] = redact_secrets(v, in_secret or name in SECRET_SCOPES)
        return out
    if isinstance(value, list):
        return [redact_secrets(v, in_secret) for v in value]
    return value


def _redact_all(value: Any) -> Any:
    """A sensitive field: keep its shape (so a reader sees it was set) but no value."""
    if isinstance(value, dict):
        return {k: (_redact_all(v) if isinstance(v, dict | list) else REDACTED) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_all(v) for v in value]
    return REDACTED


class AdminProxy:
    """``await proxy.start()`` / ``await proxy.stop()``; forwards allow-listed requests to ``socket``."""

    def __init__(self, socket: Path, host: str, port: int, token: str, timeout_s: float = 10.0) -> None:
        self.socket, self.host, self.port = socket, host, port
        self.guard = Guard(token, self._served,
                           hint="this proxy's agent takes the control plane's API token (mizzen commands "
                                "read it from the state dir, --token-file or $MIZZEN_TOKEN)")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._runner: web.AppRunner | None = None
        self._bound: int | None = None

    def _served(self) -> list[tuple[str, int]]:
        return [(self.host, self._bound)] if self._bound is not None else []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._bound or self.port}"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard.middleware])
        for path in QUERY_ALLOWED:
            app.router.add_get(path, self.forward)
        app.router.add_get("/logging", self.logging_levels)
        app.router.add_post("/logging", self.set_logging)
        return app

    async def start(self) -> None:
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        for addr in runner.addresses:
            if isinstance(addr, tuple) and len(addr) >= 2:
                self._bound = int(addr[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._bound = None

    # --- handlers -------------------------------------------------------------------------------------------
    async def _answer(self, request: web.Request) -> web.Response:
        status, ctype, text = await admin_call(self.socket, request.method, request.path, dict(request.query),
                                               self.timeout)
        return web.Response(status=status, text=text, content_type=ctype or "text/plain")

    async def forward(self, request: web.Request) -> web.Response:
        return await self._answer(request)

    async def logging_levels(self, request: web.Request) -> web.Response:
        return await self._answer(request)

    async def set_logging(self, request: web.Request) -> web.Response:
        return await self._answer(request)


def _error(status: int, message: str) -> tuple[int, str, str]:
    return status, "application/json", json.dumps({"error": message})


async def _envoy(socket: Path, method: str, path: str, query: dict[str, str],
                 timeout: aiohttp.ClientTimeout) -> tuple[int, str, str]:
    connector = aiohttp.UnixConnector(path=str(socket))
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.request(method, f"http://localhost{path}", params=query) as resp,
        ):
            return resp.status, resp.content_type, await resp.text()
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        return _error(503, f"Envoy's admin interface does not answer: {type(e).__name__}")


async def admin_call(socket: Path, method: str, path: str, query: dict[str, str],
                     timeout: aiohttp.ClientTimeout) -> tuple[int, str, str]:
    """One admin request under the allow-list (the admin proxy's, and the control plane's debug channel to
    the agent): (status, content type, body); config_dump redacted; anything else a 404."""
    if method == "GET" and path in QUERY_ALLOWED:
        extra = sorted(set(query) - QUERY_ALLOWED[path])
        if extra:
            return _error(400, f"query parameter(s) not allowed here: {', '.join(extra)}")
        status, ctype, text = await _envoy(socket, "GET", path, query, timeout)
        if path == "/config_dump" and status == 200:
            try:
                doc = json.loads(text)
            except ValueError:
                return _error(502, "Envoy's config_dump is not JSON")
            return 200, "application/json", json.dumps(redact_secrets(doc), indent=1)
        return status, ctype, text
    if path == "/logging" and method == "GET":
        if query:
            return _error(400, "GET /logging takes no parameters; POST to change levels")
        return await _envoy(socket, "POST", "/logging", {}, timeout)
    if path == "/logging" and method == "POST":
        if set(query) - {"level", "paths"} or len(query) != 1:
            return _error(400, "POST /logging takes exactly one of ?level=L or ?paths=logger:L,...")
        if "level" in query and not LEVEL.match(query["level"]):
            return _error(400, f"unknown log level {query['level']!r}")
        if "paths" in query and not all(LOGGER_LEVEL.match(p) for p in query["paths"].split(",")):
            return _error(400, f"paths must be logger:level,... (got {query['paths']!r})")
        return await _envoy(socket, "POST", "/logging", query, timeout)
    return _error(404, f"{method} {path} is not served through the agent")
