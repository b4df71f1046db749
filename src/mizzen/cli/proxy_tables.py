"""istioctl-like tables for ``mizzen proxy-status`` and ``mizzen proxy-config``, from API JSON.

Pure functions over ``/debug/syncz`` entries and ``/debug/config_dump`` resources (protobuf JSON; camelCase or
snake_case keys both accepted). Also resolves a user's PROXY argument to one proxy id.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mizzen.cli.common import format_table, human_age

__all__ = [
    "TYPES",
    "admin_endpoints_table",
    "clusters_table",
    "endpoints_table",
    "listeners_table",
    "nack_lines",
    "proxy_name",
    "proxy_namespace",
    "resolve_proxy",
    "routes_table",
    "status_table",
]

TYPES = ("CDS", "LDS", "EDS", "RDS")


def f(d: Any, name: str) -> Any:
    """Field of a protobuf-JSON dict by snake_case name, accepting the camelCase spelling too."""
    if not isinstance(d, Mapping):
        return None
    if name in d:
        return d[name]
    camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
    return d.get(camel)


# -- proxies ---------------------------------------------------------------------------------------------


def proxy_name(proxy_id: str) -> str:
    """``sidecar~127.0.0.5~reviews-v1-x.bookinfo~bookinfo.svc.cluster.local`` -> ``reviews-v1-x.bookinfo``.
    """
    parts = proxy_id.split("~")
    return parts[2] if len(parts) == 4 else proxy_id


def proxy_namespace(proxy_id: str) -> str:
    """The namespace part of a node id (``...~reviews-v1-x.bookinfo~...`` -> ``bookinfo``), "" if unknown."""
    name = proxy_name(proxy_id)
    return name.rsplit(".", 1)[1] if name != proxy_id and "." in name else ""


def resolve_proxy(arg: str, proxy_ids: Sequence[str], namespace: str | None = None,
                  prefer: str | None = None) -> tuple[str | None, list[str]]:
    """(the one matching id, []) or (None, candidates).

    An exact id or ``pod.namespace`` wins, then the pod name, then a unique prefix, then a unique substring.
    ``namespace`` (``-n``) restricts the search to that namespace; otherwise all namespaces are searched and
    a tie is broken in favour of ``prefer`` (the current context's namespace), like pods in ``mizzen logs``.
    """
    ids = list(dict.fromkeys(proxy_ids))
    if namespace:
        ids = [p for p in ids if proxy_namespace(p) == namespace]
    found, candidates = _resolve(arg, ids)
    if found is None and candidates and prefer and not namespace:
        preferred = [p for p in candidates if proxy_namespace(p) == prefer]
        if len(preferred) == 1:
            return preferred[0], []
    return found, candidates


def _resolve(arg: str, ids: Sequence[str]) -> tuple[str | None, list[str]]:
    rules: list[Callable[[str], bool]] = [
        lambda p: p == arg or proxy_name(p) == arg,
        lambda p: proxy_name(p).split(".")[0] == arg,
        lambda p: p.startswith(arg) or proxy_name(p).startswith(arg),
        lambda p: arg in p,
    ]
    for pick in rules:
        hits = [p for p in ids if pick(p)]
        if len(hits) == 1:
            return hits[0], []
        if len(hits) > 1:
            return None, hits
    return None, []


def _type_status(t: Mapping[str, Any] | None) -> str:
    if not t:
        return "NOT SENT"
    status = str(t.get("status") or "NOT SENT")
    version = t.get("acked") if status == "SYNCED" else t.get("sent")
    if status != "NOT SENT" and version:
        return f"{status} ({str(version)[:8]})"
    return status


def status_table(entries: Sequence[Mapping[str, Any]]) -> str:
    """One row per proxy; the ISTIOD column (the replica it is connected to, as istioctl's) when the
    entries name one (a control plane on a cluster)."""
    replicas = any(e.get("istiod") for e in entries)
    rows = []
    for e in sorted(entries, key=lambda e: proxy_name(str(e.get("proxy", "")))):
        types = e.get("types") or {}
        rows.append([
            proxy_name(str(e.get("proxy", ""))),
            *(_type_status(types.get(t)) for t in TYPES),
            *([str(e.get("istiod") or "-")] if replicas else []),
            str(e.get("mtls") or "-"),
            human_age(e.get("connected_at")) if e.get("connected_at") else "-",
        ])
    return format_table(["NAME", *TYPES, *(["ISTIOD"] if replicas else []), "MTLS", "CONNECTED"], rows)


def nack_lines(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    for e in entries:
        for t, st in sorted((e.get("types") or {}).items()):
            nack = (st or {}).get("nack")
            if nack:
                out.append(f"{proxy_name(str(e.get('proxy', '')))} {t} rejected version "
                           f"{nack.get('version', '?')}: {nack.get('reason') or nack.get('message', '')}")
    return out


# -- clusters --------------------------------------------------------------------------------------------


def config_ref(metadata: Any) -> str:
    """/apis/networking.istio.io/v1/namespaces/default/destination-rule/reviews -> reviews.default."""
    fm = f(metadata, "filter_metadata") or {}
    path = (fm.get("istio") or {}).get("config") if isinstance(fm, Mapping) else None
    if not path:
        return ""
    parts = str(path).strip("/").split("/")
    if len(parts) == 7 and parts[0] == "apis" and parts[3] == "namespaces":
        return f"{parts[6]}.{parts[4]}"
    return "<unknown>"


def _cluster_type(c: Mapping[str, Any]) -> str:
    t = f(c, "type")
    if t:
        return str(t)
    ct = f(c, "cluster_type")
    if isinstance(ct, Mapping) and ct.get("name"):
        return str(ct["name"])
    return "STATIC"


def clusters_table(
    clusters: Sequence[Mapping[str, Any]], fqdn: str | None = None, port: int | None = None,
    subset: str | None = None, direction: str | None = None,
) -> str:
    rows = []
    for c in clusters:
        name = str(f(c, "name") or "")
        parts = name.split("|")
        if len(parts) == 4:
            d, p, s, h = parts
            row = [h or "-", p, s or "-", d, _cluster_type(c), config_ref(f(c, "metadata"))]
        else:
            d, p, s, h = "", "", "", name
            row = [name, "-", "-", "-", _cluster_type(c), config_ref(f(c, "metadata"))]
        if (fqdn and fqdn not in h) or (port is not None and p != str(port)):
            continue
        if (subset is not None and s != subset) or (direction and d != direction):
            continue
        rows.append(row)
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return format_table(["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"], rows)


# -- routes ----------------------------------------------------------------------------------------------


def _domains(domains: Sequence[str]) -> str:
    if len(domains) <= 1:
        return "".join(domains)
    plain = [d for d in domains if ":" not in d] or list(domains)
    if len(plain) > 2:
        return f"{', '.join(plain[:2])} + {len(plain) - 2} more..."
    return ", ".join(plain)


def route_match(match: Any) -> str:
    conds = []
    if f(match, "prefix") is not None:
        conds.append(f"{f(match, 'prefix')}*")
    if f(match, "path_separated_prefix"):
        conds.append(f"{f(match, 'path_separated_prefix')}/*")
    if f(match, "path"):
        conds.append(str(f(match, "path")))
    regex = f(match, "safe_regex")
    if regex:
        conds.append(f"regex {f(regex, 'regex')}")
    return " ".join(conds)


def routes_table(route_configs: Sequence[Mapping[str, Any]], name: str | None = None) -> str:
    rows = []
    for rc in route_configs:
        rc_name = str(f(rc, "name") or "")
        if name and rc_name != name:
            continue
        vhosts = f(rc, "virtual_hosts") or []
        if not vhosts:
            rows.append([rc_name, "", "", "", ""])
        for vh in vhosts:
            for r in f(vh, "routes") or [{}]:
                rows.append([
                    rc_name, str(f(vh, "name") or ""), _domains([str(d) for d in f(vh, "domains") or []]),
                    route_match(f(r, "match")) or "-", config_ref(f(r, "metadata")),
                ])
    return format_table(["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"], rows)


# -- listeners -------------------------------------------------------------------------------------------


def _chain_match(m: Any) -> str:
    if not m:
        return "ALL"
    conds = []
    for r in f(m, "prefix_ranges") or []:
        conds.append(f"Addr: {f(r, 'address_prefix')}/{f(r, 'prefix_len') or 32}")
    if f(m, "server_names"):
        conds.append("SNI: " + ",".join(f(m, "server_names")))
    if f(m, "transport_protocol"):
        conds.append(f"Trans: {f(m, 'transport_protocol')}")
    if f(m, "application_protocols"):
        conds.append("App: " + ",".join(f(m, "application_protocols")))
    if f(m, "destination_port") is not None:
        port = f(m, "destination_port")
        conds.append(f"Port: {port.get('value') if isinstance(port, Mapping) else port}")
    return "; ".join(conds) or "ALL"


def _chain_destination(chain: Any) -> str:
    for flt in f(chain, "filters") or []:
        tc = f(flt, "typed_config") or {}
        name = str(f(flt, "name") or "")
        if "HttpConnectionManager" in str(tc.get("@type", "")) or "http_connection_manager" in name:
            rds = f(tc, "rds")
            if rds:
                return f"Route: {f(rds, 'route_config_name')}"
            inline = f(tc, "route_config") or {}
            matches = [route_match(f(r, "match")) for vh in f(inline, "virtual_hosts") or []
                       for r in f(vh, "routes") or []]
            return f"Inline Route: {'; '.join(m for m in matches if m)}".rstrip(": ")
        if "TcpProxy" in str(tc.get("@type", "")) or "tcp_proxy" in name:
            if f(tc, "cluster"):
                return f"Cluster: {f(tc, 'cluster')}"
            weighted = f(f(tc, "weighted_clusters"), "clusters") or []
            return "Clusters: " + ", ".join(str(f(w, "name")) for w in weighted)
    return "Non-HTTP/Non-TCP"


def listeners_table(listeners: Sequence[Mapping[str, Any]], port: int | None = None) -> str:
    rows = []
    for lst in listeners:
        sa = f(f(lst, "address"), "socket_address") or {}
        addr, lport = str(f(sa, "address") or ""), str(f(sa, "port_value") or 0)
        if port is not None and lport != str(port):
            continue
        chains = list(f(lst, "filter_chains") or [])
        if f(lst, "default_filter_chain"):
            chains.append(f(lst, "default_filter_chain"))
        for ch in chains or [{}]:
            rows.append([addr, lport, _chain_match(f(ch, "filter_chain_match")), _chain_destination(ch)])
    return format_table(["ADDRESS", "PORT", "MATCH", "DESTINATION"], rows)


# -- endpoints -------------------------------------------------------------------------------------------


def endpoints_table(assignments: Sequence[Mapping[str, Any]], cluster: str | None = None) -> str:
    """Endpoints as sent by the control plane; OUTLIER CHECK needs Envoy's view, so it shows -."""
    rows = []
    for cla in assignments:
        cname = str(f(cla, "cluster_name") or "")
        if cluster and cluster not in cname:
            continue
        for loc in f(cla, "endpoints") or []:
            for lb in f(loc, "lb_endpoints") or []:
                sa = f(f(f(lb, "endpoint"), "address"), "socket_address") or {}
                health = str(f(lb, "health_status") or "HEALTHY")
                health = "HEALTHY" if health == "UNKNOWN" else health
                rows.append([f"{f(sa, 'address')}:{f(sa, 'port_value')}", health, "-", cname])
    rows.sort(key=lambda r: (r[3], r[0]))
    return format_table(["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"], rows)


def admin_endpoints_table(cluster_statuses: Sequence[Mapping[str, Any]], cluster: str | None = None) -> str:
    """Endpoints as Envoy sees them (admin ``/clusters?format=json``): health and outlier ejection."""
    rows = []
    for cs in cluster_statuses:
        cname = str(cs.get("name") or "")
        if cluster and cluster not in cname:
            continue
        for h in cs.get("host_statuses") or []:
            sa = f(h.get("address"), "socket_address") or {}
            hs = h.get("health_status") or {}
            failed = [k for k, v in hs.items() if k.startswith("failed") and v is True]
            status = str(hs.get("eds_health_status") or "HEALTHY")
            if status in ("HEALTHY", "UNKNOWN") and [k for k in failed if k != "failed_outlier_check"]:
                status = "UNHEALTHY"
            outlier = "FAILED" if hs.get("failed_outlier_check") else "OK"
            rows.append([f"{f(sa, 'address')}:{f(sa, 'port_value')}", status, outlier, cname])
    rows.sort(key=lambda r: (r[3], r[0]))
    return format_table(["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"], rows)
