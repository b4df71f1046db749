"""LDS for sidecars: inbound listeners per workload port, the outbound HTTP proxy listener and Sidecar egress
listeners (local mode, ``interception_mode`` NONE), or Istio's iptables layout (REDIRECT: virtualOutbound
15001, per-port outbound listeners, virtualInbound 15006). Gateways are delegated to
:mod:`mizzen.core.gateway_listeners`. Pure functions of (proxy, push).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import wrappers_pb2

from mizzen.config import kinds
from mizzen.config.labels import selects
from mizzen.core import filters, inbound_mtls, names, plugins, proxy_keys, sidecar_scope
from mizzen.core.hosts import hosts_intersect
from mizzen.core.mesh import OutboundPolicy
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import MESH_GATEWAY, PushContext, ResolvedVirtualService
from mizzen.core.routes import build_inbound_route
from mizzen.registry.model import Protocol, Service, ServicePort

__all__ = [
    "InboundPort",
    "build_listeners",
    "build_listeners_with_warnings",
    "generation_warnings",
    "inbound_ports",
    "route_config_names",
]

WILDCARD = "0.0.0.0"


# --- public API ---------------------------------------------------------------------------------------------
def build_listeners(proxy: Proxy, push: PushContext) -> list[listener_pb2.Listener]:
    return build_listeners_with_warnings(proxy, push)[0]


def generation_warnings(proxy: Proxy, push: PushContext) -> list[str]:
    """Config that was skipped while building this proxy's listeners (unsupported or conflicting), and for
    gateways the DestinationRule credentials their namespace cannot serve."""
    return build_listeners_with_warnings(proxy, push)[1]


def build_listeners_with_warnings(proxy: Proxy, push: PushContext) -> tuple[list[Any], list[str]]:
    warnings: list[str] = []
    if proxy.is_gateway:
        from mizzen.core import gateway_listeners
        from mizzen.core.upstream_credentials import credential_problems

        out = gateway_listeners.build_gateway_listeners(proxy, push, warnings)
        warnings.extend(credential_problems(proxy, push))
    elif proxy.interception_mode.upper() == "REDIRECT":
        out = _redirect_listeners(proxy, push, warnings)
    else:
        out = _local_listeners(proxy, push, warnings)
    return out, warnings


def route_config_names(listeners: list[listener_pb2.Listener]) -> list[str]:
    """Names of the RDS route configurations the listeners reference (sorted, unique)."""
    found: set[str] = set()
    for lis in listeners:
        chains = list(lis.filter_chains)
        if lis.HasField("default_filter_chain"):
            chains.append(lis.default_filter_chain)
        for chain in chains:
            for f in chain.filters:
                if f.name != filters.HCM:
                    continue
                hcm = hcm_pb2.HttpConnectionManager()
                f.typed_config.Unpack(hcm)
                if hcm.HasField("rds"):
                    found.add(hcm.rds.route_config_name)
    return sorted(found)


# --- shared helpers (also used by gateway_listeners) --------------------------------------------------------
def socket_address(ip: str, port: int) -> Any:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def new_listener(ip: str, port: int, direction: int, name: str = "") -> Any:
    return listener_pb2.Listener(
        name=name or names.listener_name(ip, port),
        address=socket_address(ip, port),
        traffic_direction=direction,
    )


def cidr_ranges(addresses: Iterable[str]) -> list[Any]:
    out = []
    for a in addresses:
        try:
            net = ipaddress.ip_network(a, strict=False)
        except ValueError:
            continue
        out.append(address_pb2.CidrRange(address_prefix=str(net.network_address),
                                         prefix_len=wrappers_pb2.UInt32Value(value=net.prefixlen)))
    return out


class ChainSet:
    """Filter chains of one listener, dropping (and reporting) chains whose match is already taken."""

    def __init__(self, listener_name: str, warnings: list[str]) -> None:
        self.chains: list[Any] = []
        self._seen: set[bytes] = set()
        self._name = listener_name
        self._warnings = warnings

    def add(self, chain: Any, what: str) -> bool:
        key = chain.filter_chain_match.SerializeToString(deterministic=True)
        if key in self._seen:
            self._warnings.append(f"listener {self._name}: {what} skipped: "
                                  "another filter chain has the same match")
            return False
        self._seen.add(key)
        self.chains.append(chain)
        return True

    @property
    def needs_tls_inspector(self) -> bool:
        return any(c.filter_chain_match.server_names or c.filter_chain_match.transport_protocol == "tls"
                   for c in self.chains)


def tls_inspector() -> Any:
    return filters.listener_filter(filters.TLS_INSPECTOR, tls_inspector_pb2.TlsInspector())


def resolver(push: PushContext, namespace: str) -> filters.Resolver:
    def resolve(host: str) -> tuple[str, Service | None]:
        fqdn = push.resolve_host(host, namespace)
        return fqdn, push.service(fqdn)

    return resolve


# --- inbound ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InboundPort:
    """One port the workload serves: the listener/cluster port (target port) and its protocol."""

    port: int
    protocol: Protocol
    service_port: int = 0
    bind: str = ""              # Sidecar ingress bind override


def _target_port(push: PushContext, proxy: Proxy, svc: Service, sp: ServicePort) -> int | None:
    """The workload port behind a service port: this proxy's endpoint, else the numeric targetPort, else the
    named container port of the proxy's workload (None if it has no such port), else the service port."""
    for ep in push.registry.endpoints_for(svc.hostname, sp.port):
        if ep.address == proxy.ip:
            return ep.port
    if isinstance(sp.target_port, int) and sp.target_port > 0:
        return sp.target_port
    if isinstance(sp.target_port, str) and sp.target_port:
        if sp.target_port.isdigit():
            return int(sp.target_port)
        for w in push.workloads_in(proxy.namespace):
            if w.name == proxy.workload_name:
                return w.ports.get(sp.target_port)
        return None
    return sp.port


