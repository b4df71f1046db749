"""DestinationRule semantic checks as Istio's ValidateDestinationRule does them: host, subsets (unique DNS-
label names, valid labels), traffic policies (load balancer, consistent hash, connection pool, outlier
detection, port-level settings, client TLS, tunnel, proxy protocol), workload selector and exportTo.
"""

from __future__ import annotations

import math
from typing import Any

from mizzen.config.model import Config
from mizzen.config.validation.common import (
    Report,
    as_dict,
    as_int,
    as_list,
    as_str,
    check_duration,
    check_export_to,
    check_fqdn,
    check_labels,
    check_percent,
    check_port,
    check_wildcard_domain,
    index_path,
    is_dns1123_label,
    is_ip,
    key_path,
    parse_duration,
    register,
)
from mizzen.config.validation.envoy_limits import MAX_RING_SIZE

_NON_NEGATIVE_HTTP = {
    "http1MaxPendingRequests": "http1 max pending requests must be non-negative",
    "http2MaxRequests": "http2 max requests must be non-negative",
    "maxRequestsPerConnection": "max requests per connection must be non-negative",
    "maxRetries": "max retries must be non-negative",
    "maxConcurrentStreams": "max concurrent streams must be non-negative",
}


def _is_prime(x: int) -> bool:
    if 0 < x < 4:
        return True
    if x % 2 == 0:
        return False
    return all(x % f for f in range(3, math.isqrt(x) + 1, 2))


def check_connection_pool(r: Report, path: str, pool: Any) -> None:
    """Istio's validateConnectionPool (also used for Sidecar ingress pools)."""
    if pool is None:
        return
    cp = as_dict(pool)
    if "http" not in cp and "tcp" not in cp:
        r.error(path, "connection pool must have at least one field")
    http = as_dict(cp.get("http"))
    hp = key_path(path, "http")
    for key, msg in _NON_NEGATIVE_HTTP.items():
        if as_int(http.get(key)) < 0:
            r.error(key_path(hp, key), msg)
    if "idleTimeout" in http:
        check_duration(r, key_path(hp, "idleTimeout"), http.get("idleTimeout"))
    if http.get("h2UpgradePolicy") == "UPGRADE" and http.get("useClientProtocol") is True:
        r.error(key_path(hp, "useClientProtocol"), "use client protocol must not be true when "
                                                   "H2UpgradePolicy is "
                                                   "UPGRADE")
    tcp = as_dict(cp.get("tcp"))
    tp = key_path(path, "tcp")
    if as_int(tcp.get("maxConnections")) < 0:
        r.error(key_path(tp, "maxConnections"), "max connections must be non-negative")
    for key in ("connectTimeout", "maxConnectionDuration", "idleTimeout"):
        if key in tcp:
            check_duration(r, key_path(tp, key), tcp.get(key))
    ka = as_dict(tcp.get("tcpKeepalive"))
    for key in ("time", "interval"):
        if key in ka:
            check_duration(r, key_path(key_path(tp, "tcpKeepalive"), key), ka.get(key))


def _check_outlier(r: Report, path: str, od: dict[str, Any]) -> None:
    if "baseEjectionTime" in od:
        check_duration(r, key_path(path, "baseEjectionTime"), od.get("baseEjectionTime"))
    if "interval" in od:
        check_duration(r, key_path(path, "interval"), od.get("interval"))
    if as_int(od.get("consecutiveErrors")) != 0:
        r.warn(key_path(path, "consecutiveErrors"),
               "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or "
               "consecutive5xxErrors instead")
    if not od.get("splitExternalLocalOriginErrors") and as_int(od.get("consecutiveLocalOriginFailures")) > 0:
        r.error(key_path(path, "consecutiveLocalOriginFailures"),
                "outlier detection consecutive local origin failures is specified, but split external local "
                "origin errors is set to false")
    check_percent(r, key_path(path, "maxEjectionPercent"), od.get("maxEjectionPercent"))
    check_percent(r, key_path(path, "minHealthPercent"), od.get("minHealthPercent"))


