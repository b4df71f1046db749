"""Network-filter and transport-socket builders shared by sidecar and gateway listeners.

Owns the HTTP connection manager (Istio's settings: fault/cors/router filters, AUTO codec, websocket
upgrades, path normalisation, request ids; access logs come from the listener plugins, see
``mizzen.telemetry``), tcp_proxy to one or weighted clusters, the downstream
TLS context for Gateway servers (certificate files), and the mapping of VirtualService ``tcp``/``tls`` route
destinations to Envoy cluster names (like Istio's networkfilter.go).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2, config_source_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.request_id.uuid.v3 import uuid_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

from mizzen.core import names
from mizzen.core.mesh import MeshConfig
from mizzen.core.plugins import NONE, Extensions
from mizzen.registry.model import Service

HCM = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
FAULT = "envoy.filters.http.fault"
CORS = "envoy.filters.http.cors"
ROUTER = "envoy.filters.http.router"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
ORIGINAL_DST = "envoy.filters.listener.original_dst"
TLS_TRANSPORT = "envoy.transport_sockets.tls"
SERVER_NAME = "istio-envoy"
ALPN_HTTP = ("h2", "http/1.1")

Resolver = Callable[[str], tuple[str, Service | None]]
"""Resolves a VirtualService destination host (possibly short) to its FQDN and registry Service."""


def pack(msg: Message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)
    return out


@functools.cache
def _fixed() -> tuple[Any, Any, Any, Any]:
    """Core's fault, cors and router filters and the request id extension: the same in every HCM, built
    once (shared: copied into each HCM by protobuf, never mutated)."""
    return (hcm_pb2.HttpFilter(name=FAULT, typed_config=pack(fault_pb2.HTTPFault())),
            hcm_pb2.HttpFilter(name=CORS, typed_config=pack(cors_pb2.Cors())),
            hcm_pb2.HttpFilter(name=ROUTER, typed_config=pack(router_pb2.Router())),
            hcm_pb2.RequestIDExtension(typed_config=pack(uuid_pb2.UuidRequestIdConfig())))


def http_filters(ext: Extensions = NONE) -> list[Any]:
    """Plugins' authn/authz filters, fault, cors, plugins' later filters, router — per-route fault/cors config
    goes in typed_per_filter_config under these names."""
    fault, cors, router, _ = _fixed()
    return [*ext.http_before, fault, cors, *ext.http_after, router]


def ads_config_source() -> Any:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        initial_fetch_timeout=duration_pb2.Duration(seconds=0),
        resource_api_version=config_source_pb2.V3,
    )


def build_hcm(
    *,
    stat_prefix: str,
    mesh: MeshConfig,
    rds: str = "",
    route_config: Message | None = None,
    use_remote_address: bool = False,
    gateway: bool = False,
    inbound: bool = False,
    allow_absolute_url: bool = False,
    ext: Extensions = NONE,
) -> Any:
    """An HttpConnectionManager with Istio's settings; routes from RDS ``rds`` or inline ``route_config``;
    ``ext``: what the listener plugins add (``core.plugins``)."""
    hcm = hcm_pb2.HttpConnectionManager(
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        stat_prefix=stat_prefix,
        http_filters=http_filters(ext),
        normalize_path=wrappers_pb2.BoolValue(value=True),
        merge_slashes=True,
        path_with_escaped_slashes_action=hcm_pb2.HttpConnectionManager.KEEP_UNCHANGED,
        use_remote_address=wrappers_pb2.BoolValue(value=use_remote_address),
        upgrade_configs=[hcm_pb2.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
        stream_idle_timeout=duration_pb2.Duration(seconds=0),
        server_name=SERVER_NAME,
        generate_request_id=wrappers_pb2.BoolValue(value=True),
        # sidecars keep the x-request-id the app propagated (tracing across hops); gateways start new ones
        preserve_external_request_id=not gateway,
        request_id_extension=_fixed()[3],
        access_log=list(ext.access_logs),
    )
    if gateway or inbound:
        # gateways sanitize client-cert headers (SANITIZE_SET); sidecar inbound appends (APPEND_FORWARD)
        m = hcm_pb2.HttpConnectionManager
        hcm.forward_client_cert_details = m.SANITIZE_SET if gateway else m.APPEND_FORWARD
        hcm.set_current_client_cert_details.subject.value = True
        hcm.set_current_client_cert_details.cert = True
        hcm.set_current_client_cert_details.dns = True
        hcm.set_current_client_cert_details.uri = True
    if ext.tracing is not None:
        hcm.tracing.CopyFrom(ext.tracing)
    hcm.early_header_mutation_extensions.extend(ext.early_header_mutations)
    if gateway or allow_absolute_url:
        opts = protocol_pb2.Http1ProtocolOptions()
        if allow_absolute_url:
            opts.allow_absolute_url.value = True
        hcm.http_protocol_options.CopyFrom(opts)
    if rds:
        hcm.rds.CopyFrom(hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=rds))
    elif route_config is not None:
        hcm.route_config.CopyFrom(route_config)
        hcm.route_config.request_headers_to_remove.extend(ext.request_headers_to_remove)
    else:
        raise ValueError("build_hcm needs rds or route_config")
    return hcm


def hcm_filter(hcm: Message) -> Any:
    return listener_components_pb2.Filter(name=HCM, typed_config=pack(hcm))


def chain_filters(terminal: Any, ext: Extensions = NONE) -> list[Any]:
    """A filter chain's network filters: the plugins' (``ext.network``), then the terminal one."""
    return [*ext.network, terminal]


@dataclass(frozen=True)
class WeightedCluster:
    name: str
    weight: int


def tcp_proxy_filter(
    stat_prefix: str, mesh: MeshConfig, cluster: str = "", weighted: Sequence[WeightedCluster] = (),
    ext: Extensions = NONE,
) -> Any:
    """tcp_proxy to one cluster, or to weighted clusters when more than one destination has weight."""
    tp = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix, access_log=list(ext.access_logs))
    if ext.access_logs:
        tp.access_log_options.flush_access_log_on_connected = True   # loggers may count connections opened
    if len(weighted) > 1:
        for w in weighted:
            tp.weighted_clusters.clusters.add(name=w.name, weight=w.weight)
    else:
        tp.cluster = weighted[0].name if weighted else cluster
        if not tp.cluster:
            raise ValueError("tcp_proxy_filter needs a cluster")
    return listener_components_pb2.Filter(name=TCP_PROXY, typed_config=pack(tp))


def listener_filter(name: str, msg: Message) -> Any:
    return listener_components_pb2.ListenerFilter(name=name, typed_config=pack(msg))


# --- TLS ----------------------------------------------------------------------------------------------------
_TLS_VERSIONS = {
    "TLS_AUTO": common_pb2.TlsParameters.TLS_AUTO,
    "TLSV1_0": common_pb2.TlsParameters.TLSv1_0,
    "TLSV1_1": common_pb2.TlsParameters.TLSv1_1,
    "TLSV1_2": common_pb2.TlsParameters.TLSv1_2,
    "TLSV1_3": common_pb2.TlsParameters.TLSv1_3,
}


def downstream_tls_context(tls: Mapping[str, Any], alpn: Sequence[str] = ALPN_HTTP) -> Any:
    """DownstreamTlsContext for a Gateway server's ``tls`` block (SIMPLE, MUTUAL or OPTIONAL_MUTUAL, from
    certificate files). Client certificates are required here; gateway_listeners relaxes OPTIONAL_MUTUAL."""
    ctx = tls_pb2.DownstreamTlsContext()
    common = ctx.common_tls_context
    common.alpn_protocols.extend(alpn)
    cert = common.tls_certificates.add()
    cert.certificate_chain.filename = str(tls.get("serverCertificate", ""))
    cert.private_key.filename = str(tls.get("privateKey", ""))
    params = common.tls_params
    params.tls_minimum_protocol_version = _TLS_VERSIONS.get(
        str(tls.get("minProtocolVersion", "TLSV1_2")).upper(), common_pb2.TlsParameters.TLSv1_2
    )
    if tls.get("maxProtocolVersion"):
        params.tls_maximum_protocol_version = _TLS_VERSIONS.get(
            str(tls["maxProtocolVersion"]).upper(), common_pb2.TlsParameters.TLS_AUTO
        )
    if tls.get("cipherSuites"):
        params.cipher_suites.extend(str(c) for c in tls["cipherSuites"])
    if str(tls.get("mode", "SIMPLE")).upper() in ("MUTUAL", "OPTIONAL_MUTUAL"):
        vc = common.validation_context
        if tls.get("caCertificates"):
            vc.trusted_ca.filename = str(tls["caCertificates"])
        for san in tls.get("subjectAltNames") or ():
            for typ in (common_pb2.SubjectAltNameMatcher.DNS, common_pb2.SubjectAltNameMatcher.URI):
                vc.match_typed_subject_alt_names.add(san_type=typ,
                                                     matcher=string_pb2.StringMatcher(exact=str(san)))
        vc.verify_certificate_spki.extend(str(s) for s in tls.get("verifyCertificateSpki") or ())
        vc.verify_certificate_hash.extend(str(s) for s in tls.get("verifyCertificateHash") or ())
        ctx.require_client_certificate.value = True
    return ctx


def tls_transport_socket(ctx: Message) -> Any:
    return base_pb2.TransportSocket(name=TLS_TRANSPORT, typed_config=pack(ctx))


# --- VirtualService L4 destinations -------------------------------------------------------------------------
def destination_cluster(destination: Mapping[str, Any], service: Service | None, hostname: str,
                        default_port: int) -> str:
    """Istio's GetDestinationCluster: explicit port, else the service's only port, else the listener port."""
    port = int((destination.get("port") or {}).get("number") or 0)
    if not port:
        port = service.ports[0].port if service is not None and len(service.ports) == 1 else default_port
    return names.outbound_cluster(port, str(destination.get("subset") or ""), hostname)


def route_destinations(routes: Sequence[Mapping[str, Any]], resolve: Resolver,
                       default_port: int) -> list[WeightedCluster]:
    """``tcp[].route`` / ``tls[].route`` -> clusters with weights (zero-weight destinations dropped)."""
    out: list[WeightedCluster] = []
    for r in routes:
        dest = r.get("destination") or {}
        fqdn, svc = resolve(str(dest.get("host", "")))
        weight = int(r.get("weight") or 0)
        if len(routes) > 1 and weight <= 0:
            continue
        out.append(WeightedCluster(destination_cluster(dest, svc, fqdn, default_port), weight or 100))
    return out


def l4_filter_for_routes(routes: Sequence[Mapping[str, Any]], resolve: Resolver, default_port: int,
                         mesh: MeshConfig, stat_prefix: str, ext: Extensions = NONE) -> Any | None:
    """tcp_proxy for VS L4 routes; single destination uses the cluster name as stat prefix (like Istio)."""
    dests = route_destinations(routes, resolve, default_port)
    if not dests:
        return None
    if len(dests) == 1:
        return tcp_proxy_filter(dests[0].name, mesh, cluster=dests[0].name, ext=ext)
    return tcp_proxy_filter(stat_prefix, mesh, weighted=dests, ext=ext)
