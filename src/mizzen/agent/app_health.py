"""pilot-agent's application probes (``/app-health/<container>/readyz|livez|startupz`` on the status port
15020): the injector rewrote the app containers' HTTP/TCP probes to these paths and passed the originals in
``ISTIO_KUBE_APP_PROBERS`` (JSON: path -> ``{"httpGet": {...}}`` or ``{"tcpSocket": {...}}``, optional
``timeoutSeconds``). The agent runs the original probe against the app on 127.0.0.1 (loopback is never
captured, and the agent's uid is excluded anyway) and answers with its outcome: the app's status for HTTP
(200..399 pass), 200 or 500 for TCP.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web

__all__ = ["APP_PROBERS_ENV", "AppProbers", "ProbersError"]

APP_PROBERS_ENV = "ISTIO_KUBE_APP_PROBERS"
ROUTE = "/app-health/{container}/{kind}"


class ProbersError(ValueError):
    """``ISTIO_KUBE_APP_PROBERS`` is not usable (one line)."""


class AppProbers:
    def __init__(self, probers: Mapping[str, Mapping[str, Any]], host: str = "127.0.0.1") -> None:
        self.probers = dict(probers)
        self.host = host

    @classmethod
    def from_env(cls, text: str | None, host: str = "127.0.0.1") -> AppProbers:
        if not text or not text.strip():
            return cls({}, host)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise ProbersError(f"{APP_PROBERS_ENV}: not JSON: {e.msg}") from None
        if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
            raise ProbersError(f"{APP_PROBERS_ENV}: want a JSON object of path -> prober")
        return cls(doc, host)

    async def probe(self, path: str) -> int:
        """The HTTP status to answer for ``path`` (404 for an unknown one)."""
        prober = self.probers.get(path)
        if prober is None:
            return 404
        timeout = float(prober.get("timeoutSeconds") or 1)
        try:
            if "httpGet" in prober:
                h = prober["httpGet"]
                scheme = str(h.get("scheme") or "HTTP").lower()
                url = f"{scheme}://{self.host}:{int(h['port'])}{h.get('path') or '/'}"
                headers = {x["name"]: x["value"] for x in h.get("httpHeaders") or []}
                if h.get("host"):
                    headers.setdefault("Host", str(h["host"]))
                headers.setdefault("User-Agent", "kube-probe/1.36")
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout),
                                                 trust_env=False) as s, \
                        s.get(url, headers=headers, ssl=False, allow_redirects=False) as r:
                    return r.status if r.status >= 400 else 200
            if "tcpSocket" in prober:
                conn = asyncio.open_connection(self.host, int(prober["tcpSocket"]["port"]))
                _r, w = await asyncio.wait_for(conn, timeout)
                w.close()
                return 200
        except (OSError, TimeoutError, aiohttp.ClientError, KeyError, ValueError):
            return 500
        return 500

    async def handle(self, request: web.Request) -> web.Response:
        status = await self.probe(request.path)
        return web.Response(status=status, text="" if status == 200 else f"probe {request.path}: {status}\n")

    def routes(self) -> tuple[tuple[str, Any], ...]:
        return ((ROUTE, self.handle),) if self.probers else ()
