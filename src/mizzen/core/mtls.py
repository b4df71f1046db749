"""Istio mutual TLS on the wire, both ends: the TLS contexts that take the workload certificate (``default``)
and the roots (``ROOTCA``) over SDS from the proxy's agent (the ``sds-grpc`` cluster), Istio's ALPN values,
and the client side of a cluster's TLS: a DestinationRule's ``tls`` (DISABLE / SIMPLE / MUTUAL from files,
or at gateways from a ``credentialName`` (:mod:`mizzen.core.upstream_credentials`) / ISTIO_MUTUAL)
or, when it has none, auto mTLS (Istio's ``buildAutoMtlsSettings``).

Auto mTLS: an outbound cluster gets ``transport_socket_matches``: endpoints whose metadata says
``tlsMode: istio`` (Istio's ``security.istio.io/tlsMode`` endpoint label, set on pods with a sidecar) get
ISTIO_MUTUAL, every other endpoint plaintext. SNI ``outbound_.<port>_.<subset>_.<host>``; the server's
certificate must carry one of the SPIFFE IDs of the service's service accounts. Not for mesh-external
services, nor when the destination namespace (or the mesh) DISABLEs mTLS by PeerAuthentication.

ALPN: Istio's clients offer ``istio-peer-exchange`` first (its metadata-exchange filter, which upstream Envoy
does not have); Mizzen's offer ``istio`` plus the cluster's HTTP protocol (``h2`` / ``http/1.1``), never
``istio-peer-exchange``. Servers accept every Istio mTLS ALPN value (:data:`ISTIO_MTLS_ALPNS`), so Istio
clients and Mizzen clients reach Mizzen servers alike.

Everything here needs the proxy's SDS (``Proxy.has_sds``): a proxy without the ``sds-grpc`` cluster would
reject any config naming it, so it gets no mTLS at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import duration_pb2, struct_pb2

from mizzen.config.model import ConfigKey
from mizzen.core import names
from mizzen.core.endpoints import TRANSPORT_SOCKET_MATCH
from mizzen.core.filters import TLS_TRANSPORT, pack
from mizzen.core.peer_authn import MtlsMode, infer_service_mode
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext
from mizzen.core.upstream_credentials import credential_context
from mizzen.registry.model import ISTIO_TLS_MODE, Protocol, RegistrySnapshot, Service

__all__ = [
    "ISTIO_MTLS_ALPNS",
    "ROOT_SECRET",
    "SDS_CLUSTER",
    "TRANSPORT_SOCKET_MATCH",
    "WORKLOAD_SECRET",
    "apply_cluster_tls",
    "identity_changes",
    "istio_mutual_context",
    "server_mtls_context",
    "spiffe_id",
]

# Istio's names (the same as mizzen.security.sdsconfig's, which core cannot import: tests check they agree)
SDS_CLUSTER = "sds-grpc"
WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"
RAW_BUFFER = "envoy.transport_sockets.raw_buffer"
# What Istio servers accept as "this is Istio mTLS" (filter_chain_match.application_protocols)
ISTIO_MTLS_ALPNS = ("istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2")
ALPN_HTTP = ("h2", "http/1.1")


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def _sds(name: str) -> tls_pb2.SdsSecretConfig:
    source = config_source_pb2.ConfigSource(
        api_config_source=config_source_pb2.ApiConfigSource(
            api_type=config_source_pb2.ApiConfigSource.GRPC,
            transport_api_version=config_source_pb2.V3,
            set_node_on_first_message_only=True,
            grpc_services=[grpc_service_pb2.GrpcService(
                envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=SDS_CLUSTER))]),
        initial_fetch_timeout=duration_pb2.Duration(seconds=0),
        resource_api_version=config_source_pb2.V3,
    )
    return secret_pb2.SdsSecretConfig(name=name, sds_config=source)


def _sds_common(alpn: Sequence[str], sans: Sequence[str] = ()) -> common_pb2.CommonTlsContext:
    common = tls_pb2.CommonTlsContext(alpn_protocols=list(alpn))
    common.tls_params.tls_minimum_protocol_version = common_pb2.TlsParameters.TLSv1_2
    common.tls_certificate_sds_secret_configs.append(_sds(WORKLOAD_SECRET))
    combined = common.combined_validation_context
    combined.default_validation_context.SetInParent()
    for san in sans:
        combined.default_validation_context.match_typed_subject_alt_names.append(
            common_pb2.SubjectAltNameMatcher(san_type=common_pb2.SubjectAltNameMatcher.URI,
                                             matcher=string_pb2.StringMatcher(exact=san)))
    combined.validation_context_sds_secret_config.CopyFrom(_sds(ROOT_SECRET))
    return common


def istio_mutual_context(sni: str, sans: Sequence[str],
                         protocol: Protocol | None) -> tls_pb2.UpstreamTlsContext:
    """Client ISTIO_MUTUAL: workload certificate and roots over SDS, peer SPIFFE IDs checked, ALPN ``istio``
    plus the cluster's HTTP protocol."""
    alpn = ["istio"]
    if protocol is not None and protocol.is_http2:
        alpn.append("h2")
    elif protocol is not None and protocol.is_http:
        alpn.append("http/1.1")
    return tls_pb2.UpstreamTlsContext(sni=sni, common_tls_context=_sds_common(alpn, sans))


