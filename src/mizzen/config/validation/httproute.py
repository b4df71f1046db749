"""Semantic checks of one VirtualService HTTP route (Istio's validateHTTPRoute): route/redirect/directResponse
exclusivity, delegation, matches and regexes, header operations, CORS, fault injection, mirrors, redirect,
retries, rewrite, destinations and weights, timeouts.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from mizzen.config.validation.common import (
    Report,
    as_dict,
    as_int,
    as_list,
    as_str,
    check_duration,
    check_header_operation,
    check_header_value,
    check_labels,
    check_percent,
    check_percentage,
    check_port,
    check_regex,
    check_string_match,
    check_wildcard_domain,
    index_path,
    is_authority_header,
    is_dns1123_label,
    key_path,
    re2_rewrite_error,
)
from mizzen.config.validation.envoy_limits import MAX_DIRECT_RESPONSE_BODY

SUPPORTED_RETRY_ON = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "retriable-4xx",
    "refused-stream", "retriable-status-codes", "retriable-headers", "envoy-ratelimited",
    "http3-post-connect-failure", "cancelled", "deadline-exceeded", "internal", "resource-exhausted",
    "unavailable",
})
SUPPORTED_METHODS = frozenset({
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
})
GRPC_STATUSES = frozenset({
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
})
# HTTP status codes Go's http.StatusText knows (Istio accepts these as retryOn entries)
KNOWN_HTTP_STATUS = frozenset({
    100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307,
    308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 421,
    422, 423, 424, 425, 426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
})
JWT_CLAIM_PREFIX = "@request.auth.claims."
_MATCH_STRING_FIELDS = ("uri", "scheme", "method", "authority")


def check_destination(r: Report, path: str, dest: Any) -> None:
    """Istio's validateDestination: host (not ``*``), subset name, port number."""
    d = as_dict(dest)
    if not d:
        return
    host = as_str(d.get("host"))
    if host == "*":
        r.error(key_path(path, "host"), f"invalid destination host {host}")
    else:
        err = check_wildcard_domain(host)
        if err:
            r.error(key_path(path, "host"), err)
    if "subset" in d:
        subset = as_str(d.get("subset"))
        if not subset:
            r.error(key_path(path, "subset"), "subset name cannot be empty")
        elif not is_dns1123_label(subset):
            r.error(key_path(path, "subset"), f"subset name is invalid: {subset}")
    port = as_dict(d.get("port"))
    if "port" in d:
        check_port(r, key_path(key_path(path, "port"), "number"), port.get("number"))


def check_headers(r: Report, path: str, headers: Any) -> None:
    """``headers: {request|response: {set, add, remove}}`` names and values."""
    for side in ("request", "response"):
        ops = as_dict(as_dict(headers).get(side))
        sp = key_path(path, side)
        for op in ("set", "add"):
            for name, value in as_dict(ops.get(op)).items():
                hp = key_path(key_path(sp, op), name)
                check_header_operation(r, hp, name, authority_ok=side == "request")
                check_header_value(r, hp, value)
        for j, name in enumerate(as_list(ops.get("remove"))):
            check_header_operation(r, index_path(key_path(sp, "remove"), j), str(name), authority_ok=False)


def check_gateway_names(r: Report, path: str, names: Any) -> None:
    """Istio's validateGatewayNames: ``name``, ``ns/name`` or legacy ``name.ns`` (warned)."""
    for i, raw in enumerate(as_list(names)):
        gp = index_path(path, i)
        name = str(raw)
        ns, slash, gw = name.partition("/")
        if not slash:
            if "." in name:
                parts = name.split(".")
                r.warn(gp, f'using legacy gatewayName format "{name}"; prefer the <namespace>/<name> format: '
                           f'"{parts[1]}/{parts[0]}"')
            err = check_wildcard_domain(name) if name != "mesh" else None
            if err:
                r.error(gp, err)
            continue
        if not ns or not gw:
            r.error(gp, "config namespace and gateway name cannot be empty")
            continue
        if not is_dns1123_label(ns):
            r.error(gp, f'invalid value for namespace: "{ns}"')
        if not is_dns1123_label(gw):
            r.error(gp, f'invalid value for gateway name: "{gw}"')


def _check_string_match(r: Report, path: str, sm: Any, *, prefix_may_be_empty: bool) -> None:
    """Istio's validateStringMatch: RE2 regexes; an empty prefix only where Envoy allows it (uri)."""
    m = as_dict(sm)
    if "prefix" in m and m.get("prefix") == "" and not prefix_may_be_empty:
        r.error(key_path(path, "prefix"), "prefix string match should not be empty")
    check_string_match(r, path, m)


