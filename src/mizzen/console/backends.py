"""The console's read-only clients of Prometheus (HTTP API v1) and Jaeger (its query API ``/api/...``), both
on loopback. Errors become :class:`BackendError` with one line saying which backend failed and how."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["BackendError", "Jaeger", "Prometheus"]

TIMEOUT_S = 10.0


class BackendError(Exception):
    """A backend is not configured, unreachable, or answered an error."""


async def _get(client: httpx.AsyncClient, what: str, url: str, params: Mapping[str, str]) -> Any:
    try:
        r = await client.get(url, params=dict(params))
    except httpx.HTTPError as e:
        raise BackendError(f"{what} at {url} is unreachable: {e}") from None
    try:
        body = r.json()
    except ValueError:
        raise BackendError(f"{what} answered {r.status_code} with a body that is not JSON") from None
    if r.status_code != 200:
        detail = body.get("error") or body.get("errors") if isinstance(body, dict) else body
        raise BackendError(f"{what} answered {r.status_code}: {detail}")
    return body


@dataclass
class Prometheus:
    url: str

    def _client(self) -> httpx.AsyncClient:
        # never through $HTTP_PROXY (the demo sets it for apps)
        return httpx.AsyncClient(base_url=self.url.rstrip("/"), timeout=TIMEOUT_S, trust_env=False)

    async def query(self, promql: str) -> list[dict[str, Any]]:
        async with self._client() as c:
            body = await _get(c, "Prometheus", "/api/v1/query", {"query": promql})
        return list(body.get("data", {}).get("result") or [])

    async def query_many(self, queries: Mapping[str, str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        async with self._client() as c:
            for name, q in queries.items():
                body = await _get(c, "Prometheus", "/api/v1/query", {"query": q})
                out[name] = list(body.get("data", {}).get("result") or [])
        return out

    async def query_range(self, queries: Mapping[str, str], start: float, end: float,
                          step: float) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        async with self._client() as c:
            for name, q in queries.items():
                body = await _get(c, "Prometheus", "/api/v1/query_range",
                                  {"query": q, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                   "step": f"{step:g}"})
                out[name] = list(body.get("data", {}).get("result") or [])
        return out


@dataclass
class Jaeger:
    url: str

    async def get(self, path: str, params: Mapping[str, str]) -> Any:
        async with httpx.AsyncClient(base_url=self.url.rstrip("/"), timeout=TIMEOUT_S, trust_env=False) as c:
            return await _get(c, "Jaeger", path, params)
