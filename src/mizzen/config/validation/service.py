"""Kubernetes Service checks (what the API server enforces that matters to the mesh): ports 1..65535, port
names required when there are several and unique, protocol TCP/UDP/SCTP, targetPort a number or an IANA
service name, appProtocol syntax, selector labels, type and clusterIP, unknown fields.
"""

from __future__ import annotations

import re
from typing import Any

from mizzen.config.model import Config
from mizzen.config.validation.common import (
    Report,
    as_dict,
    as_list,
    as_str,
    check_labels,
    index_path,
    is_ip,
    is_k8s_dns_label,
    key_path,
    register,
)

SPEC_FIELDS = frozenset({
    "ports", "selector", "clusterIP", "clusterIPs", "type", "externalIPs", "sessionAffinity",
    "loadBalancerIP",
    "loadBalancerSourceRanges", "externalName", "externalTrafficPolicy", "healthCheckNodePort",
    "publishNotReadyAddresses", "sessionAffinityConfig", "ipFamilies", "ipFamilyPolicy",
    "allocateLoadBalancerNodePorts", "loadBalancerClass", "internalTrafficPolicy", "trafficDistribution",
})
PORT_FIELDS = frozenset({"name", "protocol", "appProtocol", "port", "targetPort", "nodePort"})
PROTOCOLS = ("TCP", "UDP", "SCTP")
TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
_IANA = re.compile(r"^[a-z0-9](?:-?[a-z0-9])*\Z")
_APP_PROTOCOL = re.compile(
    r"^(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")


def is_iana_svc_name(name: str) -> bool:
    """Kubernetes IsValidPortName: <= 15 lowercase alphanumerics and single '-', at least one letter."""
    return 0 < len(name) <= 15 and _IANA.match(name) is not None and any(c.isalpha() for c in name)


def check_int_port(r: Report, path: str, value: Any, what: str = "port") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        r.error(path, f"Invalid value: {value!r}: {what} must be an integer")
    elif not 1 <= value <= 65535:
        r.error(path, f"Invalid value: {value}: must be between 1 and 65535, inclusive")


def check_protocol_k8s(r: Report, path: str, value: Any) -> None:
    if value is not None and value not in PROTOCOLS:
        r.error(path, f'Unsupported value: "{value}": supported values: "SCTP", "TCP", "UDP"')


def _check_port(r: Report, pp: str, p: dict[str, Any], several: bool) -> None:
    for k in p:
        if k not in PORT_FIELDS:
            r.error(key_path(pp, str(k)), f'unknown field "{k}"')
    name = p.get("name")
    if several and not name:
        r.error(key_path(pp, "name"), "Required value (port names are required when a Service has several "
                                      "ports)")
    elif name is not None and (not isinstance(name, str) or not is_k8s_dns_label(name)):
        r.error(key_path(pp, "name"), f'Invalid value: "{name}": must be a lowercase RFC 1123 label')
    if "port" not in p:
        r.error(key_path(pp, "port"), "Required value")
    else:
        check_int_port(r, key_path(pp, "port"), p.get("port"))
    check_protocol_k8s(r, key_path(pp, "protocol"), p.get("protocol"))
    target = p.get("targetPort")
    if isinstance(target, str):
        if not is_iana_svc_name(target):
            r.error(key_path(pp, "targetPort"), f'Invalid value: "{target}": must be a port number or an '
                                                'IANA '
                                                "service name (at most 15 lowercase letters, digits and '-', "
                                                "with at least one letter)")
    elif target is not None:
        check_int_port(r, key_path(pp, "targetPort"), target, "targetPort")
    if "nodePort" in p:
        check_int_port(r, key_path(pp, "nodePort"), p.get("nodePort"), "nodePort")
    app = p.get("appProtocol")
    if app is not None and (not isinstance(app, str) or not _APP_PROTOCOL.match(app)):
        r.error(key_path(pp, "appProtocol"), f'Invalid value: "{app}": must be a valid protocol name such as '
                                             '"http", "grpc" or "kubernetes.io/h2c"')


@register("Service")
def validate_service(cfg: Config, r: Report) -> None:
    spec = dict(cfg.spec)
    for k in spec:
        if k not in SPEC_FIELDS:
            r.error(key_path("spec", str(k)), f'unknown field "{k}"')
    svc_type = spec.get("type", "ClusterIP")
    if svc_type not in TYPES:
        r.error("spec.type", f'Unsupported value: "{svc_type}": supported values: {", ".join(TYPES)}')
    cluster_ip = as_str(spec.get("clusterIP"))
    if cluster_ip and cluster_ip != "None" and not is_ip(cluster_ip):
        r.error("spec.clusterIP", f'Invalid value: "{cluster_ip}": must be a valid IP address or "None"')
    if svc_type == "ExternalName" and not as_str(spec.get("externalName")):
        r.error("spec.externalName", "Required value")
    raw_ports = spec.get("ports")
    if raw_ports is not None and not isinstance(raw_ports, list):
        r.error("spec.ports", "must be a list")
        return
    ports = as_list(raw_ports)
    if not ports and svc_type != "ExternalName" and cluster_ip != "None":
        r.error("spec.ports", "Required value")
    names: set[str] = set()
    seen: set[tuple[Any, Any]] = set()
    for i, raw in enumerate(ports):
        pp = index_path("spec.ports", i)
        if not isinstance(raw, dict):
            r.error(pp, "each port must be an object")
            continue
        _check_port(r, pp, raw, len(ports) > 1)
        name = raw.get("name")
        if isinstance(name, str) and name:
            if name in names:
                r.error(key_path(pp, "name"), f'Duplicate value: "{name}"')
            names.add(name)
        ident = (raw.get("port"), raw.get("protocol", "TCP"))
        if not all(isinstance(v, int | str) for v in ident):
            continue   # a wrong type, reported above; not comparable
        if ident in seen:
            r.error(pp, f"Duplicate value: port {ident[0]}/{ident[1]}")
        seen.add(ident)
    selector = spec.get("selector")
    if selector is not None and not isinstance(selector, dict):
        r.error("spec.selector", "must be a map of labels")
    else:
        sel = as_dict(selector)
        for k, v in sel.items():
            if not isinstance(v, str):
                r.error(key_path("spec.selector", str(k)), f"value must be a string (quote it: \"{v}\")")
        check_labels(r, "spec.selector", {k: v for k, v in sel.items() if isinstance(v, str)})
