"""The Envoy bootstrap the agent writes for one proxy (what pilot-agent renders from its template).

It carries the proxy's identity (Istio-style node id and the metadata keys of ``core.proxy.Meta``), an ADS
connection to the control plane over the static ``xds-grpc`` cluster, the admin listener and a layered
runtime. Everything else (listeners, clusters, routes, endpoints) arrives over xDS.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mizzen.core.proxy import DEFAULT_GATEWAY_PORTS, Meta, ProxyType, node_id

__all__ = [
    "DEFAULT_HTTP_PROXY_PORT",
    "XDS_CLUSTER",
    "ProxySpec",
    "build_bootstrap",
    "node_metadata",
    "render_bootstrap",
]

XDS_CLUSTER = "xds-grpc"
DEFAULT_HTTP_PROXY_PORT = 15080
HTTP_PROTOCOL_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@dataclass(frozen=True)
class ProxySpec:
    """Who the proxy is and where it talks to; enough to render its bootstrap."""

    type: ProxyType
    ip: str
    namespace: str
    name: str                                  # workload (pod) name
    admin_port: int
    xds_host: str = "127.0.0.1"
    xds_port: int = 15010
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = "default"
    app_host: str = "127.0.0.1"
    http_proxy_port: int | None = None         # None: 15080 for sidecars, 0 (none) for gateways
    gateway_ports: Mapping[int, int] | None = None
    locality: str = ""
    interception_mode: str = "NONE"
    admin_host: str | None = None              # default: the proxy ip
    domain: str = "cluster.local"

    @property
    def node_id(self) -> str:
        return node_id(self.type, self.ip, self.name, self.namespace, self.domain)

    @property
    def effective_http_proxy_port(self) -> int:
        if self.http_proxy_port is not None:
            return self.http_proxy_port
        return DEFAULT_HTTP_PROXY_PORT if self.type is ProxyType.SIDECAR else 0

    @property
    def effective_admin_host(self) -> str:
        return self.admin_host or self.ip

    @property
    def cluster(self) -> str:
        """``--service-cluster`` style name: ``<app label or name>.<namespace>``."""
        app = self.labels.get("app") or self.labels.get("istio") or self.name
        return f"{app}.{self.namespace}"


def node_metadata(spec: ProxySpec) -> dict[str, Any]:
    gw = spec.gateway_ports if spec.gateway_ports is not None else DEFAULT_GATEWAY_PORTS
    meta: dict[str, Any] = {
        Meta.NAMESPACE: spec.namespace,
        Meta.LABELS: dict(spec.labels),
        Meta.WORKLOAD_NAME: spec.name,
        Meta.SERVICE_ACCOUNT: spec.service_account,
        Meta.INSTANCE_IPS: spec.ip,
        Meta.INTERCEPTION_MODE: spec.interception_mode,
        Meta.APP_HOST: spec.app_host,
        Meta.HTTP_PROXY_PORT: str(spec.effective_http_proxy_port),
        Meta.LOCALITY: spec.locality,
    }
    if spec.type is ProxyType.ROUTER:
        meta[Meta.GATEWAY_PORTS] = json.dumps({str(k): int(v) for k, v in sorted(gw.items())})
    return meta


def _locality(loc: str) -> dict[str, str]:
    parts = ([*loc.split("/"), "", "", ""])[:3]
    out = {k: v for k, v in zip(("region", "zone", "sub_zone"), parts, strict=True) if v}
    return out


def build_bootstrap(spec: ProxySpec) -> dict[str, Any]:
    """The bootstrap as a JSON-ready dict (Envoy v3 Bootstrap)."""
    node: dict[str, Any] = {
        "id": spec.node_id,
        "cluster": spec.cluster,
        "metadata": node_metadata(spec),
    }
    if spec.locality:
        node["locality"] = _locality(spec.locality)
    return {
        "node": node,
        "admin": {
            "address": {"socket_address": {
                "address": spec.effective_admin_host, "port_value": spec.admin_port,
            }},
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": XDS_CLUSTER,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": XDS_CLUSTER,
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                            "address": spec.xds_host, "port_value": spec.xds_port,
                        }}}}]}],
                    },
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": HTTP_PROTOCOL_OPTIONS_TYPE,
                            "explicit_http_config": {"http2_protocol_options": {}},
                        },
                    },
                    # keep the ADS stream alive across quiet periods; reconnects are cheap on loopback
                    "upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 300}},
                },
            ],
        },
        "layered_runtime": {
            "layers": [
                {"name": "global config", "static_layer": {}},
                {"name": "admin", "admin_layer": {}},
            ],
        },
    }


def render_bootstrap(spec: ProxySpec) -> str:
    return json.dumps(build_bootstrap(spec), indent=1, sort_keys=True)