def inbound_ports(proxy: Proxy, push: PushContext) -> list[InboundPort]:
    """Sidecar ingress listeners if the proxy's Sidecar declares them, else the ports of every service in the
    proxy's namespace that selects it (first protocol wins when two services share a target port)."""
    ingress = sidecar_scope.ingress_listeners(proxy, push)
    if ingress:
        return [InboundPort(i.port, i.protocol, i.port, i.bind) for i in ingress]
    by_port: dict[int, InboundPort] = {}
    for svc in push.services_in(proxy.namespace):
        if not selects(svc.selector, proxy.labels):
            continue
        for sp in svc.ports:
            if sp.protocol is Protocol.UDP:
                continue
            tp = _target_port(push, proxy, svc, sp)
            if tp is not None:
                by_port.setdefault(tp, InboundPort(tp, sp.protocol, sp.port))
    return [by_port[p] for p in sorted(by_port)]


def inbound_route(proxy: Proxy, push: PushContext, port: int, cluster: str) -> Any:
    """The inline route config of an inbound HTTP port (Istio's inbound route, see routes)."""
    return build_inbound_route(proxy, push, port, cluster)


def extensions(proxy: Proxy, push: PushContext, direction: plugins.Direction, port: int,
               http: bool) -> plugins.Extensions:
    """What the listener plugins (security, telemetry) add to one chain: asked once per proxy and chain, and
    kept across pushes that change none of the kinds the plugins read (``plugins.kinds_read``)."""
    if not plugins.PLUGINS:
        return plugins.NONE
    key = ("LDS+", proxy.id, direction, port, http, tuple(plugins.PLUGINS),
           proxy_keys.Reads(plugins.kinds_read(_LDS_KINDS)))
    return proxy_keys.memoized_for(push, proxy, key, lambda: plugins.extensions(
        plugins.ListenerContext(proxy, push, direction, port, http)))