def _check_match(r: Report, path: str, match: dict[str, Any]) -> None:
    for fname in _MATCH_STRING_FIELDS:
        if fname in match:
            _check_string_match(r, key_path(path, fname), match.get(fname),
                                prefix_may_be_empty=fname == "uri")
    for group in ("headers", "withoutHeaders", "queryParams"):
        gpath = key_path(path, group)
        for name, sm in as_dict(match.get(group)).items():
            hp = key_path(gpath, name)
            if sm is None and group == "headers":
                r.error(hp, f"header match {name} cannot be null")
                continue
            if group == "queryParams" and name == "":
                r.error(hp, "query parameter name cannot be empty")
            if group != "queryParams" and not name.startswith(JWT_CLAIM_PREFIX):
                if name == "":
                    r.error(hp, "header name cannot be empty")
                elif not all(c.isalnum() or c in "-_" for c in name) or not name.isascii():
                    r.error(hp, f"header name {name} is not a valid header name")
            if group == "withoutHeaders" and as_dict(sm).get("regex") == "*":
                continue  # "*" is not RE2 here: it means "header present"
            _check_string_match(r, hp, sm, prefix_may_be_empty=False)
    if "port" in match and as_int(match.get("port")) != 0:
        check_port(r, key_path(path, "port"), match.get("port"))
    check_labels(r, key_path(path, "sourceLabels"), match.get("sourceLabels"))
    check_gateway_names(r, key_path(path, "gateways"), match.get("gateways"))
    ns = as_str(match.get("sourceNamespace"))
    if ns and not is_dns1123_label(ns):
        r.error(key_path(path, "sourceNamespace"), f"sourceNamespace match {ns} is invalid")


def _check_conflicts(r: Report, path: str, http: dict[str, Any], root: bool, in_delegate: bool) -> None:
    name = as_str(http.get("name"))
    if root:
        if "redirect" in http:
            r.error(key_path(path, "redirect"), f"root HTTP route {name} must not specify redirect")
        if "route" in http:
            r.error(key_path(path, "route"), f"root HTTP route {name} must not specify route")
        if not as_str(as_dict(http.get("delegate")).get("name")):
            r.warn(key_path(path, "delegate"), "delegate without a name refers to no VirtualService")
        return
    if in_delegate and "delegate" in http:
        r.error(key_path(path, "delegate"), "delegate HTTP route cannot contain delegate")
    routes = as_list(http.get("route"))
    if "redirect" in http:
        rp = key_path(path, "redirect")
        if routes:
            r.error(rp, "HTTP route cannot contain both route and redirect")
        if "fault" in http:
            r.error(rp, "HTTP route cannot contain both fault and redirect")
        if "rewrite" in http:
            r.error(rp, "HTTP route rule cannot contain both rewrite and redirect")
        if "directResponse" in http:
            r.error(rp, "HTTP route rule cannot contain both direct_response and redirect")
    elif "directResponse" in http:
        dp = key_path(path, "directResponse")
        if routes:
            r.error(dp, "HTTP route cannot contain both route and direct_response")
        if "fault" in http:
            r.error(dp, "HTTP route cannot contain both fault and direct_response")
        if "rewrite" in http:
            r.error(dp, "HTTP route rule cannot contain both rewrite and direct_response")
    elif not routes:
        r.error(path, "HTTP route, redirect or direct_response is required")
    if "mirror" in http and as_list(http.get("mirrors")):
        r.error(key_path(path, "mirrors"), "HTTP route cannot contain both mirror and mirrors")


def _check_cors(r: Report, path: str, cors: dict[str, Any]) -> None:
    for i, origin in enumerate(as_list(cors.get("allowOrigins"))):
        op = index_path(key_path(path, "allowOrigins"), i)
        o = as_dict(origin)
        value = o.get("exact") or o.get("prefix") or o.get("regex")
        if not value:
            r.error(op, "'' is not a valid match type for CORS allow origins")
        check_string_match(r, op, o)
    for i, method in enumerate(as_list(cors.get("allowMethods"))):
        if method not in SUPPORTED_METHODS:
            r.error(index_path(key_path(path, "allowMethods"), i), f'"{method}" is not a supported HTTP '
                                                                   'method')
    for group in ("allowHeaders", "exposeHeaders"):
        for i, name in enumerate(as_list(cors.get(group))):
            n = str(name)
            if n == "":
                r.error(index_path(key_path(path, group), i), "header name cannot be empty")
            elif n != "*" and not all(c.isalnum() or c in "-_" for c in n):
                r.error(index_path(key_path(path, group), i), f"header name {n} is not a valid header name")
    if "maxAge" in cors:
        secs = check_duration(r, key_path(path, "maxAge"), cors.get("maxAge"))
        if secs is not None and secs >= 0.001 and not float(secs).is_integer():
            r.error(key_path(path, "maxAge"), "max_age duration is accurate only to seconds precision")


