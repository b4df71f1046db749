"""Sidecar semantic checks as Istio's ValidateSidecar does them: not empty, workload selector labels, ingress
listeners (port, bind, defaultEndpoint, TLS, connection pool), egress listeners (one catch-all last, unique
ports, ``ns/host`` hosts), outboundTrafficPolicy egress proxy.
"""

from __future__ import annotations

from typing import Any

from mizzen.config.model import Config
from mizzen.config.validation.common import (
    Report,
    as_dict,
    as_int,
    as_list,
    as_str,
    check_fqdn,
    check_namespace_slash_host,
    check_port,
    check_port_name,
    check_protocol,
    index_path,
    is_ip,
    key_path,
    register,
)
from mizzen.config.validation.destinationrule import check_connection_pool
from mizzen.config.validation.gateway import check_server_tls
from mizzen.config.validation.httproute import check_destination


def _check_port(r: Report, path: str, port: dict[str, Any], bind: str, egress: bool) -> None:
    if as_str(port.get("name")):
        check_port_name(r, key_path(path, "name"), as_str(port.get("name")))
    check_protocol(r, key_path(path, "protocol"), port.get("protocol"))
    if as_int(port.get("targetPort")) > 0:
        r.error(key_path(path, "targetPort"), "targetPort has no impact on Sidecars")
    if egress and as_int(port.get("number")) == 0:
        if not bind.startswith("unix://"):
            r.error(key_path(path, "number"), "sidecar: ports with 0 value must have a unix domain socket "
                                              "bind "
                                              "address")
        return
    check_port(r, key_path(path, "number"), port.get("number"))


def _check_default_endpoint(r: Report, path: str, ep: str) -> None:
    if ep.startswith("unix://"):
        sock = ep[len("unix://"):]
        if not sock.startswith("@") and (not sock.startswith("/") or sock.endswith("/")):
            r.error(path, f"{sock} is not an absolute path to a file")
        return
    host, sep, port = ep.rpartition(":")
    host = host.strip("[]")
    if not sep:
        r.error(path, f"address {ep}: missing port in address")
        return
    if host not in ("", "127.0.0.1", "0.0.0.0", "::1", "::"):
        r.error(path, "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,"
                      "[::]:port,unix://filepath or unset")
    if not port.isdigit():
        r.error(path, f"sidecar: defaultEndpoint port ({port}) is not a number")
    else:
        check_port(r, path, int(port))


def _check_ingress(r: Report, ingress: list[Any]) -> None:
    ports: set[int] = set()
    for i, raw in enumerate(ingress):
        ip = index_path("spec.ingress", i)
        ing = as_dict(raw)
        if "port" not in ing:
            r.error(ip, "sidecar: port is required for ingress listeners")
            continue
        port = as_dict(ing.get("port"))
        bind = as_str(ing.get("bind"))
        _check_port(r, key_path(ip, "port"), port, bind, egress=False)
        if bind and not is_ip(bind):
            r.error(key_path(ip, "bind"), f"{bind} is not a valid IP")
        number = as_int(port.get("number"))
        if number in ports:
            r.error(key_path(ip, "port"), "sidecar: ports on IP bound listeners must be unique")
        ports.add(number)
        if as_str(ing.get("defaultEndpoint")):
            _check_default_endpoint(r, key_path(ip, "defaultEndpoint"), as_str(ing.get("defaultEndpoint")))
        if "tls" in ing:
            tls = as_dict(ing.get("tls"))
            tp = key_path(ip, "tls")
            if as_list(tls.get("subjectAltNames")):
                r.error(key_path(tp, "subjectAltNames"), "sidecar: subjectAltNames is not supported in "
                                                         "ingress tls")
            if tls.get("httpsRedirect") is True:
                r.error(key_path(tp, "httpsRedirect"), "sidecar: httpsRedirect is not supported")
            if tls.get("credentialName"):
                r.error(key_path(tp, "credentialName"), "sidecar: credentialName is not currently supported")
            if tls.get("mode") in ("ISTIO_MUTUAL", "AUTO_PASSTHROUGH"):
                r.error(key_path(tp, "mode"), "configuration is invalid: cannot set mode to "
                                              f"{tls.get('mode')} in "
                                              "sidecar ingress tls")
            check_server_tls(r, tp, tls)
        check_connection_pool(r, key_path(ip, "connectionPool"), ing.get("connectionPool"))


