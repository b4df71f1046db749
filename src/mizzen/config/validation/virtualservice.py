"""VirtualService semantic checks as Istio's ValidateVirtualService does them: hosts (wildcards, ``*`` only
for gateways, duplicates), delegate rules, gateway names, HTTP routes (:mod:`.httproute`), TLS routes
(SNI hosts that are subsets of the hosts), TCP routes, exportTo, and unreachable-rule warnings.
"""

from __future__ import annotations

import json
from typing import Any

from mizzen.config.model import Config
from mizzen.config.validation.common import (
    Report,
    as_dict,
    as_int,
    as_list,
    check_export_to,
    check_ip_subnet,
    check_labels,
    check_port,
    check_wildcard_domain,
    coded,
    index_path,
    is_ip,
    key_path,
    register,
)
from mizzen.config.validation.envoy_limits import sni_error
from mizzen.config.validation.httproute import (
    JWT_CLAIM_PREFIX,
    check_destination,
    check_gateway_names,
    check_http_route,
)


def _covers(pattern: str, host: str) -> bool:
    """Istio's host.Name.SubsetOf(pattern) for one pair."""
    if pattern == "*" or pattern == host:
        return True
    if pattern.startswith("*"):
        suffix = pattern[1:]
        return (host[1:] if host.startswith("*") else host).endswith(suffix)
    return False


def _check_hosts(r: Report, spec: dict[str, Any], applies_to_gateway: bool, applies_to_mesh: bool) -> None:
    hosts = [str(h) for h in as_list(spec.get("hosts"))]
    all_valid = True
    for i, h in enumerate(hosts):
        hp = index_path("spec.hosts", i)
        err = None if applies_to_gateway and h == "*" else check_wildcard_domain(h)
        if err and not is_ip(h):
            r.error(hp, err)
            all_valid = False
        elif applies_to_mesh and h == "*":
            r.error(hp, "wildcard host * is not allowed for virtual services bound to the mesh gateway")
            all_valid = False
    if all_valid:
        for i, a in enumerate(hosts):
            for j in range(i + 1, len(hosts)):
                b = hosts[j]
                if _covers(a, b) or _covers(b, a):
                    r.error(index_path("spec.hosts", j), f"duplicate hosts in virtual service: {a} & {b}")


def _check_l4_match(r: Report, path: str, match: dict[str, Any]) -> None:
    for i, subnet in enumerate(as_list(match.get("destinationSubnets"))):
        err = check_ip_subnet(str(subnet))
        if err:
            r.error(index_path(key_path(path, "destinationSubnets"), i), err)
    if as_int(match.get("port")) != 0:
        check_port(r, key_path(path, "port"), match.get("port"))
    check_labels(r, key_path(path, "sourceLabels"), match.get("sourceLabels"))
    check_gateway_names(r, key_path(path, "gateways"), match.get("gateways"))


def _check_l4_destinations(r: Report, path: str, routes: list[Any]) -> None:
    total = 0
    for j, rd in enumerate(routes):
        rp = index_path(path, j)
        check_destination(r, key_path(rp, "destination"), as_dict(rd).get("destination"))
        w = as_int(as_dict(rd).get("weight"))
        if not 0 <= w <= 100:
            r.error(key_path(rp, "weight"), "must be 0..100")
        total += w
    if len(routes) > 1 and total == 0:
        r.error(path, "total destination weight = 0")


def _check_tls_route(r: Report, path: str, tls: dict[str, Any], hosts: list[str], gateway: bool) -> None:
    matches = as_list(tls.get("match"))
    if not matches:
        r.error(path, "TLS route must have at least one match condition")
    for j, m in enumerate(matches):
        mp = index_path(key_path(path, "match"), j)
        match = as_dict(m)
        snis = [str(s) for s in as_list(match.get("sniHosts"))]
        if not snis:
            r.error(mp, "TLS match must have at least one SNI host")
        for k, sni in enumerate(snis):
            sp = index_path(key_path(mp, "sniHosts"), k)
            err = None if gateway and sni == "*" else check_wildcard_domain(sni)
            if err:
                if is_ip(sni):
                    r.warn(sp, f'using an IP address ("{sni}") goes against SNI spec and most clients do not '
                               "support this")
                else:
                    r.error(sp, err)
                continue
            env_err = sni_error(sni)
            if env_err:
                r.error(sp, env_err)
                continue
            if not any(_covers(h, sni) for h in hosts):
                r.error(sp, f'SNI host "{sni}" is not a compatible subset of any of the virtual service '
                            'hosts: '
                            f"[{', '.join(hosts)}]")
        _check_l4_match(r, mp, match)
    routes = as_list(tls.get("route"))
    if not routes:
        r.error(path, "TLS route is required")
    _check_l4_destinations(r, key_path(path, "route"), routes)


