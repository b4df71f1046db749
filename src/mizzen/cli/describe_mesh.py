"""``mizzen x describe pod|svc``: the Istio facts about a pod or Service, like ``istioctl x describe``.

Pure (no I/O): from the pod (its ``v1 Pod`` object), the stored config (Services, DestinationRules,
VirtualServices, Gateways, Sidecars) and the xDS the control plane generated for the proxies (decoded from
``/debug/config_dump``), it assembles which Services select the pod, which DestinationRule is in effect and
which of its subsets match the pod, which VirtualService routes the Service (read from the generated RDS:
the route's ``istio`` metadata, as istioctl does) and which of its routes reach the pod and with what weight,
which Sidecar applies, and on which gateway (address, VirtualService, route matches) it is exposed.

Only what Mizzen has is printed: there are no PeerAuthentication/AuthorizationPolicy kinds yet, so there is
no mTLS or policy section.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

from mizzen.analysis.context import labels_match
from mizzen.config.model import Config, ConfigSnapshot
from mizzen.core import peer_authn
from mizzen.core.hosts import host_matches, resolve_short_name
from mizzen.core.mesh import MeshConfig
from mizzen.core.push_context import PushContext, resolve_gateway_ref
from mizzen.registry.convert import port_protocol
from mizzen.registry.model import RegistrySnapshot
from mizzen.simulate.action import destinations, istio_config
from mizzen.simulate.cluster import parse_cluster_name
from mizzen.simulate.match import describe_match

__all__ = ["ProxyConfig", "decode_proxy", "describe_pod_mesh", "describe_service_mesh", "object_ref",
           "selects"]

Obj = Mapping[str, Any]
SEPARATOR = "--------------------"


@dataclass(frozen=True)
class ProxyConfig:
    """What one proxy was sent: its route configurations, clusters, and listener address per route config."""

    proxy_id: str
    routes: tuple[route_pb2.RouteConfiguration, ...] = ()
    clusters: tuple[cluster_pb2.Cluster, ...] = ()
    listen: Mapping[str, tuple[str, ...]] = field(default_factory=dict)   # RDS name -> "host:port" list

    @property
    def pod(self) -> str:
        """``name.namespace`` of the proxy's node id (``router~ip~name.ns~...``)."""
        parts = self.proxy_id.split("~")
        return parts[2] if len(parts) == 4 else self.proxy_id


