"""What a matched route does, as Envoy would: forward (cluster / weighted clusters, rewrites), redirect (the
``Location`` Envoy computes), direct response; and the route's policy summaries (timeout, retries, fault,
mirrors, header changes, hash policy) plus the Istio metadata naming the VirtualService.

Pure functions over Envoy protos, returning JSON-able dicts.
"""

from __future__ import annotations

from typing import Any

import re2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from google.protobuf import json_format

from mizzen.config.validation.common import re2_rewrite_error
from mizzen.simulate.match import HttpRequest, fraction_percent, header_value

__all__ = [
    "FAULT_FILTER",
    "destinations",
    "direct_response",
    "istio_config",
    "policies",
    "redirect",
    "regex_substitute",
    "rewritten",
]

FAULT_FILTER = "envoy.filters.http.fault"
_REDIRECT_STATUS = {rc.RedirectAction.MOVED_PERMANENTLY: 301, rc.RedirectAction.FOUND: 302,
                    rc.RedirectAction.SEE_OTHER: 303, rc.RedirectAction.TEMPORARY_REDIRECT: 307,
                    rc.RedirectAction.PERMANENT_REDIRECT: 308}


def istio_config(metadata: Any) -> str:
    """``filter_metadata.istio.config`` (the Istio object a route or cluster came from), or ''."""
    st = metadata.filter_metadata.get("istio")
    if st is None or "config" not in st.fields:
        return ""
    return str(st.fields["config"].string_value)


def _seconds(d: Any) -> float:
    return float(d.seconds) + float(d.nanos) / 1e9


def _dur(d: Any) -> str:
    s = _seconds(d)
    return f"{s:g}s"


# --- forwarding ---------------------------------------------------------------------------------------------
def destinations(action: rc.RouteAction) -> list[dict[str, Any]]:
    """Clusters a forwarding route sends to, each with weight and percentage of traffic."""
    which = action.WhichOneof("cluster_specifier")
    if which == "cluster":
        return [{"cluster": action.cluster, "weight": 100, "percent": 100.0}]
    if which == "weighted_clusters":
        wcs = list(action.weighted_clusters.clusters)
        total = sum(c.weight.value for c in wcs) or 1
        out = []
        for c in wcs:
            d: dict[str, Any] = {"cluster": c.name, "weight": c.weight.value,
                                 "percent": round(c.weight.value * 100.0 / total, 2)}
            adds = [f"{h.header.key}: {h.header.value}" for h in c.request_headers_to_add]
            if adds:
                d["request_headers_to_add"] = adds
            out.append(d)
        return out
    if which == "cluster_header":
        return [{"cluster": f"<from header {action.cluster_header}>", "weight": 100, "percent": 100.0}]
    return []


def _prefix_rewrite(route: rc.Route, path: str, new_prefix: str) -> str:
    """Envoy replaces the matched part: the prefix of a prefix route, the whole path of a path or regex
    route (checked against a real Envoy)."""
    m = route.match
    which = m.WhichOneof("path_specifier")
    if which in ("prefix", "path_separated_prefix"):
        return new_prefix + path[len(getattr(m, which)):]
    if which in ("path", "safe_regex"):
        return new_prefix
    return path


def regex_substitute(rr: Any, path: str) -> tuple[str, str | None]:
    """Envoy's ``regex_rewrite`` (RE2 ``GlobalReplace``) of ``path``; a substitution RE2 refuses (a group
    the pattern lacks, a bad escape) leaves the path unchanged, with the reason as the second value."""
    pattern, substitution = rr.pattern.regex, rr.substitution
    problem = re2_rewrite_error(pattern, substitution)
    if problem is not None:
        return path, (f"regex rewrite {pattern!r} -> {substitution!r} is refused by RE2 ({problem}): "
                      "Envoy forwards the path unchanged")
    try:
        rx = re2.compile(pattern)
    except re2.error as e:
        return path, f"regex rewrite {pattern!r} does not compile ({e}): the path stays unchanged"
    out: list[str] = []
    pos = 0
    for m in rx.finditer(path):
        out.append(path[pos:m.start()])
        out.append(_expand(substitution, m))
        pos = m.end()
    out.append(path[pos:])
    return "".join(out), None


def _expand(substitution: str, m: Any) -> str:
    """RE2's ``Rewrite``: ``\\N`` is capture group N (``\\0`` the whole match, unset groups empty) and
    ``\\\\`` a backslash (not Python's template rules, where ``\\0`` is a NUL character)."""
    out: list[str] = []
    i = 0
    while i < len(substitution):
        c = substitution[i]
        if c == "\\" and i + 1 < len(substitution):
            nxt = substitution[i + 1]
            out.append("\\" if nxt == "\\" else (m.group(int(nxt)) or ""))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def rewritten(route: rc.Route, req: HttpRequest) -> tuple[str, str]:
    """The (path, authority) the upstream request carries after prefix/regex/host rewrites."""
    action = route.route
    path, query = req.path_only, ("?" + req.query if "?" in req.path else "")
    if action.prefix_rewrite:
        path = _prefix_rewrite(route, path, action.prefix_rewrite)
    elif action.HasField("regex_rewrite"):
        path, _ = regex_substitute(action.regex_rewrite, path)
    authority = req.authority
    if action.host_rewrite_literal:
        authority = action.host_rewrite_literal
    elif action.HasField("auto_host_rewrite") and action.auto_host_rewrite.value:
        authority = "<the chosen endpoint's hostname>"
    return path + query, authority


