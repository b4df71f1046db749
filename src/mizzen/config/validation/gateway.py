"""Gateway semantic checks as Istio's ValidateGateway does them: name is a DNS label, at least one server,
each server's hosts (optionally ``ns/host``), port (number, name, protocol), bind, and TLS settings
(modes and the fields each needs, HTTPS/TLS ports need TLS, httpsRedirect only on HTTP); port names
unique across servers; and what Envoy would refuse or Mizzen cannot serve: partial-wildcard SNI hosts, servers
that cannot share a port.
"""

from __future__ import annotations

from typing import Any

from mizzen.config.model import Config
from mizzen.config.validation.common import (
    HTTP_PROTOCOLS,
    TLS_PROTOCOLS,
    Report,
    as_dict,
    as_int,
    as_list,
    as_str,
    check_namespace_slash_host,
    check_port,
    index_path,
    is_dns1123_label,
    is_ip,
    key_path,
    parse_protocol,
    register,
)
from mizzen.config.validation.envoy_limits import cipher_suite_error, sni_error


def check_server_tls(r: Report, path: str, tls: dict[str, Any]) -> None:
    """Istio's validateTLSOptions (ServerTLSSettings); shared with Sidecar ingress TLS."""
    mode = tls.get("mode", "PASSTHROUGH")
    if mode == "ISTIO_MUTUAL":
        for key, what in (("serverCertificate", "server certificate"), ("privateKey", "private key"),
                          ("caCertificates", "CA bundle"), ("credentialName", "credentialName")):
            if tls.get(key):
                r.error(key_path(path, key), f"ISTIO_MUTUAL TLS cannot have associated {what}")
        return
    cert_fields = ("caCrl", "serverCertificate", "privateKey", "caCertificates", "credentialName")
    if mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH") and any(tls.get(k) for k in cert_fields):
        if "mode" in tls:
            r.warn(path, f"{mode} mode does not use certificates, they will be ignored")
        else:   # Mizzen's gateway reads an unset mode as SIMPLE (gateway_listeners.GatewayServer.tls_mode)
            r.warn(path, "tls.mode is unset: Istio takes it as PASSTHROUGH and ignores the certificates; "
                         "Mizzen terminates TLS with them (SIMPLE). Set the mode explicitly")
    has_credential = any(tls.get(k) for k in ("credentialName", "credentialNames", "tlsCertificates"))
    if mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL") and has_credential:
        if tls.get("caCrl") and tls.get("credentialName"):
            r.error(key_path(path, "caCrl"), "CRL is not supported with credentialName. CRL has to be "
                                             "specified in "
                                             "the credential")
        return
    if mode == "SIMPLE":
        if not tls.get("serverCertificate"):
            r.error(path, "SIMPLE TLS requires a server certificate (serverCertificate + privateKey, or "
                          "credentialName)")
        if not tls.get("privateKey"):
            r.error(path, "SIMPLE TLS requires a private key (serverCertificate + privateKey, or "
                          "credentialName)")
    elif mode in ("MUTUAL", "OPTIONAL_MUTUAL"):
        for key, what in (("serverCertificate", "a server certificate"), ("privateKey", "a private key"),
                          ("caCertificates", "a client CA bundle")):
            if not tls.get(key):
                r.error(path, f"MUTUAL TLS requires {what}")
    if tls.get("caCrl") and mode == "SIMPLE":
        r.error(key_path(path, "caCrl"), "CRL is not supported with SIMPLE TLS")


def _check_unset_mode(r: Report, path: str, tls: dict[str, Any], proto: str) -> None:
    """An HTTPS/TLS server without ``tls.mode`` nor certificates: Istio passes it through, Mizzen (reading
    the unset mode as SIMPLE) has no certificate to terminate with and does not serve it."""
    if proto not in TLS_PROTOCOLS or "mode" in tls:
        return
    if not any(tls.get(k) for k in ("serverCertificate", "privateKey", "credentialName", "credentialNames",
                                    "tlsCertificates")):
        r.warn(path, "tls.mode is unset: Istio takes it as PASSTHROUGH, Mizzen as SIMPLE, which without "
                     "serverCertificate/privateKey is not served. Set mode: PASSTHROUGH")


def _check_server(r: Report, path: str, server: dict[str, Any]) -> None:
    hosts = as_list(server.get("hosts"))
    if not hosts:
        r.error(key_path(path, "hosts"), "server config must contain at least one host")
    for i, h in enumerate(hosts):
        for err in check_namespace_slash_host(str(h), gateway=True):
            r.error(index_path(key_path(path, "hosts"), i), err)
    port = server.get("port")
    pp = key_path(path, "port")
    bind = as_str(server.get("bind"))
    port_ok = port is not None
    if port is None:
        r.error(pp, "port is required")
    else:
        p = as_dict(port)
        proto = as_str(p.get("protocol"))
        if parse_protocol(proto) is None:
            r.error(key_path(pp, "protocol"), f'invalid protocol "{proto}", supported protocols are HTTP, '
                                              'HTTP2, '
                                              "GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP, HTTPS, TLS")
            port_ok = False
        if as_int(p.get("number")) > 0 or not bind.startswith("unix://"):
            check_port(r, key_path(pp, "number"), p.get("number"))
        if as_int(p.get("targetPort")) > 0:
            r.error(key_path(pp, "targetPort"), "targetPort has no impact on Gateways")
        if not as_str(p.get("name")):
            r.error(key_path(pp, "name"), "port name must be set")
    if bind and not bind.startswith("unix://") and not is_ip(bind):
        r.error(key_path(path, "bind"), f"{bind} is not a valid IP")
    tls = server.get("tls")
    tp = key_path(path, "tls")
    if tls is not None:
        check_server_tls(r, tp, as_dict(tls))
        _check_unset_mode(r, tp, as_dict(tls), parse_protocol(as_str(as_dict(port).get("protocol"))) or "")
    if port_ok:
        proto = parse_protocol(as_str(as_dict(port).get("protocol"))) or ""
        t = as_dict(tls)
        if proto in TLS_PROTOCOLS and tls is None:
            r.error(pp, "server must have TLS settings for HTTPS/TLS protocols")
        elif proto not in TLS_PROTOCOLS and tls is not None:
            if proto in HTTP_PROTOCOLS:
                passthrough_only = t.get("mode", "PASSTHROUGH") == "PASSTHROUGH"
                if not passthrough_only or any(t.get(k) for k in ("caCertificates", "privateKey",
                                                                   "serverCertificate")):
                    r.error(tp, "server cannot have TLS settings for plain text HTTP ports")
            else:
                r.error(tp, "server cannot have TLS settings for non HTTPS/TLS ports")
        if proto not in HTTP_PROTOCOLS and t.get("httpsRedirect") is True:
            r.warn(key_path(tp, "httpsRedirect"), "tls.httpsRedirect should only be used with http servers")