_LDS_KINDS = frozenset(k.kind for k in kinds.ALL_KINDS if "LDS" in k.read_by)


def inbound_filters(proxy: Proxy, push: PushContext, ip: InboundPort, stat_listener: str) -> list[Any]:
    cluster = names.inbound_cluster(ip.port)
    ext = extensions(proxy, push, plugins.Direction.INBOUND, ip.port, ip.protocol.is_http)
    if ip.protocol.is_http:
        hcm = filters.build_hcm(stat_prefix=f"inbound_{stat_listener}", mesh=push.mesh, inbound=True,
                                route_config=inbound_route(proxy, push, ip.port, cluster), ext=ext)
        return filters.chain_filters(filters.hcm_filter(hcm), ext)
    return filters.chain_filters(filters.tcp_proxy_filter(cluster, push.mesh, cluster=cluster, ext=ext), ext)


# --- local mode ---------------------------------------------------------------------------------------------
def _local_listeners(proxy: Proxy, push: PushContext, warnings: list[str]) -> list[Any]:
    out: list[Any] = []
    taken: set[tuple[str, int]] = set()

    def claim(ip: str, port: int, what: str) -> bool:
        if (ip, port) in taken:
            warnings.append(f"{what}: {ip}:{port} is already used by another listener; skipped")
            return False
        taken.add((ip, port))
        return True

    if proxy.http_proxy_port > 0 and claim(proxy.ip, proxy.http_proxy_port, "http proxy listener"):
        out.append(http_proxy_listener(proxy, push))
    for ip in inbound_ports(proxy, push):
        bind = ip.bind or proxy.ip
        if not claim(bind, ip.port, f"inbound port {ip.port}"):
            continue
        lis = new_listener(bind, ip.port, base_pb2.INBOUND)
        chains = ChainSet(lis.name, warnings)
        for chain in inbound_mtls.inbound_chains(proxy, push, ip.port, ip.protocol.is_http,
                                                 inbound_filters(proxy, push, ip, lis.name)):
            chains.add(chain, f"inbound port {ip.port}")
        lis.filter_chains.extend(chains.chains)
        if chains.needs_tls_inspector:
            lis.listener_filters.append(tls_inspector())
        out.append(lis)
    for e in sidecar_scope.egress_listeners(proxy, push):
        if not (e.port and e.bind):
            continue
        if not claim(e.bind, e.port, f"Sidecar egress listener {e.bind}:{e.port}"):
            continue
        lis = bound_egress_listener(proxy, push, e, warnings)
        if lis is not None:
            out.append(lis)
    return out


def http_proxy_listener(proxy: Proxy, push: PushContext) -> Any:
    """Outbound HTTP forward proxy (absolute-URI requests set :authority) routed by RDS ``http_proxy``."""
    lis = new_listener(proxy.ip, proxy.http_proxy_port, base_pb2.OUTBOUND)
    ext = extensions(proxy, push, plugins.Direction.OUTBOUND, proxy.http_proxy_port, True)
    hcm = filters.build_hcm(stat_prefix=f"outbound_{lis.name}", mesh=push.mesh, rds=names.HTTP_PROXY_ROUTE,
                            allow_absolute_url=True, ext=ext)
    lis.filter_chains.add().filters.extend(filters.chain_filters(filters.hcm_filter(hcm), ext))
    return lis


