"""What an HTTP route does, as Istio's route.go builds it: destinations (cluster / weighted clusters),
rewrite, redirect, direct response, header operations, mirrors, timeouts and retry policies (route/retry).

Inputs are plain VirtualService ``spec.http[i]`` dicts; outputs are Envoy route protos. Durations accept the
Go/Kubernetes forms Istio accepts (``7s``, ``0.5s``, ``100ms``, ``1m30s``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2
from envoy.type.matcher.v3 import regex_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2

from mizzen.config import durations
from mizzen.core import names
from mizzen.core.mesh import MeshConfig
from mizzen.registry.model import Service

RETRY_PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
RETRY_PREVIOUS_PRIORITIES = "envoy.retry_priorities.previous_priorities"


# 3xx codes Envoy can send for a redirect
_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}


# --- durations and percentages ---
def parse_duration(value: Any) -> float:
    """A duration field in seconds (Go syntax, see config.durations); ValueError if malformed."""
    secs = durations.seconds(value)
    if secs is None:
        raise ValueError(f"invalid duration {value!r}")
    return secs


def duration(value: Any) -> duration_pb2.Duration:
    secs = parse_duration(value)
    whole = int(secs)
    return duration_pb2.Duration(seconds=whole, nanos=round((secs - whole) * 1e9))


def percent_to_fraction(value: float) -> percent_pb2.FractionalPercent:
    """Istio Percent (0-100, fractions allowed) -> per-million FractionalPercent."""
    return percent_pb2.FractionalPercent(numerator=int(float(value) * 10000),
                                         denominator=percent_pb2.FractionalPercent.MILLION)


def int_percent(value: int) -> percent_pb2.FractionalPercent:
    return percent_pb2.FractionalPercent(numerator=int(value),
                                         denominator=percent_pb2.FractionalPercent.HUNDRED)


# --- destinations ---
@dataclass(frozen=True)
class DestinationContext:
    """How one VirtualService's destinations resolve: its namespace, service lookup and hash policy."""

    vs_namespace: str
    listen_port: int
    resolve_host: Callable[[str, str], str]
    lookup_service: Callable[[str], Service | None]
    hash_policy: Callable[[str, str, int], list[rc.RouteAction.HashPolicy]] = field(
        default=lambda host, subset, port: [])


def destination_cluster(dest: Mapping[str, Any], ctx: DestinationContext) -> tuple[str, str, str, int]:
    """-> (cluster name, hostname, subset, port) like Istio's GetDestinationCluster."""
    host = ctx.resolve_host(str(dest.get("host", "")), ctx.vs_namespace)
    svc = ctx.lookup_service(host)
    port = ctx.listen_port
    number = (dest.get("port") or {}).get("number")
    if number:
        port = int(number)
    elif svc is not None and len(svc.ports) == 1:
        port = svc.ports[0].port
    subset = str(dest.get("subset") or "")
    return names.outbound_cluster(port, subset, host), host, subset, port


# --- headers ---
@dataclass
class HeaderOps:
    request_add: list[base_pb2.HeaderValueOption] = field(default_factory=list)
    response_add: list[base_pb2.HeaderValueOption] = field(default_factory=list)
    request_remove: list[str] = field(default_factory=list)
    response_remove: list[str] = field(default_factory=list)
    authority: str = ""


def _is_internal(key: str) -> bool:
    return key.startswith(":") or key.lower() == "host"


def _is_authority(key: str) -> bool:
    return key.lower() in (":authority", "host")


def _header_options(headers: Mapping[str, Any] | None,
                    append: bool) -> tuple[list[base_pb2.HeaderValueOption], str]:
    if not headers:
        return [], ""
    authority = ""
    out = []
    action = (base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD if append
              else base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)
    for key, value in headers.items():
        key = str(key)
        if _is_authority(key):
            authority = str(value)
        if _is_internal(key):
            continue
        out.append(base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=str(value)),
                                              append_action=action))
    out.sort(key=lambda h: h.header.key)
    return out, authority