def server_mtls_context(http: bool) -> tls_pb2.DownstreamTlsContext:
    """Server side of Istio mTLS (an inbound chain): the workload certificate, a client certificate required
    and validated against ROOTCA; HTTP chains negotiate h2 or http/1.1."""
    ctx = tls_pb2.DownstreamTlsContext(common_tls_context=_sds_common(ALPN_HTTP if http else ()))
    ctx.require_client_certificate.value = True
    return ctx


def _socket(ctx: Any) -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(name=TLS_TRANSPORT, typed_config=pack(ctx))


def _file_context(tls: Mapping[str, Any], sni: str, protocol: Protocol | None) -> tls_pb2.UpstreamTlsContext:
    """SIMPLE / MUTUAL from certificate files (Istio's DestinationRule client TLS)."""
    ctx = tls_pb2.UpstreamTlsContext(sni=sni)
    common = ctx.common_tls_context
    if protocol is not None and protocol.is_http2:
        common.alpn_protocols.append("h2")
    if tls.get("mode") == "MUTUAL" and tls.get("clientCertificate") and tls.get("privateKey"):
        common.tls_certificates.append(common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(filename=str(tls["clientCertificate"])),
            private_key=base_pb2.DataSource(filename=str(tls["privateKey"]))))
    ca = tls.get("caCertificates")
    if ca and not tls.get("insecureSkipVerify"):
        vc = common.validation_context
        vc.trusted_ca.filename = str(ca)
        for san in tls.get("subjectAltNames") or ():
            for typ in (common_pb2.SubjectAltNameMatcher.DNS, common_pb2.SubjectAltNameMatcher.URI):
                vc.match_typed_subject_alt_names.append(common_pb2.SubjectAltNameMatcher(
                    san_type=typ, matcher=string_pb2.StringMatcher(exact=str(san))))
    return ctx


def service_accounts(push: PushContext, svc: Service, port: int) -> list[str]:
    """Istio's SAN list for a service port (sorted): the SPIFFE IDs of the service accounts of its
    endpoints, plus a ServiceEntry's ``subjectAltNames``."""
    ids = {spiffe_id(push.mesh.trust_domain, e.namespace or svc.namespace, e.service_account)
           for e in push.registry.endpoints_for(svc.hostname, port) if e.service_account}
    return sorted(ids | set(svc.subject_alt_names))


def _identities(snapshot: RegistrySnapshot, svc: Service) -> frozenset[tuple[str, str]]:
    """What ``service_accounts`` reads from the registry: every endpoint's service account."""
    return frozenset((e.namespace, e.service_account) for p in svc.ports
                     for e in snapshot.endpoints_for(svc.hostname, p.port) if e.service_account)


