"""Pure conversions from config objects to registry data: Kubernetes Service, ServiceEntry and WorkloadEntry
to :class:`Service` / :class:`Workload`, port protocol detection (Istio's rules; unnamed/unknown ports are
HTTP instead of sniffed, see :func:`port_protocol`), and endpoint selection for one service.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from mizzen.config.labels import selects
from mizzen.config.model import Config
from mizzen.registry.model import (
    Endpoint,
    Protocol,
    Resolution,
    Service,
    ServicePort,
    SliceEndpoint,
    SliceHealth,
    Workload,
)

# Ports Istio never sniffs: an unnamed port here is TCP.
WELL_KNOWN_TCP_PORTS = frozenset({25, 53, 3306, 27017})
EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"
# Istio's PILOT_PERSISTENT_SESSION_LABEL: a Service with it gets its terminating endpoints as DRAINING
PERSISTENT_SESSION_LABEL = "istio.io/persistent-session"
UNIX_PREFIX = "unix://"   # unix domain socket workload addresses: left out of endpoints (not supported yet)

_PROTOCOLS: Mapping[str, Protocol] = {
    "http": Protocol.HTTP,
    "http_proxy": Protocol.HTTP,
    "http2": Protocol.HTTP2,
    "grpc": Protocol.GRPC,
    "grpc-web": Protocol.GRPC_WEB,
    "https": Protocol.HTTPS,
    "tls": Protocol.TLS,
    "tcp": Protocol.TCP,
    "mongo": Protocol.MONGO,
    "redis": Protocol.REDIS,
    "mysql": Protocol.MYSQL,
    "udp": Protocol.UDP,
    # Kubernetes-defined appProtocol values
    "kubernetes.io/h2c": Protocol.HTTP2,
    "kubernetes.io/ws": Protocol.HTTP,
    "kubernetes.io/wss": Protocol.HTTPS,
}


def parse_protocol(value: str | None) -> Protocol | None:
    """A protocol name (any case) -> Protocol, or None when unknown/empty."""
    if not value:
        return None
    return _PROTOCOLS.get(value.strip().lower())


def protocol_from_port_name(name: str) -> Protocol | None:
    """Istio's name convention: ``<protocol>[-<suffix>]``; ``grpc-web`` is matched before splitting."""
    lowered = name.lower()
    if lowered.startswith("grpc-web"):
        return Protocol.GRPC_WEB
    return parse_protocol(lowered.split("-", 1)[0])


def port_protocol(port: int, name: str = "", declared: str | None = None, transport: str = "TCP") -> Protocol:
    """The protocol of a service port: declared (appProtocol / ServiceEntry protocol), then the name, then
    UDP transport, then well-known TCP ports; otherwise HTTP (Mizzen's stand-in for Istio's sniffing).

    Istio (pkg/config/kube/conversion.go) follows the same order but *sniffs* the remaining unnamed/unknown
    ports: HTTP/1.1 and HTTP/2 requests are handled as HTTP, anything else as TCP. Mizzen does not sniff and
    treats them as HTTP: in the local (no-root) mode apps reach services only through the sidecar's HTTP
    proxy listener (``HTTP_PROXY``), so a non-HTTP port is unusable there anyway. Raw-TCP services must name
    their port ``tcp-*`` (or set ``appProtocol: tcp``), which is what Istio recommends over sniffing too.
    """
    explicit = parse_protocol(declared)
    if explicit is not None:
        return explicit
    by_name = protocol_from_port_name(name) if name else None
    if by_name is not None and by_name is not Protocol.UDP:
        return by_name
    if transport.upper() == "UDP":
        return Protocol.UDP
    if port in WELL_KNOWN_TCP_PORTS:
        return Protocol.TCP
    return Protocol.HTTP


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _int_map(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, int] = {}
    for k, v in value.items():
        try:
            out[str(k)] = int(v)
        except (TypeError, ValueError):
            continue
    return out


def _target_port(value: Any) -> int | str | None:
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    text = str(value)
    return int(text) if text.isdigit() else text


def _export_to(value: Any) -> tuple[str, ...]:
    if not value:
        return ("*",)
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    return tuple(str(v) for v in value if str(v))


