"""Envoy's request matching, re-implemented for the route simulator: virtual host selection by domain and
route selection by ``RouteMatch`` (path specifiers, case sensitivity, header and query-parameter matchers).

Pure functions over Envoy protos; every decision comes back with a one-line reason for the why-trail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import re2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import string_pb2

__all__ = [
    "HttpRequest",
    "describe_match",
    "find_virtual_host",
    "header_value",
    "match_route",
    "string_match",
]


@dataclass(frozen=True)
class HttpRequest:
    """The request as Envoy's router sees it: lower-case header names, pseudo-headers included."""

    method: str
    authority: str
    path: str                                   # with the query string
    scheme: str = "http"
    headers: Sequence[tuple[str, str]] = field(default_factory=tuple)   # regular headers, lower-case names

    @property
    def path_only(self) -> str:
        return self.path.split("?", 1)[0].split("#", 1)[0]

    @property
    def query(self) -> str:
        return self.path.split("?", 1)[1].split("#", 1)[0] if "?" in self.path else ""

    def all_headers(self) -> list[tuple[str, str]]:
        return [(":method", self.method), (":authority", self.authority), (":path", self.path),
                (":scheme", self.scheme), *self.headers]


def header_values(req: HttpRequest, name: str) -> list[str]:
    """Every value of a header, in request order (``host`` is ``:authority``)."""
    name = name.lower()
    if name == "host":
        name = ":authority"
    return [v for k, v in req.all_headers() if k == name]


def header_value(req: HttpRequest, name: str) -> str | None:
    """All values of a header joined with "," (Envoy's getAllOfHeaderAsString), or None when absent."""
    values = header_values(req, name)
    return ",".join(values) if values else None


# --- string matchers ----------------------------------------------------------------------------------------
def _regex_full(pattern: str, value: str) -> bool:
    try:
        return re2.fullmatch(pattern, value) is not None
    except re2.error:
        return False


def string_match(m: string_pb2.StringMatcher, value: str) -> bool:
    which = m.WhichOneof("match_pattern")
    a = value.lower() if m.ignore_case else value

    def norm(s: str) -> str:
        return s.lower() if m.ignore_case else s

    if which == "exact":
        return a == norm(m.exact)
    if which == "prefix":
        return a.startswith(norm(m.prefix))
    if which == "suffix":
        return a.endswith(norm(m.suffix))
    if which == "contains":
        return norm(m.contains) in a
    if which == "safe_regex":
        return _regex_full(m.safe_regex.regex, value)
    return False


def describe_string(m: string_pb2.StringMatcher) -> str:
    which = m.WhichOneof("match_pattern") or "?"
    text = f"regex {m.safe_regex.regex!r}" if which == "safe_regex" else f"{which} {getattr(m, which)!r}"
    return text + (" (ignore case)" if m.ignore_case else "")


# --- header and query matchers ------------------------------------------------------------------------------
def _describe_header(h: rc.HeaderMatcher) -> str:
    which = h.WhichOneof("header_match_specifier")
    if which == "present_match":
        spec = "present" if h.present_match else "absent"
    elif which == "string_match":
        spec = describe_string(h.string_match)
    elif which == "safe_regex_match":
        spec = f"regex {h.safe_regex_match.regex!r}"
    elif which == "range_match":
        spec = f"in [{h.range_match.start}, {h.range_match.end})"
    elif which in ("exact_match", "prefix_match", "suffix_match", "contains_match"):
        spec = f"{which.removesuffix('_match')} {getattr(h, which)!r}"
    else:
        spec = "present"
    return f"header {h.name} {'NOT ' if h.invert_match else ''}{spec}"


def _header_specific(h: rc.HeaderMatcher, value: str) -> bool:
    which = h.WhichOneof("header_match_specifier")
    if which == "string_match":
        return string_match(h.string_match, value)
    if which == "safe_regex_match":
        return _regex_full(h.safe_regex_match.regex, value)
    if which == "exact_match":
        return value == str(h.exact_match)
    if which == "prefix_match":
        return value.startswith(h.prefix_match)
    if which == "suffix_match":
        return value.endswith(h.suffix_match)
    if which == "contains_match":
        return h.contains_match in value
    if which == "range_match":
        try:
            n = int(value)
        except ValueError:
            return False
        return bool(h.range_match.start <= n < h.range_match.end)
    return True   # no specifier: presence