def bound_egress_listener(proxy: Proxy, push: PushContext, e: sidecar_scope.EgressListener,
                          warnings: list[str]) -> Any | None:
    """A Sidecar egress listener with ``port`` and ``bind``: HTTP -> RDS ``<port>``, else tcp_proxy to the one
    service on that port its hosts admit."""
    lis = new_listener(e.bind, e.port, base_pb2.OUTBOUND)
    if e.protocol.is_http:
        ext = extensions(proxy, push, plugins.Direction.OUTBOUND, e.port, True)
        hcm = filters.build_hcm(stat_prefix=f"outbound_{lis.name}", mesh=push.mesh,
                                rds=names.outbound_route_config(e.port), ext=ext)
        lis.filter_chains.add().filters.extend(filters.chain_filters(filters.hcm_filter(hcm), ext))
        return lis
    svcs = [s for s in push.registry.services
            if s.port(e.port) is not None and sidecar_scope.sidecar_allows(proxy, push, s)
            and sidecar_scope.host_allows(e.hosts, proxy.namespace, s, push.mesh.domain_suffix)]
    if not svcs:
        warnings.append(f"Sidecar egress listener {e.bind}:{e.port}: no service on port {e.port} "
                        "matches its hosts")
        return None
    if len(svcs) > 1:
        warnings.append(f"Sidecar egress listener {e.bind}:{e.port}: several TCP services match; "
                        f"using {svcs[0].hostname}")
    chains = ChainSet(lis.name, warnings)
    for chain in service_tcp_chains(proxy, push, svcs[0], e.port, match_addresses=False):
        chains.add(chain, f"service {svcs[0].hostname}")
    lis.filter_chains.extend(chains.chains)
    if chains.needs_tls_inspector:
        lis.listener_filters.append(tls_inspector())
    return lis


# --- VirtualService tcp/tls routes for sidecars -------------------------------------------------------------
def _mesh_l4_match(m: dict[str, Any], proxy: Proxy, port: int) -> bool:
    gws = m.get("gateways")
    if gws and MESH_GATEWAY not in gws:
        return False
    if m.get("port") and int(m["port"]) != port:
        return False
    labels = m.get("sourceLabels") or {}
    if any(proxy.labels.get(k) != v for k, v in labels.items()):
        return False
    src_ns = m.get("sourceNamespace")
    return not (src_ns and src_ns != proxy.namespace)


def _vs_for_service(proxy: Proxy, push: PushContext, svc: Service) -> list[ResolvedVirtualService]:
    return [vs for vs in push.virtual_services_for(proxy)
            if any(hosts_intersect(h, svc.hostname) for h in vs.hosts)
            and sidecar_scope.imports_virtual_service(proxy, push, vs)]


def service_tcp_chains(proxy: Proxy, push: PushContext, svc: Service, port: int,
                       match_addresses: bool) -> list[Any]:
    """Filter chains for a TCP/TLS service port: VS ``tls`` (SNI) and ``tcp`` routes first, then the default
    tcp_proxy to ``outbound|port||host``. With ``match_addresses`` chains match the service's addresses."""
    own = cidr_ranges(svc.addresses) if match_addresses else []
    chains: list[Any] = []
    covered = False
    sp = svc.port(port)
    is_tls = sp is not None and sp.protocol.is_tls
    ext = extensions(proxy, push, plugins.Direction.OUTBOUND, port, False)
    for vs in _vs_for_service(proxy, push, svc):
        resolve = resolver(push, vs.config.namespace)
        stat = f"{vs.config.name}.{vs.config.namespace}"
        if is_tls:
            for rule in vs.spec.get("tls") or ():
                for m in rule.get("match") or ():
                    if not _mesh_l4_match(m, proxy, port) or not rule.get("route"):
                        continue
                    f = filters.l4_filter_for_routes(rule["route"], resolve, port, push.mesh, stat, ext)
                    if f is None:
                        continue
                    chain = listener_components_pb2.FilterChain(filters=filters.chain_filters(f, ext))
                    chain.filter_chain_match.server_names.extend(str(h) for h in m.get("sniHosts") or ())
                    chain.filter_chain_match.prefix_ranges.extend(
                        cidr_ranges(m.get("destinationSubnets") or ()) or own)
                    chains.append(chain)
        for rule in vs.spec.get("tcp") or ():
            if covered or not rule.get("route"):
                continue
            matches = rule.get("match") or [{}]
            for m in matches:
                if not _mesh_l4_match(m, proxy, port):
                    continue
                f = filters.l4_filter_for_routes(rule["route"], resolve, port, push.mesh, stat, ext)
                if f is None:
                    continue
                chain = listener_components_pb2.FilterChain(filters=filters.chain_filters(f, ext))
                subnets = cidr_ranges(m.get("destinationSubnets") or ())
                chain.filter_chain_match.prefix_ranges.extend(subnets or own)
                chains.append(chain)
                if not subnets:
                    covered = True
                    break
    if not covered:
        cluster = names.outbound_cluster(port, "", svc.hostname)
        chain = listener_components_pb2.FilterChain(filters=filters.chain_filters(
            filters.tcp_proxy_filter(cluster, push.mesh, cluster=cluster, ext=ext), ext))
        chain.filter_chain_match.prefix_ranges.extend(own)
        chains.append(chain)
    return chains