def _check_tcp_route(r: Report, path: str, tcp: dict[str, Any]) -> None:
    for j, m in enumerate(as_list(tcp.get("match"))):
        _check_l4_match(r, index_path(key_path(path, "match"), j), as_dict(m))
    routes = as_list(tcp.get("route"))
    if not routes:
        r.error(path, "TCP route is required")
    _check_l4_destinations(r, key_path(path, "route"), routes)


def _match_key(match: Any) -> str:
    m = {k: v for k, v in as_dict(match).items() if k != "name"}
    return json.dumps(m, sort_keys=True)


def _rule_name(rule: Any, i: int) -> str:
    """Istio's routeName/requestName: the quoted name if set, else ``#N``."""
    name = as_dict(rule).get("name")
    return json.dumps(name) if isinstance(name, str) and name else f"#{i}"


def _warn_unreachable(r: Report, section: str, routes: list[Any]) -> None:
    """Istio's analyzeUnreachable*Rules: a rule after a match-all rule, or whose matches all repeat earlier
    ones (IST0130 VirtualServiceUnreachableRule), and a match repeating an earlier one (IST0131
    VirtualServiceIneffectiveMatch)."""
    seen: dict[str, int] = {}
    catch_all = -1
    for i, route in enumerate(routes):
        rp = index_path(section, i)
        matches = as_list(as_dict(route).get("match"))
        if not matches:
            if catch_all >= 0:
                r.warn(rp, coded("IST0130", f"VirtualService rule {_rule_name(route, i)} not used (only the "
                                            "last rule can have no matches)."))
            catch_all = i
            continue
        dups = 0
        for j, m in enumerate(matches):
            key = _match_key(m)
            if key in seen:
                dup = _rule_name(routes[seen[key]], seen[key])
                r.warn(index_path(key_path(rp, "match"), j), coded(
                    "IST0131", f"VirtualService rule {_rule_name(route, i)} match {_rule_name(m, j)} is not "
                               f"used (duplicate/overlapping match in rule {dup})."))
                dups += 1
            else:
                seen[key] = i
        if dups == len(matches):
            r.warn(rp, coded("IST0130", f"VirtualService rule {_rule_name(route, i)} not used (all matches "
                                        "used by prior rules)."))


def _check_no_jwt_claim_routes(r: Report, spec: dict[str, Any], gateways: list[str]) -> None:
    for i, route in enumerate(as_list(spec.get("http"))):
        for j, m in enumerate(as_list(as_dict(route).get("match"))):
            mp = index_path(key_path(index_path("spec.http", i), "match"), j)
            for group in ("headers", "withoutHeaders"):
                for key in as_dict(as_dict(m).get(group)):
                    if key.startswith(JWT_CLAIM_PREFIX):
                        r.error(key_path(key_path(mp, group), key),
                                f"JWT claim based routing (key: {key}) is only supported for gateway, "
                                f"found no gateways: {gateways}")


@register("VirtualService")
def validate_virtual_service(cfg: Config, r: Report) -> None:
    spec = dict(cfg.spec)
    hosts = [str(h) for h in as_list(spec.get("hosts"))]
    gateways = [str(g) for g in as_list(spec.get("gateways"))]
    delegate = not hosts
    if delegate:
        if gateways:
            r.error("spec.gateways", "delegate virtual service must have no gateways specified")
        if as_list(spec.get("tls")):
            r.error("spec.tls", "delegate virtual service must have no tls route specified")
        if as_list(spec.get("tcp")):
            r.error("spec.tcp", "delegate virtual service must have no tcp route specified")
    applies_to_gateway = bool(gateways) and "mesh" not in gateways
    applies_to_mesh = not applies_to_gateway
    if gateways:
        check_gateway_names(r, "spec.gateways", gateways)
    if not applies_to_gateway:
        _check_no_jwt_claim_routes(r, spec, gateways)
    _check_hosts(r, spec, applies_to_gateway, applies_to_mesh)
    http, tls, tcp = as_list(spec.get("http")), as_list(spec.get("tls")), as_list(spec.get("tcp"))
    if not http and not tls and not tcp:
        r.error("spec", "http, tcp or tls must be provided in virtual service")
    for i, route in enumerate(http):
        if route is None:
            r.error(index_path("spec.http", i), "http route may not be null")
            continue
        check_http_route(r, index_path("spec.http", i), as_dict(route), in_delegate=delegate)
    for i, route in enumerate(tls):
        _check_tls_route(r, index_path("spec.tls", i), as_dict(route), hosts, applies_to_gateway)
    for i, route in enumerate(tcp):
        _check_tcp_route(r, index_path("spec.tcp", i), as_dict(route))
    check_export_to(r, "spec.exportTo", cfg.namespace, spec.get("exportTo"), service_entry=False)
    _warn_unreachable(r, "spec.http", http)
    _warn_unreachable(r, "spec.tcp", tcp)
    _warn_unreachable(r, "spec.tls", tls)
