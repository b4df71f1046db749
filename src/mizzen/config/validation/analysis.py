"""Istio analyzer messages that one object shows on its own, as validation warnings: client TLS without a CA
(IST0128/IST0129), ServiceEntry TCP ports without addresses (IST0134), Service ports outside Istio's naming
convention (IST0118) or an ExternalName Service's port name (IST0150); and Mizzen's own: listener binds a
local-mode proxy cannot use, Gateway TLS version ranges no handshake fits. Run after the semantic checks, only
on objects without errors.

A coded message is ``[ISTxxxx] <Istio's text>``: the same finding is an analyzer message in ``mizzen analyze``
(:mod:`mizzen.analysis.schema` reads the code back), so there is one implementation, not two.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from mizzen.config.model import Config
from mizzen.config.validation.common import (
    Report,
    as_dict,
    as_int,
    as_list,
    as_str,
    coded,
    index_path,
    key_path,
)

__all__ = ["ANALYZERS", "analyze"]

# Istio's protocol.Parse names ("http-web", "grpc"); an unknown prefix is not the convention.
NAMED_PROTOCOLS = frozenset({"http", "http2", "https", "grpc", "grpc-web", "tcp", "tls", "udp", "mongo",
                             "mysql", "redis", "http_proxy"})
# appProtocol values Kubernetes defines (Istio's ConvertProtocol)
KUBERNETES_APP_PROTOCOLS = frozenset({"kubernetes.io/h2c", "kubernetes.io/ws", "kubernetes.io/wss"})
# Ports Istio never sniffs (an unnamed port here is TCP), as mizzen.registry.convert.
WELL_KNOWN_TCP_PORTS = frozenset({25, 53, 3306, 27017})


EXTERNAL_NAME_PORT = ("Port name for ExternalName service is invalid. Proxy may prevent tcp named ports and "
                      "unmatched traffic for ports serving TCP protocol from being forwarded correctly")


def _client_tls_without_ca(cfg: Config, r: Report) -> None:
    """IST0128 / IST0129 (Istio's CaCertificateAnalyzer): SIMPLE or MUTUAL origination at the top-level or
    a port-level traffic policy without caCertificates (a credentialName counts only with a
    workloadSelector)."""
    spec = dict(cfg.spec)
    host = as_str(spec.get("host"))
    selector = spec.get("workloadSelector") is not None
    tp = as_dict(spec.get("trafficPolicy"))
    entries: list[tuple[str, Any, str | None]] = [("spec.trafficPolicy", tp, None)]
    for j, pls in enumerate(as_list(tp.get("portLevelSettings"))):
        port = as_dict(as_dict(pls).get("port")).get("number")
        entries.append((index_path("spec.trafficPolicy.portLevelSettings", j), pls, f"number:{port}"))
    for p, part, port_text in entries:
        tls = as_dict(as_dict(part).get("tls"))
        mode = tls.get("mode")
        if mode not in ("SIMPLE", "MUTUAL") or tls.get("caCertificates"):
            continue
        if tls.get("credentialName") and selector:
            continue
        text = (f"DestinationRule {cfg.namespace}/{cfg.name} in namespace {cfg.namespace} has TLS mode set "
                f"to {mode} but no caCertificates are set to validate server identity for host: {host}")
        if port_text is None:
            r.warn(key_path(p, "tls"), coded("IST0128", text))
        else:
            r.warn(key_path(p, "tls"), coded("IST0129", f"{text} at port {port_text}"))


def _service_entry_tcp_without_addresses(cfg: Config, r: Report) -> None:
    """IST0134 (Istio's ProtocolAddressesAnalyzer): a ServiceEntry without addresses whose port protocol is
    empty or TCP has nothing to match connections on."""
    spec = dict(cfg.spec)
    if as_list(spec.get("addresses")):
        return
    for i, raw in enumerate(as_list(spec.get("ports"))):
        proto = as_str(as_dict(raw).get("protocol")).upper()
        if proto in ("", "TCP"):
            r.warn(index_path("spec.ports", i),
                   coded("IST0134", "ServiceEntry addresses are required for this protocol."))


def _unsupported_protocol(p: dict[str, Any]) -> bool:
    """Istio's ConvertProtocol(...).IsUnsupported(): appProtocol, else the port name's prefix, names no known
    protocol (UDP transport and well-known TCP ports excepted)."""
    if as_str(p.get("protocol")).upper() == "UDP":
        return False
    name = as_str(p.get("appProtocol")) if p.get("appProtocol") is not None else as_str(p.get("name"))
    if name in KUBERNETES_APP_PROTOCOLS or name.lower().startswith("grpc-web"):
        return False
    if name.split("-", 1)[0].lower() in NAMED_PROTOCOLS:
        return False
    return as_int(p.get("port")) not in WELL_KNOWN_TCP_PORTS


def _service_port_names(cfg: Config, r: Report) -> None:
    """IST0118 (Istio's PortNameAnalyzer): a port whose protocol Istio cannot tell from its name/appProtocol
    (Istio sniffs it; Mizzen serves it as HTTP); IST0150 instead for an ExternalName Service (also for a port
    named plain ``tcp``)."""
    external = as_str(cfg.spec.get("type")) == "ExternalName"
    for i, raw in enumerate(as_list(cfg.spec.get("ports"))):
        p = as_dict(raw)
        if not (_unsupported_protocol(p) or (external and as_str(p.get("name")) == "tcp")):
            continue
        if external:
            r.warn(index_path("spec.ports", i), coded("IST0150", EXTERNAL_NAME_PORT))
            continue
        target = p.get("targetPort")
        target_text = str(target) if target not in (None, "", 0) else "0"
        r.warn(index_path("spec.ports", i), coded(
            "IST0118", f"Port name {as_str(p.get('name'))} (port: {as_int(p.get('port'))}, targetPort: "
                       f"{target_text}) doesn't follow the naming convention of Istio port."))


def _bind_warning(r: Report, path: str, bind: str) -> None:
    """Local mode has no network namespaces: a proxy can bind loopback addresses or the wildcard only."""
    try:
        ip = ipaddress.ip_address(bind)
    except ValueError:
        return
    if not (ip.is_loopback or ip.is_unspecified):
        r.warn(path, f"bind {bind} is not a loopback address: a proxy in Mizzen's local mode (no network "
                     "namespace of its own) cannot listen on it, and Envoy then rejects the listener")


def _sidecar_binds(cfg: Config, r: Report) -> None:
    for section in ("ingress", "egress"):
        for i, raw in enumerate(as_list(cfg.spec.get(section))):
            bind = as_str(as_dict(raw).get("bind"))
            _bind_warning(r, key_path(index_path(f"spec.{section}", i), "bind"), bind)


_TLS_ORDER = ("TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3")


def _gateway_servers(cfg: Config, r: Report) -> None:
    for i, raw in enumerate(as_list(cfg.spec.get("servers"))):
        server = as_dict(raw)
        sp = index_path("spec.servers", i)
        _bind_warning(r, key_path(sp, "bind"), as_str(server.get("bind")))
        tls = as_dict(server.get("tls"))
        lo, hi = as_str(tls.get("minProtocolVersion")), as_str(tls.get("maxProtocolVersion"))
        if lo in _TLS_ORDER and hi in _TLS_ORDER and _TLS_ORDER.index(lo) > _TLS_ORDER.index(hi):
            r.warn(key_path(sp, "tls"), f"minProtocolVersion {lo} is above maxProtocolVersion {hi}: no TLS "
                                        "handshake can succeed on this server")


ANALYZERS: dict[str, tuple[Callable[[Config, Report], None], ...]] = {
    "DestinationRule": (_client_tls_without_ca,),
    "Sidecar": (_sidecar_binds,),
    "Gateway": (_gateway_servers,),
    "ServiceEntry": (_service_entry_tcp_without_addresses,),
    "Service": (_service_port_names,),
}


def analyze(cfg: Config, r: Report) -> None:
    """Every analyzer warning for one (otherwise valid) object."""
    for check in ANALYZERS.get(cfg.kind, ()):
        check(cfg, r)