def service_from_kube(c: Config, domain_suffix: str = "cluster.local") -> Service:
    """A Kubernetes Service -> one Service ``name.ns.svc.<suffix>``. ``ExternalName`` -> DNS to the external
    name (mesh external), as Istio. Headless (``clusterIP: None``) stays STATIC: Istio's passthrough relies
    on the pod IP being the connection's destination, which the local mode (no iptables) does not have."""
    spec = c.spec
    ports = []
    for p in spec.get("ports") or ():
        number = int(p.get("port", 0))
        name = str(p.get("name") or "")
        proto = port_protocol(number, name, p.get("appProtocol"), str(p.get("protocol") or "TCP"))
        ports.append(ServicePort(name, number, proto, _target_port(p.get("targetPort"))))
    addresses: list[str] = []
    for ip in [spec.get("clusterIP"), *(spec.get("clusterIPs") or ())]:
        if ip and str(ip) != "None" and str(ip) not in addresses:
            addresses.append(str(ip))
    selector = _str_map(spec.get("selector")) or None
    resolution = Resolution.STATIC
    mesh_external = False
    if str(spec.get("type", "")) == "ExternalName" and spec.get("externalName"):
        resolution, mesh_external, selector = Resolution.DNS, True, None
    return Service(
        hostname=f"{c.name}.{c.namespace}.svc.{domain_suffix}",
        namespace=c.namespace,
        name=c.name,
        ports=tuple(ports),
        selector=selector,
        resolution=resolution,
        mesh_external=mesh_external,
        addresses=tuple(addresses),
        export_to=_export_to(c.annotations.get(EXPORT_TO_ANNOTATION)),
        origin="Service",
        labels=dict(c.labels),
        created=c.created,
    )


def _se_ports(spec: Mapping[str, Any]) -> tuple[ServicePort, ...]:
    out = []
    for p in spec.get("ports") or ():
        number = int(p.get("number", 0))
        name = str(p.get("name") or "")
        target = p.get("targetPort")
        out.append(ServicePort(name, number, port_protocol(number, name, p.get("protocol")),
                               int(target) if target else None))
    return tuple(out)


def se_address(address: str) -> str:
    """A ServiceEntry address as Istio stores it: a single-host CIDR (``/32``, ``/128``) becomes the plain
    IP; anything else is kept as written."""
    try:
        net = ipaddress.ip_network(address, strict=False)
    except ValueError:
        return address
    if "/" in address and net.num_addresses == 1:
        return str(net.network_address)
    return address


def services_from_service_entry(c: Config) -> list[Service]:
    """A ServiceEntry -> one Service per host (hosts are used as written: ServiceEntry hosts are FQDNs)."""
    spec = c.spec
    try:
        resolution = Resolution(str(spec.get("resolution") or "NONE").upper())
    except ValueError:
        resolution = Resolution.NONE
    selector = _str_map((spec.get("workloadSelector") or {}).get("labels")) or None
    return [
        Service(
            hostname=str(host),
            namespace=c.namespace,
            name=c.name,
            ports=_se_ports(spec),
            selector=selector,
            resolution=resolution,
            mesh_external=str(spec.get("location") or "MESH_EXTERNAL").upper() == "MESH_EXTERNAL",
            addresses=tuple(se_address(str(a)) for a in spec.get("addresses") or ()),
            export_to=_export_to(spec.get("exportTo")),
            origin="ServiceEntry",
            subject_alt_names=tuple(str(s) for s in spec.get("subjectAltNames") or ()),
            labels=dict(c.labels),
            created=c.created,
        )
        for host in spec.get("hosts") or ()
    ]


def workload_from_entry(c: Config) -> Workload:
    """A WorkloadEntry -> Workload (its labels, named ports, locality, weight, network, service account)."""
    spec = c.spec
    return Workload(
        name=c.name,
        namespace=c.namespace,
        address=str(spec.get("address") or ""),
        labels=_str_map(spec.get("labels")),
        service_account=str(spec.get("serviceAccount") or "default"),
        locality=str(spec.get("locality") or ""),
        ports=_int_map(spec.get("ports")),
        weight=int(spec.get("weight") or 0),
        network=str(spec.get("network") or ""),
        from_entry=True,
    )


def inline_workloads(c: Config) -> list[Workload]:
    """A ServiceEntry's inline ``endpoints`` as anonymous workloads (named ``<se>-<index>``)."""
    out = []
    for i, ep in enumerate(c.spec.get("endpoints") or ()):
        out.append(Workload(
            name=f"{c.name}-{i}",
            namespace=c.namespace,
            address=str(ep.get("address") or ""),
            labels=_str_map(ep.get("labels")),
            service_account=str(ep.get("serviceAccount") or "default"),
            locality=str(ep.get("locality") or ""),
            ports=_int_map(ep.get("ports")),
            weight=int(ep.get("weight") or 0),
            network=str(ep.get("network") or ""),
        ))
    return out




