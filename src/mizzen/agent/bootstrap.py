"""The Envoy bootstrap the agent writes for one proxy (what pilot-agent renders from its template).

It carries the proxy's identity (Istio-style node id and the metadata keys of ``core.proxy.Meta``), an ADS
connection to the control plane over the static ``xds-grpc`` cluster (delta xDS unless
``ISTIO_DELTA_XDS=false``), the admin interface on a Unix socket
(mode 0600, in the agent's work dir: only the agent's user reaches it), Istio's static ``prometheus_stats``
listener on ``<admin host>:15090`` that serves only ``GET /stats/prometheus`` from that socket (every other
path is 404 there), and a layered runtime. Everything else (listeners, clusters, routes, endpoints) arrives
over xDS. The agent's own admin proxy (``<admin host>:15004``, see :mod:`mizzen.agent.admin_proxy`) is how
anyone else reaches the admin interface, with the API token.

With a workload identity (``xds_socket``/``sds_socket``, as pilot-agent renders it) the ``xds-grpc``
cluster is the agent's local xDS socket (the agent forwards over TLS to the control plane), and Istio's
``sds-grpc`` cluster points at the agent's SDS socket for the ``default`` and ``ROOTCA`` secrets.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mizzen.core.proxy import DEFAULT_GATEWAY_PORTS, Meta, ProxyType, node_id
from mizzen.security.sdsconfig import sds_cluster
from mizzen.telemetry import exchange

__all__ = [
    "ADMIN_SOCKET_NAME",
    "AGENT_ADMIN_PORT",
    "DEFAULT_HTTP_PROXY_PORT",
    "DELTA_XDS_ENV",
    "STATS_CLUSTER",
    "STATS_PORT",
    "XDS_CLUSTER",
    "ProxySpec",
    "build_bootstrap",
    "delta_xds_default",
    "node_metadata",
    "render_bootstrap",
    "stats_resources",
]

XDS_CLUSTER = "xds-grpc"
STATS_CLUSTER = "prometheus_stats"          # Istio's names for the stats listener and its cluster
STATS_PORT = 15090                          # Istio's Envoy Prometheus telemetry port
AGENT_ADMIN_PORT = 15004                    # Istio's pilot-agent debug port: the agent's admin proxy
ADMIN_SOCKET_NAME = "admin.sock"
ADMIN_SOCKET_MODE = 0o600
DEFAULT_HTTP_PROXY_PORT = 15080
HTTP_PROTOCOL_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# The ADS stream's reconnect backoff (EnvoyGrpc.retry_policy.retry_back_off; Envoy's default is 0.5 s doubling
# to 30 s, which left proxies without updates for up to ~25 s after a control-plane restart). Jittered, so
# proxies reconnect at most this long after the control plane is back; attempts on loopback are cheap.
XDS_RETRY_BASE = "0.1s"
XDS_RETRY_MAX = "0.5s"
DELTA_XDS_ENV = "ISTIO_DELTA_XDS"   # pilot-agent's switch: "false" for state-of-the-world ADS
SDS_META = Meta.SDS                 # node metadata "true": the bootstrap has the agent's sds-grpc cluster
# what Istio keeps when proxyStatsMatcher narrows Envoy's stats (its bootstrap's defaults), plus its standard
# metrics (the stats logger's istiocustom prefix)
DEFAULT_STATS_PREFIXES = ("cluster_manager", "listener_manager", "server", "cluster.xds-grpc", "wasm",
                          "component", "istiocustom.")


def delta_xds_default() -> bool:
    """Delta (incremental) ADS unless ``ISTIO_DELTA_XDS`` says false/0/no/off."""
    return os.environ.get(DELTA_XDS_ENV, "true").strip().lower() not in ("false", "0", "no", "off")


@dataclass(frozen=True)
class ProxySpec:
    """Who the proxy is and where it talks to; enough to render its bootstrap."""

    type: ProxyType
    ip: str
    namespace: str
    name: str                                  # workload (pod) name
    admin_port: int = AGENT_ADMIN_PORT         # the agent's admin proxy (Envoy's admin is a Unix socket)
    xds_host: str = "127.0.0.1"
    xds_port: int = 15010
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = "default"
    app_host: str = "127.0.0.1"
    http_proxy_port: int | None = None         # None: 15080 for sidecars, 0 (none) for gateways
    gateway_ports: Mapping[int, int] | None = None
    locality: str = ""
    interception_mode: str = "NONE"
    admin_host: str | None = None              # where the admin proxy and stats listen; default: the proxy ip
    stats_port: int | None = STATS_PORT        # the prometheus_stats listener; None: none
    domain: str = "cluster.local"
    delta_xds: bool = field(default_factory=delta_xds_default)   # DELTA_GRPC ADS, else SotW GRPC
    # ProxyConfig.proxyStatsMatcher: {inclusionPrefixes, inclusionSuffixes, inclusionRegexps}; None: all stats
    proxy_stats_matcher: Mapping[str, Any] | None = None
    merged_stats_port: int | None = 15020      # the agent's merged /stats/prometheus; None: none
    app_metrics_port: int | None = None        # prometheus.io/port of the app (merged into :15020)
    app_metrics_path: str = "/metrics"         # prometheus.io/path

    @property
    def node_id(self) -> str:
        return node_id(self.type, self.ip, self.name, self.namespace, self.domain)

    @property
    def effective_http_proxy_port(self) -> int:
        if self.http_proxy_port is not None:
            return self.http_proxy_port
        return DEFAULT_HTTP_PROXY_PORT if self.type is ProxyType.SIDECAR else 0

    @property
    def effective_admin_host(self) -> str:
        return self.admin_host or self.ip

    @property
    def cluster(self) -> str:
        """``--service-cluster`` style name: ``<app label or name>.<namespace>``."""
        app = self.labels.get("app") or self.labels.get("istio") or self.name
        return f"{app}.{self.namespace}"


def node_metadata(spec: ProxySpec) -> dict[str, Any]:
    gw = spec.gateway_ports if spec.gateway_ports is not None else DEFAULT_GATEWAY_PORTS
    meta: dict[str, Any] = {
        Meta.NAMESPACE: spec.namespace,
        Meta.LABELS: dict(spec.labels),
        Meta.WORKLOAD_NAME: spec.name,
        Meta.SERVICE_ACCOUNT: spec.service_account,
        Meta.INSTANCE_IPS: spec.ip,
        Meta.INTERCEPTION_MODE: spec.interception_mode,
        Meta.APP_HOST: spec.app_host,
        Meta.HTTP_PROXY_PORT: str(spec.effective_http_proxy_port),
        Meta.LOCALITY: spec.locality,
    }
    if spec.type is ProxyType.ROUTER:
        meta[Meta.GATEWAY_PORTS] = json.dumps({str(k): int(v) for k, v in sorted(gw.items())})
    return meta


def _locality(loc: str) -> dict[str, str]:
    parts = ([*loc.split("/"), "", "", ""])[:3]
    out = {k: v for k, v in zip(("region", "zone", "sub_zone"), parts, strict=True) if v}
    return out


def _pipe(path: str) -> dict[str, Any]:
    return {"pipe": {"path": path, "mode": ADMIN_SOCKET_MODE}}


def stats_resources(spec: ProxySpec, admin_socket: str,
                    stats_socket: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Istio's ``prometheus_stats`` listener (``GET /stats/prometheus`` only) and its cluster: the agent's
    stats socket (Envoy's stats with Istio's names, :mod:`mizzen.agent.metrics_server`) when given, else the
    admin socket; empty when ``spec.stats_port`` is None."""
    if spec.stats_port is None:
        return [], []
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                 ".HttpConnectionManager",
        "stat_prefix": "stats",
        "route_config": {"virtual_hosts": [{
            "name": "backend",
            "domains": ["*"],
            "routes": [{
                "match": {"path": "/stats/prometheus",
                          "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
                "route": {"cluster": STATS_CLUSTER},
            }],
        }]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    listener = {
        "name": STATS_CLUSTER,
        "address": {"socket_address": {"address": spec.effective_admin_host, "port_value": spec.stats_port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}],
    }
    cluster = {
        "name": STATS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "0.250s",
        "load_assignment": {"cluster_name": STATS_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"pipe": {"path": stats_socket or admin_socket}}}}]}]},
    }
    return [listener], [cluster]