def _check_fault(r: Report, path: str, fault: dict[str, Any]) -> None:
    if "abort" not in fault and "delay" not in fault:
        r.error(path, "HTTP fault injection must have an abort and/or a delay")
    if "abort" in fault:
        ap = key_path(path, "abort")
        abort = as_dict(fault.get("abort"))
        check_percentage(r, key_path(ap, "percentage"), abort.get("percentage"))
        if "httpStatus" in abort:
            status = as_int(abort.get("httpStatus"), -1)
            if not 200 <= status <= 599:
                r.error(key_path(ap, "httpStatus"), f"HTTP status {abort.get('httpStatus')} is not in "
                                                    "range 200-599")
        elif "grpcStatus" in abort:
            if abort.get("grpcStatus") not in GRPC_STATUSES:
                r.error(key_path(ap, "grpcStatus"), f'gRPC status "{abort.get("grpcStatus")}" is not '
                                                    'supported '
                                                    "(e.g. NOT_FOUND, UNAVAILABLE)")
        elif "http2Error" in abort:
            r.error(key_path(ap, "http2Error"), "HTTP/2 abort fault injection not supported yet")
        else:
            r.warn(ap, "abort configured, but error type not set")
    if "delay" in fault:
        dp = key_path(path, "delay")
        delay = as_dict(fault.get("delay"))
        check_percentage(r, key_path(dp, "percentage"), delay.get("percentage"))
        check_percent(r, key_path(dp, "percent"), delay.get("percent"))
        if "fixedDelay" in delay:
            check_duration(r, key_path(dp, "fixedDelay"), delay.get("fixedDelay"))
        elif "exponentialDelay" in delay:
            r.error(key_path(dp, "exponentialDelay"), "exponentialDelay not supported yet")


def _check_retries(r: Report, path: str, retries: dict[str, Any]) -> None:
    attempts = as_int(retries.get("attempts"))
    if attempts < 0:
        r.error(key_path(path, "attempts"), "attempts cannot be negative")
    if attempts == 0 and any(k in retries for k in ("perTryTimeout", "retryOn", "retryRemoteLocalities")):
        r.error(key_path(path, "attempts"), "http retry policy configured when attempts are set to 0 "
                                            "(disabled)")
    if "perTryTimeout" in retries:
        check_duration(r, key_path(path, "perTryTimeout"), retries.get("perTryTimeout"))
    retry_on = as_str(retries.get("retryOn"))
    if retry_on:
        for policy in retry_on.split(","):
            code = int(policy) if policy.isdigit() else -1
            if code not in KNOWN_HTTP_STATUS and policy not in SUPPORTED_RETRY_ON:
                r.error(key_path(path, "retryOn"), f'"{policy}" is not a valid retryOn policy')


def _check_redirect(r: Report, path: str, redirect: dict[str, Any]) -> None:
    if not any(k in redirect for k in ("uri", "authority", "port", "derivePort", "scheme")):
        r.error(path, "redirect must specify URI, authority, scheme, or port")
    code = as_int(redirect.get("redirectCode"))
    if code and not 300 <= code <= 399:
        r.error(key_path(path, "redirectCode"), f"{code} is not a valid redirect code, must be 3xx")
    scheme = redirect.get("scheme")
    if scheme is not None and scheme not in ("", "http", "https"):
        r.error(key_path(path, "scheme"), 'invalid redirect scheme, must be "http" or "https"')
    if as_int(redirect.get("port")) > 0:
        check_port(r, key_path(path, "port"), redirect.get("port"))


def _check_rewrite(r: Report, path: str, rewrite: dict[str, Any]) -> None:
    uri, regex = rewrite.get("uri"), rewrite.get("uriRegexRewrite")
    if uri and regex is not None:
        r.error(path, "rewrite may only contain one of URI or UriRegexRewrite")
    if not uri and regex is None and not rewrite.get("authority"):
        r.error(path, "rewrite must specify at least one of URI, UriRegexRewrite, or authority. "
                      "Only one of URI or UriRegexRewrite may be specified")
    if regex is not None:
        rx = as_dict(regex)
        rp = key_path(path, "uriRegexRewrite")
        if not rx.get("match") or not rx.get("rewrite"):
            r.error(rp, "UriRegexRewrite requires both Rewrite and Match fields to be specified")
        else:
            before = len(r.findings)
            check_regex(r, key_path(rp, "match"), rx.get("match"))
            problem = None if len(r.findings) > before else \
                re2_rewrite_error(str(rx.get("match")), str(rx.get("rewrite")))
            if problem:
                r.error(key_path(rp, "rewrite"), f"{problem}; RE2 refuses such a substitution and Envoy "
                                                 "would forward the path unrewritten")


