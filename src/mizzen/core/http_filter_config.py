"""Per-route HTTP filter configuration: VirtualService ``fault`` -> envoy.filters.http.fault HTTPFault and
``corsPolicy`` -> envoy.filters.http.cors CorsPolicy, packed into ``Route.typed_per_filter_config`` under the
filter names the listeners put in every HCM (fault, cors, router), as Istio's TranslateFault and
TranslateCORSPolicy do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2

from mizzen.core.http_action import duration, int_percent, parse_duration, percent_to_fraction
from mizzen.core.http_match import string_matcher

FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
ROUTER_FILTER = "envoy.filters.http.router"

# gRPC status names Istio accepts in fault.abort.grpcStatus
GRPC_STATUS: Mapping[str, int] = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}


def _percentage(spec: Mapping[str, Any], legacy_default: bool) -> percent_pb2.FractionalPercent | None:
    pct = spec.get("percentage")
    if pct is not None:
        return percent_to_fraction(float(pct.get("value", 0) or 0))
    if legacy_default:  # Istio falls back to the deprecated integer ``percent`` (0 when unset) for delays
        return int_percent(int(spec.get("percent") or 0))
    return None


def http_fault(fault: Mapping[str, Any]) -> fault_pb2.HTTPFault | None:
    """Istio HTTPFaultInjection -> HTTPFault (None if it carries neither a usable delay nor abort)."""
    out = fault_pb2.HTTPFault()
    has = False
    delay = fault.get("delay")
    if delay and delay.get("fixedDelay") is not None:
        d = common_fault_pb2.FaultDelay()
        d.fixed_delay.CopyFrom(duration(delay["fixedDelay"]))
        p = _percentage(delay, legacy_default=True)
        if p is not None:
            d.percentage.CopyFrom(p)
        out.delay.CopyFrom(d)
        has = True
    abort = fault.get("abort")
    if abort and (abort.get("httpStatus") is not None or abort.get("grpcStatus") is not None):
        a = fault_pb2.FaultAbort()
        p = _percentage(abort, legacy_default=False)
        if p is not None:
            a.percentage.CopyFrom(p)
        if abort.get("httpStatus") is not None:
            a.http_status = int(abort["httpStatus"])
        else:
            status = abort["grpcStatus"]
            a.grpc_status = int(status) if str(status).isdigit() else GRPC_STATUS.get(str(status).upper(), 2)
        out.abort.CopyFrom(a)
        has = True
    return out if has else None


def cors_policy(cors: Mapping[str, Any]) -> cors_pb2.CorsPolicy:
    """Istio CorsPolicy -> Envoy per-route CorsPolicy (filter enabled 100%)."""
    out = cors_pb2.CorsPolicy()
    out.forward_not_matching_preflights.value = cors.get("unmatchedPreflights") != "IGNORE"
    if cors.get("allowOrigins") is not None:
        for sm in cors["allowOrigins"]:
            m = string_matcher(sm)
            if m is not None:
                out.allow_origin_string_match.append(m)
    elif cors.get("allowOrigin") is not None:
        for origin in cors["allowOrigin"]:
            m = string_matcher({"exact": origin})
            if m is not None:
                out.allow_origin_string_match.append(m)
    out.filter_enabled.default_value.CopyFrom(
        percent_pb2.FractionalPercent(numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED))
    if cors.get("allowCredentials") is not None:
        out.allow_credentials.value = bool(cors["allowCredentials"])
    out.allow_headers = ",".join(str(h) for h in cors.get("allowHeaders") or ())
    out.allow_methods = ",".join(str(h) for h in cors.get("allowMethods") or ())
    out.expose_headers = ",".join(str(h) for h in cors.get("exposeHeaders") or ())
    if cors.get("maxAge") is not None:
        out.max_age = str(int(parse_duration(cors["maxAge"])))
    return out


def apply_filter_configs(route: rc.Route, rule: Mapping[str, Any]) -> None:
    """Attach fault/cors per-filter config of one VS rule to an Envoy route."""
    if rule.get("fault"):
        f = http_fault(rule["fault"])
        if f is not None:
            route.typed_per_filter_config[FAULT_FILTER].Pack(f)
    if rule.get("corsPolicy"):
        route.typed_per_filter_config[CORS_FILTER].Pack(cors_policy(rule["corsPolicy"]))