def _check_load_balancer(r: Report, path: str, lb: dict[str, Any]) -> None:
    ch = as_dict(lb.get("consistentHash"))
    cp = key_path(path, "consistentHash")
    if "httpCookie" in ch and not as_str(as_dict(ch.get("httpCookie")).get("name")):
        r.error(key_path(key_path(cp, "httpCookie"), "name"), "name required for HttpCookie")
    if "httpCookie" in ch and "ttl" in as_dict(ch.get("httpCookie")):
        ttl = as_dict(ch.get("httpCookie")).get("ttl")
        secs = parse_duration(ttl) if isinstance(ttl, str) else None
        if secs is None or secs < 0:
            r.error(key_path(key_path(cp, "httpCookie"), "ttl"), f'invalid duration "{ttl}"')
    if as_int(ch.get("minimumRingSize")) != 0:
        r.warn(key_path(cp, "minimumRingSize"), "consistent hash MinimumRingSize is deprecated, use "
                                                "ConsistentHashLB's RingHash configuration instead")
        if "ringHash" in ch or "maglev" in ch:
            r.error(cp, "only one of MinimumRingSize or Maglev/Ringhash can be specified")
    for rp, size in ((key_path(cp, "minimumRingSize"), ch.get("minimumRingSize")),
                     (key_path(key_path(cp, "ringHash"), "minimumRingSize"),
                      as_dict(ch.get("ringHash")).get("minimumRingSize"))):
        if as_int(size) > MAX_RING_SIZE:
            r.error(rp, f"minimum ring size {size} exceeds Envoy's limit of {MAX_RING_SIZE}")
    if "maglev" in ch:
        size = as_int(as_dict(ch.get("maglev")).get("tableSize"))
        tp = key_path(key_path(cp, "maglev"), "tableSize")
        if size == 0:
            r.error(tp, "tableSize must be set for maglev")
        elif size >= 5000011:
            r.error(tp, "tableSize must be less than 5000011 for maglev")
        elif not _is_prime(size):
            r.error(tp, "tableSize must be a prime number for maglev")
    if "warmupDurationSecs" in lb:
        check_duration(r, key_path(path, "warmupDurationSecs"), lb.get("warmupDurationSecs"))
    loc = as_dict(lb.get("localityLbSetting"))
    lp = key_path(path, "localityLbSetting")
    if as_list(loc.get("distribute")) and as_list(loc.get("failover")):
        r.error(lp, "can not simultaneously specify 'distribute' and 'failover'")
    for i, d in enumerate(as_list(loc.get("distribute"))):
        to = as_dict(as_dict(d).get("to"))
        total = sum(as_int(v) for v in to.values())
        if to and total != 100:
            r.error(key_path(index_path(key_path(lp, "distribute"), i), "to"),
                    f"total weight must be 100 (got {total})")


def check_client_tls(r: Report, path: str, tls: dict[str, Any]) -> None:
    """Istio's ValidateTLS (ClientTLSSettings)."""
    mode = tls.get("mode")
    insecure = tls.get("insecureSkipVerify") is True
    if insecure and mode == "SIMPLE" and any(k in tls for k in ("caCertificates", "credentialName",
                                                                 "subjectAltNames")):
        r.error(path, "cannot specify CaCertificates or CredentialName or SubjectAltNames when "
                      "InsecureSkipVerify "
                      "is set true")
    if insecure and mode == "MUTUAL" and any(k in tls for k in ("caCertificates", "subjectAltNames")):
        r.error(path, "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true")
    if mode in ("SIMPLE", "MUTUAL") and tls.get("credentialName"):
        if any(tls.get(k) for k in ("clientCertificate", "caCertificates", "privateKey", "caCrl")):
            r.error(path, "cannot specify client certificates or CA certificate or CA CRL If "
                          "credentialName is set")
        return
    if mode == "MUTUAL":
        if not tls.get("clientCertificate"):
            r.error(key_path(path, "clientCertificate"), "client certificate required for mutual tls")
        if not tls.get("privateKey"):
            r.error(key_path(path, "privateKey"), "private key required for mutual tls")


def _check_policy_parts(r: Report, path: str, tp: dict[str, Any]) -> None:
    if "outlierDetection" in tp:
        _check_outlier(r, key_path(path, "outlierDetection"), as_dict(tp.get("outlierDetection")))
    check_connection_pool(r, key_path(path, "connectionPool"), tp.get("connectionPool"))
    if "loadBalancer" in tp:
        _check_load_balancer(r, key_path(path, "loadBalancer"), as_dict(tp.get("loadBalancer")))
    if "tls" in tp:
        check_client_tls(r, key_path(path, "tls"), as_dict(tp.get("tls")))


