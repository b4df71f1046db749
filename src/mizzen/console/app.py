"""The console's HTTP routes (mounted into the control plane's API server, behind its guard):

- ``POST /apis/login-tickets`` (API token only): a one-time ticket and the ``/console/login`` path to open;
- ``GET /console/login?ticket=`` (open): swaps the ticket for the session cookie, redirects to the console;
- ``GET /console/`` and ``/console/static/...``: the single-page front end (vanilla JS; Cytoscape vendored);
- ``GET /console/api/status|graph|metrics|health|traces|trace``: data from Prometheus and Jaeger.

Everything else the front end shows it reads from the control plane's own API with its session cookie
(``/apis/objects``, ``/apis/pods``, ``/debug/syncz``, ``/debug/analyze``, ``/debug/simulate``), so the console
adds no second way to read or change config.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web

from mizzen.auth.guard import over_unix_socket
from mizzen.console.backends import BackendError, Jaeger, Prometheus
from mizzen.console.graph import VIEWS, build_graph, queries
from mizzen.console.sessions import COOKIE, Sessions

__all__ = ["Console"]

_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,252})?$")    # label values we put into PromQL
_WINDOW = re.compile(r"^[1-9][0-9]{0,3}[smh]$")
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _bad(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _name(request: web.Request, key: str, required: bool = True) -> str:
    value = request.query.get(key, "")
    if not value and not required:
        return ""
    if not _NAME.match(value):
        raise web.HTTPBadRequest(reason=f"{key}: a name of letters, digits, . _ - is required")
    return value


def _window(request: web.Request) -> str:
    w = request.query.get("window", "1m")
    if not _WINDOW.match(w):
        raise web.HTTPBadRequest(reason="window: a duration like 30s, 1m or 1h is required")
    return w


def chart_queries(kind: str, namespace: str, name: str, direction: str, window: str) -> dict[str, str]:
    """Istio's service/workload dashboard panels for one object: request rate, success rate, p50/p90/p99."""
    if kind == "service":
        sel = (f'reporter="destination",destination_service_name="{name}",'
               f'destination_service_namespace="{namespace}"')
    elif direction == "outbound":
        sel = f'reporter="source",source_workload="{name}",source_workload_namespace="{namespace}"'
    else:
        sel = (f'reporter="destination",destination_workload="{name}",'
               f'destination_workload_namespace="{namespace}"')
    total = f"sum(rate(istio_requests_total{{{sel}}}[{window}]))"
    ok = f'sum(rate(istio_requests_total{{{sel},response_code!~"5.."}}[{window}]))'
    out = {"rate": total, "success": f"{ok} / {total}"}
    for q in ("0.5", "0.9", "0.99"):
        out[f"p{int(float(q) * 100)}"] = (f"histogram_quantile({q}, sum by (le) (rate("
                                          f"istio_request_duration_milliseconds_bucket{{{sel}}}[{window}])))")
    return out


