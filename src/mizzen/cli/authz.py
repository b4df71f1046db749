"""``mizzen x authz check POD`` (istioctl x authz check): the AuthorizationPolicies that apply to a workload
and how many of their rules its proxy got, read from the listeners (LDS) the control plane sent it: every
RBAC filter's policies ``ns[<ns>]-policy[<name>]-rule[<i>]`` by action (ALLOW, DENY, AUDIT, CUSTOM; dry-run
policies marked), plus whether the proxy validates JWTs (RequestAuthentication). :func:`authz_table` is pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import typer

from mizzen.cli import proxy_tables as pt
from mizzen.cli.common import api_call, client
from mizzen.cli.proxy import ProxyArg, ProxyNamespace, resolve

__all__ = ["app", "authz_table"]

app = typer.Typer(help="Inspect the authorization policies a proxy enforces.", no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]})

_NAME = re.compile(r"^(?:istio-ext-authz-(?P<provider>.+?)-)?ns\[(?P<ns>[^\]]*)\]-policy\[(?P<name>[^\]]*)\]"
                   r"-rule\[(?P<rule>\d+)\]")
_ACTIONS = {"ALLOW": "ALLOW", "DENY": "DENY", "LOG": "AUDIT", None: "ALLOW"}


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _rows_of(rbac: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(action, policy, rule) of one RBAC filter config."""
    custom = str(rbac.get("shadowRulesStatPrefix", "")) == "istio_ext_authz_"
    for key, dry in (("rules", False), ("shadowRules", True)):
        rules = rbac.get(key)
        if not isinstance(rules, dict):
            continue
        action = _ACTIONS.get(rules.get("action"), str(rules.get("action")))
        for name in rules.get("policies") or {}:
            m = _NAME.match(str(name))
            if m is None:
                continue
            if custom or m.group("provider"):
                act = f"CUSTOM ({m.group('provider') or '?'})"
                if "bad-custom-action" in str(name):
                    act += " unknown provider: DENY"
            else:
                act = action + (" (dry-run)" if dry else "")
            yield act, f"{m.group('name')}.{m.group('ns')}", m.group("rule")


def authz_table(listeners: list[dict[str, Any]]) -> str:
    """ACTION, AuthorizationPolicy (name.namespace) and RULES, as istioctl x authz check prints them."""
    rules: dict[tuple[str, str], set[str]] = {}
    jwt = False
    for node in _walk(listeners):
        t = str(node.get("@type", ""))
        if t.endswith("rbac.v3.RBAC"):
            for act, policy, rule in _rows_of(node):
                rules.setdefault((act, policy), set()).add(rule)
        elif t.endswith("jwt_authn.v3.JwtAuthentication"):
            jwt = True
    order = {"CUSTOM": 0, "AUDIT": 1, "DENY": 2, "ALLOW": 3}
    rows = sorted(rules.items(), key=lambda kv: (order.get(kv[0][0].split()[0], 9), kv[0][1], kv[0][0]))
    header = ("ACTION", "AuthorizationPolicy", "RULES")
    body = [(a, p, str(len(r))) for (a, p), r in rows]
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(3)]
    lines = ["   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *body]]
    if not body:
        lines.append("(no AuthorizationPolicy applies: every request is allowed)")
    if jwt:
        lines.append("JWT: validated (RequestAuthentication); requests with an invalid token get 401")
    return "\n".join(lines)


@app.command("check")
def check(
    ctx: typer.Context,
    proxy: ProxyArg,
    namespace: ProxyNamespace = None,
) -> None:
    """The AuthorizationPolicies applied to a pod's proxy and their rule counts (from its LDS)."""
    c = client(ctx)
    with api_call(c, "Fetching proxy configuration..."):
        pid = resolve(proxy, c.syncz(), namespace)
        dump = c.config_dump(pid)
    items = [i for i in dump.get("LDS") or [] if isinstance(i, dict)]
    typer.echo(f"Checked {len(items)} listeners of {pt.proxy_name(pid)}.")
    typer.echo(authz_table(items))
