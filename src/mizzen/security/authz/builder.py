"""A proxy's AuthorizationPolicies -> its RBAC and ext_authz filters, in Istio's order (``authz/builder``):
CUSTOM (an RBAC filter whose shadow rules mark matching requests, then ``ext_authz`` enabled by that mark),
AUDIT (RBAC action LOG: sets ``envoy.common``'s ``access_log_hint``), DENY, ALLOW. No ALLOW policy: no ALLOW
filter (everything allowed); an ALLOW policy without rules (``spec: {}``) adds a policy that never matches,
so the ALLOW filter denies everything. ``istio.io/dry-run: "true"`` policies go into the filter's shadow
rules (stat prefixes ``istio_dry_run_allow_`` / ``istio_dry_run_deny_``) and never enforce. Policy names
are Istio's ``ns[<ns>]-policy[<name>]-rule[<i>]``. Denied HTTP requests get Envoy's 403 ``RBAC: access
denied``; denied TCP connections are closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as tcp_rbac_pb2

from mizzen.config.model import Config
from mizzen.config.validation.security import dry_run
from mizzen.core.filters import pack
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext
from mizzen.security.authz import extauthz
from mizzen.security.authz.rules import HttpOnly, build_policy
from mizzen.security.authz.selection import Policies, authorization_policies

__all__ = ["HTTP_RBAC", "TCP_RBAC", "Built", "build"]

HTTP_RBAC = "envoy.filters.http.rbac"
TCP_RBAC = "envoy.filters.network.rbac"
HTTP_EXT_AUTHZ = "envoy.filters.http.ext_authz"
TCP_EXT_AUTHZ = "envoy.filters.network.ext_authz"
TCP_STAT_PREFIX = "tcp."
_SHADOW_PREFIX = {rbac_pb2.RBAC.ALLOW: "istio_dry_run_allow_", rbac_pb2.RBAC.DENY: "istio_dry_run_deny_"}

MATCH_NEVER = rbac_pb2.Policy(
    permissions=[rbac_pb2.Permission(not_rule=rbac_pb2.Permission(any=True))],
    principals=[rbac_pb2.Principal(not_id=rbac_pb2.Principal(any=True))])


def policy_name(cfg: Config, index: int, provider: str = "") -> str:
    prefix = f"{extauthz.EXT_AUTHZ_PREFIX}-{provider}-" if provider else ""
    return f"{prefix}ns[{cfg.namespace}]-policy[{cfg.name}]-rule[{index}]"


@dataclass
class _Rules:
    enforce: rbac_pb2.RBAC | None = None
    shadow: rbac_pb2.RBAC | None = None
    skipped: list[str] = field(default_factory=list)


def _rules(policies: Sequence[Config], action: int, tcp: bool, provider: str = "") -> _Rules:
    out = _Rules()
    allow = action == rbac_pb2.RBAC.ALLOW
    for cfg in policies:
        target = out.shadow if dry_run(cfg) else out.enforce
        if target is None:
            target = rbac_pb2.RBAC(action=action)
            if dry_run(cfg):
                out.shadow = target
            else:
                out.enforce = target
        rules = cfg.spec.get("rules")
        for i, rule in enumerate(rules or ()):
            name = policy_name(cfg, i, provider)
            try:
                built = build_policy(rule or {}, tcp=tcp, allow=allow, policy_ns=cfg.namespace)
            except (HttpOnly, ValueError) as e:
                out.skipped.append(f"{name}: {e}")
                continue
            target.policies[name].CopyFrom(built)
        if not rules:
            target.policies[policy_name(cfg, 0, provider)].CopyFrom(MATCH_NEVER)
    return out


def _http_rbac(r: _Rules) -> Any:
    cfg = http_rbac_pb2.RBAC()
    if r.enforce is not None:
        cfg.rules.CopyFrom(r.enforce)
    if r.shadow is not None:
        cfg.shadow_rules.CopyFrom(r.shadow)
        cfg.shadow_rules_stat_prefix = _SHADOW_PREFIX.get(r.shadow.action, "")
    return hcm_pb2.HttpFilter(name=HTTP_RBAC, typed_config=pack(cfg))


def _tcp_rbac(r: _Rules) -> Any:
    cfg = tcp_rbac_pb2.RBAC(stat_prefix=TCP_STAT_PREFIX)
    if r.enforce is not None:
        cfg.rules.CopyFrom(r.enforce)
    if r.shadow is not None:
        cfg.shadow_rules.CopyFrom(r.shadow)
        cfg.shadow_rules_stat_prefix = _SHADOW_PREFIX.get(r.shadow.action, "")
    return listener_components_pb2.Filter(name=TCP_RBAC, typed_config=pack(cfg))


def _bad_custom(r: _Rules) -> _Rules:
    """A CUSTOM policy whose provider cannot be used: deny what it matches (Istio's badCustomAction)."""
    deny = rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY)
    for src in (r.enforce, r.shadow):
        for k, v in (src.policies.items() if src is not None else ()):
            deny.policies[f"{k}-bad-custom-action"].CopyFrom(v)
    return _Rules(enforce=deny)


