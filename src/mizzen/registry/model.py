"""Registry data: services, ports with protocols, workloads and endpoints, and the immutable snapshot.

Everything here is frozen; :class:`RegistrySnapshot` is what the translation core reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

# Istio's endpoint label (set by the sidecar injector on every pod it injects): "istio" means the endpoint has
# a sidecar that accepts Istio mTLS, so auto mTLS sends TLS there; absent or anything else means plaintext.
TLS_MODE_LABEL = "security.istio.io/tlsMode"
ISTIO_TLS_MODE = "istio"


class Protocol(str, Enum):
    HTTP = "HTTP"
    HTTP2 = "HTTP2"
    GRPC = "GRPC"
    GRPC_WEB = "GRPC-Web"
    HTTPS = "HTTPS"
    TLS = "TLS"
    TCP = "TCP"
    MONGO = "Mongo"
    REDIS = "Redis"
    MYSQL = "MySQL"
    UDP = "UDP"
    UNSUPPORTED = "UnsupportedProtocol"

    @property
    def is_http(self) -> bool:
        return self in (Protocol.HTTP, Protocol.HTTP2, Protocol.GRPC, Protocol.GRPC_WEB)

    @property
    def is_http2(self) -> bool:
        return self in (Protocol.HTTP2, Protocol.GRPC, Protocol.GRPC_WEB)

    @property
    def is_tls(self) -> bool:
        return self in (Protocol.HTTPS, Protocol.TLS)


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    protocol: Protocol
    target_port: int | str | None = None   # number, or a container port name; None = same as port


class Resolution(str, Enum):
    STATIC = "STATIC"
    DNS = "DNS"
    DNS_ROUND_ROBIN = "DNS_ROUND_ROBIN"
    NONE = "NONE"


@dataclass(frozen=True)
class Service:
    hostname: str                          # FQDN, e.g. reviews.bookinfo.svc.cluster.local, or a SE host
    namespace: str
    name: str                              # Service name or ServiceEntry name
    ports: tuple[ServicePort, ...]
    selector: Mapping[str, str] | None = None   # None: endpoints are not selected by labels
    resolution: Resolution = Resolution.STATIC
    mesh_external: bool = False
    addresses: tuple[str, ...] = ()        # VIPs (ClusterIP / SE addresses)
    export_to: tuple[str, ...] = ("*",)
    origin: str = "Service"                # "Service" | "ServiceEntry"
    subject_alt_names: tuple[str, ...] = ()  # a ServiceEntry's: identities its servers may present (mTLS)
    labels: Mapping[str, str] = field(default_factory=dict)   # the object's own metadata.labels
    created: float = field(default=0.0, compare=False)      # creation order (oldest wins a shared host)

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.port == number), None)


@dataclass(frozen=True)
class Workload:
    """One running instance (a pod, a local process, a WorkloadEntry) that can back services."""

    name: str                              # e.g. reviews-v2-7f9c4
    namespace: str
    address: str
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = "default"
    locality: str = ""                     # region/zone/subzone
    ports: Mapping[str, int] = field(default_factory=dict)   # named container ports
    weight: int = 0
    network: str = ""
    healthy: bool = True
    # a WorkloadEntry: behind a Kubernetes Service, its ``ports`` map is keyed by service port name (Istio)
    from_entry: bool = False
    # a Pod from the Kubernetes registry: ServiceEntries select it by labels; Kubernetes Services list it
    # through their EndpointSlices instead (never by label selection here)
    kube_pod: bool = False


@dataclass(frozen=True)
class Endpoint:
    """A workload address serving one service port."""

    hostname: str                          # the service's hostname
    service_port: int
    address: str
    port: int                              # the target port on the workload
    labels: Mapping[str, str] = field(default_factory=dict)
    workload: str = ""
    namespace: str = ""
    service_account: str = ""
    locality: str = ""
    weight: int = 0
    healthy: bool = True
    draining: bool = False                 # Envoy DRAINING: a terminating pod of a persistent-session service

    @property
    def tls_mode(self) -> str:
        """Istio's ``GetTLSModeFromEndpointLabels``: the tlsMode label, else ``disabled``."""
        return self.labels.get(TLS_MODE_LABEL) or "disabled"


class SliceHealth(str, Enum):
    """Istio's health status of a Kubernetes endpoint (from its EndpointSlice conditions)."""
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    DRAINING = "DRAINING"
    TERMINATING = "TERMINATING"


@dataclass(frozen=True)
class SliceEndpoint:
    """One address:port of a Kubernetes Service's EndpointSlices, with what the pod behind it says about
    itself (labels already augmented with locality/network, service account, locality)."""

    address: str
    port_name: str                         # the EndpointSlice port's name = the Service port's name
    port: int                              # the target port number on the pod
    health: SliceHealth = SliceHealth.HEALTHY
    pod: str = ""                          # the Pod's name ("" for an address with no Pod)
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = ""
    locality: str = ""


@dataclass(frozen=True)
class RegistrySnapshot:
    services: tuple[Service, ...] = ()
    # (hostname, service port) -> endpoints, sorted by (address, port)
    endpoints: Mapping[tuple[str, int], tuple[Endpoint, ...]] = field(default_factory=dict)
    workloads: tuple[Workload, ...] = ()
    version: str = "empty"
    content_sum: int = field(default=0, compare=False)   # the version's order-independent hash (registry)

    def service(self, hostname: str, namespace: str | None = None) -> Service | None:
        for s in self.services:
            if s.hostname == hostname and (namespace is None or s.namespace == namespace):
                return s
        return None

    def endpoints_for(self, hostname: str, port: int) -> tuple[Endpoint, ...]:
        return self.endpoints.get((hostname, port), ())
