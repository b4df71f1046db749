"""xDS type URLs, their push order and short names, and the per-proxy resource set (type URL -> name ->
message) that the translation core produces and the snapshot cache consumes. Protocol vocabulary only: no
mesh concepts, no imports from the rest of Mizzen."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from google.protobuf.message import Message

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# Order Envoy wants them pushed in (make-before-break): clusters before endpoints, listeners before routes.
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)
SHORT: Mapping[str, str] = {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS", SECRET: "SDS"}


@dataclass(frozen=True)
class ResourceSet:
    """All resources of every type for one proxy: type_url -> {resource name -> message}."""

    by_type: Mapping[str, Mapping[str, Message]] = field(default_factory=dict)

    def of(self, type_url: str) -> Mapping[str, Message]:
        return self.by_type.get(type_url, {})