# --- REDIRECT mode ------------------------------------------------------------------------------------------
def _passthrough_cluster(proxy: Proxy, push: PushContext) -> str:
    policy = sidecar_scope.outbound_policy(proxy, push)
    return names.PASSTHROUGH_CLUSTER if policy is OutboundPolicy.ALLOW_ANY else names.BLACKHOLE_CLUSTER


def _tcp_chain(cluster: str, push: PushContext, name: str = "") -> Any:
    return listener_components_pb2.FilterChain(
        name=name, filters=[filters.tcp_proxy_filter(cluster, push.mesh, cluster=cluster)])


def _redirect_listeners(proxy: Proxy, push: PushContext, warnings: list[str]) -> list[Any]:
    out = outbound_port_listeners(proxy, push, warnings)
    if proxy.http_proxy_port > 0:
        out.append(http_proxy_listener(proxy, push))
    for e in sidecar_scope.egress_listeners(proxy, push):
        if e.port and e.bind:
            lis = bound_egress_listener(proxy, push, e, warnings)
            if lis is not None:
                out.append(lis)
    out.append(virtual_outbound_listener(proxy, push))
    out.append(virtual_inbound_listener(proxy, push, warnings))
    return out


def virtual_outbound_listener(proxy: Proxy, push: PushContext) -> Any:
    lis = new_listener(WILDCARD, names.VIRTUAL_OUTBOUND_PORT, base_pb2.OUTBOUND,
                       name=names.VIRTUAL_OUTBOUND_LISTENER)
    lis.use_original_dst.value = True
    blackhole = _tcp_chain(names.BLACKHOLE_CLUSTER, push, "virtualOutbound-blackhole")
    blackhole.filter_chain_match.destination_port.value = names.VIRTUAL_OUTBOUND_PORT
    lis.filter_chains.extend([blackhole, _tcp_chain(_passthrough_cluster(proxy, push), push,
                                                    "virtualOutbound-catchall-tcp")])
    return lis


def virtual_inbound_listener(proxy: Proxy, push: PushContext, warnings: list[str]) -> Any:
    lis = new_listener(WILDCARD, names.VIRTUAL_INBOUND_PORT, base_pb2.INBOUND,
                       name=names.VIRTUAL_INBOUND_LISTENER)
    lis.listener_filters.append(filters.listener_filter(filters.ORIGINAL_DST, original_dst_pb2.OriginalDst()))
    chains = ChainSet(lis.name, warnings)
    blackhole = _tcp_chain(names.BLACKHOLE_CLUSTER, push, "virtualInbound-blackhole")
    blackhole.filter_chain_match.destination_port.value = names.VIRTUAL_INBOUND_PORT
    chains.add(blackhole, "blackhole chain")
    ports = inbound_ports(proxy, push)
    for ip in ports:
        for chain in inbound_mtls.inbound_chains(
                proxy, push, ip.port, ip.protocol.is_http,
                inbound_filters(proxy, push, ip, names.listener_name(WILDCARD, ip.port)),
                name=names.inbound_cluster(ip.port), destination_port=ip.port):
            chains.add(chain, f"inbound port {ip.port}")
    passthrough = _tcp_chain(names.INBOUND_PASSTHROUGH_CLUSTER, push, names.VIRTUAL_INBOUND_LISTENER)
    # ports with their own PeerAuthentication mode but no service get passthrough chains of their own
    served = {ip.port for ip in ports}
    for port in [p for p in inbound_mtls.port_overrides(proxy, push) if p not in served] + [0]:
        for chain in inbound_mtls.inbound_chains(proxy, push, port, False, passthrough.filters,
                                                 name=names.VIRTUAL_INBOUND_LISTENER, destination_port=port):
            chains.add(chain, f"passthrough port {port}" if port else "passthrough")
    lis.filter_chains.extend(chains.chains)
    if chains.needs_tls_inspector:
        lis.listener_filters.append(tls_inspector())
    return lis


