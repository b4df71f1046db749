"""VirtualService HTTPMatchRequest -> Envoy RouteMatch, the way Istio's route.TranslateRouteMatch does it.

Owns string matchers (exact/prefix/regex, ``{}`` = presence), header/withoutHeaders/queryParams/method/
authority/scheme matching, ``ignoreUriCase``, and the source-side filters that decide whether a match block
applies to a proxy at all (``port``, ``sourceLabels``, ``sourceNamespace``, ``gateways``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from mizzen.core.push_context import MESH_GATEWAY, resolve_gateway_ref

HEADER_METHOD = ":method"
HEADER_AUTHORITY = ":authority"
HEADER_SCHEME = ":scheme"


def regex_matcher(regex: str) -> regex_pb2.RegexMatcher:
    """A safe_regex matcher (RE2 is Envoy's default engine)."""
    return regex_pb2.RegexMatcher(regex=regex)


def is_presence_match(sm: Mapping[str, Any] | None) -> bool:
    """Istio turns an empty StringMatch (``{}``) and the non-regex ``regex: "*"`` into a presence match."""
    if not sm:
        return True
    if "exact" in sm or "prefix" in sm:
        return False
    return "regex" not in sm or sm.get("regex") == "*"


def string_matcher(sm: Mapping[str, Any], ignore_case: bool = False) -> string_pb2.StringMatcher | None:
    """Istio StringMatch -> Envoy StringMatcher (None for an empty match)."""
    if "exact" in sm:
        return string_pb2.StringMatcher(exact=str(sm["exact"]), ignore_case=ignore_case)
    if "prefix" in sm:
        return string_pb2.StringMatcher(prefix=str(sm["prefix"]), ignore_case=ignore_case)
    if "regex" in sm:
        return string_pb2.StringMatcher(safe_regex=regex_matcher(str(sm["regex"])))
    return None


def string_matchers(items: Iterable[Mapping[str, Any]]) -> list[string_pb2.StringMatcher]:
    out = []
    for sm in items:
        m = string_matcher(sm)
        if m is not None:
            out.append(m)
    return out


def header_matcher(name: str, sm: Mapping[str, Any] | None) -> rc.HeaderMatcher:
    out = rc.HeaderMatcher(name=name)
    if sm is None or is_presence_match(sm):
        out.present_match = True
        return out
    m = string_matcher(sm)
    if m is not None:
        out.string_match.CopyFrom(m)
    return out


def query_matcher(name: str, sm: Mapping[str, Any] | None) -> rc.QueryParameterMatcher:
    out = rc.QueryParameterMatcher(name=name)
    if sm is None or is_presence_match(sm):
        out.present_match = True
        return out
    m = string_matcher(sm)
    if m is not None:
        out.string_match.CopyFrom(m)
    return out


def route_match(match: Mapping[str, Any] | None) -> rc.RouteMatch:
    """Translate one match block (None = match everything: prefix ``/``)."""
    out = rc.RouteMatch(prefix="/")
    if match is None:
        return out
    headers: list[rc.HeaderMatcher] = []
    for name, sm in (match.get("headers") or {}).items():
        headers.append(header_matcher(str(name), sm))
    for name, sm in (match.get("withoutHeaders") or {}).items():
        hm = header_matcher(str(name), sm)
        hm.invert_match = True
        if not is_presence_match(sm):
            hm.treat_missing_header_as_empty = True
        headers.append(hm)
    headers.sort(key=lambda h: h.name)

    uri = match.get("uri")
    if uri:
        if "exact" in uri:
            out.path = str(uri["exact"])
        elif "prefix" in uri:
            out.prefix = str(uri["prefix"])
        elif "regex" in uri:
            out.safe_regex.CopyFrom(regex_matcher(str(uri["regex"])))
    out.case_sensitive.value = not bool(match.get("ignoreUriCase", False))

    for key, name in (("method", HEADER_METHOD), ("authority", HEADER_AUTHORITY), ("scheme", HEADER_SCHEME)):
        if match.get(key) is not None:
            headers.append(header_matcher(name, match[key]))
    out.headers.extend(headers)

    for name, sm in (match.get("queryParams") or {}).items():
        out.query_parameters.append(query_matcher(str(name), sm))
    return out


def is_catch_all(route: rc.Route) -> bool:
    """Prefix ``/`` (or regex ``.*``) and no header/query/metadata conditions (Istio's IsCatchAllRoute)."""
    m = route.match
    which = m.WhichOneof("path_specifier")
    if which == "prefix":
        catch_all = m.prefix == "/"
    elif which == "path_separated_prefix":
        catch_all = m.path_separated_prefix == "/"
    elif which == "safe_regex":
        catch_all = m.safe_regex.regex == ".*"
    else:
        catch_all = False
    return catch_all and not m.headers and not m.query_parameters and not m.dynamic_metadata


def source_matches(match: Mapping[str, Any] | None, proxy_labels: Mapping[str, str], proxy_namespace: str,
                   gateway_names: Iterable[str], vs_namespace: str) -> bool:
    """Whether a match block applies to this proxy (Istio's sourceMatchHTTP).

    ``gateways`` in a match restricts it to those gateways ("mesh" = sidecars); otherwise ``sourceLabels``
    must be a subset of the proxy's labels and ``sourceNamespace`` (if set) must be the proxy's namespace.
    """
    if match is None:
        return True
    names = set(gateway_names)
    gws = match.get("gateways") or []
    if gws:
        return any(resolve_gateway_ref(str(g), vs_namespace) in names or (g == MESH_GATEWAY and g in names)
                   for g in gws)
    labels = match.get("sourceLabels") or {}
    if all(proxy_labels.get(str(k)) == str(v) for k, v in labels.items()):
        ns = match.get("sourceNamespace") or ""
        return not ns or ns == proxy_namespace
    return False


def port_applies(match: Mapping[str, Any] | None, listen_port: int) -> bool:
    """A match with ``port`` set only applies on that port."""
    if match is None:
        return True
    port = int(match.get("port") or 0)
    return port == 0 or port == listen_port
