"""Istio's resource names, in one place: clusters, route configs, listeners, virtual hosts."""

from __future__ import annotations

BLACKHOLE_CLUSTER = "BlackHoleCluster"
PASSTHROUGH_CLUSTER = "PassthroughCluster"
INBOUND_PASSTHROUGH_CLUSTER = "InboundPassthroughCluster"
VIRTUAL_OUTBOUND_LISTENER = "virtualOutbound"
VIRTUAL_INBOUND_LISTENER = "virtualInbound"
VIRTUAL_OUTBOUND_PORT = 15001
VIRTUAL_INBOUND_PORT = 15006
HTTP_PROXY_ROUTE = "http_proxy"           # route config of the local-mode outbound HTTP proxy listener
ALLOW_ANY_VHOST = "allow_any"
BLOCK_ALL_VHOST = "block_all"


def outbound_cluster(port: int, subset: str, hostname: str) -> str:
    """``outbound|9080|v1|reviews.bookinfo.svc.cluster.local`` (subset may be empty)."""
    return f"outbound|{port}|{subset}|{hostname}"


def inbound_cluster(port: int, subset: str = "", hostname: str = "") -> str:
    """``inbound|9080||`` like Istio's sidecar inbound clusters."""
    return f"inbound|{port}|{subset}|{hostname}"


def parse_cluster(name: str) -> tuple[str, int, str, str]:
    """``outbound|9080|v1|host`` -> ("outbound", 9080, "v1", "host")."""
    direction, port, subset, host = name.split("|", 3)
    return direction, int(port), subset, host


def outbound_route_config(port: int) -> str:
    """Sidecar outbound HTTP route configs are named by port: ``9080``."""
    return str(port)


def gateway_route_config(protocol: str, port: int, server_name: str = "", gw: str = "") -> str:
    """Gateway route configs: ``http.8080``; HTTPS servers get ``https.443.<server name>.<gw>.<ns>``."""
    if protocol.upper() == "HTTPS" and server_name:
        return f"https.{port}.{server_name}.{gw}"
    return f"http.{port}"


def listener_name(address: str, port: int) -> str:
    """``0.0.0.0_9080`` / ``10.1.2.3_9080``."""
    return f"{address}_{port}"


def virtual_host(host: str, port: int) -> str:
    """Virtual host names are ``host:port``."""
    return f"{host}:{port}"


def outbound_sni(port: int, subset: str, hostname: str) -> str:
    """Istio's SNI for in-mesh mTLS (``BuildDNSSrvSubsetKey``): ``outbound_.9080_.v1_.reviews.ns.svc...``."""
    return f"outbound_.{port}_.{subset}_.{hostname}"
