"""Synchronous HTTP client for the Mizzen control-plane API (what the ``mizzen`` command talks to).

Owns the wire contract on the client side: one method per endpoint, JSON in and out, and two errors the CLI
turns into one-line messages: :class:`Unreachable` (nothing answers at the address) and :class:`ApiError`
(the control plane answered with an error, e.g. 422 with validation issues). Standard library only.

Every request carries the API token (``Authorization: Bearer``) found by :func:`mizzen.auth.token.find_token`
(``$MIZZEN_TOKEN``, ``--token-file``, the state dir); a 401 says where the token was looked for.
:class:`AgentAdminClient` talks to one proxy's agent admin proxy (Envoy's admin, allow-listed) the same way.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mizzen.auth.token import TokenSource, find_token

__all__ = [
    "DEFAULT_SERVER",
    "SERVER_ENV",
    "ApiError",
    "ApplyResult",
    "ControlPlaneClient",
    "Document",
    "Unreachable",
    "http_call",
    "issue_texts",
]

DEFAULT_SERVER = "http://127.0.0.1:15014"
UNIX_SCHEME = "unix://"          # unix:///path/api.sock: a socket whose file permissions are the credential
# never through $HTTP_PROXY (an app's sidecar, a corporate proxy): the token goes straight to the server
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
SERVER_ENV = "MIZZEN_SERVER"


class Unreachable(Exception):
    """Nothing answered at the control-plane address (refused, timed out, bad host)."""

    def __init__(self, server: str, reason: str) -> None:
        self.server = server
        self.reason = reason
        super().__init__(f"cannot reach the Mizzen control plane at {server}: {reason}")


class ApiError(Exception):
    """The control plane answered with a non-2xx status; ``errors`` holds one rendered line per issue."""

    def __init__(self, status: int, errors: list[str], body: Any = None) -> None:
        self.status = status
        self.errors = errors
        self.body = body
        super().__init__("\n".join(errors) or f"HTTP {status}")


@dataclass(frozen=True)
class Document:
    """One input file as sent to ``/apis/apply`` and ``/apis/delete``."""

    file: str
    text: str

    def to_json(self) -> dict[str, str]:
        return {"file": self.file, "text": self.text}


@dataclass(frozen=True)
class ApplyResult:
    """Per-object outcomes (``kind``, ``namespace``, ``name``, ``action``) and rendered warning lines."""

    results: list[dict[str, Any]]
    warnings: list[str]


def issue_texts(items: Any) -> list[str]:
    """Render a list of issue dicts (``{"text": ...}``) or strings as lines."""
    out: list[str] = []
    if not isinstance(items, list):
        return out
    for it in items:
        if isinstance(it, Mapping):
            text = it.get("text") or it.get("message") or json.dumps(it, sort_keys=True)
            out.append(str(text))
        else:
            out.append(str(it))
    return out


def _token_hint(source: TokenSource, what: str) -> str:
    if source.token is None:
        return (f"{what} needs an API token and none was found (looked in {', '.join(source.looked)}); "
                "the token is in the state dir of the control plane (<state dir>/token): pass "
                "--token-file PATH or set $MIZZEN_TOKEN")
    return (f"{what} refused the API token from {source.where}: it is not this server's token (another "
            "control plane?); pass --token-file <its state dir>/token or set $MIZZEN_TOKEN")


class ControlPlaneClient:
    """Talks to one control plane. ``server`` defaults to ``$MIZZEN_SERVER`` or :data:`DEFAULT_SERVER`;
    the token comes from ``token`` or :func:`find_token` (``token_file``)."""

    def __init__(self, server: str | None = None, timeout: float = 30.0, *, token: str | None = None,
                 token_file: Path | str | None = None) -> None:
        self.server = (server or os.environ.get(SERVER_ENV) or DEFAULT_SERVER).rstrip("/")
        self.timeout = timeout
        self._token_file = token_file
        self._source: TokenSource | None = TokenSource(token, "the caller") if token else None

    @property
    def token_source(self) -> TokenSource:
        if self._source is None:
            self._source = find_token(self._token_file)
        return self._source

    # -- endpoints ---------------------------------------------------------------------------------------

    def version(self) -> str:
        body = self._request("GET", "/version")
        if isinstance(body, Mapping):
            return str(body.get("version", "unknown"))
        return str(body)

    def ready(self) -> bool:
        try:
            self._request("GET", "/ready")
        except ApiError:
            return False
        return True

    def apply(
        self, documents: Sequence[Document], namespace: str | None = None, dry_run: bool = False
    ) -> ApplyResult:
        body = self._request("POST", "/apis/apply", self._docs_body(documents, namespace, dry_run))
        body = body if isinstance(body, Mapping) else {}
        return ApplyResult(list(body.get("results") or []), issue_texts(body.get("warnings") or []))

    def delete(
        self, documents: Sequence[Document], namespace: str | None = None, dry_run: bool = False
    ) -> list[dict[str, Any]]:
        body = self._request("POST", "/apis/delete", self._docs_body(documents, namespace, dry_run))
        return list(body.get("results") or []) if isinstance(body, Mapping) else []

    def objects(
        self, kind: str, namespace: str | None = None, name: str | None = None
    ) -> list[dict[str, Any]]:
        query = {"kind": kind}
        if namespace:
            query["namespace"] = namespace
        if name:
            query["name"] = name
        body = self._request("GET", "/apis/objects?" + urllib.parse.urlencode(query))
        return list(body.get("items") or []) if isinstance(body, Mapping) else []

    def syncz(self) -> list[dict[str, Any]]:
        body = self._request("GET", "/debug/syncz")
        if isinstance(body, Mapping):  # tolerate {"proxies": [...]}
            body = body.get("proxies") or body.get("items") or []
        return [p for p in body if isinstance(p, dict)] if isinstance(body, list) else []

    def syncz_all(self) -> tuple[list[dict[str, Any]], list[str]]:
        """Every replica's proxies (``/debug/syncz?replicas=all``) and the peer replicas that did not
        answer (a control plane without peers: its own proxies)."""
        body = self._request("GET", "/debug/syncz?replicas=all")
        if isinstance(body, list):   # an older control plane: its own proxies only
            return [p for p in body if isinstance(p, dict)], []
        proxies = body.get("proxies") if isinstance(body, Mapping) else None
        silent = body.get("unanswered") if isinstance(body, Mapping) else None
        return ([p for p in proxies if isinstance(p, dict)] if isinstance(proxies, list) else [],
                [str(s) for s in silent] if isinstance(silent, list) else [])

    def workloads(self) -> list[dict[str, Any]]:
        body = self._request("GET", "/apis/workloads")
        return list(body.get("items") or []) if isinstance(body, Mapping) else []

    def registryz(self) -> dict[str, Any]:
        """``/debug/registryz``: services, endpoints per (hostname, port), workloads."""
        body = self._request("GET", "/debug/registryz")
        return dict(body) if isinstance(body, Mapping) else {}

    def config_dump(self, proxy_id: str) -> dict[str, Any]:
        body = self._request("GET", "/debug/config_dump?" + urllib.parse.urlencode({"proxyID": proxy_id}))
        return dict(body) if isinstance(body, Mapping) else {}

    def proxy_warnings(self, proxy_id: str) -> list[str]:
        """``/debug/proxy_warnings``: config skipped while generating that proxy's listeners."""
        body = self._request("GET", "/debug/proxy_warnings?" + urllib.parse.urlencode({"proxyID": proxy_id}))
        found = body.get("warnings") if isinstance(body, Mapping) else None
        return [str(w) for w in found] if isinstance(found, list) else []

    def simulate(self, proxy_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """``/debug/simulate``: where one request (url, method, header list, port) would go in that proxy."""
        body = self._request("POST", "/debug/simulate", {"proxyID": proxy_id, **request})
        return dict(body) if isinstance(body, Mapping) else {}

    # -- plumbing ----------------------------------------------------------------------------------------

    @staticmethod
    def _docs_body(documents: Sequence[Document], namespace: str | None, dry_run: bool) -> dict[str, Any]:
        return {"documents": [d.to_json() for d in documents], "namespace": namespace, "dry_run": dry_run}

    def _request(self, method: str, path: str, payload: Any = None) -> Any:
        return http_call(self.server, method, path, payload, self.token_source, self.timeout,
                         what=f"the control plane at {self.server}")


def http_call(base: str, method: str, path: str, payload: Any, source: TokenSource | None, timeout: float,
              *, what: str, raw_text: bool = False) -> Any:
    """One JSON request with the bearer token; HTTP errors -> :class:`ApiError`, no answer ->
    :class:`Unreachable`. ``base`` is ``http://host:port`` or ``unix:///path/to/socket``; ``raw_text``
    returns the body as text (Envoy's plain-text admin answers)."""
    data = None if payload is None else json.dumps(payload).encode()
    headers = {"Accept": "application/json"}
    if data is not None or method in ("POST", "PUT", "PATCH"):
        headers["Content-Type"] = "application/json"
    if source is not None and source.token:
        headers["Authorization"] = f"Bearer {source.token}"
    try:
        if base.startswith(UNIX_SCHEME):
            status, raw = _unix_request(base[len(UNIX_SCHEME):], method, path, data, headers, timeout)
        else:
            req = urllib.request.Request(base + path, data=data, headers=headers, method=method)
            try:
                with _NO_PROXY.open(req, timeout=timeout) as resp:
                    status, raw = resp.status, resp.read()
            except urllib.error.HTTPError as e:
                status, raw = e.code, e.read()
    except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise Unreachable(base, str(reason)) from None
    except ValueError as e:  # malformed URL (e.g. --server without a scheme)
        raise Unreachable(base, str(e)) from None
    if status >= 300:
        body = _decode(raw)
        if status == 401 and source is not None:
            raise ApiError(status, [_token_hint(source, what)], body)
        raise ApiError(status, _error_lines(status, body), body)
    if raw_text:
        return raw.decode(errors="replace")
    return _decode(raw)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _unix_request(socket_path: str, method: str, path: str, data: bytes | None, headers: dict[str, str],
                  timeout: float) -> tuple[int, bytes]:
    conn = _UnixConnection(socket_path, timeout)
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _error_lines(status: int, body: Any) -> list[str]:
    if isinstance(body, Mapping):
        lines = issue_texts(body.get("errors"))
        if lines:
            return lines
        for key in ("error", "message"):
            if body.get(key):
                return [str(body[key])]
        return [f"HTTP {status}: {json.dumps(body, sort_keys=True)}"]
    if isinstance(body, str) and body.strip():
        return [f"HTTP {status}: {body.strip()}"]
    return [f"HTTP {status}"]