def _check_body_size(r: Report, path: str, body: dict[str, Any]) -> None:
    """The body Envoy sends must fit in the route configuration's max_direct_response_body_size_bytes."""
    if "string" in body:
        size = len(str(body.get("string")).encode("utf-8"))
    elif "bytes" in body:
        try:
            size = len(base64.b64decode(str(body.get("bytes")), validate=False))
        except (binascii.Error, ValueError):
            return
    else:
        return
    if size > MAX_DIRECT_RESPONSE_BODY:
        r.error(path, f"directResponse body is {size} bytes; Envoy's limit here is "
                      f"{MAX_DIRECT_RESPONSE_BODY} bytes (1 MiB)")


def check_weights(r: Report, path: str, routes: list[Any]) -> None:
    """Each weight 0..100; with several destinations, not all zero (Istio normalises other totals)."""
    total = 0
    for j, rd in enumerate(routes):
        if "weight" not in as_dict(rd):
            continue
        w = as_int(as_dict(rd).get("weight"))
        if not 0 <= w <= 100:
            r.error(key_path(index_path(path, j), "weight"), "must be 0..100")
        total += w
    if len(routes) > 1 and total == 0:
        r.error(path, "total destination weight = 0")


def check_http_route(r: Report, path: str, http: dict[str, Any], in_delegate: bool) -> None:
    root = "delegate" in http and not in_delegate
    _check_conflicts(r, path, http, root, in_delegate)
    for j, m in enumerate(as_list(http.get("match"))):
        if isinstance(m, dict):
            _check_match(r, index_path(key_path(path, "match"), j), m)
    check_headers(r, key_path(path, "headers"), http.get("headers"))
    rewrite = as_dict(http.get("rewrite"))
    headers_set = {**as_dict(as_dict(as_dict(http.get("headers")).get("request")).get("set")),
                   **as_dict(as_dict(as_dict(http.get("headers")).get("request")).get("add"))}
    authorities = [n for n in headers_set if is_authority_header(n)]
    if rewrite.get("authority"):
        authorities.append("rewrite.authority")
    if len(authorities) > 1:
        r.error(key_path(path, "headers"), "authority header cannot be set multiple times")
    if "corsPolicy" in http:
        _check_cors(r, key_path(path, "corsPolicy"), as_dict(http.get("corsPolicy")))
    if "fault" in http:
        _check_fault(r, key_path(path, "fault"), as_dict(http.get("fault")))
    for legacy in ("mirrorPercent", "mirror_percent"):   # one field: its JSON and its proto name
        if legacy not in http:
            continue
        mp = as_int(http.get(legacy))
        if mp > 100:
            r.error(key_path(path, legacy), f"mirror_percent must have a max value of 100 (it has {mp})")
        r.warn(key_path(path, legacy), f'using deprecated setting "{legacy}", use "mirrorPercentage" instead')
    pct = as_dict(http.get("mirrorPercentage")).get("value")
    if isinstance(pct, int | float) and not 0 <= pct <= 100:
        r.error(key_path(key_path(path, "mirrorPercentage"), "value"), "mirror_percentage must be 0..100")
    check_destination(r, key_path(path, "mirror"), http.get("mirror"))
    for j, mirror in enumerate(as_list(http.get("mirrors"))):
        mp2 = index_path(key_path(path, "mirrors"), j)
        check_destination(r, key_path(mp2, "destination"), as_dict(mirror).get("destination"))
        value = as_dict(as_dict(mirror).get("percentage")).get("value")
        if isinstance(value, int | float) and not 0 <= value <= 100:
            r.error(key_path(key_path(mp2, "percentage"), "value"), "mirror percentage must be 0..100")
    if "redirect" in http:
        _check_redirect(r, key_path(path, "redirect"), as_dict(http.get("redirect")))
    if "directResponse" in http:
        _check_body_size(r, key_path(key_path(path, "directResponse"), "body"),
                         as_dict(as_dict(http.get("directResponse")).get("body")))
        status = as_int(as_dict(http.get("directResponse")).get("status"), -1)
        if not 200 <= status <= 599:
            r.error(key_path(key_path(path, "directResponse"), "status"), f"HTTP status {status} is not in "
                                                                          "range "
                                                                          "200-599")
    if "retries" in http:
        _check_retries(r, key_path(path, "retries"), as_dict(http.get("retries")))
    if "rewrite" in http:
        _check_rewrite(r, key_path(path, "rewrite"), rewrite)
    routes = as_list(http.get("route"))
    for j, rd in enumerate(routes):
        rp = index_path(key_path(path, "route"), j)
        check_headers(r, key_path(rp, "headers"), as_dict(rd).get("headers"))
        check_destination(r, key_path(rp, "destination"), as_dict(rd).get("destination"))
    check_weights(r, key_path(path, "route"), routes)
    if "timeout" in http:
        check_duration(r, key_path(path, "timeout"), http.get("timeout"))


__all__ = ["check_destination", "check_gateway_names", "check_http_route", "check_weights"]