def _check_egress(r: Report, egress: list[Any], namespace: str) -> None:
    ports: set[int] = set()
    binds: set[str] = set()
    catch_all = False
    for i, raw in enumerate(egress):
        ep = index_path("spec.egress", i)
        eg = as_dict(raw)
        if "port" not in eg:
            if catch_all:
                r.error(ep, "sidecar: egress can have only one listener with empty port")
                continue
            if i != len(egress) - 1:
                r.error(ep, "sidecar: the egress listener with empty port should be the last listener in "
                            "the list")
            catch_all = True
        else:
            port = as_dict(eg.get("port"))
            bind = as_str(eg.get("bind"))
            _check_port(r, key_path(ep, "port"), port, bind, egress=True)
            if bind and not bind.startswith("unix://") and not is_ip(bind):
                r.error(key_path(ep, "bind"), f"{bind} is not a valid IP")
            number = as_int(port.get("number"))
            if number == 0:
                if bind in binds:
                    r.error(key_path(ep, "bind"), "sidecar: unix domain socket values for listeners must "
                                                  "be unique")
                binds.add(bind)
            else:
                if number in ports:
                    r.error(key_path(ep, "port"), "sidecar: ports on IP bound listeners must be unique")
                ports.add(number)
        hosts = [str(h) for h in as_list(eg.get("hosts"))]
        if not hosts:
            r.error(key_path(ep, "hosts"), "sidecar: egress listener must contain at least one host")
        by_ns: dict[str, set[str]] = {}
        for j, h in enumerate(hosts):
            hp = index_path(key_path(ep, "hosts"), j)
            ns, slash, name = h.partition("/")
            if slash:
                key = namespace if ns == "." else ns
                seen = by_ns.setdefault(key, set())
                if (name in seen or "*" in seen) if name != "*" else seen:
                    r.warn(hp, f"duplicated egress host: {h}")
                seen.add(name)
            for err in check_namespace_slash_host(h, gateway=False):
                if err == "host must be of form namespace/dnsName":
                    err = f'{err} (got "{h}"; e.g. "./*", "istio-system/*")'
                r.error(hp, err)
        if "*" in by_ns.get("*", set()) and len(by_ns) != 1:
            r.warn(key_path(ep, "hosts"), "`*/*` host select all resources, no other hosts can be added")


@register("Sidecar")
def validate_sidecar(cfg: Config, r: Report) -> None:
    spec = dict(cfg.spec)
    selector = spec.get("workloadSelector")
    if selector is not None:
        labels = as_dict(as_dict(selector).get("labels"))
        if not labels:
            r.warn("spec.workloadSelector", "sidecar: workload selector specified without labels, will be "
                                            "applied "
                                            "to all services in namespace")
        for k, v in labels.items():
            if "*" in str(k) or "*" in str(v):
                r.error(key_path("spec.workloadSelector.labels", str(k)),
                        f'wildcard is not supported in selector: "{k}={v}"')
    ingress, egress = as_list(spec.get("ingress")), as_list(spec.get("egress"))
    others = ("outboundTrafficPolicy", "inboundConnectionPool")
    if not ingress and not egress and not any(k in spec for k in others):
        r.error("spec", "sidecar: empty configuration provided")
        return
    _check_ingress(r, ingress)
    check_connection_pool(r, "spec.inboundConnectionPool", spec.get("inboundConnectionPool"))
    _check_egress(r, egress, cfg.namespace)
    otp = as_dict(spec.get("outboundTrafficPolicy"))
    if "egressProxy" in otp:
        op = "spec.outboundTrafficPolicy.egressProxy"
        if otp.get("mode", "REGISTRY_ONLY") != "ALLOW_ANY":
            r.error(op, "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode")
            return
        proxy = as_dict(otp.get("egressProxy"))
        err = check_fqdn(as_str(proxy.get("host")))
        if err:
            r.error(key_path(op, "host"), err)
        if "port" not in proxy:
            r.error(op, "sidecar: egress_proxy port must be non-nil")
            return
        check_destination(r, op, proxy)
