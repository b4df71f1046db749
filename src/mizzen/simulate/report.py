"""Human-readable rendering of a route-simulation result (the dict :func:`mizzen.simulate.simulate` returns),
for ``mizzen simulate``: verdict, virtual host, route and VirtualService, destinations with weights, subset,
DestinationRule, policy highlights, endpoints, and (verbose) the why-trail.
"""

from __future__ import annotations

from typing import Any

__all__ = ["render"]


def _config_name(path: str) -> str:
    """``/apis/networking.istio.io/v1/namespaces/bookinfo/virtual-service/reviews`` -> ``bookinfo/reviews``
    (the object's namespace/name)."""
    parts = path.strip("/").split("/")
    if len(parts) >= 2 and "namespaces" in parts:
        i = parts.index("namespaces")
        if i + 1 < len(parts):
            return f"{parts[i + 1]}/{parts[-1]}"
    return path


def _verdict(r: dict[str, Any]) -> str:
    status = r.get("status")
    if status == "route":
        code = r.get("http_status")
        return f"FORWARDED (fault abort {code})" if code else "FORWARDED"
    if status == "redirect":
        red = r.get("redirect") or {}
        return f"REDIRECT {red.get('status')} -> {red.get('location')}"
    if status == "direct_response":
        return f"DIRECT RESPONSE {r.get('http_status')}"
    if status == "connection_closed":
        return f"CONNECTION CLOSED: {r.get('reason', '')}"
    if status == "passthrough":
        return f"TCP PASSTHROUGH: {r.get('reason', '')}"
    if status == "not_found":
        return "404 NOT FOUND (NR: no route)"
    return f"CANNOT SIMULATE: {r.get('reason', '')}"


def _policy_lines(p: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if "rewrite" in p:
        out.append(f"rewrite: {p['rewrite']['path']} (authority {p['rewrite']['authority']})")
    if "timeout" in p:
        out.append(f"timeout: {p['timeout']}")
    if "retries" in p:
        rt = p["retries"]
        out.append(f"retries: {rt['attempts']} on {rt['retry_on']}"
                   + (f", per try {rt['per_try_timeout']}" if "per_try_timeout" in rt else ""))
    for kind, f in (p.get("fault") or {}).items():
        what = f.get("fixed_delay") or f.get("http_status") or f.get("grpc_status")
        out.append(f"fault {kind}: {what} for {f.get('percent', 100):g}% of requests")
    for m in p.get("mirrors") or []:
        out.append(f"mirror: {m['cluster']} ({m['percent']:g}%)")
    for key, items in (p.get("headers") or {}).items():
        out.append(f"headers {key.replace('_', ' ')}: {', '.join(items)}")
    if p.get("hash_policy"):
        out.append("consistent hash: " + ", ".join(str(h) for h in p["hash_policy"]))
    return out


def _kv(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def _cluster_lines(d: dict[str, Any]) -> list[str]:
    ci = d.get("cluster_info") or {}
    out = [f"-> {d['cluster']}  weight {d.get('weight')} ({d.get('percent', 100):g}%)"]
    bits = []
    if d.get("subset"):
        bits.append(f"subset {d['subset']}")
    for key in ("type", "lb_policy"):
        if ci.get(key):
            bits.append(str(ci[key]))
    if ci.get("destination_rule"):
        bits.append(f"DestinationRule {_config_name(ci['destination_rule'])}")
    if bits:
        out.append("   " + ", ".join(bits))
    if ci.get("circuit_breakers"):
        out.append("   circuit breakers: " + _kv(ci["circuit_breakers"]))
    if ci.get("outlier_detection"):
        out.append("   outlier detection: " + _kv(ci["outlier_detection"]))
    if ci.get("note"):
        out.append(f"   {ci['note']}")
    if d.get("missing"):
        out.append(f"   {d['missing']}")
    eps = d.get("endpoints") or []
    if not eps and ci.get("type") not in ("ORIGINAL_DST",) and not ci.get("note"):
        out.append("   no endpoints: Envoy answers 503 (UH)")
    for e in eps:
        extra = [e["health"]] + ([e["locality"]] if e.get("locality") else []) + (
            [f"weight {e['weight']}"] if "weight" in e else [])
        out.append(f"   endpoint {e['address']}  {' '.join(extra)}")
    return out


def render(r: dict[str, Any], verbose: bool = False) -> str:
    """The compact answer; ``verbose`` adds the why-trail."""
    req = r.get("request") or {}
    lines = [f"{req.get('method')} {req.get('authority')}{req.get('path')}  ({r.get('direction')} via "
             f"{(r.get('listener') or {}).get('name', '-')}, routes {r.get('route_config') or '-'})",
             _verdict(r)]
    vh = r.get("virtual_host")
    if vh:
        lines.append(f"virtual host: {vh['name']}")
    route = r.get("route")
    if route:
        vs = route.get("virtual_service") or ""
        vs = f"  VirtualService {_config_name(vs)}" if vs else ""
        name = route.get("name") or "-"
        lines.append(f"route: #{route['index']} {name} [{route['match']}]{vs}")
    for d in r.get("destinations") or []:
        lines.extend(_cluster_lines(d))
    lines.extend(_policy_lines(r.get("policies") or {}))
    for p in r.get("probabilistic") or []:
        lines.append(f"random: {p}")
    if verbose or r.get("status") in ("not_found", "connection_closed", "passthrough", "error"):
        lines.append("why:")
        lines.extend(f"  {i + 1}. {w}" for i, w in enumerate(r.get("why") or []))
    return "\n".join(lines)
