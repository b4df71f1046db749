"""Gateway RDS (Istio's buildGatewayHTTPRouteConfig): for the Gateway servers behind one route name, the
VirtualServices bound to each gateway whose hosts intersect the server's hosts, one vhost per host with the
routes of every such VS merged in order (catch-alls last); ``tls.httpsRedirect`` servers require TLS.
Requests whose Host matches no vhost get 404 (there is no catch-all vhost on gateways).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from mizzen.config.model import Config
from mizzen.core import names
from mizzen.core.hosts import host_matches, is_wildcard
from mizzen.core.http_route import RouteContext, routes_for_virtual_service, sort_catch_all_last
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext

MAX_DIRECT_RESPONSE_BODY = 1024 * 1024
_HTTP_PROTOCOLS = {"HTTP", "HTTP2", "GRPC", "GRPC-WEB"}

Server = Mapping[str, Any]


def gateway_id(gw: Config) -> str:
    return f"{gw.namespace}/{gw.name}"


def _is_passthrough(server: Server) -> bool:
    mode = str((server.get("tls") or {}).get("mode") or "")
    return mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH")


def servers_for_route(proxy: Proxy, push: PushContext, route_name: str) -> list[tuple[Config, Server]]:
    """The (gateway, server) pairs whose HTTP(S) traffic this route name serves."""
    by_listen: list[tuple[Config, Server]] = []
    by_number: list[tuple[Config, Server]] = []
    for gw in push.gateways_for(proxy):
        for server in gw.spec.get("servers") or ():
            port = server.get("port") or {}
            number = int(port.get("number") or 0)
            listen = proxy.gateway_listen_port(number)
            proto = str(port.get("protocol") or "").upper()
            if route_name.startswith("https."):
                if proto != "HTTPS" or _is_passthrough(server):
                    continue
                port_name = str(port.get("name") or "")
                ids = (gateway_id(gw), f"{gw.name}.{gw.namespace}", gw.name)
                if any(names.gateway_route_config("HTTPS", p, port_name, g) == route_name
                       for p in (number, listen) for g in ids):
                    by_listen.append((gw, server))
            elif proto in _HTTP_PROTOCOLS:
                if names.gateway_route_config("HTTP", listen) == route_name:
                    by_listen.append((gw, server))
                elif names.gateway_route_config("HTTP", number) == route_name:
                    by_number.append((gw, server))
    return by_listen or by_number


def server_hosts_for(server: Server, gw: Config, vs_namespace: str) -> list[str]:
    """Server hosts a VS in ``vs_namespace`` may bind (``ns/host``, ``./host``, ``*/host`` or ``host``)."""
    out = []
    for h in server.get("hosts") or ():
        h = str(h)
        if "/" in h:
            ns, _, host = h.partition("/")
            if ns == "*" or ns == vs_namespace or (ns == "." and vs_namespace == gw.namespace):
                out.append(host)
        else:
            out.append(h)
    return out


def intersect_hosts(server_hosts: list[str], vs_hosts: tuple[str, ...] | list[str]) -> list[str]:
    """Hosts both sides cover, the more specific form of each matching pair (Istio's Names.Intersection)."""
    out: list[str] = []
    for sh in server_hosts:
        for vh in vs_hosts:
            if host_matches(sh, vh):
                cand = vh
            elif host_matches(vh, sh):
                cand = sh
            else:
                continue
            cand = cand.lower()
            if cand not in out:
                out.append(cand)
    return out


def gateway_domains(host: str) -> list[str]:
    """``host`` plus ``host:*`` (any port) for exact hosts; wildcards stay as they are."""
    return [host] if is_wildcard(host) else [host, f"{host}:*"]


def build_gateway_route_config(proxy: Proxy, push: PushContext,
                               route_name: str) -> route_pb2.RouteConfiguration:
    cfg = route_pb2.RouteConfiguration(name=route_name, ignore_port_in_host_matching=True)
    cfg.validate_clusters.value = False
    cfg.max_direct_response_body_size_bytes.value = MAX_DIRECT_RESPONSE_BODY
    servers = servers_for_route(proxy, push, route_name)
    if not servers:
        return cfg
    vhosts: dict[str, rc.VirtualHost] = {}
    cache: dict[tuple[str, str, str, int], list[rc.Route]] = {}
    for gw, server in servers:
        gw_name = gateway_id(gw)
        port = int((server.get("port") or {}).get("number") or 0)
        tls = server.get("tls")
        redirect = bool((tls or {}).get("httpsRedirect"))
        ctx = RouteContext(proxy, push, port, frozenset({gw_name}), is_tls=tls is not None)
        for vs in push.virtual_services_for(proxy, gw_name):
            hosts = intersect_hosts(server_hosts_for(server, gw, vs.config.namespace), vs.hosts)
            if not hosts:
                continue
            key = (gw_name, vs.config.namespace, vs.config.name, port)
            if key not in cache:
                cache[key] = routes_for_virtual_service(ctx, vs.config)
            routes = cache[key]
            if not routes:
                continue
            for h in hosts:
                vh = vhosts.get(h)
                if vh is None:
                    vh = rc.VirtualHost(name=names.virtual_host(h, port), domains=gateway_domains(h),
                                        include_request_attempt_count=True)
                    vhosts[h] = vh
                vh.routes.extend(routes)
                if redirect:
                    vh.require_tls = rc.VirtualHost.ALL
        if redirect:
            for h in server.get("hosts") or ():
                h = str(h).rpartition("/")[2].lower()
                if h in vhosts:
                    vhosts[h].require_tls = rc.VirtualHost.ALL
                else:
                    vhosts[h] = rc.VirtualHost(name=names.virtual_host(h, port), domains=gateway_domains(h),
                                               include_request_attempt_count=True,
                                               require_tls=rc.VirtualHost.ALL)
    if not vhosts:
        port = int((servers[0][1].get("port") or {}).get("number") or 0)
        cfg.virtual_hosts.append(rc.VirtualHost(name=names.virtual_host("blackhole", port), domains=["*"]))
        return cfg
    for vh in sorted(vhosts.values(), key=lambda v: v.name):
        ordered = sort_catch_all_last(vh.routes)
        del vh.routes[:]
        vh.routes.extend(ordered)
        cfg.virtual_hosts.append(vh)
    return cfg