def identity_changes(before: RegistrySnapshot, after: RegistrySnapshot,
                     hosts: Iterable[str]) -> list[ConfigKey]:
    """The services among ``hosts`` whose endpoints' service accounts changed, as config keys: clusters
    carry those accounts as SANs (``service_accounts``: every endpoint's, with or without a sidecar, as
    Istio's), so, as istiod does a full push when a service's accounts change, such an endpoint change must
    also regenerate clusters. An endpoint joining or leaving with an account the service already has stays
    EDS-only."""
    out = []
    for host in sorted(set(hosts)):
        svc = after.service(host) or before.service(host)
        if svc is not None and _identities(before, svc) != _identities(after, svc):
            out.append(ConfigKey(svc.origin, svc.namespace, svc.name))
    return out


def _auto_mode(push: PushContext, svc: Service, port: int, cluster_type: int) -> bool:
    """Whether auto mTLS applies (Istio: not mesh-external, mode inferred not DISABLE)."""
    if svc.mesh_external:
        return False
    if cluster_type == cluster_pb2.Cluster.ORIGINAL_DST:
        eps = push.registry.endpoints_for(svc.hostname, port)
        if not eps or any(e.tls_mode != ISTIO_TLS_MODE for e in eps):
            return False
    return infer_service_mode(push, svc.namespace) is not MtlsMode.DISABLE


def _istio_match() -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update({"tlsMode": ISTIO_TLS_MODE})
    return s


def apply_cluster_tls(c: cluster_pb2.Cluster, proxy: Proxy, push: PushContext, svc: Service, port: int,
                      protocol: Protocol | None, subset: str, tls: Mapping[str, Any] | None) -> None:
    """Client TLS of an outbound cluster: the DestinationRule's ``tls`` when it has one (a ``tls`` block
    without a mode is DISABLE, the proto's default, as in Istio), else auto mTLS. ``credentialName`` applies
    at gateways (:mod:`mizzen.core.upstream_credentials`); sidecars skip such a policy (warned at apply)."""
    mode = "" if tls is None else str(tls.get("mode") or "DISABLE")
    tls = tls or {}
    sni_default = names.outbound_sni(port, subset, svc.hostname)
    if mode == "DISABLE":
        return
    if mode in ("SIMPLE", "MUTUAL"):
        sni = str(tls.get("sni") or svc.hostname)
        if not tls.get("credentialName"):
            c.transport_socket.CopyFrom(_socket(_file_context(tls, sni, protocol)))
        elif proxy.is_gateway:
            c.transport_socket.CopyFrom(_socket(credential_context(tls, sni, protocol)))
        return
    if not proxy.has_sds:
        return
    if mode == "ISTIO_MUTUAL":
        sans = [str(s) for s in tls.get("subjectAltNames") or ()] or service_accounts(push, svc, port)
        c.transport_socket.CopyFrom(_socket(istio_mutual_context(str(tls.get("sni") or sni_default), sans,
                                                                 protocol)))
        return
    if not push.mesh.enable_auto_mtls or not _auto_mode(push, svc, port, c.type):
        return
    ctx = istio_mutual_context(sni_default, service_accounts(push, svc, port), protocol)
    if c.type == cluster_pb2.Cluster.ORIGINAL_DST:   # Istio: headless services get the socket directly
        c.transport_socket.CopyFrom(_socket(ctx))
        return
    c.transport_socket_matches.append(cluster_pb2.Cluster.TransportSocketMatch(
        name=f"tlsMode-{ISTIO_TLS_MODE}", match=_istio_match(), transport_socket=_socket(ctx)))
    c.transport_socket_matches.append(cluster_pb2.Cluster.TransportSocketMatch(
        name="tlsMode-disabled", match=struct_pb2.Struct(),
        transport_socket=base_pb2.TransportSocket(name=RAW_BUFFER,
                                                  typed_config=pack(raw_buffer_pb2.RawBuffer()))))
