"""The proxy model: who is connected (sidecar or gateway), its identity, labels, addresses and local knobs.

Node ids follow Istio: ``sidecar~10.1.2.3~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local``; the rest comes
from node metadata written by the agent into the Envoy bootstrap (keys in :class:`Meta`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class ProxyType(str, Enum):
    SIDECAR = "sidecar"
    ROUTER = "router"        # gateways


class Meta:
    """Node metadata keys (Istio's names where Istio has one)."""

    NAMESPACE = "NAMESPACE"
    LABELS = "LABELS"
    WORKLOAD_NAME = "WORKLOAD_NAME"
    SERVICE_ACCOUNT = "SERVICE_ACCOUNT"
    INSTANCE_IPS = "INSTANCE_IPS"
    INTERCEPTION_MODE = "INTERCEPTION_MODE"   # "NONE" (local, bind per port) or "REDIRECT" (iptables)
    SDS = "SDS"   # "true": the bootstrap has the agent's sds-grpc cluster (Istio's old SdsEnabled key)
    # Mizzen's own, for the no-root local mode:
    APP_HOST = "MIZZEN_APP_HOST"               # where inbound clusters reach the app (default 127.0.0.1)
    HTTP_PROXY_PORT = "MIZZEN_HTTP_PROXY_PORT"  # outbound HTTP proxy listener port (local mode), e.g. 15080
    GATEWAY_PORTS = "MIZZEN_GATEWAY_PORTS"     # JSON {"80": 8080, "443": 8443}: Gateway port -> listen port
    LOCALITY = "MIZZEN_LOCALITY"               # region/zone/subzone


DEFAULT_GATEWAY_PORTS: Mapping[int, int] = {80: 8080, 443: 8443}


@dataclass(frozen=True)
class Proxy:
    id: str
    type: ProxyType
    ip: str
    namespace: str
    workload_name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = "default"
    interception_mode: str = "NONE"
    app_host: str = "127.0.0.1"
    http_proxy_port: int = 0                  # 0 = no outbound HTTP proxy listener
    gateway_ports: Mapping[int, int] = field(default_factory=lambda: dict(DEFAULT_GATEWAY_PORTS))
    locality: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_gateway(self) -> bool:
        return self.type is ProxyType.ROUTER

    @property
    def has_sds(self) -> bool:
        """Whether the proxy gets workload certificates from its agent over SDS (``sds-grpc``): only then
        can its config use Istio mTLS (config naming a missing cluster is rejected by Envoy)."""
        return str(self.metadata.get(Meta.SDS, "")).lower() in ("true", "1")

    def gateway_listen_port(self, gateway_port: int) -> int:
        """The port a Gateway server port binds to here (like the ingressgateway Service's targetPort)."""
        return self.gateway_ports.get(gateway_port, gateway_port)

    @staticmethod
    def from_node(node_id: str, metadata: Mapping[str, Any]) -> Proxy:
        """Build from an Envoy node id and metadata (as sent in the first DiscoveryRequest)."""
        parts = node_id.split("~")
        if len(parts) != 4:
            raise ValueError(f"node id {node_id!r}: want type~ip~name.namespace~domain")
        ptype, ip, pod, _domain = parts
        try:
            typ = ProxyType(ptype)
        except ValueError:
            raise ValueError(f"node id {node_id!r}: proxy type must be sidecar or router") from None
        name, _, ns_from_id = pod.partition(".")
        namespace = str(metadata.get(Meta.NAMESPACE) or ns_from_id or "default")
        labels = metadata.get(Meta.LABELS) or {}
        if isinstance(labels, str):
            labels = json.loads(labels)
        gw = metadata.get(Meta.GATEWAY_PORTS)
        if isinstance(gw, str):
            gw = json.loads(gw)
        gateway_ports = {int(k): int(v) for k, v in gw.items()} if gw else dict(DEFAULT_GATEWAY_PORTS)
        return Proxy(
            id=node_id,
            type=typ,
            ip=ip,
            namespace=namespace,
            workload_name=str(metadata.get(Meta.WORKLOAD_NAME) or name),
            labels={str(k): str(v) for k, v in dict(labels).items()},
            service_account=str(metadata.get(Meta.SERVICE_ACCOUNT) or "default"),
            interception_mode=str(metadata.get(Meta.INTERCEPTION_MODE) or "NONE"),
            app_host=str(metadata.get(Meta.APP_HOST) or "127.0.0.1"),
            http_proxy_port=int(metadata.get(Meta.HTTP_PROXY_PORT) or 0),
            gateway_ports=gateway_ports,
            locality=str(metadata.get(Meta.LOCALITY) or ""),
            metadata=dict(metadata),
        )


def node_id(ptype: ProxyType, ip: str, name: str, namespace: str, domain: str = "cluster.local") -> str:
    return f"{ptype.value}~{ip}~{name}.{namespace}~{namespace}.svc.{domain}"
