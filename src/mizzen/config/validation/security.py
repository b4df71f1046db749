"""AuthorizationPolicy and RequestAuthentication semantic checks, as Istio's validateAuthorizationPolicy and
validateRequestAuthentication do them (``pkg/config/validation``, ``pkg/config/security``): selector xor
targetRef(s), the CUSTOM action's provider and rules, non-empty sources/operations, the ``when`` keys Istio
knows with their value syntax (IPs, CIDRs, ports, path templates), the ``istio.io/dry-run`` annotation;
issuer, JWKS URI, header and claim names of JWT rules. ``targetRef``/``targetRefs`` are accepted and warned
about (Mizzen applies policies to sidecars and gateways by selector only, as without waypoints).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from mizzen.config.model import Config
from mizzen.config.validation.common import (
    Report,
    as_dict,
    as_list,
    as_str,
    check_ip_subnet,
    check_labels,
    index_path,
    key_path,
    register,
)

__all__ = ["DRY_RUN_ANNOTATION", "WHEN_KEYS", "dry_run", "validate_authorization_policy",
           "validate_request_authentication"]

DRY_RUN_ANNOTATION = "istio.io/dry-run"
TARGET_REF_WARNING = ("accepted but not yet honoured by Mizzen: targetRef(s) attach policies to waypoints "
                      "and "
                      "Gateway API gateways, which Mizzen does not run; this policy applies to no workload")

# Istio's supported `when` keys (pkg/config/security: ValidateAttribute)
WHEN_KEYS = ("request.headers", "source.ip", "remote.ip", "source.namespace", "source.principal",
             "source.serviceAccount", "request.auth.principal", "request.auth.audiences",
             "request.auth.presenter", "request.auth.claims", "destination.ip", "destination.port",
             "connection.sni", "experimental.envoy.filters.", "source.trustDomain")
_BRACKETED = re.compile(r"^\[[^\[\]]+\]$")
_NESTED = re.compile(r"^(\[[^\[\]]+\])+$")
_HEADER = re.compile(r"^[-_A-Za-z0-9]+$")
_ACTIONS = ("ALLOW", "DENY", "AUDIT", "CUSTOM")


def dry_run(config: Config) -> bool:
    """Whether the ``istio.io/dry-run`` annotation is true (Go's strconv.ParseBool)."""
    return config.annotations.get(DRY_RUN_ANNOTATION, "").strip() in ("1", "t", "T", "TRUE", "true", "True")


def _check_target_refs(r: Report, spec: dict[str, Any]) -> None:
    refs: list[tuple[str, Any]] = [("spec.targetRef", spec["targetRef"])] if spec.get("targetRef") else []
    refs += [(index_path("spec.targetRefs", i), t) for i, t in enumerate(as_list(spec.get("targetRefs")))]
    if refs and spec.get("selector") is not None:
        r.error("spec", "only one of targetRefs or workloadSelector can be set")
    for path, ref in refs:
        ref = as_dict(ref)
        if not as_str(ref.get("name")):
            r.error(key_path(path, "name"), "targetRef name must be set")
        if as_str(ref.get("kind")) not in ("Gateway", "Service", "ServiceEntry", "GatewayClass"):
            r.error(key_path(path, "kind"), f"targetRef kind {ref.get('kind')!r} is not supported: must be "
                                            "Gateway, GatewayClass, Service or ServiceEntry")
    if refs:
        r.warn(refs[0][0], TARGET_REF_WARNING)


def _check_values(r: Report, path: str, values: list[Any]) -> None:
    for i, v in enumerate(values):
        if as_str(v) == "":
            r.error(index_path(path, i), f"empty value not allowed, found in {path.rsplit('.', 1)[-1]}")


def _check_ips(r: Report, path: str, values: list[Any]) -> None:
    for i, v in enumerate(values):
        err = check_ip_subnet(as_str(v))
        if err:
            r.error(index_path(path, i), err)


def _check_ports(r: Report, path: str, values: list[Any]) -> None:
    for i, v in enumerate(values):
        text = as_str(v)
        if not text.isdigit() or not 0 <= int(text) <= 65535:
            r.error(index_path(path, i), f"invalid port {text!r}: must be a number in 0..65535")


def check_path_template(value: str) -> str | None:
    """Istio's path template rules (``{*}`` one segment, ``{**}`` many, the latter only last or followed by
    a fixed suffix); plain ``*`` prefix/suffix forms are checked by the matcher."""
    if "{" not in value and "}" not in value:
        return None
    if not value.startswith("/"):
        return f"invalid path template {value!r}: must start with /"
    segments = value.split("/")[1:]
    double = [i for i, s in enumerate(segments) if s == "{**}"]
    for s in segments:
        if ("{" in s or "}" in s) and s not in ("{*}", "{**}"):
            return f"invalid path template {value!r}: operators must be whole segments {{*}} or {{**}}"
    if len(double) > 1:
        return f"invalid path template {value!r}: only one {{**}} is allowed"
    if double and any(s in ("{*}", "{**}") for s in segments[double[0] + 1:]):
        return f"invalid path template {value!r}: {{**}} must be the last operator"
    return None


def _check_paths(r: Report, path: str, values: list[Any]) -> None:
    for i, v in enumerate(values):
        err = check_path_template(as_str(v))
        if err:
            r.error(index_path(path, i), err)


def _check_when(r: Report, path: str, cond: dict[str, Any]) -> None:
    key = as_str(cond.get("key"))
    values, not_values = as_list(cond.get("values")), as_list(cond.get("notValues"))
    kp = key_path(path, "key")
    if not values and not not_values:
        r.error(path, f"at least one of values or notValues must be set for key {key}")
    known = next((k for k in WHEN_KEYS if key == k or key.startswith(k)), None)
    if known is None:
        r.error(kp, f"unknown attribute: {key}")
        return
    rest = key[len(known):]
    if known == "request.headers":
        if not _BRACKETED.match(rest) or not _HEADER.match(rest[1:-1]):
            r.error(kp, f"invalid header name in {key}: must be request.headers[<header name>]")
    elif known == "request.auth.claims":
        if not _NESTED.match(rest):
            r.error(kp, f"invalid claim in {key}: must be request.auth.claims[<claim>][<nested claim>]...")
    elif known == "experimental.envoy.filters.":
        if "[" not in rest or not rest.endswith("]"):
            r.error(kp, f"invalid key {key}: must be experimental.envoy.filters.<filter>[<key>]")
    elif rest:
        r.error(kp, f"unknown attribute: {key}")
    for field in ("values", "notValues"):
        vs = as_list(cond.get(field))
        fp = key_path(path, field)
        _check_values(r, fp, vs)
        if known in ("source.ip", "remote.ip", "destination.ip"):
            _check_ips(r, fp, vs)
        elif known == "destination.port":
            _check_ports(r, fp, vs)


_SOURCE_IPS = ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks")


def _check_source_field(r: Report, path: str, name: str, vs: list[Any]) -> None:
    if name in _SOURCE_IPS:
        _check_ips(r, path, vs)


def _check_operation_field(r: Report, path: str, name: str, vs: list[Any]) -> None:
    if name in ("ports", "notPorts"):
        _check_ports(r, path, vs)
    elif name in ("paths", "notPaths"):
        _check_paths(r, path, vs)


def _check_clauses(r: Report, path: str, rule: dict[str, Any], key: str, inner: str,
                   check_field: Callable[[Report, str, str, list[Any]], None]) -> None:
    """``from`` (each a ``source``) or ``to`` (each an ``operation``): present means not empty, each entry
    has a non-empty inner object, each field's values are checked, then by ``check_field``."""
    clauses = rule.get(key)
    if clauses is not None and not as_list(clauses):
        r.error(key_path(path, key), f"`{key}` must not be empty")
    for i, c in enumerate(as_list(clauses)):
        cp = index_path(key_path(path, key), i)
        body = as_dict(c).get(inner)
        if body is None:
            r.error(cp, f"`{key}.{inner}` must not be nil")
            continue
        if not as_dict(body):
            r.error(key_path(cp, inner), f"`{key}.{inner}` must not be empty")
        for name, vs in as_dict(body).items():
            fp = key_path(key_path(cp, inner), name)
            _check_values(r, fp, as_list(vs))
            check_field(r, fp, name, as_list(vs))


def _check_rule(r: Report, path: str, rule: dict[str, Any]) -> None:
    _check_clauses(r, path, rule, "from", "source", _check_source_field)
    _check_clauses(r, path, rule, "to", "operation", _check_operation_field)
    for i, w in enumerate(as_list(rule.get("when"))):
        _check_when(r, index_path(key_path(path, "when"), i), as_dict(w))


@register("AuthorizationPolicy")
def validate_authorization_policy(cfg: Config, r: Report) -> None:
    spec = dict(cfg.spec)
    _check_target_refs(r, spec)
    check_labels(r, "spec.selector.matchLabels", as_dict(spec.get("selector")).get("matchLabels"))
    action = as_str(spec.get("action")) or "ALLOW"
    if action not in _ACTIONS:
        r.error("spec.action", f"unknown action {action!r}: must be one of {', '.join(_ACTIONS)}")
    provider = spec.get("provider")
    if action == "CUSTOM":
        if not as_str(as_dict(provider).get("name")):
            r.error("spec.provider.name", "must specify a provider name for CUSTOM action")
        if "rules" not in spec:
            r.error("spec.rules", "CUSTOM action without `rules` is meaningless as it will never be "
                                  "triggered, add an empty rule `{}` if you want it be triggered for every "
                                  "request")
    elif provider is not None:
        r.error("spec.provider", "provider is only allowed for CUSTOM action")
    raw = cfg.annotations.get(DRY_RUN_ANNOTATION)
    if raw is not None and raw.strip() not in ("1", "t", "T", "TRUE", "true", "True",
                                               "0", "f", "F", "FALSE", "false", "False"):
        r.error(f'metadata.annotations["{DRY_RUN_ANNOTATION}"]',
                f"invalid value {raw!r}: must be true or false")
    if raw is not None and action == "CUSTOM" and dry_run(cfg):
        r.warn(f'metadata.annotations["{DRY_RUN_ANNOTATION}"]',
               "dry-run is not fully supported for CUSTOM action: the external authorizer is still called")
    for i, rule in enumerate(as_list(spec.get("rules"))):
        _check_rule(r, index_path("spec.rules", i), as_dict(rule))


def _check_uri(r: Report, path: str, uri: str) -> None:
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        r.error(path, f"invalid jwksUri {uri!r}: must be an http or https URL with a host")
        return
    try:
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        r.error(path, f"invalid jwksUri {uri!r}: bad port")


@register("RequestAuthentication")
def validate_request_authentication(cfg: Config, r: Report) -> None:
    spec = dict(cfg.spec)
    _check_target_refs(r, spec)
    check_labels(r, "spec.selector.matchLabels", as_dict(spec.get("selector")).get("matchLabels"))
    for i, rule in enumerate(as_list(spec.get("jwtRules"))):
        rp = index_path("spec.jwtRules", i)
        rule = as_dict(rule)
        if not as_str(rule.get("issuer")):
            r.error(key_path(rp, "issuer"), "issuer must be set")
        uri = as_str(rule.get("jwksUri"))
        if uri:
            _check_uri(r, key_path(rp, "jwksUri"), uri)
        for j, h in enumerate(as_list(rule.get("fromHeaders"))):
            name = as_str(as_dict(h).get("name"))
            hp = key_path(index_path(key_path(rp, "fromHeaders"), j), "name")
            if not name:
                r.error(hp, "location header name must be set")
            elif not _HEADER.match(name):
                r.error(hp, f"invalid header name {name!r}")
        for j, p in enumerate(as_list(rule.get("fromParams"))):
            if not as_str(p):
                r.error(index_path(key_path(rp, "fromParams"), j), "location query must be set")
        seen: set[str] = set()
        for j, oc in enumerate(as_list(rule.get("outputClaimToHeaders"))):
            op = index_path(key_path(rp, "outputClaimToHeaders"), j)
            oc = as_dict(oc)
            header, claim = as_str(oc.get("header")), as_str(oc.get("claim"))
            if not header or not _HEADER.match(header):
                r.error(key_path(op, "header"), f"invalid header name {header!r}")
            elif header.lower() in seen:
                r.error(key_path(op, "header"), f"duplicate header {header!r}")
            seen.add(header.lower())
            if not claim:
                r.error(key_path(op, "claim"), "claim must be set")
        out = as_str(rule.get("outputPayloadToHeader"))
        if out and not _HEADER.match(out):
            r.error(key_path(rp, "outputPayloadToHeader"), f"invalid header name {out!r}")