def header_matches(h: rc.HeaderMatcher, req: HttpRequest) -> tuple[bool, str]:
    """Envoy 1.40's semantics, checked against a real Envoy: an absent header fails a value matcher even when
    inverted (unless ``treat_missing_header_as_empty``); a repeated header matches when any one of its values
    does; ``present_match`` compares presence, then ``invert_match`` flips."""
    values = header_values(req, h.name)
    desc = _describe_header(h)
    if h.WhichOneof("header_match_specifier") == "present_match":
        ok = bool(values) == h.present_match
        ok = ok != h.invert_match
    elif not values and not h.treat_missing_header_as_empty:
        return False, f"{desc}: fails (header not present)"
    else:
        ok = any(_header_specific(h, v) for v in (values or [""])) != h.invert_match
    shown = "not present" if not values else f"is {','.join(values)!r}"
    return ok, f"{desc}: {'passes' if ok else 'fails'} (header {shown})"


def _query_params(query: str) -> dict[str, str]:
    """First value of each parameter, as sent: Envoy 1.40's route matching does not percent-decode them
    (checked against a real Envoy)."""
    out: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        k, _, v = part.partition("=")
        out.setdefault(k, v)
    return out


def query_matches(q: rc.QueryParameterMatcher, params: Mapping[str, str]) -> tuple[bool, str]:
    value = params.get(q.name)
    if q.WhichOneof("query_parameter_match_specifier") == "string_match":
        desc = f"query {q.name} {describe_string(q.string_match)}"
        if value is None:
            return False, f"{desc}: fails (parameter not present)"
        ok = string_match(q.string_match, value)
        return ok, f"{desc}: {'passes' if ok else 'fails'} (parameter is {value!r})"
    ok = value is not None
    return ok, f"query {q.name} present: {'passes' if ok else 'fails'}"


# --- the path specifier -------------------------------------------------------------------------------------
def describe_match(m: rc.RouteMatch) -> str:
    """``prefix /reviews``, ``path /login``, ``regex '/r/.*'`` plus conditions, for humans."""
    which = m.WhichOneof("path_specifier")
    if which == "safe_regex":
        parts = [f"regex {m.safe_regex.regex!r}"]
    elif which == "path_match_policy":
        parts = [f"path template ({m.path_match_policy.name})"]
    elif which == "connect_matcher":
        parts = ["CONNECT"]
    elif which:
        parts = [f"{which.replace('_', ' ')} {getattr(m, which)}"]
    else:
        parts = ["(no path specifier)"]
    if m.HasField("case_sensitive") and not m.case_sensitive.value:
        parts.append("(ignore case)")
    parts += [_describe_header(h) for h in m.headers]
    parts += [f"query {q.name}" for q in m.query_parameters]
    return ", ".join(parts)


def _path_matches(m: rc.RouteMatch, req: HttpRequest) -> tuple[bool, str]:
    which = m.WhichOneof("path_specifier")
    path = req.path_only
    sensitive = m.case_sensitive.value if m.HasField("case_sensitive") else True

    def fold(s: str) -> str:
        return s if sensitive else s.lower()

    if which == "prefix":
        ok = fold(path).startswith(fold(m.prefix))
        return ok, f"prefix {m.prefix} {'matches' if ok else 'does not match'} {path}"
    if which == "path":
        ok = fold(path) == fold(m.path)
        return ok, f"path {m.path} {'equals' if ok else 'differs from'} {path}"
    if which == "safe_regex":
        ok = _regex_full(m.safe_regex.regex, path)
        return ok, f"regex {m.safe_regex.regex!r} {'matches' if ok else 'does not match'} {path}"
    if which == "path_separated_prefix":
        pre = m.path_separated_prefix
        ok = fold(path) == fold(pre) or fold(path).startswith(fold(pre).rstrip("/") + "/")
        return ok, f"path-separated prefix {pre} {'matches' if ok else 'does not match'} {path}"
    if which == "connect_matcher":
        ok = req.method.upper() == "CONNECT"
        return ok, f"CONNECT matcher {'matches' if ok else 'needs a CONNECT request'}"
    return False, f"path specifier {which or 'unset'} is not simulated"


