"""The route simulator's driver: which listener, route configuration, virtual host, route, action, cluster
and endpoints one request would meet in a proxy's generated xDS resources, evaluated the way Envoy does, with
a human why-trail. Pure (no I/O): input is a :class:`ResourceSet` and a :class:`SimRequest`.

Listener choice: a gateway by listen port, a sidecar's outbound traffic by its ``http_proxy`` listener (RDS
``http_proxy``; per-port ``0.0.0.0_<port>`` listeners in REDIRECT mode), inbound by the pod's port.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from mizzen.core.proxy import DEFAULT_GATEWAY_PORTS
from mizzen.simulate import action
from mizzen.simulate.cluster import cluster_summary, endpoints_of, parse_cluster_name
from mizzen.simulate.match import HttpRequest, describe_match, find_virtual_host, match_route
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, ResourceSet

__all__ = ["DIRECTIONS", "InvalidRequest", "SimRequest", "build_request", "simulate"]

HCM_FILTER = "envoy.filters.network.http_connection_manager"
HTTP_PROXY_ROUTE = "http_proxy"
DIRECTIONS = ("auto", "outbound", "inbound", "gateway")
_HTTP_ALPN = frozenset({"http/1.1", "http/1.0", "h2c", "h2"})


class InvalidRequest(ValueError):
    """A request the simulator cannot take (unparsable URL, bad port, unknown scheme or direction); the
    message is one line for the user."""


@dataclass(frozen=True)
class SimRequest:
    """A request to simulate. ``url`` is absolute (``http://reviews:9080/x``) or a path (``/x``, then give a
    Host header); ``port`` is the listen port for gateways/inbound; ``direction`` auto = by proxy type.
    An ``https`` URL is a fresh TLS connection whose SNI is the request's host (a reused connection keeps
    its first SNI, which is not modelled)."""

    url: str
    method: str = "GET"
    headers: Sequence[tuple[str, str]] = field(default_factory=tuple)
    port: int | None = None
    direction: str = "auto"


def build_request(req: SimRequest, outbound_proxy: bool) -> tuple[HttpRequest, int | None, list[str]]:
    """The request as Envoy's router sees it, the URL's explicit port, and notes for the why-trail.

    Through an HTTP forward proxy the absolute URL's authority wins over a Host header (Envoy's HTTP/1
    codec rewrites :authority from an absolute URI); elsewhere a Host header wins, as with curl."""
    notes: list[str] = []
    url = req.url.strip()
    if not url:
        raise InvalidRequest("the URL is empty: want http://host[:port]/path, or /path with a Host header")
    try:
        if url.startswith("/"):        # origin form: a path, even "//x" (never a network-path reference)
            parts = urlsplit("http://origin" + url)._replace(scheme="", netloc="")
        else:
            parts = urlsplit(url if "://" in url else "http://" + url)
        explicit_port = parts.port if parts.netloc else None
    except ValueError as e:
        raise InvalidRequest(f"invalid URL {req.url!r}: {e}") from None
    if parts.scheme not in ("", "http", "https"):
        raise InvalidRequest(f"invalid URL {req.url!r}: scheme {parts.scheme!r} is not simulated "
                             "(want http or https)")
    if any(c.isspace() for c in url):
        raise InvalidRequest(f"invalid URL {req.url!r}: it contains whitespace (percent-encode it)")
    headers = [(k.strip().lower(), v.strip()) for k, v in req.headers]
    host_hdr = next((v for k, v in headers if k in ("host", ":authority")), None)
    headers = [(k, v) for k, v in headers if k not in ("host", ":authority")]
    url_authority = parts.netloc
    if outbound_proxy and url_authority:
        authority = url_authority
        if host_hdr is not None and host_hdr != url_authority:
            notes.append(f"Host header {host_hdr!r} ignored: a forward proxy takes :authority from the URL")
    else:
        authority = host_hdr if host_hdr is not None else url_authority
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    scheme = parts.scheme or "http"
    http = HttpRequest(method=req.method.upper(), authority=authority, path=path, scheme=scheme,
                       headers=tuple(headers))
    return http, explicit_port, notes


# --- listeners ----------------------------------------------------------------------------------------------
def _hcm_of(chain: listener_pb2.FilterChain) -> hcm_pb2.HttpConnectionManager | None:
    for f in chain.filters:
        if f.name == HCM_FILTER and f.HasField("typed_config"):
            h = hcm_pb2.HttpConnectionManager()
            if f.typed_config.Unpack(h):
                return h
    return None


def _sni_rank(server_names: Sequence[str], sni: str) -> int | None:
    """How well a chain's server_names fit the SNI (Envoy: exact name, then the longest wildcard, then a
    chain without names); None when they do not."""
    if not server_names:
        return 0
    best: int | None = None
    for name in server_names:
        name = name.lower()
        if name == sni:
            return 10_000
        if name.startswith("*.") and sni.endswith(name[1:]) and len(sni) > len(name) - 1:
            best = max(best or 0, len(name))
    return best


def _chain_for(lis: listener_pb2.Listener, port: int | None,
               tls_sni: str | None) -> tuple[listener_pb2.FilterChain | None, str]:
    """The HTTP filter chain a request on ``port`` takes: plaintext (``tls_sni`` None) or TLS with that SNI
    (server_names: exact, then wildcard, then none), by destination_port, transport and ALPN."""
    chains = list(lis.filter_chains)
    if lis.HasField("default_filter_chain"):
        chains.append(lis.default_filter_chain)
    best: tuple[int, int, listener_pb2.FilterChain] | None = None
    for i, ch in enumerate(chains):
        m = ch.filter_chain_match
        if m.HasField("destination_port") and port is not None and m.destination_port.value != port:
            continue
        is_tls = ch.HasField("transport_socket") or m.transport_protocol == "tls"
        if is_tls != (tls_sni is not None):
            continue
        if m.application_protocols and not set(m.application_protocols) & _HTTP_ALPN:
            continue
        rank = _sni_rank(m.server_names, tls_sni) if tls_sni is not None else 0
        if rank is None or _hcm_of(ch) is None:
            continue
        if best is None or rank > best[0]:
            best = (rank, i, ch)
    if best is None:
        return None, ""
    ch = best[2]
    names = f" (server names {', '.join(ch.filter_chain_match.server_names)})" if tls_sni is not None else ""
    return ch, (ch.name or f"#{best[1]}") + names


def _listen_port(lis: listener_pb2.Listener) -> int:
    return int(lis.address.socket_address.port_value)


def _pick_listener(listeners: Mapping[str, Any], direction: str, candidates: list[int],
                   why: list[str]) -> tuple[listener_pb2.Listener | None, int | None]:
    lst = [v for v in listeners.values() if isinstance(v, listener_pb2.Listener)]
    if direction == "outbound":
        for lis in lst:
            for ch in lis.filter_chains:
                h = _hcm_of(ch)
                if h is not None and h.HasField("rds") and h.rds.route_config_name == HTTP_PROXY_ROUTE:
                    why.append(f"listener {lis.name}: the sidecar's outbound HTTP proxy "
                               f"(RDS {HTTP_PROXY_ROUTE})")
                    return lis, None
        for port in candidates:
            for lis in lst:
                if (_listen_port(lis) == port and lis.traffic_direction == base_pb2.OUTBOUND
                        and lis.address.socket_address.address == "0.0.0.0"):
                    why.append(f"listener {lis.name}: outbound port {port}")
                    return lis, port
        return None, None
    want_dir = base_pb2.INBOUND if direction == "inbound" else None
    for port in candidates:
        for lis in lst:
            if _listen_port(lis) == port and (want_dir is None or lis.traffic_direction == want_dir):
                why.append(f"listener {lis.name}: listens on port {port}")
                return lis, port
    if direction == "inbound":
        for lis in lst:
            if lis.name == "virtualInbound":
                why.append("listener virtualInbound: inbound traffic captured by iptables")
                return lis, candidates[0] if candidates else None
    return None, None


def _normalize(path: str, h: hcm_pb2.HttpConnectionManager, why: list[str]) -> str:
    base, sep, query = path.partition("?")
    new = base
    if h.HasField("normalize_path") and h.normalize_path.value:
        trailing = new.endswith("/") and new != "/"
        new = posixpath.normpath(new) if new else "/"
        new = "/" + new.lstrip("/") + ("/" if trailing and new != "/" else "")
    if h.merge_slashes:
        new = re.sub("/{2,}", "/", new)
    if new != base:
        why.append(f"path normalized by the connection manager: {base} -> {new}")
    return new + sep + query


def _strip_port(authority: str, h: hcm_pb2.HttpConnectionManager, listen_port: int | None,
                why: list[str]) -> str:
    host, sep, port = authority.rpartition(":")
    if not sep or not port.isdigit() or authority.endswith("]"):
        return authority
    if h.strip_any_host_port or (h.strip_matching_host_port and listen_port is not None
                                 and int(port) == listen_port):
        why.append(f"connection manager strips the port: {authority} -> {host}")
        return host
    return authority


# --- the simulation -----------------------------------------------------------------------------------------
def _not_found(out: dict[str, Any], why: list[str], reason: str) -> dict[str, Any]:
    why.append(reason)
    out.update(status="not_found", http_status=404, response_flags="NR", reason=reason)
    return out


def _error(out: dict[str, Any], why: list[str], reason: str) -> dict[str, Any]:
    why.append(reason)
    out.update(status="error", http_status=None, reason=reason)
    return out


def _direction(req: SimRequest, proxy_id: str) -> str:
    if req.direction not in DIRECTIONS:
        raise InvalidRequest(f"direction must be one of {', '.join(DIRECTIONS)}, not {req.direction!r}")
    if req.direction != "auto":
        return req.direction
    return "gateway" if proxy_id.startswith("router~") else "outbound"


def _route_info(route: rc.Route, index: int, vh: rc.VirtualHost) -> dict[str, Any]:
    info: dict[str, Any] = {"index": index, "name": route.name, "match": describe_match(route.match),
                            "virtual_host": vh.name}
    vs = action.istio_config(route.metadata)
    if vs:
        info["virtual_service"] = vs
    if route.decorator.operation:
        info["operation"] = route.decorator.operation
    return info


def _destination(d: dict[str, Any], resources: ResourceSet) -> dict[str, Any]:
    c = resources.of(CLUSTER).get(d["cluster"])
    out = {**d, **parse_cluster_name(d["cluster"])}
    if isinstance(c, cluster_pb2.Cluster):
        out["cluster_info"] = cluster_summary(c)
        if "subset" in out["cluster_info"]:
            out["subset"] = out["cluster_info"]["subset"]
    else:
        out["cluster_info"] = None
        out["missing"] = "no such cluster in CDS: Envoy answers 503 (NC)"
    eps, source = endpoints_of(c if isinstance(c, cluster_pb2.Cluster) else None,
                               resources.of(ENDPOINT), d["cluster"])
    out["endpoints"] = eps
    out["endpoints_source"] = source
    return out


def simulate(resources: ResourceSet, req: SimRequest, proxy_id: str = "",
             gateway_ports: Mapping[int, int] | None = None) -> dict[str, Any]:
    """Evaluate ``req`` against one proxy's resources; a JSON-able result with a ``why`` trail.

    ``status`` is ``route`` (forwarded to ``destinations``), ``redirect``, ``direct_response``,
    ``not_found`` (404, response flag NR), ``connection_closed`` (no filter chain takes it),
    ``passthrough`` (no HTTP listener: iptables-captured TCP) or ``error`` (no listener / route
    configuration to simulate, or a configuration the simulator could not evaluate).

    ``gateway_ports`` is a gateway proxy's Gateway port -> listen port map (its ``MIZZEN_GATEWAY_PORTS``
    metadata, :attr:`mizzen.core.proxy.Proxy.gateway_ports`); None: the default (80->8080, 443->8443).

    Raises :class:`InvalidRequest` for a request it cannot take; never anything else: an unexpected failure
    while evaluating the resources (a bug, or resources it cannot read) becomes ``status`` ``error`` with a
    one-line reason."""
    direction = _direction(req, proxy_id)
    http, url_port, notes = build_request(req, outbound_proxy=direction == "outbound")
    try:
        ports = dict(DEFAULT_GATEWAY_PORTS if gateway_ports is None else gateway_ports)
        return _simulate(resources, req, proxy_id, direction, http, url_port, notes, ports)
    except Exception as e:   # the user gets one line, never a traceback
        reason = f"the simulator could not evaluate this request: {type(e).__name__}: {e}".replace("\n", " ")
        return {"proxy": proxy_id, "direction": direction, "status": "error", "http_status": None,
                "request": {"method": http.method, "authority": http.authority, "path": http.path,
                            "headers": [list(h) for h in http.headers]},
                "reason": reason, "why": [*notes, reason], "listener": None, "route_config": None,
                "virtual_host": None, "route": None, "destinations": [], "policies": {},
                "probabilistic": []}


def _simulate(resources: ResourceSet, req: SimRequest, proxy_id: str, direction: str, http: HttpRequest,
              url_port: int | None, notes: list[str], gateway_ports: Mapping[int, int]) -> dict[str, Any]:
    why: list[str] = []
    why.extend(notes)
    out: dict[str, Any] = {
        "proxy": proxy_id, "direction": direction,
        "request": {"method": http.method, "authority": http.authority, "path": http.path,
                    "headers": [list(h) for h in http.headers]},
        "listener": None, "route_config": None, "virtual_host": None, "route": None,
        "status": None, "http_status": None, "destinations": [], "policies": {}, "probabilistic": [],
        "why": why,
    }
    if req.port is not None:
        candidates = [req.port]
    else:
        default = url_port or (443 if http.scheme == "https" else 80)
        candidates = [default]
        listen = gateway_ports.get(default, default)
        if direction == "gateway" and listen != default:
            # the Gateway port the request names is served on the proxy's mapped listen port (like the
            # ingressgateway Service's targetPort); an explicit URL port may also be the listen port itself
            why.append(f"Gateway port {default} is served on listen port {listen} (the proxy's port map)")
            candidates = [default, listen] if url_port is not None else [listen]
    lis, port = _pick_listener(resources.of(LISTENER), direction, candidates, why)
    if lis is None and direction == "outbound" and "virtualOutbound" in resources.of(LISTENER):
        reason = (f"no outbound HTTP listener for port {candidates[0]}: virtualOutbound passes the "
                  "connection through as plain TCP (PassthroughCluster or BlackHoleCluster, by "
                  "outboundTrafficPolicy)")
        why.append(reason)
        out.update(status="passthrough", reason=reason)
        return out
    if lis is None:
        return _error(out, why, f"no {direction} HTTP listener for port(s) {candidates} "
                                f"(listeners: {', '.join(sorted(resources.of(LISTENER))) or 'none'})")
    sni = http.authority.rsplit(":", 1)[0].lower() if http.scheme == "https" else None
    chain, chain_name = _chain_for(lis, port, sni)
    if chain is None:
        kind = f"TLS HTTP filter chain for SNI {sni!r}" if sni is not None else "plaintext HTTP filter chain"
        reason = f"listener {lis.name} has no {kind} for port {port}: Envoy closes the connection"
        why.append(reason)
        out.update(status="connection_closed", reason=reason)
        return out
    why.append(f"filter chain {chain_name}")
    h = _hcm_of(chain)
    assert h is not None
    out["listener"] = {"name": lis.name, "port": _listen_port(lis), "filter_chain": chain_name}
    http = HttpRequest(method=http.method, authority=_strip_port(http.authority, h, port, why),
                       path=_normalize(http.path, h, why), scheme=http.scheme, headers=http.headers)
    if h.HasField("rds"):
        rc_name = h.rds.route_config_name
        cfg = resources.of(ROUTE).get(rc_name)
        if not isinstance(cfg, route_pb2.RouteConfiguration):
            return _error(out, why, f"route configuration {rc_name} is not in RDS "
                                    "(the listener is not ready)")
        why.append(f"route configuration {rc_name} (RDS)")
    elif h.HasField("route_config"):
        cfg = h.route_config
        rc_name = cfg.name or "(inline)"
        why.append(f"route configuration {rc_name} (inline in the listener)")
    else:
        return _error(out, why, "the connection manager has neither RDS nor an inline route configuration")
    out["route_config"] = rc_name
    host = http.authority
    if cfg.ignore_port_in_host_matching and ":" in host and not host.endswith("]"):
        host = host.rsplit(":", 1)[0]
        why.append(f"route configuration ignores the port in host matching: {http.authority} -> {host}")
    vh, vwhy = find_virtual_host(list(cfg.virtual_hosts), host)
    if vh is None:
        return _not_found(out, why, f"404 NR: {vwhy}")
    why.append(vwhy)
    out["virtual_host"] = {"name": vh.name, "domains": list(vh.domains)}
    if vh.require_tls != rc.VirtualHost.NONE and sni is None:
        location = f"https://{http.authority}{http.path}"     # Envoy's createSslRedirectPath
        need = rc.VirtualHost.TlsRequirementType.Name(vh.require_tls)
        why.append(f"vhost {vh.name} requires TLS (require_tls {need}): 301 to {location}")
        out.update(status="redirect", http_status=301, redirect={"status": 301, "location": location})
        return out
    for i, route in enumerate(vh.routes):
        verdict = match_route(route, http)
        label = f"route {i}" + (f" ({route.name})" if route.name else "")
        if not verdict.matched:
            why.append(f"{label} skipped: {verdict.reason}")
            continue
        why.append(f"{label} matched: {verdict.reason}")
        if verdict.probabilistic:
            out["probabilistic"].append(f"{label} {verdict.probabilistic}; otherwise later routes apply")
        out["route"] = _route_info(route, i, vh)
        return _act(out, route, http, resources, why)
    return _not_found(out, why, f"404 NR: no route of vhost {vh.name} matches {http.method} {http.path}")


def _act(out: dict[str, Any], route: rc.Route, http: HttpRequest, resources: ResourceSet,
         why: list[str]) -> dict[str, Any]:
    out["policies"] = action.policies(route, http)
    if out["policies"].get("rewrite_refused"):
        why.append(out["policies"]["rewrite_refused"])
    fault = out["policies"].get("fault") or {}
    for kind, f in fault.items():
        if f.get("percent", 100.0) < 100.0:
            out["probabilistic"].append(f"fault {kind} applies to {f['percent']:g}% of requests")
    kind = route.WhichOneof("action")
    if kind == "redirect":
        r = action.redirect(route, http)
        out.update(status="redirect", http_status=r["status"], redirect=r)
        why.append(f"redirect {r['status']} to {r['location']}")
    elif kind == "direct_response":
        d = action.direct_response(route)
        out.update(status="direct_response", http_status=d["status"], direct_response=d)
        why.append(f"direct response {d['status']}")
    elif kind == "route":
        dests = [_destination(d, resources) for d in action.destinations(route.route)]
        out.update(status="route", destinations=dests)
        if len(dests) > 1:
            out["probabilistic"].append("weighted clusters: " + ", ".join(
                f"{d['cluster']} {d['percent']:g}%" for d in dests))
        for d in dests:
            why.append(f"to cluster {d['cluster']} ({d['percent']:g}%): {len(d['endpoints'])} endpoint(s)"
                       + (f" [{d['missing']}]" if d.get("missing") else ""))
        abort = fault.get("abort")
        if abort and abort.get("percent", 100.0) >= 100.0 and "http_status" in abort:
            out["http_status"] = abort["http_status"]
            why.append(f"fault filter aborts every request with {abort['http_status']}")
    else:
        return _error(out, why, f"route action {kind or 'unset'} is not simulated")
    return out