def check_traffic_policy(r: Report, path: str, policy: Any) -> None:
    if policy is None:
        return
    tp = as_dict(policy)
    parts = ("outlierDetection", "connectionPool", "loadBalancer", "tls", "portLevelSettings", "tunnel",
             "proxyProtocol")
    if not any(k in tp for k in parts):
        r.error(path, "traffic policy must have at least one field")
        return
    if "tunnel" in tp and "proxyProtocol" in tp:
        r.error(path, "tunnel and proxyProtocol must not be set together")
        return
    _check_policy_parts(r, path, tp)
    seen_ports: set[int] = set()
    for i, pls in enumerate(as_list(tp.get("portLevelSettings"))):
        pp = index_path(key_path(path, "portLevelSettings"), i)
        p = as_dict(pls)
        if "port" not in p:
            r.error(pp, "portTrafficPolicy must have valid port")
        else:
            number = as_dict(p.get("port")).get("number")
            check_port(r, key_path(key_path(pp, "port"), "number"), number)
            if as_int(number) in seen_ports:
                r.error(key_path(key_path(pp, "port"), "number"), f"duplicate port {number} in "
                                                                  "portLevelSettings")
            seen_ports.add(as_int(number))
        if not any(k in p for k in ("outlierDetection", "connectionPool", "loadBalancer", "tls")):
            r.error(pp, "port traffic policy must have at least one field")
        else:
            _check_policy_parts(r, pp, p)
    if "tunnel" in tp:
        tun = as_dict(tp.get("tunnel"))
        up = key_path(path, "tunnel")
        if tun.get("protocol") not in (None, "", "CONNECT", "POST"):
            r.error(key_path(up, "protocol"), 'tunnel protocol must be "CONNECT" or "POST"')
        target = as_str(tun.get("targetHost"))
        if check_fqdn(target) and not is_ip(target):
            r.error(key_path(up, "targetHost"), "tunnel target host must be valid FQDN or IP address")
        check_port(r, key_path(up, "targetPort"), tun.get("targetPort"))


@register("DestinationRule")
def validate_destination_rule(cfg: Config, r: Report) -> None:
    spec = dict(cfg.spec)
    host = as_str(spec.get("host"))
    err = check_wildcard_domain(host)
    if err:
        r.error("spec.host", err)
    check_traffic_policy(r, "spec.trafficPolicy", spec.get("trafficPolicy"))
    names: set[str] = set()
    for i, subset in enumerate(as_list(spec.get("subsets"))):
        sp = index_path("spec.subsets", i)
        if subset is None:
            r.error(sp, "subset may not be null")
            continue
        s = as_dict(subset)
        name = as_str(s.get("name"))
        if name in names:
            r.error(key_path(sp, "name"), f"duplicate subset names: {name}")
        names.add(name)
        if not name:
            r.error(key_path(sp, "name"), "subset name cannot be empty")
        elif not is_dns1123_label(name):
            r.error(key_path(sp, "name"), f"subset name is invalid: {name}")
        check_labels(r, key_path(sp, "labels"), s.get("labels"))
        check_traffic_policy(r, key_path(sp, "trafficPolicy"), s.get("trafficPolicy"))
    selector = spec.get("workloadSelector")
    export_to = as_list(spec.get("exportTo"))
    check_export_to(r, "spec.exportTo", cfg.namespace, export_to, service_entry=False)
    if selector is not None:
        labels = as_dict(as_dict(selector).get("matchLabels"))
        if not labels:
            r.warn("spec.workloadSelector", "workload selector specified without labels")
        for k, v in labels.items():
            if "*" in str(k) or "*" in str(v):
                r.error(key_path("spec.workloadSelector.matchLabels", str(k)),
                        f'wildcard is not supported in selector: "{k}={v}"')
        if export_to:
            keys = {cfg.namespace if e == "." else str(e) for e in export_to}
            if cfg.namespace not in keys:
                r.error("spec.exportTo", "destination rule with workload selector cannot have exportTo "
                                         "beyond "
                                         "current namespace")
            elif len(keys) > 1:
                r.error("spec.exportTo", "destination rule with workload selector cannot have multiple "
                                         "entries in "
                                         "exportTo")