@dataclass(frozen=True)
class RouteVerdict:
    matched: bool
    reason: str
    probabilistic: str = ""        # a runtime_fraction that makes the match random


def match_route(route: rc.Route, req: HttpRequest) -> RouteVerdict:
    """Does ``route.match`` accept the request? The reason names the first failing condition (or all
    passing ones)."""
    m = route.match
    ok, why = _path_matches(m, req)
    if not ok:
        return RouteVerdict(False, why)
    passed = [why]
    for h in m.headers:
        ok, hwhy = header_matches(h, req)
        if not ok:
            return RouteVerdict(False, hwhy)
        passed.append(hwhy)
    params = _query_params(req.query)
    for q in m.query_parameters:
        ok, qwhy = query_matches(q, params)
        if not ok:
            return RouteVerdict(False, qwhy)
        passed.append(qwhy)
    if m.HasField("grpc") and "application/grpc" not in (header_value(req, "content-type") or ""):
        return RouteVerdict(False, "grpc matcher: the request is not gRPC (content-type application/grpc)")
    if m.dynamic_metadata:
        passed.append("dynamic metadata matchers are not simulated (assumed to pass)")
    prob = ""
    if m.HasField("runtime_fraction"):
        frac = m.runtime_fraction.default_value
        prob = f"runtime_fraction: matches only {fraction_percent(frac):g}% of requests (random)"
        passed.append(prob)
    return RouteVerdict(True, "; ".join(passed), prob)


def fraction_percent(frac: Any) -> float:
    """A FractionalPercent as a percentage."""
    denom = {0: 100, 1: 10_000, 2: 1_000_000}.get(int(frac.denominator), 100)
    return float(frac.numerator) * 100.0 / denom


# --- virtual hosts ------------------------------------------------------------------------------------------
def _wildcard_hit(domain: str, host: str) -> tuple[str, int] | None:
    """('suffix'|'prefix', length of the fixed part) when a wildcard domain matches (>= 1 char for *)."""
    if domain.startswith("*") and len(domain) > 1:
        fixed = domain[1:]
        if len(host) > len(fixed) and host.endswith(fixed):
            return "suffix", len(fixed)
    elif domain.endswith("*") and len(domain) > 1:
        fixed = domain[:-1]
        if len(host) > len(fixed) and host.startswith(fixed):
            return "prefix", len(fixed)
    return None


def find_virtual_host(vhosts: Sequence[rc.VirtualHost], host: str) -> tuple[rc.VirtualHost | None, str]:
    """Envoy's findVirtualHost: exact domain, then the longest suffix wildcard, then the longest prefix
    wildcard, then ``*``. Domains and host compare lower-case. Returns the vhost and why."""
    host = host.lower()
    exact: rc.VirtualHost | None = None
    best: dict[str, tuple[int, str, rc.VirtualHost]] = {}
    default: rc.VirtualHost | None = None
    for vh in vhosts:
        for d in vh.domains:
            d = d.lower()
            if d == "*":
                default = default or vh
            elif d == host:
                exact = exact or vh
            else:
                hit = _wildcard_hit(d, host)
                if hit and (hit[0] not in best or hit[1] > best[hit[0]][0]):
                    best[hit[0]] = (hit[1], d, vh)
    if exact is not None:
        return exact, f"vhost {exact.name} matched domain {host} exactly"
    for kind in ("suffix", "prefix"):
        if kind in best:
            _, d, vh = best[kind]
            return vh, f"vhost {vh.name} matched {host} by {kind} wildcard {d}"
    if default is not None:
        return default, f"vhost {default.name} matched {host} by the catch-all domain *"
    domains = sorted({d for vh in vhosts for d in vh.domains})
    shown = ", ".join(domains[:12]) + (f", ... ({len(domains)} in all)" if len(domains) > 12 else "")
    return None, f"no virtual host has a domain matching {host!r} (domains: {shown or 'none'})"