def header_ops(headers: Mapping[str, Any] | None) -> HeaderOps:
    """Istio ``headers: {request: {set, add, remove}, response: {...}}``; set overwrites, add appends."""
    headers = headers or {}
    req = headers.get("request") or {}
    resp = headers.get("response") or {}
    req_set, set_auth = _header_options(req.get("set"), append=False)
    req_add, add_auth = _header_options(req.get("add"), append=True)
    resp_set, _ = _header_options(resp.get("set"), append=False)
    resp_add, _ = _header_options(resp.get("add"), append=True)
    return HeaderOps(
        request_add=req_set + req_add,
        response_add=resp_set + resp_add,
        request_remove=[str(k) for k in req.get("remove") or () if not _is_internal(str(k))],
        response_remove=[str(k) for k in resp.get("remove") or () if not _is_internal(str(k))],
        authority=set_auth or add_auth,
    )


def apply_route_headers(route: rc.Route, ops: HeaderOps) -> None:
    route.request_headers_to_add.extend(ops.request_add)
    route.response_headers_to_add.extend(ops.response_add)
    route.request_headers_to_remove.extend(ops.request_remove)
    route.response_headers_to_remove.extend(ops.response_remove)


# --- retries and timeouts ---
def _previous_hosts() -> rc.RetryPolicy.RetryHostPredicate:
    pred = rc.RetryPolicy.RetryHostPredicate(name=RETRY_PREVIOUS_HOSTS)
    pred.typed_config.Pack(previous_hosts_pb2.PreviousHostsPredicate())
    return pred


def default_retry_policy(mesh: MeshConfig, consistent_hash: bool = False) -> rc.RetryPolicy:
    """Istio's default: 2 retries on
    connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes (503), preferring other
    hosts unless consistent hashing pins the host."""
    policy = rc.RetryPolicy(retry_on=mesh.default_retry_on, host_selection_retry_max_attempts=5,
                            retriable_status_codes=[503])
    policy.num_retries.value = mesh.default_retry_attempts
    if not consistent_hash:
        policy.retry_host_predicate.append(_previous_hosts())
    return policy


def _parse_retry_on(retry_on: str) -> tuple[str, list[int]]:
    codes: list[int] = []
    parts: list[str] = []
    for part in retry_on.split(","):
        part = part.strip()
        if not part:
            continue
        if part.isdigit() and 100 <= int(part) <= 599:
            codes.append(int(part))
        else:
            parts.append(part)
    return ",".join(parts), codes


def retry_policy(retries: Mapping[str, Any] | None, mesh: MeshConfig,
                 consistent_hash: bool = False) -> rc.RetryPolicy | None:
    """Istio's retry.ConvertPolicy: None input -> mesh default; ``attempts: 0`` -> no retries (None)."""
    out = default_retry_policy(mesh, consistent_hash)
    if retries is None:
        return out
    attempts = int(retries.get("attempts") or 0)
    if attempts <= 0:
        return None
    out.num_retries.value = attempts
    retry_on = str(retries.get("retryOn") or "")
    if retry_on:
        on, codes = _parse_retry_on(retry_on)
        out.retry_on = on
        del out.retriable_status_codes[:]
        out.retriable_status_codes.extend(codes)
        if codes and "retriable-status-codes" not in on:
            out.retry_on = f"{on},retriable-status-codes" if on else "retriable-status-codes"
    if retries.get("perTryTimeout") is not None:
        out.per_try_timeout.CopyFrom(duration(retries["perTryTimeout"]))
    ignore_prev = retries.get("retryIgnorePreviousHosts")
    if ignore_prev is not None:
        del out.retry_host_predicate[:]
        if ignore_prev:
            out.retry_host_predicate.append(_previous_hosts())
    if retries.get("retryRemoteLocalities"):
        out.retry_priority.name = RETRY_PREVIOUS_PRIORITIES
        out.retry_priority.typed_config.Pack(
            previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=2))
    if retries.get("backoff") is not None:
        out.retry_back_off.base_interval.CopyFrom(duration(retries["backoff"]))
    return out


