"""What every Bookinfo app shares: the headers Istio's apps propagate, JSON responses, the outbound HTTP
client (which honours ``HTTP_PROXY`` so calls go through the sidecar) and serving an app until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Mapping
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

log = logging.getLogger("mizzen.bookinfo")

# The union of what Istio's productpage, details and reviews propagate (trace context, session, end user).
FORWARD_HEADERS: tuple[str, ...] = (
    "x-request-id",
    "x-ot-span-context",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "x-datadog-sampled",
    "traceparent",
    "tracestate",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "sw8",
    "end-user",
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
)


def forward_headers(incoming: Mapping[str, str]) -> dict[str, str]:
    """The subset of ``incoming`` (case-insensitive) an app must copy onto its outbound calls."""
    lowered = {k.lower(): v for k, v in incoming.items()}
    return {h: lowered[h] for h in FORWARD_HEADERS if h in lowered}


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


def client_session(timeout_s: float) -> ClientSession:
    """An outbound client using ``HTTP_PROXY``/``http_proxy`` (the sidecar's http_proxy listener) when set."""
    return ClientSession(trust_env=True, timeout=ClientTimeout(total=timeout_s))


async def get_json(session: ClientSession, url: str, headers: Mapping[str, str]) -> tuple[int, Any]:
    """GET ``url``: (status, parsed JSON or None); status 0 means no response (timeout, refused...)."""
    try:
        async with session.get(url, headers=dict(headers)) as resp:
            body = await resp.read()
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                parsed = None
            return resp.status, parsed
    except Exception as exc:  # timeouts, refused connections and aiohttp's many ClientError subclasses
        log.info("GET %s failed: %r", url, exc)
        return 0, None


def service_url(name: str, port_env: str = "") -> str:
    """``http://<name>[.SERVICES_DOMAIN]:<port>``, honouring Istio's ``<NAME>_HOSTNAME``."""
    host = os.environ.get(f"{name.upper()}_HOSTNAME") or name
    domain = os.environ.get("SERVICES_DOMAIN")
    port = (os.environ.get(port_env) if port_env else None) or "9080"
    return f"http://{host}{'.' + domain if domain else ''}:{port}"


async def serve(app: web.Application, host: str, port: int) -> None:
    """Serve ``app`` on host:port until SIGTERM or SIGINT, then shut down cleanly."""
    runner = web.AppRunner(app, access_log=log)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    log.info("listening on http://%s:%d", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
