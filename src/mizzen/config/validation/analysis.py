"""Istio analyzer-style warnings that one object shows on its own (``istioctl analyze`` codes in the text):
client TLS without a CA (IST0128/IST0129), ServiceEntry TCP ports without addresses (IST0134), Service ports
outside Istio's naming convention (IST0118); and Mizzen's own: listener binds a local-mode proxy cannot use,
Gateway TLS version ranges no handshake fits. Run after the semantic checks, only on objects without errors.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from mizzen.config.model import Config
from mizzen.config.validation.common import Report, as_dict, as_int, as_list, as_str, index_path, key_path

__all__ = ["ANALYZERS", "analyze"]

# Protocols Istio reads from a port name ("http-web", "grpc"); an unknown prefix is not the convention.
NAMED_PROTOCOLS = frozenset({"http", "http2", "https", "grpc", "grpc-web", "tcp", "tls", "udp", "mongo",
                             "mysql", "redis", "http_proxy"})
# Ports Istio never sniffs (an unnamed port here is TCP), as mizzen.registry.convert.
WELL_KNOWN_TCP_PORTS = frozenset({25, 53, 3306, 27017})


def _client_tls_without_ca(cfg: Config, r: Report) -> None:
    """IST0128 / IST0129: SIMPLE or MUTUAL origination that verifies nothing (no caCertificates)."""
    spec = dict(cfg.spec)
    host = as_str(spec.get("host"))
    places: list[tuple[str, Any, str]] = [("spec.trafficPolicy", spec.get("trafficPolicy"), "")]
    for i, s in enumerate(as_list(spec.get("subsets"))):
        places.append((key_path(index_path("spec.subsets", i), "trafficPolicy"),
                       as_dict(s).get("trafficPolicy"), f" (subset {as_str(as_dict(s).get('name'))})"))
    for path, policy, where in places:
        tp = as_dict(policy)
        entries: list[tuple[str, Any, str]] = [(path, tp, where)]
        for j, pls in enumerate(as_list(tp.get("portLevelSettings"))):
            port = as_dict(as_dict(pls).get("port")).get("number")
            pp = index_path(key_path(path, "portLevelSettings"), j)
            entries.append((pp, pls, f"{where} at port {port}"))
        for p, part, at in entries:
            tls = as_dict(as_dict(part).get("tls"))
            mode = tls.get("mode")
            if mode not in ("SIMPLE", "MUTUAL") or tls.get("caCertificates") or tls.get("credentialName"):
                continue
            if tls.get("insecureSkipVerify") is True:
                continue
            code = "IST0129" if "portLevelSettings" in p else "IST0128"
            r.warn(key_path(p, "tls"), f"TLS mode {mode} but no caCertificates: the server certificate of "
                                       f"{host}{at} is not verified ({code})")


def _service_entry_tcp_without_addresses(cfg: Config, r: Report) -> None:
    """IST0134: a TCP port of a ServiceEntry without addresses has nothing to match connections on."""
    spec = dict(cfg.spec)
    if as_list(spec.get("addresses")):
        return
    for i, raw in enumerate(as_list(spec.get("ports"))):
        p = as_dict(raw)
        proto = as_str(p.get("protocol")).upper()
        name = as_str(p.get("name")).lower()
        if proto == "TCP" or (not proto and name.split("-", 1)[0] == "tcp"):
            r.warn(index_path("spec.ports", i),
                   f"ServiceEntry addresses are required for this protocol (IST0134): TCP port "
                   f"{as_int(p.get('number'))} has no address to match, so it only works when no other "
                   "service uses the port")


def _service_port_names(cfg: Config, r: Report) -> None:
    """IST0118: a port named outside ``<protocol>[-<suffix>]`` without appProtocol; Istio sniffs its protocol,
    Mizzen serves it as HTTP."""
    if as_str(cfg.spec.get("type")) == "ExternalName":
        return
    for i, raw in enumerate(as_list(cfg.spec.get("ports"))):
        p = as_dict(raw)
        name = as_str(p.get("name"))
        number = as_int(p.get("port"))
        if p.get("appProtocol") or as_str(p.get("protocol")).upper() in ("UDP", "SCTP"):
            continue
        lowered = name.lower()
        if lowered.startswith("grpc-web") or lowered.split("-", 1)[0] in NAMED_PROTOCOLS:
            continue
        if number in WELL_KNOWN_TCP_PORTS:
            continue
        shown = f"port name {name!r}" if name else "unnamed port"
        r.warn(index_path("spec.ports", i),
               f"{shown} (port {number}) does not follow Istio's naming convention (<protocol>[-<suffix>]) "
               "and has no appProtocol (IST0118): Istio would detect its protocol, Mizzen serves it as HTTP")


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