def set_timeout(action: rc.RouteAction, timeout: Any) -> None:
    """VS ``timeout`` (default 0 = disabled), for gRPC requests too.

    Deliberately no ``max_stream_duration``: setting any part of it switches Envoy's router to its "new
    timeouts" mode, in which the route ``timeout`` is ignored (a slow call then never gets its 504)."""
    d = duration(timeout) if timeout is not None else duration_pb2.Duration()
    action.timeout.CopyFrom(d)


# --- non-forwarding actions ---
def apply_redirect(route: rc.Route, redirect: Mapping[str, Any], listen_port: int, is_tls: bool) -> None:
    """Istio ApplyRedirect: uri -> path_redirect, authority -> host_redirect, scheme, port, code."""
    out = rc.RedirectAction()
    if redirect.get("uri"):
        out.path_redirect = str(redirect["uri"])
    if redirect.get("authority"):
        out.host_redirect = str(redirect["authority"])
    scheme = str(redirect.get("scheme") or "")
    if scheme:
        out.scheme_redirect = scheme
    has_port = "port" in redirect or "derivePort" in redirect
    if redirect.get("derivePort") == "FROM_REQUEST_PORT":
        out.port_redirect = listen_port
    elif redirect.get("port"):
        out.port_redirect = int(redirect["port"])
    if has_port:
        eff_scheme = scheme or ("https" if is_tls else "http")
        default = {"http": 80, "https": 443}.get(eff_scheme)
        if out.port_redirect == default:
            out.port_redirect = 0
    code = int(redirect.get("redirectCode") or 301)
    out.response_code = _REDIRECT_CODES.get(code, rc.RedirectAction.MOVED_PERMANENTLY)
    route.redirect.CopyFrom(out)


def apply_direct_response(route: rc.Route, direct: Mapping[str, Any]) -> None:
    out = rc.DirectResponseAction(status=int(direct.get("status", 200)))
    body = direct.get("body") or {}
    if "string" in body:
        out.body.inline_string = str(body["string"])
    elif "bytes" in body:
        raw = body["bytes"]
        out.body.inline_bytes = raw if isinstance(raw, bytes) else base64.b64decode(str(raw))
    route.direct_response.CopyFrom(out)


# --- forwarding ---
def _mirror_fraction(pct: Mapping[str, Any] | None,
                     legacy: Any = None) -> percent_pb2.FractionalPercent | None:
    if pct is not None:
        value = float(pct.get("value", 0) or 0)
        return percent_to_fraction(value) if value > 0 else None
    if legacy is not None:
        v = int(legacy.get("value", 0) if isinstance(legacy, Mapping) else legacy)
        return int_percent(v) if v > 0 else None
    return int_percent(100)


def _mirror_policy(dest: Mapping[str, Any], frac: percent_pb2.FractionalPercent,
                   ctx: DestinationContext) -> rc.RouteAction.RequestMirrorPolicy:
    cluster, _, _, _ = destination_cluster(dest, ctx)
    mp = rc.RouteAction.RequestMirrorPolicy(cluster=cluster)
    mp.runtime_fraction.default_value.CopyFrom(frac)
    mp.trace_sampled.value = False
    return mp