def stats_matcher(spec: ProxySpec) -> dict[str, Any] | None:
    """Istio's ``proxyStatsMatcher`` (ProxyConfig): Envoy's stats_matcher inclusion list of Istio's default
    stats, Istio's standard metrics (``istiocustom.``) and the configured prefixes, suffixes and regexps."""
    m = spec.proxy_stats_matcher
    if not m:
        return None
    prefixes = (*DEFAULT_STATS_PREFIXES, *(str(x) for x in m.get("inclusionPrefixes") or ()))
    patterns: list[dict[str, Any]] = [{"prefix": p} for p in prefixes]
    patterns += [{"suffix": str(x)} for x in m.get("inclusionSuffixes") or ()]
    patterns += [{"safe_regex": {"regex": str(x)}} for x in m.get("inclusionRegexps") or ()]
    return {"stats_matcher": {"inclusion_list": {"patterns": patterns}}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def build_bootstrap(spec: ProxySpec, admin_socket: str = ADMIN_SOCKET_NAME, *, xds_socket: str | None = None,
                    sds_socket: str | None = None, stats_socket: str | None = None) -> dict[str, Any]:
    """The bootstrap as a JSON-ready dict (Envoy v3 Bootstrap); admin on the Unix socket ``admin_socket``
    (an absolute path in practice: a relative one is relative to Envoy's working directory); ADS through the
    agent's ``xds_socket`` and the ``sds-grpc`` cluster on ``sds_socket`` when given; ``:15090`` served from
    the agent's ``stats_socket`` when given."""
    stats_listeners, stats_clusters = stats_resources(spec, admin_socket, stats_socket)
    xds_address: dict[str, Any] = (
        {"pipe": {"path": xds_socket}} if xds_socket is not None
        else {"socket_address": {"address": spec.xds_host, "port_value": spec.xds_port}})
    identity_clusters = [sds_cluster(sds_socket)] if sds_socket is not None else []
    xds_cluster: dict[str, Any] = {
        "name": XDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": xds_address}}]}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_PROTOCOL_OPTIONS_TYPE,
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        },
    }
    if xds_socket is None:
        # keep the ADS stream alive across quiet periods; reconnects are cheap on loopback
        xds_cluster["upstream_connection_options"] = {"tcp_keepalive": {"keepalive_time": 300}}
        if not _is_ip(spec.xds_host):   # a name (istiod.istio-system.svc in a pod): Envoy resolves it
            xds_cluster.update({"type": "STRICT_DNS", "dns_lookup_family": "V4_PREFERRED"})
    node: dict[str, Any] = {
        "id": spec.node_id,
        "cluster": spec.cluster,
        "metadata": node_metadata(spec),
    }
    if sds_socket is not None:
        # Istio's SdsEnabled-style key: this proxy has the sds-grpc cluster, so the control plane may give it
        # mTLS (auto mTLS, ISTIO_MUTUAL) with the default/ROOTCA secrets
        node["metadata"][SDS_META] = "true"
    if spec.locality:
        node["locality"] = _locality(spec.locality)
    out: dict[str, Any] = {
        "node": node,
        "admin": {"address": _pipe(admin_socket)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if spec.delta_xds else "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {
                    "cluster_name": XDS_CLUSTER,
                    "retry_policy": {"retry_back_off": {"base_interval": XDS_RETRY_BASE,
                                                        "max_interval": XDS_RETRY_MAX}},
                }}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "listeners": stats_listeners,
            "clusters": [
                xds_cluster,
                *stats_clusters,
                *identity_clusters,
            ],
        },
        # Envoy merges its workers' histograms only at a stats flush; flushing when the admin's stats are read
        # (no flush timer then: nothing else reads them, no stats sinks) lets the agent serve merged
        # histograms at every scrape, whose exact counts stand in for istio_requests_total
        # (mizzen.agent.metrics_server.merged_histograms)
        "stats_flush_on_admin": True,
        # the peer-metadata header as one of Envoy's O(1) request headers: adding it (client), reading it into
        # filter state and removing it (server) otherwise scan the header map by name (callgrind: ~6k
        # instructions per request pair less)
        "inline_headers": [{"inline_header_name": exchange.HEADER, "inline_header_type": "REQUEST_HEADER"}],
        "layered_runtime": {
            "layers": [
                {"name": "global config", "static_layer": {}},
                {"name": "admin", "admin_layer": {}},
            ],
        },
    }
    matcher = stats_matcher(spec)
    if matcher is not None:
        out["stats_config"] = matcher
    return out


def render_bootstrap(spec: ProxySpec, admin_socket: str = ADMIN_SOCKET_NAME, *, xds_socket: str | None = None,
                     sds_socket: str | None = None, stats_socket: str | None = None) -> str:
    return json.dumps(build_bootstrap(spec, admin_socket, xds_socket=xds_socket, sds_socket=sds_socket,
                                      stats_socket=stats_socket), indent=1, sort_keys=True)
