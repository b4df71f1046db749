"""One JSON request to the API server: the small verb the control plane's writers share (Leases, ConfigMaps,
Secrets).

:func:`call` sends a JSON body (or none), returns the decoded answer, and raises the library's
``ApiException`` with the HTTP status and the Status body's message for anything but 2xx, so callers test
``e.status`` (404 absent, 409 conflict or already there). Each request is bounded by ``timeout_s``.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

__all__ = ["MERGE_PATCH", "Object", "call", "status_of"]

Object = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


async def call(api: client.ApiClient, method: str, path: str, body: Object | None = None, *,
               content_type: str = "application/json", timeout_s: float = 10.0) -> Object:
    """``method path`` with ``body``: the answer's JSON (``{}`` when empty); ApiException on non-2xx."""
    resp = await api.call_api(
        path, method, body=body, header_params={"Content-Type": content_type, "Accept": "application/json"},
        auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True,
        _request_timeout=timeout_s)
    try:
        data = await resp.read()
    finally:
        resp.release()
    if not 200 <= resp.status <= 299:   # unpreloaded responses are not checked by the library: we do
        text = data.decode("utf-8", "replace")
        err = ApiException(status=resp.status, reason=_message(text) or resp.reason)
        err.body = text
        raise err
    decoded: Object = json.loads(data) if data else {}
    return decoded


def status_of(e: BaseException) -> int | None:
    """The HTTP status of an API error, None for anything else (connection lost, timeout)."""
    return e.status if isinstance(e, ApiException) else None


def _message(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    return str(data.get("message", "")) if isinstance(data, dict) else ""