def redirect(route: rc.Route, req: HttpRequest) -> dict[str, Any]:
    """Envoy's Http::Utility::newUri: the Location and status of a redirect route."""
    r = route.redirect
    if r.scheme_redirect:
        scheme = r.scheme_redirect
    elif r.https_redirect:
        scheme = "https"
    else:
        scheme = header_value(req, "x-forwarded-proto") or req.scheme
    port = f":{r.port_redirect}" if r.port_redirect else ""
    if r.host_redirect:
        host = r.host_redirect
    else:
        host = req.authority
        proto = header_value(req, "x-forwarded-proto") or req.scheme
        cut = host.rfind(":") if not host.startswith("[") else host.rfind("]:") + 1
        if cut > 0:
            req_port = host[cut:]
            remove = bool(port)
            if scheme != proto:
                remove |= (proto == "https" and req_port == ":443") or (proto == "http" and req_port == ":80")
            if remove:
                host = host[:cut]
    path_has_query = "?" in r.path_redirect
    which = r.WhichOneof("path_rewrite_specifier")
    if which == "path_redirect":
        if path_has_query:
            path = r.path_redirect
        else:
            path = r.path_redirect + ("?" + req.query if "?" in req.path else "")
    elif which == "prefix_rewrite":
        path = _prefix_rewrite(route, req.path_only, r.prefix_rewrite) + (
            "?" + req.query if "?" in req.path else "")
    elif which == "regex_rewrite":
        path, _ = regex_substitute(r.regex_rewrite, req.path_only)
        path += "?" + req.query if "?" in req.path else ""
    else:
        path = req.path
    if not path.startswith("/"):
        path = "/" + path
    if not path_has_query and r.strip_query:
        path = path.split("?", 1)[0]
    return {"status": _REDIRECT_STATUS.get(r.response_code, 301), "location": f"{scheme}://{host}{port}{path}"}


def direct_response(route: rc.Route) -> dict[str, Any]:
    d = route.direct_response
    body = ""
    if d.HasField("body"):
        which = d.body.WhichOneof("specifier")
        if which == "inline_string":
            body = d.body.inline_string
        elif which == "inline_bytes":
            body = d.body.inline_bytes.decode("utf-8", "replace")
        elif which == "filename":
            body = f"<contents of {d.body.filename}>"
    return {"status": d.status, "body": body}


# --- policies -----------------------------------------------------------------------------------------------
def _fault(route: rc.Route) -> dict[str, Any] | None:
    anyc = route.typed_per_filter_config.get(FAULT_FILTER)
    if anyc is None:
        return None
    f = fault_pb2.HTTPFault()
    if not anyc.Unpack(f):
        return None
    out: dict[str, Any] = {}
    if f.HasField("delay"):
        pct = fraction_percent(f.delay.percentage) if f.delay.HasField("percentage") else 100.0
        out["delay"] = {"fixed_delay": _dur(f.delay.fixed_delay), "percent": pct}
    if f.HasField("abort"):
        pct = fraction_percent(f.abort.percentage) if f.abort.HasField("percentage") else 100.0
        which = f.abort.WhichOneof("error_type")
        code: Any = getattr(f.abort, which) if which in ("http_status", "grpc_status") else "from header"
        out["abort"] = {which or "http_status": code, "percent": pct}
    return out or None


def _retries(p: rc.RetryPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {"attempts": p.num_retries.value if p.HasField("num_retries") else 1,
                           "retry_on": p.retry_on}
    if p.HasField("per_try_timeout"):
        out["per_try_timeout"] = _dur(p.per_try_timeout)
    if p.retriable_status_codes:
        out["retriable_status_codes"] = list(p.retriable_status_codes)
    return out


def _header_ops(route: rc.Route) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, items in (("request_add", route.request_headers_to_add),
                       ("response_add", route.response_headers_to_add)):
        if items:
            out[key] = [f"{h.header.key}: {h.header.value}" for h in items]
    for key, names in (("request_remove", route.request_headers_to_remove),
                       ("response_remove", route.response_headers_to_remove)):
        if names:
            out[key] = list(names)
    return out


def policies(route: rc.Route, req: HttpRequest) -> dict[str, Any]:
    """Timeout, retries, fault, mirrors, rewrites, header changes and hash policy of a route (JSON-able)."""
    out: dict[str, Any] = {}
    fault = _fault(route)
    if fault:
        out["fault"] = fault
    hdrs = _header_ops(route)
    if hdrs:
        out["headers"] = hdrs
    if route.WhichOneof("action") != "route":
        return out
    a = route.route
    if a.HasField("timeout"):
        out["timeout"] = _dur(a.timeout) if _seconds(a.timeout) else "disabled (0s)"
    if a.HasField("retry_policy"):
        out["retries"] = _retries(a.retry_policy)
    mirrors = []
    for m in a.request_mirror_policies:
        pct = fraction_percent(m.runtime_fraction.default_value) if m.HasField("runtime_fraction") else 100.0
        mirrors.append({"cluster": m.cluster, "percent": pct})
    if mirrors:
        out["mirrors"] = mirrors
    path, authority = rewritten(route, req)
    if path != req.path or authority != req.authority:
        out["rewrite"] = {"path": path, "authority": authority}
    if a.HasField("regex_rewrite") and not a.prefix_rewrite:
        _, problem = regex_substitute(a.regex_rewrite, req.path_only)
        if problem:
            out["rewrite_refused"] = problem
    if a.hash_policy:
        out["hash_policy"] = [json_format.MessageToDict(h) for h in a.hash_policy]
    if a.HasField("cors") or "envoy.filters.http.cors" in route.typed_per_filter_config:
        out["cors"] = True
    return out
