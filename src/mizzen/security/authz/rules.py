"""One AuthorizationPolicy rule -> one Envoy RBAC ``Policy`` (Istio's ``pilot/pkg/security/authz/model``).

A rule's ``from`` entries are OR-ed principals, its ``to`` entries OR-ed permissions; inside one entry every
field is AND-ed; a field's values are OR-ed and its ``not*`` values become ``not(or(...))``. ``when``
conditions join every principal (source, remote, request attributes) or every permission (destination,
SNI, Envoy metadata). A rule without ``from``/``to`` matches any principal/permission.

HTTP-only fields (methods, paths, hosts, request principals, headers, JWT claims) on a TCP chain: for ALLOW
the whole rule is dropped (the policy allows less), for DENY and AUDIT only that field is dropped (the rule
denies more), exactly as Istio does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import address_pb2, extension_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2
from google.protobuf import wrappers_pb2

from mizzen.core.filters import pack
from mizzen.security.authz import matchers as m

__all__ = ["HttpOnly", "build_policy", "cidr", "rule_keys"]

Permission = rbac_pb2.Permission
Principal = rbac_pb2.Principal
SPIFFE = "spiffe://"


class HttpOnly(Exception):
    """A field that only HTTP chains can evaluate, met on a TCP chain."""


def cidr(value: str) -> address_pb2.CidrRange:
    net = ipaddress.ip_network(value, strict=False)
    return address_pb2.CidrRange(address_prefix=str(net.network_address), prefix_len=wrappers_pb2.UInt32Value(
        value=net.prefixlen if "/" in value else net.max_prefixlen))


# --- generators: one value -> one permission or principal ---------------------------------------------------
def _http_only(key: str, tcp: bool) -> None:
    if tcp:
        raise HttpOnly(f"{key!r} is HTTP only")


def _path_permission(value: str) -> Any:
    if "{" in value:
        tmpl = value.replace("{**}", "**").replace("{*}", "*")
        return Permission(uri_template=extension_pb2.TypedExtensionConfig(
            name="uri-template-match",
            typed_config=pack(uri_template_match_pb2.UriTemplateMatchConfig(path_template=tmpl))))
    return Permission(url_path=m.path_matcher(value))


def _principal_name(value: str) -> Any:
    return Principal(authenticated=Principal.Authenticated(
        principal_name=m.string_matcher(value, prefix=SPIFFE)))


def _service_account(default_ns: str) -> Callable[[str], Any]:
    def gen(value: str) -> Any:
        ns, sep, sa = value.partition("/")
        if not sep:
            ns, sa = default_ns, value
        return Principal(authenticated=Principal.Authenticated(
            principal_name=m.regex(f"spiffe://.+/ns/{ns}/(.+/|)sa/{sa}(/.+)?")))
    return gen


def _trust_domain(value: str) -> Any:
    if value == "*":
        pattern = "spiffe://.+"
    else:
        pattern = "spiffe://" + value.replace(".", r"\.").replace("*", ".*") + "/.*"
    return Principal(authenticated=Principal.Authenticated(principal_name=m.regex(pattern)))


def _request_principal(value: str) -> Any:
    """``iss/sub`` split at the last ``/`` (issuers may be URLs); ``*`` forms as Istio's generator."""
    idx = value.rfind("/")
    found = idx >= 0
    iss, sub = (value[:idx], value[idx + 1:]) if found else (value, "")
    any_ = m.regex(".+")
    if value == "*":
        mi, ms = any_, any_
    elif value.startswith("*"):
        if found:
            mi = any_ if iss == "*" else m.string_matcher("*" + iss[1:])
            ms = string_pb2.StringMatcher(exact=sub)
        else:
            mi, ms = any_, m.string_matcher(value)
    elif value.endswith("*"):
        if found:
            mi = string_pb2.StringMatcher(exact=iss)
            ms = any_ if sub == "*" else m.string_matcher(sub)
        else:
            mi, ms = m.string_matcher(value), any_
    else:
        mi, ms = string_pb2.StringMatcher(exact=iss), string_pb2.StringMatcher(exact=sub)
    return Principal(and_ids=Principal.Set(ids=[
        Principal(metadata=m.metadata_string(m.JWT_FILTER, (m.JWT_PAYLOAD, "iss"), mi)),
        Principal(metadata=m.metadata_string(m.JWT_FILTER, (m.JWT_PAYLOAD, "sub"), ms)),
    ]))


