"""The traffic graph, Kiali's way, from Istio's standard metrics (pure: Prometheus vectors in, nodes and
edges out).

Views (Kiali's names): ``workload`` (a node per workload), ``app`` (per app, versions merged),
``versionedApp`` (per app and version, grouped in an app box) and ``service`` (requests from their source app
to the destination service). Traffic is what the destination reported (``reporter="destination"``), plus what
only a source saw (a destination without a sidecar or outside the mesh). An edge carries its request rate,
its share of what its source sends to the same destination service (so a canary split reads 80%/20% on the
edges to the two versions), the error rate (5xx, and response code 0 = no response), p95 latency
and whether its requests were mutual TLS (``connection_security_policy="mutual_tls"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["VIEWS", "EdgeKey", "Graph", "build_graph", "queries"]

VIEWS = ("app", "versionedApp", "workload", "service")
UNKNOWN = "unknown"
_SIDES = ("source", "destination")
_BY = ("source_workload_namespace", "source_workload", "source_app", "source_version",
       "destination_service_namespace", "destination_service_name", "destination_workload_namespace",
       "destination_workload", "destination_app", "destination_version", "response_code",
       "connection_security_policy")


def queries(namespaces: Iterable[str], window: str = "1m") -> dict[str, str]:
    """The PromQL the graph needs: request rates by both reporters, and p95 latency, for ``namespaces``
    (requests whose source or destination is in one of them)."""
    ns = "|".join(sorted(set(namespaces))) or ".*"
    by = ",".join(_BY)
    sel = 'reporter="{rep}",{side}_workload_namespace=~"' + ns + '"'

    def rate(metric: str, rep: str, side: str) -> str:
        return f"sum by ({by}) (rate({metric}{{{sel.format(rep=rep, side=side)}}}[{window}]))"
    out = {
        "dest_in": rate("istio_requests_total", "destination", "destination"),
        "dest_out": rate("istio_requests_total", "destination", "source"),
        "source_out": rate("istio_requests_total", "source", "source"),
    }
    lat_by = ",".join(b for b in _BY if b not in ("response_code", "connection_security_policy"))
    out["p95"] = (f'histogram_quantile(0.95, sum by (le,{lat_by}) (rate(istio_request_duration_milliseconds_'
                  f'bucket{{reporter="destination",destination_workload_namespace=~"{ns}"}}[{window}])))')
    return out


@dataclass(frozen=True)
class EdgeKey:
    source: str
    target: str


@dataclass
class _Edge:
    service: str = ""          # the destination service (namespace/name): shares are per source and service
    rate: float = 0.0
    errors: float = 0.0
    mtls_rate: float = 0.0
    p95_ms: float | None = None
    codes: dict[str, float] = field(default_factory=dict)


@dataclass
class Graph:
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: dict[EdgeKey, _Edge] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out_rate: dict[tuple[str, str], float] = {}
        for k, e in self.edges.items():
            out_rate[(k.source, e.service)] = out_rate.get((k.source, e.service), 0.0) + e.rate
        edges = []
        for k, e in sorted(self.edges.items(), key=lambda kv: (kv[0].source, kv[0].target)):
            total = out_rate.get((k.source, e.service)) or 0.0
            edges.append({
                "id": f"{k.source}->{k.target}", "source": k.source, "target": k.target, "service": e.service,
                "rate": round(e.rate, 4),
                "percent": round(100.0 * e.rate / total, 1) if total else 0.0,
                "errorRate": round(e.errors / e.rate, 4) if e.rate else 0.0,
                "p95": None if e.p95_ms is None else round(e.p95_ms, 2),
                "mtls": e.rate > 0 and e.mtls_rate >= 0.999 * e.rate,
                "codes": {c: round(r, 4) for c, r in sorted(e.codes.items())},
            })
        return {"nodes": [self.nodes[n] for n in sorted(self.nodes)], "edges": edges}


def _label(metric: Mapping[str, str], name: str) -> str:
    v = metric.get(name, "")
    return v if v else UNKNOWN


def _node(view: str, side: str, m: Mapping[str, str]) -> dict[str, Any]:
    """The node for one side of a sample in ``view`` (its ``id`` names it)."""
    if side == "destination" and view == "service":
        ns, svc = _label(m, "destination_service_namespace"), _label(m, "destination_service_name")
        return {"id": f"svc:{ns}/{svc}", "kind": "service", "namespace": ns, "label": svc}
    ns = _label(m, f"{side}_workload_namespace")
    wl = _label(m, f"{side}_workload")
    app = m.get(f"{side}_app") or ""
    version = m.get(f"{side}_version") or ""
    if wl == UNKNOWN:
        return {"id": "unknown", "kind": "unknown", "namespace": "", "label": "unknown"}
    if view == "workload" or not app or app == UNKNOWN:
        return {"id": f"wl:{ns}/{wl}", "kind": "workload", "namespace": ns, "label": wl, "app": app}
    if view == "versionedApp" and version and version != UNKNOWN:
        return {"id": f"va:{ns}/{app}/{version}", "kind": "app", "namespace": ns, "label": f"{app} {version}",
                "app": app, "version": version, "parent": f"box:{ns}/{app}"}
    return {"id": f"app:{ns}/{app}", "kind": "app", "namespace": ns, "label": app, "app": app}


def _sample_key(m: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(m.get(b, "") for b in _BY)


def build_graph(view: str, results: Mapping[str, Sequence[Mapping[str, Any]]]) -> Graph:
    """The graph of ``view`` from the instant-vector results of :func:`queries` (each a list of
    ``{"metric": {...}, "value": [ts, "rate"]}``)."""
    if view not in VIEWS:
        raise ValueError(f"unknown graph view {view!r} (one of {', '.join(VIEWS)})")
    samples: dict[tuple[str, ...], tuple[Mapping[str, str], float]] = {}
    for name in ("dest_in", "dest_out"):
        for r in results.get(name) or ():
            samples[_sample_key(r["metric"])] = (r["metric"], float(r["value"][1]))
    reported_by_dest = {(_label(m, "source_workload_namespace"), _label(m, "source_workload"),
                         _label(m, "destination_service_name")) for m, _ in samples.values()}
    for r in results.get("source_out") or ():   # requests no destination proxy reported
        m = r["metric"]
        key = (_label(m, "source_workload_namespace"), _label(m, "source_workload"),
               _label(m, "destination_service_name"))
        if key not in reported_by_dest:
            samples.setdefault(_sample_key(m), (m, float(r["value"][1])))
    g = Graph()
    for m, rate in samples.values():
        if rate <= 0:
            continue
        src, dst = _node(view, "source", m), _node(view, "destination", m)
        for n in (src, dst):
            g.nodes.setdefault(n["id"], n)
            parent = n.get("parent")
            if parent:
                g.nodes.setdefault(parent, {"id": parent, "kind": "box", "namespace": n["namespace"],
                                            "label": n["app"]})
        service = f'{_label(m, "destination_service_namespace")}/{_label(m, "destination_service_name")}'
        e = g.edges.setdefault(EdgeKey(src["id"], dst["id"]), _Edge(service=service))
        e.rate += rate
        code = m.get("response_code", "")
        e.codes[code] = e.codes.get(code, 0.0) + rate
        if code.startswith("5") or code == "0":
            e.errors += rate
        if m.get("connection_security_policy") == "mutual_tls":
            e.mtls_rate += rate
    for r in results.get("p95") or ():
        m = r["metric"]
        try:
            value = float(r["value"][1])
        except (TypeError, ValueError):
            continue
        if value != value:   # NaN: no requests in the window
            continue
        edge_key = EdgeKey(_node(view, "source", m)["id"], _node(view, "destination", m)["id"])
        e2 = g.edges.get(edge_key)
        if e2 is not None:
            e2.p95_ms = value if e2.p95_ms is None else max(e2.p95_ms, value)
    return g
