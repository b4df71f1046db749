"""What the mesh may expose beyond this machine: a Gateway server's ``bind`` outside loopback (``0.0.0.0``, a
LAN address) serves the mesh on the host's external interfaces, so it is refused at apply time unless the
mesh opts in (``MeshConfig.allow_external_bind``: ``mizzen demo --allow-external-bind``, ``mizzen
controlplane --allow-external-bind``); when opted in, the apply answers with a warning instead.

Istio's own validation accepts any IP here; this is a policy of the local mode, added to the store's
checks by :func:`gateway_bind_issues` (the store's ``checks`` hook).
"""

from __future__ import annotations

import ipaddress

from mizzen.config.errors import Issue, Severity
from mizzen.config.model import Config
from mizzen.config.validation import line_of

__all__ = ["external_bind", "gateway_bind_issues"]

OPT_IN = "allowed by allow_external_bind (mizzen demo/controlplane --allow-external-bind)"


def external_bind(bind: str) -> bool:
    """True for an IP address outside loopback (unix sockets, loopback and non-IPs are not external)."""
    try:
        ip = ipaddress.ip_address(bind)
    except ValueError:
        return False
    return not ip.is_loopback


def gateway_bind_issues(config: Config, allow: bool) -> list[Issue]:
    """An error per Gateway server binding outside loopback (a warning when ``allow``)."""
    if config.kind != "Gateway":
        return []
    servers = config.spec.get("servers")
    out: list[Issue] = []
    for i, server in enumerate(servers if isinstance(servers, list) else []):
        bind = server.get("bind") if isinstance(server, dict) else None
        if not isinstance(bind, str) or not external_bind(bind):
            continue
        path = f"spec.servers[{i}].bind"
        if allow:
            msg = (f"{bind} is outside loopback: this gateway serves the mesh on the host's network "
                   f"({OPT_IN})")
        else:
            msg = (f"{bind} is outside loopback and would serve the mesh beyond this machine; bind a "
                   "127.x.y.z address, or opt in with mizzen demo --allow-external-bind "
                   "(mesh config allow_external_bind)")
        out.append(Issue(msg, path=path, kind=config.kind, name=config.name,
                         file=config.source.file if config.source else "", line=line_of(config, path),
                         severity=Severity.WARNING if allow else Severity.ERROR))
    return out
