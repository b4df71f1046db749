"""One VirtualService -> the ordered Envoy routes for one listen port and gateway set (Istio's
BuildHTTPRoutesForVirtualService/translateRoute): one route per applicable match block, with its name,
metadata naming the VS (for ``proxy-config routes``), trace decorator, action and fault/cors config.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc

from mizzen.config.model import Config
from mizzen.core import delegate, http_action, http_filter_config, http_match, names
from mizzen.core.policy import consistent_hash_policy
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext

VS_CONFIG_PREFIX = "/apis/networking.istio.io/v1/namespaces"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouteContext:
    """Where routes are built: for which proxy, on which port, for which gateways ("mesh" on sidecars)."""

    proxy: Proxy
    push: PushContext
    listen_port: int
    gateway_names: frozenset[str]
    is_tls: bool = False


def config_path(vs: Config) -> str:
    return f"{VS_CONFIG_PREFIX}/{vs.namespace}/virtual-service/{vs.name}"


HashLookup = Callable[[str, str, int], list[Any]]


def hash_policy_lookup(proxy: Proxy, push: PushContext) -> HashLookup:
    """A (host, subset, port) -> hash policies function (DestinationRule consistentHash, core.policy)."""
    def lookup(host: str, subset: str, port: int) -> list[rc.RouteAction.HashPolicy]:
        return list(consistent_hash_policy(proxy, push, host, subset, port) or [])

    return lookup


def _operation(route: rc.Route, vs_name: str, port: int) -> str:
    m = route.match
    which = m.WhichOneof("path_specifier")
    path = "/*"
    if which == "prefix":
        path = m.prefix + "*"
    elif which == "path":
        path = m.path
    elif which == "safe_regex":
        path = m.safe_regex.regex
    if route.WhichOneof("action") == "route" and route.route.WhichOneof("cluster_specifier") == "cluster":
        parts = route.route.cluster.split("|")
        if len(parts) == 4 and parts[0] == "outbound":
            return f"{parts[3]}:{parts[1]}{path}"
    return f"{vs_name}:{port}{path}"


def http_rules(vs: Config, push: PushContext) -> list[Mapping[str, Any]]:
    """The VS's http rules with delegates inlined."""
    rules = list(vs.spec.get("http") or ())
    if any(r.get("delegate") for r in rules):
        rules = delegate.expand_delegates(
            rules, vs.namespace, lambda ns, name: push.configs.get("VirtualService", ns, name))
    return rules


def translate_rule(ctx: RouteContext, vs: Config, rule: Mapping[str, Any],
                   match: Mapping[str, Any] | None,
                   dest_ctx: http_action.DestinationContext) -> rc.Route | None:
    """One rule x one match block -> an Envoy route (None if it does not apply here or cannot be built; a
    malformed rule that slipped past validation is logged and skipped rather than failing the whole push)."""
    try:
        return _translate_rule(ctx, vs, rule, match, dest_ctx)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        log.warning("VirtualService %s/%s: skipping http rule %r: %s", vs.namespace, vs.name,
                    rule.get("name") or "", e)
        return None


def _translate_rule(ctx: RouteContext, vs: Config, rule: Mapping[str, Any],
                    match: Mapping[str, Any] | None,
                    dest_ctx: http_action.DestinationContext) -> rc.Route | None:
    if not http_match.port_applies(match, ctx.listen_port):
        return None
    if not http_match.source_matches(match, ctx.proxy.labels, ctx.proxy.namespace, ctx.gateway_names,
                                     vs.namespace):
        return None
    name = str(rule.get("name") or "")
    if match is not None and match.get("name"):
        name = f"{name}.{match['name']}"
    out = rc.Route(name=name, match=http_match.route_match(match))
    out.metadata.filter_metadata["istio"].update({"config": config_path(vs)})
    if match is not None and match.get("statPrefix"):
        out.stat_prefix = str(match["statPrefix"])
    authority = ""
    if rule.get("headers"):
        ops = http_action.header_ops(rule["headers"])
        http_action.apply_route_headers(out, ops)
        authority = ops.authority
    if rule.get("redirect"):
        http_action.apply_redirect(out, rule["redirect"], ctx.listen_port, ctx.is_tls)
    elif rule.get("directResponse"):
        http_action.apply_direct_response(out, rule["directResponse"])
    elif rule.get("route"):
        http_action.apply_route_destination(out, rule, dest_ctx, ctx.push.mesh, authority)
    else:
        return None
    out.decorator.operation = _operation(out, vs.name, ctx.listen_port)
    http_filter_config.apply_filter_configs(out, rule)
    return out


def routes_for_virtual_service(ctx: RouteContext, vs: Config) -> list[rc.Route]:
    """Every applicable rule x match block, in order, stopping after the first catch-all."""
    dest_ctx = http_action.DestinationContext(
        vs_namespace=vs.namespace, listen_port=ctx.listen_port, resolve_host=ctx.push.resolve_host,
        lookup_service=ctx.push.service, hash_policy=hash_policy_lookup(ctx.proxy, ctx.push))
    out: list[rc.Route] = []
    for rule in http_rules(vs, ctx.push):
        matches = list(rule.get("match") or ())
        catch_all = False
        if not matches:
            r = translate_rule(ctx, vs, rule, None, dest_ctx)
            if r is not None:
                out.append(r)
            catch_all = True
        else:
            for m in matches:
                r = translate_rule(ctx, vs, rule, m, dest_ctx)
                if r is not None:
                    out.append(r)
                    if http_match.is_catch_all(r):
                        catch_all = True
                        break
        if catch_all:
            break
    return out


def sort_catch_all_last(routes: Iterable[rc.Route]) -> list[rc.Route]:
    """Move catch-all routes after the others, keeping relative order (Istio's SortVHostRoutes)."""
    routes = list(routes)
    rest = [r for r in routes if not http_match.is_catch_all(r)]
    return rest + [r for r in routes if http_match.is_catch_all(r)]


def default_operation(host: str, port: int) -> str:
    return f"{host}:{port}/*"


def default_cluster(host: str, port: int) -> str:
    return names.outbound_cluster(port, "", host)