def apply_route_destination(route: rc.Route, rule: Mapping[str, Any], ctx: DestinationContext,
                            mesh: MeshConfig, authority: str) -> list[str]:
    """Fill ``route.route`` from a rule with ``route:`` destinations; returns the destination hostnames."""
    action = rc.RouteAction()
    set_timeout(action, rule.get("timeout"))
    rewrite = rule.get("rewrite")
    if rewrite:
        regex_rw = rewrite.get("uriRegexRewrite")
        if regex_rw:
            action.regex_rewrite.CopyFrom(regex_pb2.RegexMatchAndSubstitute(
                pattern=regex_pb2.RegexMatcher(regex=str(regex_rw.get("match", ""))),
                substitution=str(regex_rw.get("rewrite", ""))))
        elif rewrite.get("uri"):
            action.prefix_rewrite = str(rewrite["uri"])
        if rewrite.get("authority"):
            authority = str(rewrite["authority"])
    if authority:
        action.host_rewrite_literal = authority

    mirror = rule.get("mirror")
    if mirror:
        legacy = rule.get("mirrorPercent")
        if legacy is None:
            legacy = rule.get("mirror_percent")   # the proto field name, which Istio's CRD accepts too
        frac = _mirror_fraction(rule.get("mirrorPercentage"), legacy)
        if frac is not None:
            action.request_mirror_policies.append(_mirror_policy(mirror, frac, ctx))
    for m in rule.get("mirrors") or ():
        frac = _mirror_fraction(m.get("percentage"))
        if frac is not None and m.get("destination"):
            action.request_mirror_policies.append(_mirror_policy(m["destination"], frac, ctx))

    hosts: list[str] = []
    dests = list(rule.get("route") or ())
    consistent_hash = False
    if len(dests) == 1:
        dst = dests[0]
        cluster, host, subset, port = destination_cluster(dst.get("destination") or {}, ctx)
        action.cluster = cluster
        hosts.append(host)
        if dst.get("headers"):
            ops = header_ops(dst["headers"])
            apply_route_headers(route, ops)
            if ops.authority and not action.host_rewrite_literal:
                action.host_rewrite_literal = ops.authority
        hp = ctx.hash_policy(host, subset, port)
        action.hash_policy.extend(hp)
        consistent_hash = bool(hp)
    else:
        weighted = rc.WeightedCluster()
        for dst in dests:
            weight = int(dst.get("weight") or 0)
            if weight == 0:
                continue
            cluster, host, subset, port = destination_cluster(dst.get("destination") or {}, ctx)
            cw = rc.WeightedCluster.ClusterWeight(name=cluster)
            cw.weight.value = weight
            if dst.get("headers"):
                ops = header_ops(dst["headers"])
                cw.request_headers_to_add.extend(ops.request_add)
                cw.request_headers_to_remove.extend(ops.request_remove)
                cw.response_headers_to_add.extend(ops.response_add)
                cw.response_headers_to_remove.extend(ops.response_remove)
                if ops.authority:
                    cw.host_rewrite_literal = ops.authority
            action.hash_policy.extend(ctx.hash_policy(host, subset, port))
            weighted.clusters.append(cw)
            hosts.append(host)
        action.weighted_clusters.CopyFrom(weighted)
    policy = retry_policy(rule.get("retries"), mesh, consistent_hash)
    if policy is not None:
        action.retry_policy.CopyFrom(policy)
    action.upgrade_configs.append(rc.RouteAction.UpgradeConfig(upgrade_type="websocket"))
    route.route.CopyFrom(action)
    return hosts


def default_route(cluster: str, operation: str, mesh: MeshConfig,
                  hash_policy: list[rc.RouteAction.HashPolicy] | None = None) -> rc.Route:
    """Istio's BuildDefaultHTTPOutboundRoute: match everything, mesh default retries, no timeout."""
    r = rc.Route(name="default", match=rc.RouteMatch(prefix="/"))
    r.decorator.operation = operation
    action = rc.RouteAction(cluster=cluster)
    set_timeout(action, None)
    if hash_policy:
        action.hash_policy.extend(hash_policy)
    action.retry_policy.CopyFrom(default_retry_policy(mesh, consistent_hash=bool(hash_policy)))
    action.upgrade_configs.append(rc.RouteAction.UpgradeConfig(upgrade_type="websocket"))
    r.route.CopyFrom(action)
    return r
