"""LDS for gateway proxies (Istio's gateway.go): the servers of every Gateway selecting the proxy, grouped by
listen port (Gateway port mapped through ``proxy.gateway_listen_port``), one listener per (bind, port).

HTTP servers share one HCM (RDS ``http.<port>``); HTTPS SIMPLE/MUTUAL servers get an SNI filter chain each
with a DownstreamTlsContext from certificate files, or for ``credentialName`` from SDS on the ADS stream
(``kubernetes://<name>``, ``kubernetes://<name>-cacert``; a server whose Secret is missing or unusable in the
proxy's namespace is left out with a warning), and an HCM (RDS ``https.<port>.<port name>.<gw>.<ns>``);
TLS PASSTHROUGH servers get SNI chains from VirtualService ``tls`` routes; TCP servers a tcp_proxy from
``tcp`` routes. ISTIO_MUTUAL/AUTO_PASSTHROUGH are skipped with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2

from mizzen.config.model import Config
from mizzen.core import filters, names, plugins
from mizzen.core.gateway_credentials import SDS_MODES, Credential, ads_sds_config, credential, needs_ca
from mizzen.core.hosts import hosts_intersect
from mizzen.core.listeners import ChainSet, extensions, new_listener, resolver, tls_inspector
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext, ResolvedVirtualService, resolve_gateway_ref

__all__ = ["GatewayServer", "build_gateway_listeners", "gateway_servers", "servers_for_route"]

_HTTP_PROTOCOLS = {"HTTP", "HTTP2", "GRPC", "GRPC-WEB"}


@dataclass(frozen=True)
class GatewayServer:
    """One ``spec.servers[]`` entry of a Gateway selecting the proxy, with where it listens."""

    gateway: Config
    server: Mapping[str, Any]
    index: int
    listen_port: int
    bind: str

    @property
    def gateway_ref(self) -> str:
        return f"{self.gateway.namespace}/{self.gateway.name}"

    @property
    def port_number(self) -> int:
        return int((self.server.get("port") or {}).get("number") or 0)

    @property
    def port_name(self) -> str:
        return str((self.server.get("port") or {}).get("name") or "")

    @property
    def protocol(self) -> str:
        return str((self.server.get("port") or {}).get("protocol") or "").upper()

    @property
    def is_http(self) -> bool:
        return self.protocol in _HTTP_PROTOCOLS

    @property
    def tls(self) -> Mapping[str, Any]:
        return self.server.get("tls") or {}

    @property
    def credential_name(self) -> str:
        return str(self.tls.get("credentialName") or "") if self.server.get("tls") else ""

    @property
    def tls_mode(self) -> str:
        return str(self.tls.get("mode") or "SIMPLE").upper() if self.server.get("tls") else ""

    @property
    def terminates_https(self) -> bool:
        return self.protocol == "HTTPS" and self.tls_mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL")

    @property
    def hosts(self) -> list[str]:
        """Server hosts without their ``ns/`` prefix."""
        return [str(h).partition("/")[2] if "/" in str(h) else str(h) for h in self.server.get("hosts") or ()]

    @property
    def sni_hosts(self) -> list[str]:
        """SNI names to match: the server's hosts, or none at all when one of them is ``*``."""
        hosts = self.hosts
        return [] if "*" in hosts else hosts

    @property
    def route_name(self) -> str:
        """The RDS name this server's HCM uses ("" for servers without an HCM)."""
        if self.is_http:
            return names.gateway_route_config("HTTP", self.listen_port)
        if self.terminates_https:
            return names.gateway_route_config("HTTPS", self.listen_port, self.port_name or "https",
                                              f"{self.gateway.name}.{self.gateway.namespace}")
        return ""

    def admits(self, vs: ResolvedVirtualService) -> bool:
        """Istio's pickMatchingGatewayHosts: a server host ("ns/host") intersects one of the VS hosts."""
        for raw in self.server.get("hosts") or ():
            ns, sep, host = str(raw).partition("/")
            if not sep:
                ns, host = "*", str(raw)
            if ns == ".":
                ns = self.gateway.namespace
            if ns not in ("*", vs.config.namespace):
                continue
            if any(hosts_intersect(host, h) for h in vs.hosts):
                return True
        return False


def gateway_servers(proxy: Proxy, push: PushContext) -> list[GatewayServer]:
    """Every server of every Gateway selecting the proxy, oldest Gateway first."""
    out = []
    gateways = sorted(push.gateways_for(proxy), key=lambda c: (c.created, c.namespace, c.name))
    for gw in gateways:
        for i, server in enumerate(gw.spec.get("servers") or ()):
            port = int((server.get("port") or {}).get("number") or 0)
            out.append(GatewayServer(gw, server, i, proxy.gateway_listen_port(port),
                                     str(server.get("bind") or "") or proxy.ip))
    return out


