"""RDS: route configurations from VirtualServices — sidecar outbound per port ("9080"), the local-mode
``http_proxy`` config covering every HTTP service port, gateway configs (see core.gateway_routes) and the
sidecar inbound route (:func:`build_inbound_route`). Pure functions of (proxy, push); no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import duration_pb2

from mizzen.core import gateway_routes, http_action, sidecar_scope
from mizzen.core import names as istio_names
from mizzen.core.hosts import domains_for_service, host_matches, is_wildcard
from mizzen.core.http_route import (
    RouteContext,
    default_operation,
    hash_policy_lookup,
    routes_for_virtual_service,
)
from mizzen.core.mesh import OutboundPolicy
from mizzen.core.proxy import Proxy
from mizzen.core.proxy_keys import route_inputs
from mizzen.core.push_context import MESH_GATEWAY, PushContext, ResolvedVirtualService
from mizzen.registry.model import Protocol, Service

MAX_DIRECT_RESPONSE_BODY = 1024 * 1024
INBOUND_VHOST_PREFIX = "inbound|http|"

__all__ = ["MAX_DIRECT_RESPONSE_BODY", "build_inbound_route", "build_routes", "sidecar_virtual_hosts"]


def build_routes(proxy: Proxy, push: PushContext, names: list[str]) -> list[route_pb2.RouteConfiguration]:
    """One RouteConfiguration per requested name (unknown names get an empty config so Envoy is not left
    waiting)."""
    out = []
    for name in names:
        if proxy.is_gateway:
            out.append(gateway_routes.build_gateway_route_config(proxy, push, name))
        else:
            key = ("RDS", name, route_inputs(proxy, push))   # shared by proxies alike (see proxy_keys)
            out.append(push.memoized(key, partial(_sidecar_route_config, proxy, push, name)))
    return out


def build_inbound_route(proxy: Proxy, push: PushContext, port: int,
                        cluster_name: str) -> route_pb2.RouteConfiguration:
    """Istio's inbound HTTP route: one ``inbound|http|<port>`` vhost for every domain, straight to the inbound
    cluster, no timeout, gRPC timeouts ignored, retried only when reset before the request was sent."""
    r = rc.Route(name="default", match=rc.RouteMatch(prefix="/"))
    r.decorator.operation = f"{proxy.workload_name or cluster_name}:{port}/*"
    action = rc.RouteAction(cluster=cluster_name, timeout=duration_pb2.Duration())
    action.max_stream_duration.max_stream_duration.CopyFrom(duration_pb2.Duration())
    action.max_stream_duration.grpc_timeout_header_max.CopyFrom(duration_pb2.Duration())
    action.retry_policy.retry_on = "reset-before-request"
    action.retry_policy.num_retries.value = 2
    action.upgrade_configs.append(rc.RouteAction.UpgradeConfig(upgrade_type="websocket"))
    r.route.CopyFrom(action)
    vhost = rc.VirtualHost(name=f"{INBOUND_VHOST_PREFIX}{port}", domains=["*"], routes=[r])
    cfg = route_pb2.RouteConfiguration(name=cluster_name, virtual_hosts=[vhost])
    cfg.validate_clusters.value = False
    return cfg


# --- sidecar outbound ---
def _new_config(name: str) -> route_pb2.RouteConfiguration:
    cfg = route_pb2.RouteConfiguration(name=name)
    cfg.validate_clusters.value = False
    cfg.max_direct_response_body_size_bytes.value = MAX_DIRECT_RESPONSE_BODY
    return cfg


def _sidecar_route_config(proxy: Proxy, push: PushContext, name: str) -> route_pb2.RouteConfiguration:
    cfg = _new_config(name)
    if name == istio_names.HTTP_PROXY_ROUTE:
        vhosts = http_proxy_virtual_hosts(proxy, push)
    elif name.isdigit():
        vhosts = sidecar_virtual_hosts(proxy, push, int(name))
    elif ":" in name and name.rpartition(":")[2].isdigit():
        # Istio's sniffed-port form "host:port": only that service's vhost, matching any authority
        host, _, port = name.rpartition(":")
        vhosts = [v for v in sidecar_virtual_hosts(proxy, push, int(port))
                  if host in v.domains or name in v.domains]
        if len(vhosts) == 1:
            del vhosts[0].domains[:]
            vhosts[0].domains.append("*")
        cfg.virtual_hosts.extend(vhosts)
        return cfg
    else:
        return cfg
    cfg.virtual_hosts.extend(vhosts)
    cfg.virtual_hosts.append(catch_all_virtual_host(push, outbound_policy(proxy, push)))
    return cfg


def visible_services(proxy: Proxy, push: PushContext) -> list[Service]:
    """Services the proxy may reach: exported to its namespace and admitted by its Sidecar egress hosts."""
    return [s for s in push.registry.services if sidecar_scope.sidecar_allows(proxy, push, s)]


def outbound_policy(proxy: Proxy, push: PushContext) -> OutboundPolicy:
    """The Sidecar's outboundTrafficPolicy if it sets one, else the mesh's."""
    return sidecar_scope.outbound_policy(proxy, push)


def catch_all_virtual_host(push: PushContext, policy: OutboundPolicy | None = None) -> rc.VirtualHost:
    """``allow_any`` (to PassthroughCluster, no timeout) or ``block_all`` (502) per outbound policy."""
    if (policy or push.mesh.outbound_policy) is OutboundPolicy.REGISTRY_ONLY:
        r = rc.Route(name=istio_names.BLOCK_ALL_VHOST, match=rc.RouteMatch(prefix="/"),
                     direct_response=rc.DirectResponseAction(status=502))
        return rc.VirtualHost(name=istio_names.BLOCK_ALL_VHOST, domains=["*"], routes=[r],
                              include_request_attempt_count=True)
    action = rc.RouteAction(cluster=istio_names.PASSTHROUGH_CLUSTER, timeout=duration_pb2.Duration())
    action.max_stream_duration.grpc_timeout_header_max.CopyFrom(duration_pb2.Duration())
    action.upgrade_configs.append(rc.RouteAction.UpgradeConfig(upgrade_type="websocket"))
    r = rc.Route(name=istio_names.ALLOW_ANY_VHOST, match=rc.RouteMatch(prefix="/"), route=action)
    return rc.VirtualHost(name=istio_names.ALLOW_ANY_VHOST, domains=["*"], routes=[r],
                          include_request_attempt_count=True)


def _http_port(svc: Service, port: int) -> bool:
    p = svc.port(port)
    return p is not None and (p.protocol.is_http or p.protocol is Protocol.UNSUPPORTED)


@dataclass
class _Claim:
    vs: ResolvedVirtualService
    services: list[Service]
    extra_hosts: list[str]          # VS hosts that are not registry services


def _claims(proxy: Proxy, push: PushContext, port: int, services: list[Service]) -> list[_Claim]:
    """Which VS (oldest first) owns each service on this port: an exact host match wins, else the most
    specific matching wildcard host; hosts that are not services become extra vhosts on the VS's ports
    (or port 80)."""
    vss = [vs for vs in push.virtual_services_for(proxy, MESH_GATEWAY)
           if vs.hosts and sidecar_scope.imports_virtual_service(proxy, push, vs)]
    exact: dict[str, int] = {}                  # host -> the first VS naming it exactly
    wild: list[tuple[int, str]] = []            # (VS index, wildcard host), in VS order
    for i, vs in enumerate(vss):
        for h in vs.hosts:
            if is_wildcard(h):
                wild.append((i, h))
            else:
                exact.setdefault(h, i)
    by_owner: dict[int, list[Service]] = {}
    for svc in services:
        best = exact.get(svc.hostname, -1)
        if best < 0:
            best_len = -1
            for i, h in wild:   # the most specific wildcard; the first VS among equals
                if len(h) > best_len and host_matches(h, svc.hostname):
                    best, best_len = i, len(h)
        if best >= 0:
            by_owner.setdefault(best, []).append(svc)
    all_visible = visible_services(proxy, push)
    out = []
    for i, vs in enumerate(vss):
        svcs = by_owner.get(i, [])
        extra = []
        for h in vs.hosts:
            if is_wildcard(h):
                if not any(host_matches(h, s.hostname) for s in all_visible):
                    extra.append(h)
            elif push.service(h) is None:
                extra.append(h)
        if svcs or (extra and port == 80):
            out.append(_Claim(vs, svcs, extra))
    return out


def _service_domains(proxy: Proxy, push: PushContext, svc: Service, port: int) -> list[str]:
    domains = domains_for_service(svc.hostname, port, proxy.namespace, svc.namespace, push.mesh.domain_suffix)
    for addr in svc.addresses:
        if addr and addr != "0.0.0.0":
            domains += [addr, f"{addr}:{port}"]
    return domains


def sidecar_virtual_hosts(proxy: Proxy, push: PushContext, port: int) -> list[rc.VirtualHost]:
    """The outbound vhosts for one port (without the catch-all), sorted by name, domains unique."""
    services = [s for s in visible_services(proxy, push) if _http_port(s, port)]
    ctx = RouteContext(proxy, push, port, frozenset({MESH_GATEWAY}))
    built: list[tuple[str, list[str], list[rc.Route]]] = []
    routed: set[str] = set()
    for claim in _claims(proxy, push, port, services):
        routes = routes_for_virtual_service(ctx, claim.vs.config)
        if not routes:
            continue  # no rule applies to this proxy: the services keep their default route
        for h in claim.extra_hosts:
            built.append((istio_names.virtual_host(h, port), [h, f"{h}:{port}"], routes))
        for svc in claim.services:
            routed.add(svc.hostname)
            domains = _service_domains(proxy, push, svc, port)
            built.append((istio_names.virtual_host(svc.hostname, port), domains, routes))
    hash_lookup = hash_policy_lookup(proxy, push)
    for svc in services:
        if svc.hostname in routed:
            continue
        cluster = istio_names.outbound_cluster(port, "", svc.hostname)
        route = http_action.default_route(cluster, default_operation(svc.hostname, port), push.mesh,
                                          hash_lookup(svc.hostname, "", port))
        domains = _service_domains(proxy, push, svc, port)
        built.append((istio_names.virtual_host(svc.hostname, port), domains, [route]))
    return _dedupe(built)


def _dedupe(built: list[tuple[str, list[str], list[rc.Route]]],
            seen_domains: set[str] | None = None) -> list[rc.VirtualHost]:
    seen_names: set[str] = set()
    seen = seen_domains if seen_domains is not None else set()
    out = []
    for name, domains, routes in built:
        if name in seen_names:
            continue
        seen_names.add(name)
        uniq = []
        for d in domains:
            if d.lower() in seen:
                continue
            seen.add(d.lower())
            uniq.append(d)
        if uniq:
            out.append(rc.VirtualHost(name=name, domains=uniq, routes=routes,
                                      include_request_attempt_count=True))
    out.sort(key=lambda v: v.name)
    return out


def http_proxy_virtual_hosts(proxy: Proxy, push: PushContext) -> list[rc.VirtualHost]:
    """Every HTTP service port visible to the proxy in one config; domains always carry ``:port`` except on
    port 80, which also keeps the bare host forms (a client's Host header omits :80)."""
    ports = {80}
    for svc in visible_services(proxy, push):
        ports.update(p.port for p in svc.ports if _http_port(svc, p.port))
    out: list[rc.VirtualHost] = []
    seen: set[str] = set()
    for port in sorted(ports, key=lambda p: (p != 80, p)):
        vhosts = sidecar_virtual_hosts(proxy, push, port)
        for v in vhosts:
            keep = [d for d in v.domains if port == 80 or ":" in d]
            del v.domains[:]
            v.domains.extend(keep)
        built = [(v.name, list(v.domains), list(v.routes)) for v in vhosts]
        out.extend(_dedupe(built, seen))
    out.sort(key=lambda v: v.name)
    return out