def _sni_names(server: dict[str, Any], proto: str) -> list[tuple[int, str]] | None:
    """(host index, server name) a non-HTTP server's filter chain matches on ("*": every name); None when
    its server names come from VirtualServices (TLS passthrough) or it is skipped anyway."""
    tls = server.get("tls")
    if tls is None:
        return [(-1, "*")] if proto not in TLS_PROTOCOLS else None
    mode = as_str(as_dict(tls).get("mode")) or "SIMPLE"
    if mode not in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"):
        return None
    hosts = [str(h).rpartition("/")[2] for h in as_list(server.get("hosts"))]
    return [(-1, "*")] if "*" in hosts else list(enumerate(hosts))


def _check_shared_ports(r: Report, servers: list[Any]) -> None:
    """What Mizzen (like Istio) cannot serve on one port: plain HTTP next to TLS/TCP servers, and two
    TLS/TCP servers matching the same server name (each is warned; the later server or host is dropped)."""
    first: dict[tuple[str, int], tuple[int, bool]] = {}
    names: dict[tuple[str, int, str], int] = {}
    for i, raw in enumerate(servers):
        server = as_dict(raw)
        port = as_dict(server.get("port"))
        number, proto = as_int(port.get("number")), parse_protocol(as_str(port.get("protocol")))
        if number <= 0 or proto is None:
            continue
        sp = index_path("spec.servers", i)
        key = (as_str(server.get("bind")), number)
        is_http = proto in HTTP_PROTOCOLS
        j, first_http = first.setdefault(key, (i, is_http))
        if first_http != is_http:
            kinds = ("plain HTTP", "TLS/TCP") if first_http else ("TLS/TCP", "plain HTTP")
            r.warn(key_path(sp, "port"),
                   f"port {number} already has a {kinds[0]} server (#{j}); {kinds[0]} and {kinds[1]} servers "
                   "cannot share a port: this server is not served")
            continue
        for k, name in (_sni_names(server, proto) or []) if not is_http else []:
            taken = names.setdefault((*key, name.lower()), i)
            if taken != i:
                where = index_path(key_path(sp, "hosts"), k) if k >= 0 else sp
                what = f'host "{name}"' if name != "*" else "every server name"
                r.warn(where, f"{what} on port {number} is already matched by server #{taken}; Envoy cannot "
                              "choose between them: this one is not served")


def _check_cipher_suites(r: Report, path: str, server: dict[str, Any]) -> None:
    tp = key_path(key_path(path, "tls"), "cipherSuites")
    for i, suite in enumerate(as_list(as_dict(server.get("tls")).get("cipherSuites"))):
        err = cipher_suite_error(str(suite))
        if err:
            r.error(index_path(tp, i), err)


def _check_sni_hosts(r: Report, path: str, server: dict[str, Any]) -> None:
    proto = parse_protocol(as_str(as_dict(server.get("port")).get("protocol"))) or ""
    if proto not in TLS_PROTOCOLS or _sni_names(server, proto) is None:
        return
    for i, h in enumerate(as_list(server.get("hosts"))):
        err = sni_error(str(h).rpartition("/")[2])
        if err:
            r.error(index_path(key_path(path, "hosts"), i), err)


@register("Gateway")
def validate_gateway(cfg: Config, r: Report) -> None:
    if not is_dns1123_label(cfg.name):
        r.error("metadata.name", f'invalid gateway name: "{cfg.name}" (must be a DNS label: no dots)')
    servers = as_list(cfg.spec.get("servers"))
    if not servers:
        r.error("spec.servers", "gateway must have at least one server")
    names: set[str] = set()
    for i, s in enumerate(servers):
        sp = index_path("spec.servers", i)
        if s is None:
            r.error(sp, "server may not be nil")
            continue
        _check_server(r, sp, as_dict(s))
        _check_sni_hosts(r, sp, as_dict(s))
        _check_cipher_suites(r, sp, as_dict(s))
        if "port" in as_dict(s):
            name = as_str(as_dict(as_dict(s).get("port")).get("name"))
            if name in names:
                r.error(key_path(key_path(sp, "port"), "name"),
                        f"port names in servers must be unique: duplicate name {name}")
            names.add(name)
    _check_shared_ports(r, servers)
