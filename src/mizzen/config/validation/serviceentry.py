"""ServiceEntry semantic checks as Istio's ValidateServiceEntry does them: hosts (no ``*``, wildcards, FQDNs
for DNS resolution without endpoints), addresses and CIDRs, ports (unique names and numbers, protocols),
resolution vs endpoints rules (NONE/STATIC/DNS/DNS_ROUND_ROBIN), workloadSelector vs endpoints, exportTo.
"""

from __future__ import annotations

from mizzen.config.model import Config
from mizzen.config.validation.common import (
    HTTP_PROTOCOLS,
    TLS_PROTOCOLS,
    Report,
    as_dict,
    as_int,
    as_list,
    as_str,
    check_export_to,
    check_fqdn,
    check_ip_subnet,
    check_port,
    check_port_name,
    check_protocol,
    check_wildcard_domain,
    index_path,
    key_path,
    parse_protocol,
    register,
)
from mizzen.config.validation.workloadentry import check_workload_entry


@register("ServiceEntry")
def validate_service_entry(cfg: Config, r: Report) -> None:
    spec = dict(cfg.spec)
    selector = spec.get("workloadSelector")
    if selector is not None:
        labels = as_dict(as_dict(selector).get("labels"))
        if not labels:
            r.warn("spec.workloadSelector", "service entry: workload selector specified without labels, "
                                            "will be "
                                            "applied to all services in namespace")
        for k, v in labels.items():
            if k == "":
                r.error("spec.workloadSelector.labels", f'empty key is not supported in selector: "={v}"')
            if "*" in str(k) or "*" in str(v):
                r.error(key_path("spec.workloadSelector.labels", str(k)),
                        f'wildcard is not supported in selector: "{k}={v}"')
    endpoints = spec.get("endpoints")
    if selector is not None and endpoints is not None:
        r.error("spec", "only one of WorkloadSelector or Endpoints is allowed in Service Entry")
    hosts = [str(h) for h in as_list(spec.get("hosts"))]
    if not hosts:
        r.error("spec.hosts", "service entry must have at least one host")
    for i, h in enumerate(hosts):
        hp = index_path("spec.hosts", i)
        if h == "*":
            r.error(hp, f"invalid host {h}")
            continue
        err = check_wildcard_domain(h)
        if err:
            r.error(hp, err)
        elif h.startswith("*") and not h.startswith("*."):
            r.warn(hp, f"partial wildcard {h!r} not allowed")
    cidr = False
    addresses = as_list(spec.get("addresses"))
    for i, a in enumerate(addresses):
        cidr = cidr or "/" in str(a)
        err = check_ip_subnet(str(a))
        if err:
            r.error(index_path("spec.addresses", i), err)
    resolution = as_str(spec.get("resolution")) or "NONE"
    if cidr and resolution not in ("NONE", "STATIC"):
        r.error("spec.resolution", "CIDR addresses are allowed only for NONE/STATIC resolution types")
    port_names: set[str] = set()
    port_numbers: set[int] = set()
    ports = [as_dict(p) for p in as_list(spec.get("ports"))]
    for i, p in enumerate(ports):
        pp = index_path("spec.ports", i)
        name, number = as_str(p.get("name")), as_int(p.get("number"))
        if name in port_names:
            r.error(key_path(pp, "name"), f'service entry port name "{name}" already defined')
        if number in port_numbers:
            r.error(key_path(pp, "number"), f"service entry port {number} already defined")
        port_names.add(name)
        port_numbers.add(number)
        if as_int(p.get("targetPort")) != 0:
            check_port(r, key_path(pp, "targetPort"), p.get("targetPort"))
        check_port_name(r, key_path(pp, "name"), name)
        check_protocol(r, key_path(pp, "protocol"), p.get("protocol"))
        check_port(r, key_path(pp, "number"), p.get("number"))
    eps = as_list(endpoints)
    if resolution == "NONE":
        if eps:
            r.error("spec.endpoints", "no endpoints should be provided for resolution type none")
        if selector is not None:
            r.warn("spec.workloadSelector", "workloadSelector should not be set when resolution mode is NONE")
    elif resolution == "STATIC":
        for i, ep in enumerate(eps):
            check_workload_entry(r, index_path("spec.endpoints", i), as_dict(ep), port_names,
                                 allow_fqdn=False)
    elif resolution in ("DNS", "DNS_ROUND_ROBIN"):
        if not eps:
            for i, h in enumerate(hosts):
                if h != "*" and check_fqdn(h):
                    r.error(index_path("spec.hosts", i),
                            "hosts must be FQDN if no endpoints are provided for resolution mode "
                            f"{resolution}")
        if resolution == "DNS_ROUND_ROBIN" and len(eps) > 1:
            r.error("spec.endpoints", f"there must only be 0 or 1 endpoint for resolution mode {resolution}")
        for i, ep in enumerate(eps):
            check_workload_entry(r, index_path("spec.endpoints", i), as_dict(ep), port_names, allow_fqdn=True)
        if selector is not None:
            r.warn("spec.workloadSelector", "workloadSelector should not be set when resolution mode is "
                                            f"{resolution}")
    if resolution != "NONE" and len(hosts) > 1:
        for i, p in enumerate(ports):
            proto = parse_protocol(as_str(p.get("protocol"))) or "TCP"
            if proto not in HTTP_PROTOCOLS and proto not in TLS_PROTOCOLS:
                r.error(index_path("spec.ports", i), "multiple hosts provided with non-HTTP, non-TLS ports")
                break
    check_export_to(r, "spec.exportTo", cfg.namespace, spec.get("exportTo"), service_entry=True)