def servers_for_route(proxy: Proxy, push: PushContext, route_name: str) -> list[GatewayServer]:
    """The servers whose HCM uses ``route_name`` (for the route builder: which hosts go in that config)."""
    return [s for s in gateway_servers(proxy, push) if s.route_name == route_name]


def build_gateway_listeners(proxy: Proxy, push: PushContext, warnings: list[str]) -> list[Any]:
    groups: dict[tuple[str, int], list[GatewayServer]] = {}
    for s in gateway_servers(proxy, push):
        if s.bind.startswith("unix://"):   # Envoy would reject it as a socket address
            warnings.append(f"{_where(s)}: unix domain socket bind {s.bind} is not supported yet; skipped")
            continue
        groups.setdefault((s.bind, s.listen_port), []).append(s)
    out = []
    for (bind, port), servers in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        lis = _listener(proxy, push, bind, port, servers, warnings)
        if lis is not None:
            out.append(lis)
    return out


def _where(s: GatewayServer) -> str:
    return f"Gateway {s.gateway_ref} server {s.index} (port {s.port_number})"


def _listener(proxy: Proxy, push: PushContext, bind: str, port: int, servers: Sequence[GatewayServer],
              warnings: list[str]) -> Any | None:
    lis = new_listener(bind, port, base_pb2.OUTBOUND)
    chains = ChainSet(lis.name, warnings)
    http_port = servers[0].is_http
    sni_taken: set[str] = set()
    for s in servers:
        if s.is_http != http_port:
            warnings.append(f"{_where(s)}: cannot mix plain HTTP and TLS/TCP servers on listen port {port}; "
                            "skipped")
            continue
        if http_port:
            if not chains.chains:
                ext = extensions(proxy, push, plugins.Direction.GATEWAY, port, True)
                hcm = filters.build_hcm(stat_prefix=f"outbound_{lis.name}", mesh=push.mesh, rds=s.route_name,
                                        use_remote_address=True, gateway=True, ext=ext)
                chains.add(listener_components_pb2.FilterChain(
                    filters=filters.chain_filters(filters.hcm_filter(hcm), ext)), _where(s))
            continue
        for chain in _server_chains(proxy, push, s, warnings):
            sni = list(chain.filter_chain_match.server_names)
            if sni:
                dup = [h for h in sni if h in sni_taken]
                if dup:
                    warnings.append(f"{_where(s)}: duplicate SNI hosts {dup} on listen port {port}; dropped")
                    chain.filter_chain_match.ClearField("server_names")
                    kept = [h for h in sni if h not in sni_taken]
                    if not kept:
                        continue
                    chain.filter_chain_match.server_names.extend(kept)
            if chains.add(chain, _where(s)):
                sni_taken.update(chain.filter_chain_match.server_names)
    if not chains.chains:
        warnings.append(f"gateway listener {lis.name}: no usable server; listener not built")
        return None
    lis.filter_chains.extend(chains.chains)
    if chains.needs_tls_inspector or any(c.HasField("transport_socket") for c in chains.chains):
        lis.listener_filters.append(tls_inspector())
    return lis


def _server_chains(proxy: Proxy, push: PushContext, s: GatewayServer, warnings: list[str]) -> list[Any]:
    mode = s.tls_mode
    cred: Credential | None = None
    if s.credential_name and mode in SDS_MODES:
        cred = credential(push, proxy.namespace, s.credential_name, mode)
        if cred.problem:   # Envoy would wait for a secret that never comes: leave the chain out
            warnings.append(f"{_where(s)}: {cred.problem}; server skipped")
            return []
    if mode in ("ISTIO_MUTUAL", "AUTO_PASSTHROUGH"):
        warnings.append(f"{_where(s)}: tls.mode {mode} is not supported yet; server skipped")
        return []
    if s.protocol == "HTTPS" and not mode:
        warnings.append(f"{_where(s)}: HTTPS server without a tls block; skipped")
        return []
    if mode == "PASSTHROUGH":
        return _passthrough_chains(proxy, push, s, warnings)
    if mode and cred is None and not (s.tls.get("serverCertificate") and s.tls.get("privateKey")):
        warnings.append(f"{_where(s)}: tls.mode {mode} needs serverCertificate and privateKey; skipped")
        return []
    if s.terminates_https:
        stat = str(s.server.get("name") or "") or f"outbound_https_{s.listen_port}"
        ext = extensions(proxy, push, plugins.Direction.GATEWAY, s.listen_port, True)
        hcm = filters.build_hcm(stat_prefix=stat, mesh=push.mesh, rds=s.route_name,
                                use_remote_address=True, gateway=True, ext=ext)
        chain = listener_components_pb2.FilterChain(
            filters=filters.chain_filters(filters.hcm_filter(hcm), ext))
        chain.filter_chain_match.server_names.extend(s.sni_hosts)
        chain.transport_socket.CopyFrom(filters.tls_transport_socket(_tls_context(s, cred)))
        return [chain]
    # TCP, or TLS terminated here and forwarded as TCP
    f = _tcp_route_filter(proxy, push, s)
    if f is None:
        warnings.append(f"{_where(s)}: no VirtualService tcp route bound to the gateway matches; skipped")
        return []
    chain = listener_components_pb2.FilterChain(filters=filters.chain_filters(f, _ext(proxy, push, s)))
    if mode:
        chain.filter_chain_match.server_names.extend(s.sni_hosts)
        chain.transport_socket.CopyFrom(filters.tls_transport_socket(_tls_context(s, cred, alpn=())))
    return [chain]


