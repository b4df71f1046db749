"""The Sidecar resource as it scopes one proxy: which services it may reach (egress hosts), its explicit
egress listeners (``port`` + ``bind``) and ingress listeners (``port``, ``bind``, ``defaultEndpoint``), and
its outbound traffic policy, and which VirtualServices its egress hosts import. A VirtualService is imported
whole when one of its hosts is, and the services it routes to join the proxy's scope (Istio's SidecarScope:
SelectVirtualServices, then the destinations of the imported VirtualServices). With no Sidecar resource
everything is visible (``*/*``) subject to exportTo.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mizzen.core.hosts import host_matches, hosts_intersect, resolve_short_name
from mizzen.core.mesh import OutboundPolicy
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import MESH_GATEWAY, PushContext, ResolvedVirtualService, exported_to
from mizzen.registry.model import Protocol, Service

DEFAULT_EGRESS_HOSTS: tuple[str, ...] = ("*/*",)


@dataclass(frozen=True)
class EgressListener:
    """One ``spec.egress[]`` entry. ``port`` is 0 for the catch-all entry."""

    hosts: tuple[str, ...]
    port: int = 0
    protocol: Protocol = Protocol.TCP
    port_name: str = ""
    bind: str = ""
    capture_mode: str = ""


@dataclass(frozen=True)
class IngressListener:
    """One ``spec.ingress[]`` entry."""

    port: int
    protocol: Protocol
    port_name: str = ""
    bind: str = ""
    default_endpoint: str = ""
    capture_mode: str = ""


def parse_protocol(value: str | None, port_name: str = "") -> Protocol:
    """Istio protocol from an explicit protocol or a port name prefix (``http-web`` -> HTTP)."""
    text = (value or "").strip()
    if not text and port_name:
        text = port_name.split("-", 1)[0]
    for p in Protocol:
        if p.value.lower() == text.lower():
            return p
    return Protocol.UNSUPPORTED if not value else Protocol.TCP


def _port(entry: Mapping[str, Any]) -> tuple[int, Protocol, str]:
    port = entry.get("port") or {}
    name = str(port.get("name") or "")
    return int(port.get("number") or 0), parse_protocol(port.get("protocol"), name), name


def egress_listeners(proxy: Proxy, push: PushContext) -> list[EgressListener]:
    sc = push.sidecar_for(proxy)
    if sc is None or not sc.spec.get("egress"):
        return [EgressListener(DEFAULT_EGRESS_HOSTS)]
    out = []
    for e in sc.spec.get("egress") or ():
        number, proto, name = _port(e)
        out.append(EgressListener(
            hosts=tuple(str(h) for h in e.get("hosts") or ()),
            port=number, protocol=proto, port_name=name,
            bind=str(e.get("bind") or ""), capture_mode=str(e.get("captureMode") or ""),
        ))
    return out


def ingress_listeners(proxy: Proxy, push: PushContext) -> list[IngressListener]:
    """Explicit ingress listeners of the proxy's Sidecar; empty means "derive inbound from services"."""
    sc = push.sidecar_for(proxy)
    if sc is None:
        return []
    out = []
    for i in sc.spec.get("ingress") or ():
        number, proto, name = _port(i)
        if not number:
            continue
        out.append(IngressListener(
            port=number, protocol=proto, port_name=name, bind=str(i.get("bind") or ""),
            default_endpoint=str(i.get("defaultEndpoint") or ""),
            capture_mode=str(i.get("captureMode") or ""),
        ))
    return out


def outbound_policy(proxy: Proxy, push: PushContext) -> OutboundPolicy:
    """The Sidecar's ``outboundTrafficPolicy.mode`` if set, else the mesh's."""
    sc = push.sidecar_for(proxy)
    mode = ((sc.spec.get("outboundTrafficPolicy") or {}).get("mode") if sc is not None else None) or ""
    try:
        return OutboundPolicy(str(mode).upper()) if mode else push.mesh.outbound_policy
    except ValueError:
        return push.mesh.outbound_policy


def _patterns(hosts: Sequence[str], proxy_namespace: str, owner_namespace: str,
              domain_suffix: str) -> Iterator[str]:
    """The host patterns of the egress ``hosts`` entries ("ns/dnsName" forms) whose namespace part admits
    objects owned by ``owner_namespace``: ``*/h`` any namespace, ``./h`` the proxy's, ``~/h`` none, ``ns/h``
    that one. Short names resolve against the owner's namespace (or the named one)."""
    for entry in hosts:
        ns, sep, dns = entry.partition("/")
        if not sep:
            ns, dns = "*", entry
        if ns == "~":
            continue
        if ns == ".":
            ns = proxy_namespace
        if ns != "*" and ns != owner_namespace:
            continue
        if dns != "*" and "." not in dns and not dns.startswith("*"):
            dns = resolve_short_name(dns, owner_namespace if ns == "*" else ns, domain_suffix)
        yield dns


