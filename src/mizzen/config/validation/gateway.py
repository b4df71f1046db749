"""Gateway semantic checks as Istio's ValidateGateway does them: name is a DNS label, at least one server,
each server's hosts (optionally ``ns/host``), port (number, name, protocol), bind, and TLS settings
(modes and the fields each needs, HTTPS/TLS ports need TLS, httpsRedirect only on HTTP); port names
unique across servers.
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
        r.warn(path, f"{mode} mode does not use certificates, they will be ignored")
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
        if "port" in as_dict(s):
            name = as_str(as_dict(as_dict(s).get("port")).get("name"))
            if name in names:
                r.error(key_path(key_path(sp, "port"), "name"),
                        f"port names in servers must be unique: duplicate name {name}")
            names.add(name)
