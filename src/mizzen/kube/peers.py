"""The other control-plane replicas of this one, as Istio finds istiod's: the endpoints of istiod's Service
(``istiod``, ``istiod-<rev>`` for a revision) in the system namespace, from its EndpointSlices (the
registry source's), at the TLS gRPC port (``https-dns``, 15012). Pure: slices in, ``host:port`` out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["TLS_PORT_NAME", "istiod_service", "peer_addresses"]

TLS_PORT_NAME = "https-dns"       # istiod's Service port 15012 (Istio's name)
TLS_PORT = 15012
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def istiod_service(revision: str = "") -> str:
    return "istiod" + ("" if revision in ("", "default") else f"-{revision}")


def _tls_port(ports: Iterable[Mapping[str, Any]]) -> int | None:
    by_name = {str(p.get("name") or ""): p.get("port") for p in ports}
    port = by_name.get(TLS_PORT_NAME)
    if port is None and TLS_PORT in by_name.values():
        port = TLS_PORT
    return int(port) if isinstance(port, int) else None


def peer_addresses(slices: Iterable[Mapping[str, Any]], namespace: str, service: str, *,
                   self_pod: str = "", self_addresses: Iterable[str] = ()) -> list[str]:
    """``host:port`` of every ready endpoint of ``namespace/service`` but this replica (its pod name, or
    one of its own ``host:port``), sorted."""
    mine = set(self_addresses)
    out: set[str] = set()
    for s in slices:
        meta = s.get("metadata") or {}
        labels = meta.get("labels") or {}
        if meta.get("namespace") != namespace or labels.get(SERVICE_NAME_LABEL) != service:
            continue
        if s.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
            continue
        port = _tls_port(s.get("ports") or [])
        if port is None:
            continue
        for ep in s.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            if self_pod and (ep.get("targetRef") or {}).get("name") == self_pod:
                continue
            for addr in ep.get("addresses") or []:
                hostport = f"[{addr}]:{port}" if ":" in str(addr) else f"{addr}:{port}"
                if hostport not in mine:
                    out.add(hostport)
    return sorted(out)
