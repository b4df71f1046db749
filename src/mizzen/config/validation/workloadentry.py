"""WorkloadEntry semantic checks as Istio's validateWorkloadEntry does them (also applied to ServiceEntry
endpoints): address is an IP, an FQDN (where allowed) or a unix socket; port names and numbers; labels.
"""

from __future__ import annotations

from typing import Any

from mizzen.config.model import Config
from mizzen.config.validation.common import (
    Report,
    as_dict,
    as_str,
    check_fqdn,
    check_labels,
    check_port,
    check_port_name,
    is_ip,
    key_path,
    register,
)


def check_workload_entry(r: Report, path: str, we: dict[str, Any], service_ports: set[str] | None,
                         allow_fqdn: bool) -> None:
    addr = as_str(we.get("address"))
    if not addr:
        if not as_str(we.get("network")):
            r.error(key_path(path, "address"), "address is required")
            return
        r.warn(key_path(path, "address"), f'address is unset with network "{we.get("network")}"')
    ports = as_dict(we.get("ports"))
    ap = key_path(path, "address")
    if addr.startswith("unix://"):
        sock = addr[len("unix://"):]
        if not sock:
            r.error(ap, "unix address must not be empty")
        elif not sock.startswith("@") and (not sock.startswith("/") or sock.endswith("/")):
            r.error(ap, f"{sock} is not an absolute path to a file")
        if ports:
            r.error(key_path(path, "ports"), f"unix endpoint {addr} must not include ports")
        if service_ports is not None and len(service_ports) != 1:
            r.error(ap, "exactly 1 service port required for unix endpoints")
    elif addr and not is_ip(addr):
        if not allow_fqdn:
            r.error(ap, f'endpoint address "{addr}" is not a valid IP address')
        elif check_fqdn(addr):
            r.error(ap, f'endpoint address "{addr}" is not a valid FQDN or an IP address')
    for name, port in ports.items():
        pp = key_path(key_path(path, "ports"), str(name))
        if service_ports is not None and name not in service_ports:
            r.error(pp, f"endpoint port {port} is not defined by the service entry")
        check_port_name(r, pp, str(name))
        check_port(r, pp, port)
    check_labels(r, key_path(path, "labels"), we.get("labels"))


@register("WorkloadEntry")
def validate_workload_entry(cfg: Config, r: Report) -> None:
    check_workload_entry(r, "spec", dict(cfg.spec), None, allow_fqdn=True)