def _tls_context(s: GatewayServer, cred: Credential | None,
                 alpn: Sequence[str] = filters.ALPN_HTTP) -> Any:
    tls = dict(s.tls)
    ctx = filters.downstream_tls_context(tls, alpn=alpn)
    if cred is not None:   # Istio's credentialName: certificate (and CA) over SDS on the ADS stream
        common = ctx.common_tls_context
        del common.tls_certificates[:]
        common.tls_certificate_sds_secret_configs.add(name=cred.cert_resource, sds_config=ads_sds_config())
        if needs_ca(s.tls_mode):
            combined = common.combined_validation_context
            combined.default_validation_context.CopyFrom(common.validation_context)
            combined.default_validation_context.ClearField("trusted_ca")
            combined.validation_context_sds_secret_config.name = cred.ca_resource
            combined.validation_context_sds_secret_config.sds_config.CopyFrom(ads_sds_config())
            common.ClearField("validation_context")
    if s.tls_mode == "OPTIONAL_MUTUAL":
        ctx.require_client_certificate.value = False
    return ctx


def _l4_match(m: Mapping[str, Any], s: GatewayServer) -> bool:
    """Istio's l4SingleMatch for gateways: match port and gateways, if given, must fit this server."""
    if m.get("port") and int(m["port"]) != s.port_number:
        return False
    gws = m.get("gateways")
    if gws:
        refs = {resolve_gateway_ref(str(g), s.gateway.namespace) for g in gws}
        if s.gateway_ref not in refs:
            return False
    return True


def _bound_vs(proxy: Proxy, push: PushContext, s: GatewayServer) -> list[ResolvedVirtualService]:
    return [vs for vs in push.virtual_services_for(proxy, s.gateway_ref) if s.admits(vs)]


def _ext(proxy: Proxy, push: PushContext, s: GatewayServer) -> plugins.Extensions:
    return extensions(proxy, push, plugins.Direction.GATEWAY, s.listen_port, False)


def _tcp_route_filter(proxy: Proxy, push: PushContext, s: GatewayServer) -> Any | None:
    for vs in _bound_vs(proxy, push, s):
        for rule in vs.spec.get("tcp") or ():
            if not rule.get("route"):
                continue
            if any(_l4_match(m, s) for m in (rule.get("match") or [{}])):
                return filters.l4_filter_for_routes(rule["route"], resolver(push, vs.config.namespace),
                                                    s.port_number, push.mesh,
                                                    f"{vs.config.name}.{vs.config.namespace}",
                                                    _ext(proxy, push, s))
    return None


def _passthrough_chains(proxy: Proxy, push: PushContext, s: GatewayServer, warnings: list[str]) -> list[Any]:
    chains = []
    for vs in _bound_vs(proxy, push, s):
        for rule in vs.spec.get("tls") or ():
            if not rule.get("route"):
                continue
            for m in rule.get("match") or ():
                if not _l4_match(m, s):
                    continue
                ext = _ext(proxy, push, s)
                f = filters.l4_filter_for_routes(rule["route"], resolver(push, vs.config.namespace),
                                                 s.port_number, push.mesh,
                                                 f"{vs.config.name}.{vs.config.namespace}", ext)
                if f is None:
                    continue
                chain = listener_components_pb2.FilterChain(filters=filters.chain_filters(f, ext))
                sni = [str(h) for h in m.get("sniHosts") or ()]
                if "*" not in sni:   # "*" (gateways only) is every name; Envoy refuses it in server_names
                    chain.filter_chain_match.server_names.extend(sni)
                chains.append(chain)
    if not chains:
        warnings.append(f"{_where(s)}: PASSTHROUGH server has no VirtualService tls route bound to it")
    return chains