def _envoy_filter(key: str, value: str) -> Any:
    filt, _, rest = key.removeprefix("experimental.").removesuffix("]").partition("[")
    if value.startswith("[") and value.endswith("]"):
        return Permission(metadata=metadata_pb2.MetadataMatcher(
            filter=filt, path=[metadata_pb2.MetadataMatcher.PathSegment(key=rest)],
            value=value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(
                one_of=value_pb2.ValueMatcher(string_match=m.string_matcher(value[1:-1]))))))
    return Permission(metadata=m.metadata_string(filt, (rest,), m.string_matcher(value)))


def _bracketed(rest: str) -> list[str]:
    return [p.rstrip("]") for p in rest.split("[")[1:]]


# --- fields -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """One condition: its key, values and not-values, and whether it is a principal (else a permission)."""

    key: str
    values: tuple[str, ...]
    not_values: tuple[str, ...]
    principal: bool


def _one(f: Field, value: str, tcp: bool, policy_ns: str) -> Any:
    """One value of one field -> a Permission or Principal (raises HttpOnly on a TCP chain)."""
    k = f.key
    if k == "hosts":
        _http_only(k, tcp)
        return Permission(header=m.host_matcher(value))
    if k == "methods":
        _http_only(k, tcp)
        return Permission(header=m.header_matcher(":method", value))
    if k == "paths":
        _http_only(k, tcp)
        return _path_permission(value)
    if k in ("ports", "destination.port"):
        return Permission(destination_port=int(value))
    if k == "destination.ip":
        return Permission(destination_ip=cidr(value))
    if k == "connection.sni":
        return Permission(requested_server_name=m.string_matcher(value))
    if k.startswith("experimental.envoy.filters."):
        return _envoy_filter(k, value)
    if k in ("principals", "source.principal"):
        return _principal_name(value)
    if k in ("serviceAccounts", "source.serviceAccount"):
        return _service_account(policy_ns)(value)
    if k in ("trustDomains", "source.trustDomain"):
        return _trust_domain(value)
    if k in ("namespaces", "source.namespace"):
        return Principal(authenticated=Principal.Authenticated(
            principal_name=m.regex(m.namespace_regex(value))))
    if k in ("ipBlocks", "source.ip"):
        return Principal(direct_remote_ip=cidr(value))
    if k in ("remoteIpBlocks", "remote.ip"):
        return Principal(remote_ip=cidr(value))
    if k in ("requestPrincipals", "request.auth.principal"):
        _http_only(k, tcp)
        return _request_principal(value)
    if k.startswith("request.headers["):
        _http_only(k, tcp)
        return Principal(header=m.header_matcher(_bracketed(k[len("request.headers"):])[0], value))
    raise ValueError(f"unknown attribute {k}")


_CLAIMS = {"request.auth.audiences": ["aud"], "request.auth.presenter": ["azp"]}


def _extended(f: Field, values: Sequence[str], tcp: bool) -> Any:
    """Keys Istio matches with all values at once (JWT claims)."""
    claims = _CLAIMS.get(f.key)
    if claims is None and f.key.startswith("request.auth.claims["):
        claims = _bracketed(f.key[len("request.auth.claims"):])
    if claims is None:
        return None
    _http_only(f.key, tcp)
    return Principal(metadata=m.claim_matcher(claims, values))


def _or(items: list[Any], principal: bool) -> Any:
    if principal:
        return items[0] if len(items) == 1 else Principal(or_ids=Principal.Set(ids=items))
    return items[0] if len(items) == 1 else Permission(or_rules=Permission.Set(rules=items))


def _field_conditions(f: Field, tcp: bool, allow: bool, policy_ns: str) -> list[Any]:
    """``or(values)`` and ``not(or(notValues))`` for one field; HttpOnly/ValueError propagate for ALLOW and
    drop the offending value for DENY/AUDIT (Istio's checkError)."""
    out: list[Any] = []
    for values, negate in ((f.values, False), (f.not_values, True)):
        if not values:
            continue
        items: list[Any] = []
        try:
            ext = _extended(f, values, tcp)
            if ext is not None:
                items.append(ext)
            else:
                for v in values:
                    try:
                        items.append(_one(f, v, tcp, policy_ns))
                    except (HttpOnly, ValueError):
                        if allow:
                            raise
        except HttpOnly:
            if allow:
                raise
        if not items:
            continue
        cond = _or(items, f.principal)
        if negate:
            cond = Principal(not_id=cond) if f.principal else Permission(not_rule=cond)
        out.append(cond)
    return out


