"""Envoy config pieces that take workload certificates from the agent's SDS server, with Istio's names.

Pure JSON-ready dicts (Envoy v3): the ``sds-grpc`` static cluster on the agent's Unix socket (bootstrap), and
the ``default``/``ROOTCA`` SDS secret configs and TLS contexts (listeners and clusters). Istio's listeners
use exactly these: ``initial_fetch_timeout: 0s`` so a listener waits (warms) for its certificate instead of
coming up without one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mizzen.security.nodeagent.cache import ROOT_SECRET, WORKLOAD_SECRET

__all__ = [
    "DOWNSTREAM_TLS_TYPE",
    "SDS_CLUSTER",
    "UPSTREAM_TLS_TYPE",
    "common_tls_context",
    "downstream_tls_transport_socket",
    "sds_cluster",
    "sds_config_source",
    "sds_secret_config",
]

SDS_CLUSTER = "sds-grpc"
DOWNSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def sds_cluster(socket_path: Path | str) -> dict[str, Any]:
    """The bootstrap's static ``sds-grpc`` cluster: HTTP/2 to the agent's SDS socket."""
    return {
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": SDS_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"pipe": {"path": str(socket_path)}}}}]}]},
        "typed_extension_protocol_options": {_HTTP_OPTIONS: {
            "@type": f"type.googleapis.com/{_HTTP_OPTIONS}",
            "explicit_http_config": {"http2_protocol_options": {}},
        }},
    }


def sds_config_source() -> dict[str, Any]:
    return {
        "api_config_source": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "set_node_on_first_message_only": True,
            "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
        },
        "initial_fetch_timeout": "0s",
        "resource_api_version": "V3",
    }


def sds_secret_config(name: str) -> dict[str, Any]:
    return {"name": name, "sds_config": sds_config_source()}


def common_tls_context(alpn: list[str] | None = None, match_sans: list[str] | None = None) -> dict[str, Any]:
    """The workload certificate (``default``) and the roots (``ROOTCA``) from SDS; optionally the peer SPIFFE
    IDs accepted (exact URI SAN matches) and ALPN protocols."""
    default_validation: dict[str, Any] = {}
    if match_sans:
        default_validation["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": san}} for san in match_sans]
    ctx: dict[str, Any] = {
        "tls_certificate_sds_secret_configs": [sds_secret_config(WORKLOAD_SECRET)],
        "combined_validation_context": {
            "default_validation_context": default_validation,
            "validation_context_sds_secret_config": sds_secret_config(ROOT_SECRET),
        },
    }
    if alpn:
        ctx["alpn_protocols"] = list(alpn)
    return ctx


def downstream_tls_transport_socket(require_client_certificate: bool = True,
                                    match_sans: list[str] | None = None) -> dict[str, Any]:
    """A listener filter chain's mTLS transport socket with the workload certificate from SDS."""
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": DOWNSTREAM_TLS_TYPE,
        "require_client_certificate": require_client_certificate,
        "common_tls_context": common_tls_context(match_sans=match_sans),
    }}