def _walk_rds_names(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            if k in ("routeConfigName", "route_config_name") and isinstance(v, str):
                yield v
            else:
                yield from _walk_rds_names(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk_rds_names(v)


def _listener_address(listener: Mapping[str, Any]) -> str:
    sock = (listener.get("address") or {}).get("socketAddress") or (listener.get("address") or {}).get(
        "socket_address") or {}
    port = sock.get("portValue", sock.get("port_value", ""))
    return f"{sock.get('address', '')}:{port}"


def decode_proxy(dump: Mapping[str, Any]) -> ProxyConfig:
    """A :class:`ProxyConfig` from ``/debug/config_dump`` JSON (``RDS``/``CDS``/``LDS`` lists of protobuf
    JSON). Unknown fields are ignored so a newer control plane still describes."""
    importlib.import_module("mizzen.core.generate")     # registers every type packed in Any fields
    routes = []
    for d in dump.get("RDS") or []:
        msg = route_pb2.RouteConfiguration()
        json_format.ParseDict({k: v for k, v in d.items() if k != "@type"}, msg, ignore_unknown_fields=True)
        routes.append(msg)
    clusters = []
    for d in dump.get("CDS") or []:
        msg = cluster_pb2.Cluster()
        try:
            json_format.ParseDict({k: v for k, v in d.items() if k != "@type"}, msg,
                                  ignore_unknown_fields=True)
        except json_format.ParseError:
            msg = cluster_pb2.Cluster(name=str(d.get("name", "")))
        clusters.append(msg)
    listen: dict[str, list[str]] = {}
    for lst in dump.get("LDS") or []:
        for name in set(_walk_rds_names(lst)):
            listen.setdefault(name, []).append(_listener_address(lst))
    return ProxyConfig(str(dump.get("proxy", "")), tuple(routes), tuple(clusters),
                       {k: tuple(sorted(v)) for k, v in listen.items()})


# --- small helpers ----------------------------------------------------------------------------------------


def _meta(obj: Obj) -> Mapping[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, Mapping) else {}


def _spec(obj: Obj) -> Mapping[str, Any]:
    s = obj.get("spec")
    return s if isinstance(s, Mapping) else {}


def object_ref(path: str) -> str:
    """``/apis/networking.istio.io/v1/namespaces/bookinfo/virtual-service/reviews`` -> ``reviews.bookinfo``
    (istioctl's ``name.namespace``)."""
    parts = path.strip("/").split("/")
    if len(parts) >= 2 and "namespaces" in parts:
        i = parts.index("namespaces")
        if i + 1 < len(parts):
            return f"{parts[-1]}.{parts[i + 1]}"
    return path


def _find(configs: Sequence[Obj], kind: str, ref: str) -> Obj | None:
    """The stored object ``name.namespace`` of ``kind``."""
    for c in configs:
        m = _meta(c)
        if c.get("kind") == kind and f"{m.get('name')}.{m.get('namespace')}" == ref:
            return c
    return None


def _fqdn(svc: Obj, suffix: str) -> str:
    m = _meta(svc)
    return f"{m.get('name')}.{m.get('namespace')}.svc.{suffix}"


def _container_ports(pod: Obj) -> list[tuple[str, int, str]]:
    """(container, containerPort, port name) of the pod's containers."""
    out = []
    for c in _spec(pod).get("containers") or []:
        for p in c.get("ports") or []:
            if isinstance(p.get("containerPort"), int):
                out.append((str(c.get("name")), int(p["containerPort"]), str(p.get("name") or "")))
    return out


def _target(port: Mapping[str, Any], pod: Obj | None) -> int | None:
    """The pod port a Service port targets (a named targetPort through the pod's container ports)."""
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and pod is not None:
        return next((n for _, n, name in _container_ports(pod) if name == target), None)
    return None


def _has_sidecar(pod: Obj) -> bool:
    return any(c.get("name") == "istio-proxy" for c in _spec(pod).get("containers") or [])


def selects(svc: Obj, pod: Obj) -> bool:
    """Whether the Service's selector picks the pod (same namespace; an empty selector picks none)."""
    selector = _spec(svc).get("selector")
    return (isinstance(selector, Mapping) and bool(selector)
            and _meta(svc).get("namespace") == _meta(pod).get("namespace")
            and labels_match(selector, _meta(pod).get("labels") or {}))


def _vhost(proxy: ProxyConfig, host: str, port: int) -> rc.VirtualHost | None:
    """The virtual host for ``host:port`` in the proxy's route configs (the per-port one first)."""
    name = f"{host}:{port}"
    ordered = sorted(proxy.routes, key=lambda r: r.name != str(port))
    for rcfg in ordered:
        for vh in rcfg.virtual_hosts:
            if vh.name == name or name in vh.domains:
                return vh
    return None


def _cluster(proxy: ProxyConfig, name: str) -> cluster_pb2.Cluster | None:
    return next((c for c in proxy.clusters if c.name == name), None)


def _route_dests(route: rc.Route) -> list[dict[str, Any]]:
    return destinations(route.route) if route.HasField("route") else []


def _match_text(route: rc.Route) -> str:
    text = describe_match(route.match)
    return "everything" if text in ("prefix /", "(no path specifier)") else text


# --- the sections ---------------------------------------------------------------------------------------


_POLICIES = (("loadBalancer", "load balancer"), ("connectionPool", "connection pool"),
             ("outlierDetection", "outlier detection"))


def _dr_lines(dr: Obj, pod: Obj | None, host_label: str) -> list[str]:
    m, spec = _meta(dr), _spec(dr)
    out = [f'DestinationRule: {m.get("name")}.{m.get("namespace")} for "{host_label}"']
    subsets = [s for s in spec.get("subsets") or [] if isinstance(s, Mapping)]
    if pod is not None and subsets:
        labels = _meta(pod).get("labels") or {}
        matching = [str(s.get("name")) for s in subsets if labels_match(s.get("labels") or {}, labels)]
        others = [str(s.get("name")) for s in subsets if str(s.get("name")) not in matching]
        if not matching:
            out.append("  WARNING POD DOES NOT MATCH ANY SUBSETS.  "
                       f"(Non matching subsets {','.join(others)})")
        out.append(f"   Matching subsets: {','.join(matching)}")
        if others:
            out.append(f"      (Non-matching subsets {','.join(others)})")
    elif subsets:
        out.append("   Subsets: " + ",".join(str(s.get("name")) for s in subsets))
    policy = spec.get("trafficPolicy") if isinstance(spec.get("trafficPolicy"), Mapping) else None
    if not policy:
        out.append("   No Traffic Policy")
        return out
    tls = policy.get("tls") if isinstance(policy.get("tls"), Mapping) else None
    if tls and tls.get("mode"):
        out.append(f"   Traffic Policy TLS Mode: {tls['mode']}")
    kinds = [label for key, label in _POLICIES if policy.get(key)]
    if kinds:
        out.append("   Policies: " + "/".join(kinds))
    for pls in policy.get("portLevelSettings") or []:
        number = (pls.get("port") or {}).get("number")
        out.append("   Port Level Settings:")
        out.append(f"    {number}:")
        if (pls.get("tls") or {}).get("mode"):
            out.append(f"      TLS Mode: {pls['tls']['mode']}")
        pk = [label for key, label in _POLICIES if pls.get(key)]
        if pk:
            out.append("      Policies: " + "/".join(pk))
    return out


def _subset_matches(dr: Obj | None, subset: str, pod: Obj | None) -> bool:
    """Whether traffic to ``subset`` can reach ``pod`` (no subset: every pod; unknown subset: none)."""
    if not subset or pod is None:
        return True
    if dr is None:
        return False
    for s in _spec(dr).get("subsets") or []:
        if isinstance(s, Mapping) and s.get("name") == subset:
            return labels_match(s.get("labels") or {}, _meta(pod).get("labels") or {})
    return False


def _vs_lines(vs_ref: str, routes: Sequence[rc.Route], fqdn: str, port: int, dr: Obj | None,
              pod: Obj | None) -> list[str]:
    """istioctl's VirtualService section from the generated routes of the service's virtual host."""
    out = [f"VirtualService: {vs_ref}"]
    reaching, missing, detail = 0, [], []
    for route in routes:
        dests = _route_dests(route)
        ours = [(d, parse_cluster_name(d["cluster"])) for d in dests]
        if route.HasField("redirect"):
            detail.append(f"   Redirect for ({_match_text(route)})")
            continue
        if route.HasField("direct_response"):
            detail.append(f"   Direct response {route.direct_response.status} for ({_match_text(route)})")
            continue
        if pod is None:             # describing a Service: every route, with its destinations
            for d, c in ours:
                subset = f' subset "{c["subset"]}"' if c.get("subset") else ""
                where = f'host "{c.get("host", d["cluster"])}"{subset}'
                detail.append(f"   Route to {where} with weight {d['percent']:g}% for ({_match_text(route)})")
            continue
        hits = [(d, c) for d, c in ours if c.get("host") == fqdn and c.get("port") == port
                and _subset_matches(dr, str(c.get("subset") or ""), pod)]
        if hits:
            reaching += 1
            pct = sum(d["percent"] for d, _ in hits)
            if pct < 100:
                detail.append(f"   Weight {pct:g}%")
            if _match_text(route) != "everything":
                detail.append(f"   Match: {_match_text(route)}")
        for d, c in ours:
            if (d, c) in hits:
                continue
            if c.get("host") == fqdn and c.get("subset"):
                missing.append(f"      Route to non-matching subset {c['subset']} for ({_match_text(route)})")
            elif c.get("host") != fqdn:
                host = c.get("host", d["cluster"])
                missing.append(f'      Route to host "{host}" for ({_match_text(route)})')
    if pod is not None:
        if reaching == 0 and routes:
            out.append(f"   WARNING: No destinations match pod subsets (checked {len(routes)} HTTP routes)")
        elif len(routes) and not detail:
            out.append(f"   {len(routes)} HTTP route(s)")
        out.extend(detail)
        if missing and reaching:
            out.append(f"   {len(missing)} additional destination(s) that will not reach this pod")
        out.extend(missing)
    else:
        out.extend(detail)
    return out


def _exposure(gateways: Sequence[ProxyConfig], fqdn: str, port: int, dr: Obj | None,
              pod: Obj | None) -> list[str]:
    """``Exposed on Ingress Gateway http://addr`` + the VirtualService and its route matches, per gateway."""
    out: list[str] = []
    for gw in gateways:
        for rcfg in gw.routes:
            for vh in rcfg.virtual_hosts:
                by_vs: dict[str, list[str]] = {}
                for route in vh.routes:
                    for d in _route_dests(route):
                        c = parse_cluster_name(d["cluster"])
                        if (c.get("host") == fqdn and c.get("port") == port
                                and _subset_matches(dr, str(c.get("subset") or ""), pod)):
                            vs = object_ref(istio_config(route.metadata)) or "-"
                            by_vs.setdefault(vs, []).append(_path_text(route.match))
                            break
                for vs, paths in by_vs.items():
                    listen = ", ".join(f"http://{a}" for a in gw.listen.get(rcfg.name, ())) or rcfg.name
                    hosts = ", ".join(d for d in vh.domains if ":" not in d) or vh.name
                    out.append(f"Exposed on Ingress Gateway {listen} (gateway pod {gw.pod}, hosts {hosts})")
                    out.append(f"VirtualService: {vs}")
                    out.append("   " + ", ".join(dict.fromkeys(paths)))
    return out


def _path_text(m: rc.RouteMatch) -> str:
    """istioctl's short path form: ``/productpage``, ``/static*``, or the full match description."""
    which = m.WhichOneof("path_specifier")
    if which == "path" and not m.headers:
        return str(m.path)
    if which == "prefix" and not m.headers:
        return f"{m.prefix}*"
    return describe_match(m)


def _sidecars(pod: Obj, configs: Sequence[Obj], root_namespace: str) -> list[str]:
    """The Sidecar that applies to the pod, as Istio picks it: one selecting the pod in its namespace,
    else the namespace's default (no selector), else the root namespace's default."""
    ns = _meta(pod).get("namespace")
    labels = _meta(pod).get("labels") or {}
    scs = [c for c in configs if c.get("kind") == "Sidecar"]

    def selecting(c: Obj) -> bool:
        sel = _spec(c).get("workloadSelector")
        return (_meta(c).get("namespace") == ns and isinstance(sel, Mapping)
                and labels_match(sel.get("labels") or {}, labels))

    def default_in(namespace: Any) -> Callable[[Obj], bool]:
        return lambda c: _meta(c).get("namespace") == namespace and not _spec(c).get("workloadSelector")

    for pick in (selecting, default_in(ns), default_in(root_namespace)):
        found = sorted((c for c in scs if pick(c)), key=lambda c: str(_meta(c).get("name")))
        if found:
            c = found[0]
            hosts = [h for e in _spec(c).get("egress") or [] for h in e.get("hosts") or []]
            return [f"Sidecar: {_meta(c).get('name')}.{_meta(c).get('namespace')}",
                    "   Egress hosts: " + (", ".join(hosts) or "<all>")]
    return []


def _created(obj: Obj) -> float:
    text = str(_meta(obj).get("creationTimestamp") or "")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _peer_authn_lines(pod: Obj, configs: Sequence[Obj], root_namespace: str) -> list[str]:
    """istioctl's "Effective PeerAuthentication" block (core.peer_authn's precedence), when any
    PeerAuthentication applies to the pod."""
    pas = [Config(kind=peer_authn.KIND, api_version=str(c.get("apiVersion") or ""),
                  name=str(_meta(c).get("name") or ""), namespace=str(_meta(c).get("namespace") or ""),
                  spec=_spec(c), created=_created(c))
           for c in configs if c.get("kind") == peer_authn.KIND]
    if not pas:
        return []
    push = PushContext.build(ConfigSnapshot.of(pas), RegistrySnapshot(),
                             MeshConfig(root_namespace=root_namespace))
    ns, labels = str(_meta(pod).get("namespace") or ""), dict(_meta(pod).get("labels") or {})
    used = peer_authn.applied(push, ns, labels)
    if not used:
        return []
    policy = peer_authn.peer_policy(push, ns, labels)
    lines = ["Effective PeerAuthentication:", f"   Workload mTLS mode: {policy.mode.value}"]
    if policy.ports:
        lines.append("   Port Level mTLS mode:")
        lines.extend(f"      {port}: {mode.value}" for port, mode in sorted(policy.ports.items()))
    lines.append("Applied PeerAuthentication:")
    lines.append("   " + ", ".join(f"{c.name}.{c.namespace}" for c in used))
    return lines


def _service_sections(svc: Obj, pod: Obj | None, configs: Sequence[Obj], own: ProxyConfig | None,
                      gateways: Sequence[ProxyConfig], suffix: str) -> tuple[list[str], list[str]]:
    """(the Service's lines with its DestinationRule and VirtualServices, its gateway exposure lines)."""
    fqdn = _fqdn(svc, suffix)
    name = str(_meta(svc).get("name"))
    ns = str(_meta(svc).get("namespace"))
    lines = [f"Service: {name}"]
    exposure: list[str] = []
    for p in _spec(svc).get("ports") or []:
        if not isinstance(p, Mapping) or not isinstance(p.get("port"), int):
            continue
        number = int(p["port"])
        proto = port_protocol(number, str(p.get("name") or ""), p.get("appProtocol"),
                              str(p.get("protocol") or "TCP"))
        target = _target(p, pod)
        lines.append(f"   Port: {p.get('name') or ''} {number}/{proto.value}"
                     + (f" targets pod port {target}" if target is not None else ""))
    seen_dr: set[str] = set()
    for p in _spec(svc).get("ports") or []:
        if not isinstance(p, Mapping) or not isinstance(p.get("port"), int):
            continue
        number = int(p["port"])
        dr = _dr_for(fqdn, number, configs, own, ns, suffix)
        if dr is not None:
            ref = f"{_meta(dr).get('name')}.{_meta(dr).get('namespace')}"
            if ref not in seen_dr:
                seen_dr.add(ref)
                lines.extend(_dr_lines(dr, pod, str(_spec(dr).get("host", name))))
        if own is not None:
            found = _vhost(own, fqdn, number)
            if found is not None:
                by_vs: dict[str, list[rc.Route]] = {}
                for route in found.routes:
                    by_vs.setdefault(istio_config(route.metadata), []).append(route)
                for path, routes in by_vs.items():
                    if path:
                        lines.extend(_vs_lines(object_ref(path), routes, fqdn, number, dr, pod))
        exposure.extend(_exposure(gateways, fqdn, number, dr, pod))
    if own is None:
        lines.append("   (no sidecar proxy connected to read the routes from)")
    return lines, exposure


def _dr_for(fqdn: str, port: int, configs: Sequence[Obj], own: ProxyConfig | None, ns: str,
            suffix: str) -> Obj | None:
    """The DestinationRule in effect for ``fqdn``: from the generated cluster's ``istio`` metadata when a
    proxy is known (what Envoy got), else the stored one whose host covers it (same namespace first)."""
    if own is not None:
        c = _cluster(own, f"outbound|{port}||{fqdn}")
        if c is not None:
            path = istio_config(c.metadata)
            return _find(configs, "DestinationRule", object_ref(path)) if path else None
    drs = [c for c in configs if c.get("kind") == "DestinationRule"
           and host_matches(resolve_short_name(str(_spec(c).get("host", "")),
                                               str(_meta(c).get("namespace")), suffix), fqdn)]
    drs.sort(key=lambda c: _meta(c).get("namespace") != ns)
    return drs[0] if drs else None


def _is_gateway(pod: Obj) -> bool:
    return all(c.get("name") == "istio-proxy" for c in _spec(pod).get("containers") or [])


def _gateway_pod_lines(pod: Obj, configs: Sequence[Obj]) -> list[str]:
    """For a gateway pod: the Gateways whose selector picks it, and the VirtualServices bound to each."""
    labels = _meta(pod).get("labels") or {}
    out = [SEPARATOR]
    gws = [g for g in configs if g.get("kind") == "Gateway" and isinstance(_spec(g).get("selector"), Mapping)
           and labels_match(_spec(g)["selector"], labels)]
    if not gws:
        out.append("Gateway pod: no Gateway selects it")
    for g in sorted(gws, key=lambda g: (str(_meta(g).get("namespace")), str(_meta(g).get("name")))):
        ref = f"{_meta(g).get('namespace')}/{_meta(g).get('name')}"
        ports = [f"{(sv.get('port') or {}).get('number')}/{(sv.get('port') or {}).get('protocol')}"
                 for sv in _spec(g).get("servers") or [] if isinstance(sv, Mapping)]
        out.append(f"Gateway: {_meta(g).get('name')}.{_meta(g).get('namespace')} (ports {', '.join(ports)})")
        bound = sorted(f"{_meta(v).get('name')}.{_meta(v).get('namespace')}" for v in configs
                       if v.get("kind") == "VirtualService"
                       and any(resolve_gateway_ref(str(x), str(_meta(v).get("namespace"))) == ref
                               for x in _spec(v).get("gateways") or []))
        out.append("   VirtualServices: " + (", ".join(bound) or "<none>"))
    return out


def describe_pod_mesh(pod: Obj, services: Sequence[Obj], configs: Sequence[Obj], own: ProxyConfig | None,
                      gateways: Sequence[ProxyConfig], suffix: str = "cluster.local",
                      root_namespace: str = "istio-system") -> str:
    """``istioctl x describe pod``. ``own``: the pod's proxy config (None without a sidecar)."""
    m = _meta(pod)
    lines = [f"Pod: {m.get('name')}"]
    ports = [f"{n} ({c})" for c, n, _ in _container_ports(pod)]
    lines.append("   Pod Ports: " + (", ".join(ports) or "<none>"))
    if not _has_sidecar(pod):
        lines.append(f"WARNING: {m.get('name')} is not part of mesh; no Istio sidecar")
        return "\n".join(lines)
    phase = (pod.get("status") or {}).get("phase")
    if phase != "Running":
        lines.append(f"   Pod is not running ({phase})")
    if _is_gateway(pod):
        lines.extend(_gateway_pod_lines(pod, configs))
    selecting = [s for s in services if selects(s, pod)]
    if not selecting and not _is_gateway(pod):
        lines.append(SEPARATOR)
        lines.append("Suggestion: add a Service selecting this pod's labels: "
                     "the pod receives no mesh traffic")
    exposure: list[str] = []
    for svc in selecting:
        lines.append(SEPARATOR)
        svc_lines, exp = _service_sections(svc, pod, configs, own, gateways, suffix)
        lines.extend(svc_lines)
        exposure.extend(exp)
    sc = _sidecars(pod, configs, root_namespace)
    if sc:
        lines.append(SEPARATOR)
        lines.extend(sc)
    authn = _peer_authn_lines(pod, configs, root_namespace)
    if authn:
        lines.append(SEPARATOR)
        lines.extend(authn)
    if exposure:
        lines.append("")
        lines.extend(exposure)
    return "\n".join(lines)


def skipped_config_lines(warnings: Sequence[str]) -> str:
    """The config the control plane skipped for the pod's proxy (``/debug/proxy_warnings``), as text to
    append to ``x describe pod``; empty when nothing was skipped."""
    if not warnings:
        return ""
    return "\n".join(["", SEPARATOR, "Warning: config skipped for this proxy (Envoy never received it):",
                      *(f"   {w}" for w in warnings)])


def describe_service_mesh(svc: Obj, pods: Sequence[Obj], configs: Sequence[Obj], own: ProxyConfig | None,
                          gateways: Sequence[ProxyConfig], suffix: str = "cluster.local") -> str:
    """``istioctl x describe svc``: the Service's ports, DestinationRule, VirtualServices (every route with
    its destinations and weights, from ``own``, the proxy of one of its pods) and gateway exposure."""
    selected = [p for p in pods if selects(svc, p)]
    lines, exposure = _service_sections(svc, None, configs, own, gateways, suffix)
    names = ", ".join(str(_meta(p).get("name")) for p in selected) or "<none>"
    lines.insert(1, f"   Pods: {names}")
    if exposure:
        lines.append("")
        lines.extend(exposure)
    return "\n".join(lines)