_SOURCE_FIELDS = (("principals", "notPrincipals"), ("serviceAccounts", "notServiceAccounts"),
                  ("trustDomains", "notTrustDomains"), ("requestPrincipals", "notRequestPrincipals"),
                  ("namespaces", "notNamespaces"), ("remoteIpBlocks", "notRemoteIpBlocks"),
                  ("ipBlocks", "notIpBlocks"))
_OPERATION_FIELDS = (("hosts", "notHosts"), ("methods", "notMethods"), ("paths", "notPaths"),
                     ("ports", "notPorts"))
_PERMISSION_WHEN = ("destination.ip", "destination.port", "connection.sni")


def _strs(v: Any) -> tuple[str, ...]:
    return tuple(str(x) for x in v) if isinstance(v, list) else ()


def _when_fields(rule: Mapping[str, Any]) -> tuple[list[Field], list[Field]]:
    principals: list[Field] = []
    permissions: list[Field] = []
    for w in rule.get("when") or ():
        key = str(w.get("key", ""))
        f = Field(key, _strs(w.get("values")), _strs(w.get("notValues")),
                  principal=not (key in _PERMISSION_WHEN or key.startswith("experimental.envoy.filters.")))
        (principals if f.principal else permissions).append(f)
    return principals, permissions


def rule_keys(rule: Mapping[str, Any]) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(key, values, notValues) of every condition of a rule, for display (``x authz check``)."""
    out = []
    for fr in rule.get("from") or ():
        src = fr.get("source") or {}
        for pos, neg in _SOURCE_FIELDS:
            if src.get(pos) or src.get(neg):
                out.append((f"from.{pos}", _strs(src.get(pos)), _strs(src.get(neg))))
    for to in rule.get("to") or ():
        op = to.get("operation") or {}
        for pos, neg in _OPERATION_FIELDS:
            if op.get(pos) or op.get(neg):
                out.append((f"to.{pos}", _strs(op.get(pos)), _strs(op.get(neg))))
    for w in rule.get("when") or ():
        out.append((f"when.{w.get('key')}", _strs(w.get("values")), _strs(w.get("notValues"))))
    return out


def build_policy(rule: Mapping[str, Any], *, tcp: bool, allow: bool, policy_ns: str) -> rbac_pb2.Policy:
    """The RBAC policy of one rule. Raises HttpOnly (ALLOW rule on a TCP chain using an HTTP-only field) or
    ValueError (a value Envoy cannot take): the caller skips the rule."""
    when_principals, when_permissions = _when_fields(rule)

    def conds(fields: Sequence[Field]) -> list[Any]:
        out: list[Any] = []
        for f in fields:
            out.extend(_field_conditions(f, tcp, allow, policy_ns))
        return out

    principals: list[Any] = []
    for fr in rule.get("from") or ():
        src = fr.get("source") or {}
        fields = [Field(pos, _strs(src.get(pos)), _strs(src.get(neg)), True)
                  for pos, neg in _SOURCE_FIELDS if src.get(pos) or src.get(neg)]
        ids = conds([*fields, *when_principals]) or [Principal(any=True)]
        principals.append(Principal(and_ids=Principal.Set(ids=ids)))
    if not rule.get("from"):
        ids = conds(when_principals) or [Principal(any=True)]
        principals.append(Principal(and_ids=Principal.Set(ids=ids)))
    permissions: list[Any] = []
    for to in rule.get("to") or ():
        op = to.get("operation") or {}
        fields = [Field(pos, _strs(op.get(pos)), _strs(op.get(neg)), False)
                  for pos, neg in _OPERATION_FIELDS if op.get(pos) or op.get(neg)]
        rules = conds([*fields, *when_permissions]) or [Permission(any=True)]
        permissions.append(Permission(and_rules=Permission.Set(rules=rules)))
    if not rule.get("to"):
        rules = conds(when_permissions) or [Permission(any=True)]
        permissions.append(Permission(and_rules=Permission.Set(rules=rules)))
    return rbac_pb2.Policy(permissions=permissions, principals=principals)