@dataclass(frozen=True)
class Built:
    """The authorization filters of one proxy, for HTTP and for TCP chains, plus what was skipped."""

    http: tuple[Any, ...] = ()
    tcp: tuple[Any, ...] = ()
    notes: tuple[str, ...] = ()


def _custom(push: PushContext, proxy: Proxy, custom: Sequence[Config], tcp: bool,
            notes: list[str]) -> list[Any]:
    out: list[Any] = []
    by_provider: dict[str, list[Config]] = {}
    for cfg in custom:
        by_provider.setdefault(str((cfg.spec.get("provider") or {}).get("name", "")), []).append(cfg)
    for provider in sorted(by_provider):
        r = _rules(by_provider[provider], rbac_pb2.RBAC.DENY, tcp, provider)
        notes.extend(r.skipped)
        try:
            p = extauthz.find(push, provider)
            authz = (extauthz.tcp_filter(push, p, proxy.namespace, TCP_RBAC) if tcp
                     else extauthz.http_filter(push, p, proxy.namespace, HTTP_RBAC))
        except extauthz.ProviderError as e:
            notes.append(f"CUSTOM provider {provider}: {e}; denying what its rules match")
            out.append(_tcp_rbac(_bad_custom(r)) if tcp else _http_rbac(_bad_custom(r)))
            continue
        if authz is None:
            notes.append(f"CUSTOM provider {provider} is HTTP only: ignored on TCP chains")
            continue
        # the RBAC filter never enforces here: its shadow result enables ext_authz. Dry-run CUSTOM policies
        # mark requests too (Istio's documented limitation: the authorizer is still called for them)
        shadow = rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY)
        for src in (r.enforce, r.shadow):
            for k, v in (src.policies.items() if src is not None else ()):
                shadow.policies[k].CopyFrom(v)
        marker = _Rules(shadow=shadow)
        if tcp:
            f = _tcp_rbac(marker)
            cfg = tcp_rbac_pb2.RBAC()
            f.typed_config.Unpack(cfg)
            cfg.shadow_rules_stat_prefix = extauthz.SHADOW_PREFIX
            f.typed_config.CopyFrom(pack(cfg))
            out += [f, listener_components_pb2.Filter(name=TCP_EXT_AUTHZ, typed_config=pack(authz))]
        else:
            f = _http_rbac(marker)
            hcfg = http_rbac_pb2.RBAC()
            f.typed_config.Unpack(hcfg)
            hcfg.shadow_rules_stat_prefix = extauthz.SHADOW_PREFIX
            f.typed_config.CopyFrom(pack(hcfg))
            out += [f, hcm_pb2.HttpFilter(name=HTTP_EXT_AUTHZ, typed_config=pack(authz))]
    return out


def _for(push: PushContext, proxy: Proxy, ps: Policies, tcp: bool, notes: list[str]) -> list[Any]:
    out = _custom(push, proxy, ps.custom, tcp, notes)
    for policies, action in ((ps.audit, rbac_pb2.RBAC.LOG), (ps.deny, rbac_pb2.RBAC.DENY),
                             (ps.allow, rbac_pb2.RBAC.ALLOW)):
        if not policies:
            continue
        r = _rules(policies, action, tcp)
        notes.extend(r.skipped)
        out.append(_tcp_rbac(r) if tcp else _http_rbac(r))
    return out


def build(push: PushContext, proxy: Proxy) -> Built:
    """The filters for ``proxy``, memoized per push for proxies alike (namespace + labels)."""
    key = ("authz", proxy.namespace, tuple(sorted(proxy.labels.items())))

    def make() -> Built:
        ps = authorization_policies(push, proxy)
        if ps.empty:
            return Built()
        notes: list[str] = []
        http = _for(push, proxy, ps, False, notes)
        tcp = _for(push, proxy, ps, True, notes)
        return Built(tuple(http), tuple(tcp), tuple(dict.fromkeys(notes)))

    return push.memoized(key, make)