def endpoint_of(svc: Service, port: ServicePort, w: Workload, target: int) -> Endpoint:
    return Endpoint(
        hostname=svc.hostname, service_port=port.port, address=w.address, port=target, labels=dict(w.labels),
        workload=w.name, namespace=w.namespace, service_account=w.service_account, locality=w.locality,
        weight=w.weight, healthy=w.healthy,
    )


def kube_target_port(port: ServicePort, w: Workload) -> int | None:
    """Named targetPort through the workload's named ports (None if it has no such port); else a
    WorkloadEntry's port for the service port's name (Istio's serviceInstanceFromWorkloadInstance); else the
    numeric targetPort; no targetPort -> the service port itself."""
    if isinstance(port.target_port, str):
        return w.ports.get(port.target_port)
    if w.from_entry and port.name and port.name in w.ports:
        return w.ports[port.name]
    if isinstance(port.target_port, int):
        return port.target_port
    return port.port


def entry_target_port(port: ServicePort, w: Workload) -> int:
    """ServiceEntry endpoints: the endpoint's port for the port's name, else targetPort, else the port."""
    if port.name and port.name in w.ports:
        return w.ports[port.name]
    if isinstance(port.target_port, int):
        return port.target_port
    return port.port


def label_selectable(svc: Service, w: Workload) -> bool:
    """Whether ``svc``'s selector may pick ``w``: a Kubernetes Pod only by a ServiceEntry (a Kubernetes
    Service has its Pods through EndpointSlices)."""
    return not w.kube_pod or svc.origin == "ServiceEntry"


def endpoints_for_service(svc: Service, workloads: Iterable[Workload], inline: Iterable[Workload] = (),
                          external_name: str = "") -> dict[int, list[Endpoint]]:
    """Endpoints of ``svc`` per service port, from selected ``workloads`` (same namespace) and ``inline``
    ServiceEntry endpoints; a DNS service with neither uses its own host (or ``external_name``)."""
    out: dict[int, list[Endpoint]] = {p.port: [] for p in svc.ports}
    inline = [w for w in inline if not w.address.startswith(UNIX_PREFIX)]   # not IP endpoints: not supported
    selected: list[Workload] = []
    if svc.selector:
        selected = [w for w in workloads
                    if w.namespace == svc.namespace and not w.address.startswith(UNIX_PREFIX)
                    and selects(svc.selector, w.labels) and label_selectable(svc, w)]
    for port in svc.ports:
        eps = out[port.port]
        if svc.origin == "ServiceEntry":
            for w in [*inline, *selected]:
                eps.append(endpoint_of(svc, port, w, entry_target_port(port, w)))
        else:
            for w in selected:
                target = kube_target_port(port, w)
                if target is not None:
                    eps.append(endpoint_of(svc, port, w, target))
        if not eps and svc.resolution in (Resolution.DNS, Resolution.DNS_ROUND_ROBIN) and not svc.selector:
            host = external_name or svc.hostname
            target = port.target_port if isinstance(port.target_port, int) else port.port
            eps.append(Endpoint(hostname=svc.hostname, service_port=port.port, address=host, port=target,
                                namespace=svc.namespace))
    return out


def endpoints_from_slices(svc: Service, slice_eps: Iterable[SliceEndpoint]) -> dict[int, list[Endpoint]]:
    """A Kubernetes Service's endpoints per service port from its EndpointSlices, as Istio's endpoint
    builder sends them: a slice port belongs to the service port of the same name; HEALTHY endpoints are sent,
    DRAINING ones only for a persistent-session service (as Envoy DRAINING), UNHEALTHY and TERMINATING ones
    never (Istio's default, PILOT_SEND_UNHEALTHY_ENDPOINTS off)."""
    by_name = {p.name: p for p in svc.ports}
    persistent = bool(svc.labels.get(PERSISTENT_SESSION_LABEL))
    out: dict[int, list[Endpoint]] = {}
    for se in slice_eps:
        port = by_name.get(se.port_name)
        if port is None and len(svc.ports) == 1 and not se.port_name:
            port = svc.ports[0]
        if port is None or se.health in (SliceHealth.UNHEALTHY, SliceHealth.TERMINATING):
            continue
        draining = se.health is SliceHealth.DRAINING
        if draining and not persistent:
            continue
        out.setdefault(port.port, []).append(Endpoint(
            hostname=svc.hostname, service_port=port.port, address=se.address, port=se.port,
            labels=dict(se.labels), workload=se.pod, namespace=se.namespace or svc.namespace,
            service_account=se.service_account, locality=se.locality, draining=draining))
    return out