def host_allows(hosts: Sequence[str], proxy_namespace: str, service: Service, domain_suffix: str) -> bool:
    """True if an egress ``hosts`` list admits ``service`` (``h`` is ``*``, a ``*.suffix`` wildcard or a
    host name)."""
    return any(host_matches(dns, service.hostname)
               for dns in _patterns(hosts, proxy_namespace, service.namespace, domain_suffix))


def imports_host(hosts: Sequence[str], proxy_namespace: str, config_namespace: str, host: str,
                 domain_suffix: str) -> bool:
    """True if egress ``hosts`` import ``host`` as declared by a config object (a VirtualService) in
    ``config_namespace``: the ``ns/`` part names the config's namespace (Istio's SelectVirtualServices)."""
    return any(hosts_intersect(dns, host)
               for dns in _patterns(hosts, proxy_namespace, config_namespace, domain_suffix))


def imports_virtual_service(proxy: Proxy, push: PushContext, vs: ResolvedVirtualService) -> bool:
    """Whether the proxy's Sidecar egress hosts import ``vs`` (one of its hosts, from its namespace); always
    true without a Sidecar resource (``*/*``)."""
    hosts: list[str] = []
    for e in egress_listeners(proxy, push):
        hosts.extend(e.hosts)
    return any(imports_host(hosts, proxy.namespace, vs.config.namespace, h, push.mesh.domain_suffix)
               for h in vs.hosts)


def virtual_service_destinations(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Istio's virtualServiceDestinations: every (field path, destination) of a VirtualService, over
    http/tcp/tls route destinations and http mirrors."""
    for section in ("http", "tcp", "tls"):
        for i, rule in enumerate(spec.get(section) or ()):
            if not isinstance(rule, Mapping):
                continue
            for j, rd in enumerate(rule.get("route") or ()):
                dest = rd.get("destination") if isinstance(rd, Mapping) else None
                if isinstance(dest, Mapping):
                    yield f"spec.{section}[{i}].route[{j}].destination", dest
            if section != "http":
                continue
            mirror = rule.get("mirror")
            if isinstance(mirror, Mapping):
                yield f"spec.http[{i}].mirror", mirror
            for j, m in enumerate(rule.get("mirrors") or ()):
                dest = m.get("destination") if isinstance(m, Mapping) else None
                if isinstance(dest, Mapping):
                    yield f"spec.http[{i}].mirrors[{j}].destination", dest


def imported_destinations(proxy: Proxy, push: PushContext) -> frozenset[str]:
    """The destination hosts (FQDNs) of the mesh VirtualServices the proxy's Sidecar imports: Istio adds
    those services to the SidecarScope, so a VirtualService imported through one of its hosts works whole."""
    sc = push.sidecar_for(proxy)
    if sc is None:
        return frozenset()

    def build() -> frozenset[str]:
        out: set[str] = set()
        for vs in push.virtual_services_for(proxy, MESH_GATEWAY):
            if imports_virtual_service(proxy, push, vs):
                out.update(resolve_short_name(str(d["host"]), vs.config.namespace, push.mesh.domain_suffix)
                           for _, d in virtual_service_destinations(vs.spec) if d.get("host"))
        return frozenset(out)

    return push.memoized(("sidecar-vs-destinations", sc.key, proxy.namespace), build)


def sidecar_allows(proxy: Proxy, push: PushContext, service: Service) -> bool:
    """Whether ``service`` is visible to ``proxy``: exported to its namespace and admitted by the egress hosts
    of its Sidecar resource (the union over all egress listeners; default ``*/*``), or a destination of a
    VirtualService those hosts import."""
    if not exported_to(service.export_to, service.namespace, proxy.namespace):
        return False
    hosts: list[str] = []
    for e in egress_listeners(proxy, push):
        hosts.extend(e.hosts)
    return host_allows(hosts, proxy.namespace, service, push.mesh.domain_suffix) or \
        service.hostname in imported_destinations(proxy, push)


def egress_hosts_for_port(proxy: Proxy, push: PushContext, port: int) -> tuple[str, ...]:
    """The egress hosts governing traffic to ``port`` (Istio's per-port egress listeners): the hosts of the
    egress listener declaring that port (without ``bind``), else those of the catch-all egress listener
    (none at all if the Sidecar has no catch-all)."""
    listeners = egress_listeners(proxy, push)
    for e in listeners:
        if e.port == port and not e.bind:
            return e.hosts
    catch_all: list[str] = []
    for e in listeners:
        if not e.port:
            catch_all.extend(e.hosts)
    return tuple(catch_all)


def allows_on_port(proxy: Proxy, push: PushContext, service: Service, port: int) -> bool:
    """Like :func:`sidecar_allows`, for traffic to one port of the service (per-port egress listeners)."""
    if not exported_to(service.export_to, service.namespace, proxy.namespace):
        return False
    return host_allows(egress_hosts_for_port(proxy, push, port), proxy.namespace, service,
                       push.mesh.domain_suffix)