@dataclass
class Console:
    """``addons`` gives the current addon URLs (``{"prometheus": url, "jaeger": url}``): the demo starts
    Prometheus after the control plane, so they are looked up per request."""

    sessions: Sessions
    addons: Callable[[], Mapping[str, str]] = dict

    @property
    def prometheus_url(self) -> str | None:
        return self.addons().get("prometheus") or None

    @property
    def jaeger_url(self) -> str | None:
        return self.addons().get("jaeger") or None

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/apis/login-tickets", self.mint_ticket),
            web.get("/console/login", self.login),
            web.post("/console/logout", self.logout),
            web.get("/console", self.redirect_root),
            web.get("/console/", self.index),
            web.get("/console/static/{path:.+}", self.static),
            web.get("/console/api/status", self.status),
            web.get("/console/api/graph", self.graph),
            web.get("/console/api/metrics", self.metrics),
            web.get("/console/api/health", self.health),
            web.get("/console/api/traces", self.traces),
            web.get("/console/api/services", self.traced_services),
        ]

    # --- login ----------------------------------------------------------------------------------------------
    async def mint_ticket(self, request: web.Request) -> web.Response:
        # the guard let this through with the token, a session cookie or the 0600 socket: only the first and
        # the last may mint (a browser session cannot make more of itself)
        if not request.headers.get("Authorization") and not over_unix_socket(request):
            return _bad("login tickets are minted with the API token (mizzen dashboard)", 401)
        host = request.headers.get("Host", "")
        ticket = self.sessions.mint_ticket(host)
        return web.json_response({"ticket": ticket, "path": f"/console/login?ticket={ticket}",
                                  "expires_in_s": self.sessions.ticket_ttl_s})

    async def login(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        session = self.sessions.redeem(ticket, request.headers.get("Host", "")) if ticket else None
        if session is None:
            return web.Response(status=401, content_type="text/plain", headers=_SECURITY_HEADERS,
                                text="This login link is invalid, used or expired: "
                                     "run `mizzen dashboard` again.\n")
        resp = web.HTTPSeeOther("/console/", headers=_SECURITY_HEADERS)
        resp.set_cookie(COOKIE, session, httponly=True, samesite="Strict", path="/",
                        max_age=int(self.sessions.session_ttl_s))
        raise resp

    async def logout(self, request: web.Request) -> web.Response:
        self.sessions.end(request.cookies.get(COOKIE, ""))
        resp = web.json_response({"logged_out": True})
        resp.del_cookie(COOKIE, path="/")
        return resp

    # --- front end ------------------------------------------------------------------------------------------
    async def redirect_root(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/console/")

    async def index(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def static(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        if ".." in path.split("/") or path.startswith("/"):
            raise web.HTTPNotFound()
        return self._file(path)

    @staticmethod
    def _file(path: str) -> web.Response:
        node = resources.files("mizzen.console").joinpath("static")
        for part in path.split("/"):
            node = node.joinpath(part)
        if not node.is_file():
            raise web.HTTPNotFound()
        suffix = "." + path.rsplit(".", 1)[-1]
        return web.Response(body=node.read_bytes(), headers=_SECURITY_HEADERS,
                            content_type=_STATIC_TYPES.get(suffix, "application/octet-stream"))

    # --- data -----------------------------------------------------------------------------------------------
    async def status(self, request: web.Request) -> web.Response:
        prometheus = self.prometheus_url
        return web.json_response({
            "prometheus": prometheus, "jaeger": self.jaeger_url,
            "hint": None if prometheus else
            "Prometheus is not running: install Debian's prometheus and restart mizzen demo",
        })

    def _prom(self) -> Prometheus:
        url = self.prometheus_url
        if not url:
            raise web.HTTPServiceUnavailable(
                reason="no Prometheus: the graph, health and charts need it (install Debian's prometheus and "
                       "restart mizzen demo)")
        return Prometheus(url)

    async def graph(self, request: web.Request) -> web.Response:
        view = request.query.get("view", "versionedApp")
        if view not in VIEWS:
            return _bad(f"view: one of {', '.join(VIEWS)}")
        namespaces = [n for n in request.query.get("namespace", "").split(",") if n]
        for n in namespaces:
            if not _NAME.match(n):
                return _bad("namespace: names of letters, digits, . _ -")
        try:
            results = await self._prom().query_many(queries(namespaces, _window(request)))
        except BackendError as e:
            return _bad(str(e), 502)
        return web.json_response({"view": view, "time": time.time(), **build_graph(view, results).to_json()})

    async def metrics(self, request: web.Request) -> web.Response:
        kind = request.query.get("kind", "service")
        direction = request.query.get("direction", "inbound")
        if kind not in ("service", "workload") or direction not in ("inbound", "outbound"):
            return _bad("kind: service|workload, direction: inbound|outbound")
        qs = chart_queries(kind, _name(request, "namespace"), _name(request, "name"), direction,
                           _window(request))
        try:
            span = float(request.query.get("range_s", "600"))
        except ValueError:
            return _bad("range_s: seconds")
        span = min(max(span, 60.0), 6 * 3600.0)
        end = time.time()
        try:
            series = await self._prom().query_range(qs, end - span, end, max(5.0, span / 120))
        except BackendError as e:
            return _bad(str(e), 502)
        return web.json_response({name: [[float(t), _num(v)] for r in res[:1] for t, v in r.get("values", [])]
                                  for name, res in series.items()})

    async def health(self, request: web.Request) -> web.Response:
        """Per workload: inbound request rate and success rate over the window (Kiali's request health)."""
        ns = _name(request, "namespace", required=False)
        sel = f',destination_workload_namespace="{ns}"' if ns else ""
        window = _window(request)
        by = "destination_workload_namespace,destination_workload"
        qs = {
            "total": f'sum by ({by}) (rate(istio_requests_total{{reporter="destination"{sel}}}[{window}]))',
            "errors": f'sum by ({by}) (rate(istio_requests_total{{reporter="destination",'
                      f'response_code=~"5..|0"{sel}}}[{window}]))',
        }
        try:
            res = await self._prom().query_many(qs)
        except BackendError as e:
            return _bad(str(e), 502)
        out: dict[str, dict[str, float]] = {}
        for name in ("total", "errors"):
            for r in res[name]:
                m = r["metric"]
                key = f'{m.get("destination_workload_namespace", "")}/{m.get("destination_workload", "")}'
                out.setdefault(key, {"total": 0.0, "errors": 0.0})[name] = _num(r["value"][1])
        return web.json_response({k: {"rate": v["total"],
                                      "success": (1 - v["errors"] / v["total"]) if v["total"] else None}
                                  for k, v in sorted(out.items())})

    def _jaeger(self) -> Jaeger:
        url = self.jaeger_url
        if not url:
            raise web.HTTPServiceUnavailable(
                reason="no Jaeger: traces need it (mizzen demo starts it when it is built)")
        return Jaeger(url)

    async def traced_services(self, request: web.Request) -> web.Response:
        try:
            body = await self._jaeger().get("/api/services", {})
        except BackendError as e:
            return _bad(str(e), 502)
        return web.json_response({"services": sorted(body.get("data") or [])})

    async def traces(self, request: web.Request) -> web.Response:
        params = {"service": _name(request, "service"), "limit": str(_int(request, "limit", 20, 1, 200)),
                  "lookback": "1h"}
        if request.query.get("minDuration"):
            params["minDuration"] = _window_param(request.query["minDuration"])
        try:
            body = await self._jaeger().get("/api/traces", params)
        except BackendError as e:
            return _bad(str(e), 502)
        return web.json_response({"traces": [_trace_summary(t) for t in body.get("data") or []]})


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


def _int(request: web.Request, key: str, default: int, lo: int, hi: int) -> int:
    try:
        return min(max(int(request.query.get(key, default)), lo), hi)
    except ValueError:
        return default


def _trace_summary(t: dict[str, Any]) -> dict[str, Any]:
    """A Jaeger trace as a span tree: each span with its service, operation, start offset, duration (µs)
    and parent, ordered by start time."""
    procs = {pid: p.get("serviceName", "") for pid, p in (t.get("processes") or {}).items()}
    spans = t.get("spans") or []
    start = min((s.get("startTime", 0) for s in spans), default=0)
    out = []
    for s in sorted(spans, key=lambda s: s.get("startTime", 0)):
        parent = next((r.get("spanID") for r in s.get("references") or () if r.get("refType") == "CHILD_OF"),
                      None)
        out.append({"id": s.get("spanID"), "parent": parent, "service": procs.get(s.get("processID"), ""),
                    "operation": s.get("operationName", ""), "start_us": s.get("startTime", 0) - start,
                    "duration_us": s.get("duration", 0),
                    "error": any(tag.get("key") == "error" and tag.get("value")
                                 for tag in s.get("tags") or ())})
    total = max((s["start_us"] + s["duration_us"] for s in out), default=0)
    return {"traceID": t.get("traceID"), "spans": out, "duration_us": total,
            "root": out[0]["service"] + " " + out[0]["operation"] if out else ""}


def _window_param(value: str) -> str:
    if not re.match(r"^[0-9]{1,6}(us|ms|s|m)$", value):
        raise web.HTTPBadRequest(reason="minDuration: a duration like 500ms or 2s")
    return value