def outbound_port_listeners(proxy: Proxy, push: PushContext, warnings: list[str]) -> list[Any]:
    """``0.0.0.0_<port>`` listeners (bind_to_port false) reached through virtualOutbound's original_dst."""
    by_port: dict[int, list[tuple[Service, ServicePort]]] = {}
    for svc in push.registry.services:
        for sp in svc.ports:
            if sp.protocol is not Protocol.UDP and sidecar_scope.allows_on_port(proxy, push, svc, sp.port):
                by_port.setdefault(sp.port, []).append((svc, sp))
    out = []
    for port in sorted(by_port):
        if port in (names.VIRTUAL_OUTBOUND_PORT, names.VIRTUAL_INBOUND_PORT):
            warnings.append(f"outbound port {port} clashes with the capture listeners; skipped")
            continue
        out.append(_outbound_port_listener(proxy, push, port, by_port[port], warnings))
    return out


def _outbound_port_listener(proxy: Proxy, push: PushContext, port: int,
                            entries: Sequence[tuple[Service, ServicePort]], warnings: list[str]) -> Any:
    lis = new_listener(WILDCARD, port, base_pb2.OUTBOUND)
    lis.bind_to_port.value = False
    http = [s for s, sp in entries if sp.protocol.is_http]
    tcp = [s for s, sp in entries if not sp.protocol.is_http]
    chains = ChainSet(lis.name, warnings)
    # TCP services match on their addresses when the port is shared; an address-less TCP service can only be
    # the catch-all, and only when there is no HTTP service on the port
    shared = len(tcp) > 1 or bool(http)
    catch_all_taken = bool(http)
    for svc in tcp:
        if shared and not svc.addresses:
            if catch_all_taken:
                warnings.append(f"listener {lis.name}: TCP service {svc.hostname} has no address to match "
                                "on a shared port; skipped")
                continue
            catch_all_taken = True
            for chain in service_tcp_chains(proxy, push, svc, port, match_addresses=False):
                chains.add(chain, f"service {svc.hostname}")
            continue
        for chain in service_tcp_chains(proxy, push, svc, port, match_addresses=shared):
            chains.add(chain, f"service {svc.hostname}")
    if http:
        ext = extensions(proxy, push, plugins.Direction.OUTBOUND, port, True)
        hcm = filters.build_hcm(stat_prefix=f"outbound_{lis.name}", mesh=push.mesh,
                                rds=names.outbound_route_config(port), ext=ext)
        chain = listener_components_pb2.FilterChain(
            filters=filters.chain_filters(filters.hcm_filter(hcm), ext))
        chains.add(chain, f"HTTP services on port {port}")
    lis.filter_chains.extend(chains.chains)
    if not any(not c.HasField("filter_chain_match") or c.filter_chain_match.ByteSize() == 0
               for c in chains.chains):
        lis.default_filter_chain.CopyFrom(_tcp_chain(_passthrough_cluster(proxy, push), push, "passthrough"))
    if chains.needs_tls_inspector:
        lis.listener_filters.append(tls_inspector())
    return lis
