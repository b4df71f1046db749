"""``mizzen describe`` text, kubectl-style, from API JSON (pure: no I/O).

* a pod: from its Kubernetes ``v1 Pod`` object (what ``get pods -o yaml`` prints) and its recent events;
* a Service: type, IPs, ports with target ports, and the endpoints the registry has for each port;
* an Istio object (VirtualService, DestinationRule, Gateway, ServiceEntry, Sidecar, ...): kubectl's generic
  rendering of the spec (``smart labels``: ``matchLabels`` -> ``Match Labels``) plus the objects that
  reference it and those it references (:func:`references`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from mizzen.analysis.context import destinations, labels_match
from mizzen.cli.common import format_table, human_age, parse_time
from mizzen.core.hosts import host_matches, resolve_short_name
from mizzen.core.push_context import MESH_GATEWAY, resolve_gateway_ref

__all__ = ["describe_object", "describe_pod", "describe_service", "references", "smart_label"]

Obj = Mapping[str, Any]


def _meta(obj: Obj) -> Mapping[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, Mapping) else {}


def _spec(obj: Obj) -> Mapping[str, Any]:
    s = obj.get("spec")
    return s if isinstance(s, Mapping) else {}


def _when(value: Any) -> str:
    """kubectl's time format: ``Sun, 06 Dec 2026 08:01:00 +0000``."""
    t = parse_time(value)
    return t.strftime("%a, %d %b %Y %H:%M:%S %z") if t else "<unknown>"


def _map_lines(label: str, values: Mapping[str, Any] | None, width: int) -> list[str]:
    """``Labels:  app=x`` then one ``key=value`` per line aligned under the first (``<none>`` if empty)."""
    items = sorted((values or {}).items())
    if not items:
        return [f"{label + ':':<{width}}<none>"]
    out = [f"{label + ':':<{width}}{items[0][0]}={items[0][1]}"]
    out.extend(f"{'':<{width}}{k}={v}" for k, v in items[1:])
    return out


def _field(label: str, value: Any, width: int, indent: str = "") -> str:
    return f"{indent}{label + ':':<{width}}{value}"


# --- pods -----------------------------------------------------------------------------------------------

_EVENT_REASONS = (("exited", "BackOff"), ("killed", "BackOff"), ("not restarted", "Failed"),
                  ("failed", "Failed"), ("not ready", "Unhealthy"), ("ready", "Ready"),
                  ("created", "Scheduled"), ("deleted", "Killing"))


def _event_reason(message: str) -> str:
    return next((r for word, r in _EVENT_REASONS if word in message), "Normal")


def _events(events: Sequence[Mapping[str, Any]], now: datetime | None) -> list[str]:
    if not events:
        return ["Events:            <none>"]
    rows = [[str(e.get("type", "Normal")), _event_reason(str(e.get("message", ""))),
             human_age(e.get("time"), now), "mizzen-runner", str(e.get("message", ""))] for e in events]
    table = format_table(["Type", "Reason", "Age", "From", "Message"],
                         [["----", "------", "----", "----", "-------"], *rows])
    return ["Events:"] + ["  " + line for line in table.splitlines()]


def _state_lines(label: str, state: Mapping[str, Any] | None) -> list[str]:
    """``State: Running / Started: ...`` or ``Waiting / Reason: ...`` or ``Terminated / Exit Code``."""
    if not state:
        return []
    kind, detail = next(iter(state.items()))
    detail = detail if isinstance(detail, Mapping) else {}
    out = [_field(label, kind.capitalize(), 20, "    ")]
    if detail.get("reason"):
        out.append(_field("Reason", detail["reason"], 18, "      "))
    if detail.get("message"):
        out.append(_field("Message", detail["message"], 18, "      "))
    if "exitCode" in detail:
        out.append(_field("Exit Code", detail["exitCode"], 18, "      "))
    if detail.get("startedAt"):
        out.append(_field("Started", _when(detail["startedAt"]), 18, "      "))
    return out


def describe_pod(pod: Obj, events: Sequence[Mapping[str, Any]] = (), now: datetime | None = None) -> str:
    """kubectl describe pod, from a ``v1 Pod`` object and ``{"time", "type", "message"}`` events."""
    meta, spec = _meta(pod), _spec(pod)
    status = pod.get("status") if isinstance(pod.get("status"), Mapping) else {}
    assert isinstance(status, Mapping)
    w = 18
    lines = [
        _field("Name", meta.get("name", ""), w),
        _field("Namespace", meta.get("namespace", ""), w),
        _field("Service Account", spec.get("serviceAccountName", "default"), w),
        _field("Node", f"{spec.get('nodeName', 'local')}/{status.get('hostIP', '127.0.0.1')}", w),
        _field("Start Time", _when(status.get("startTime")), w),
        *_map_lines("Labels", meta.get("labels"), w),
        *_map_lines("Annotations", meta.get("annotations"), w),
        _field("Status", status.get("reason") or status.get("phase", "Unknown"), w),
    ]
    if status.get("message"):
        lines.append(_field("Message", status["message"], w))
    lines.append(_field("IP", status.get("podIP") or "", w))
    lines.append("IPs:")
    lines.extend(f"  IP:  {ip.get('ip')}" for ip in status.get("podIPs") or [] if isinstance(ip, Mapping))
    owners = meta.get("ownerReferences") or []
    if owners:
        lines.append(_field("Controlled By", f"{owners[0].get('kind')}/{owners[0].get('name')}", w))
    lines.append("Containers:")
    by_name = {c.get("name"): c for c in status.get("containerStatuses") or [] if isinstance(c, Mapping)}
    for c in spec.get("containers") or []:
        cs = by_name.get(c.get("name")) or {}
        lines.append(f"  {c.get('name')}:")
        if cs.get("containerID"):
            lines.append(_field("Container ID", cs["containerID"], 20, "    "))
        lines.append(_field("Image", c.get("image") or "<none>", 20, "    "))
        ports = [f"{p.get('containerPort')}/{p.get('protocol', 'TCP')}" + (f" ({p['name']})" if p.get("name")
                 else "") for p in c.get("ports") or []]
        lines.append(_field("Ports" if len(ports) > 1 else "Port", ", ".join(ports) or "<none>", 20, "    "))
        if c.get("command"):
            lines.append("    Command:")
            lines.extend(f"      {a}" for a in c["command"])
        if c.get("args"):
            lines.append("    Args:")
            lines.extend(f"      {a}" for a in c["args"])
        lines.extend(_state_lines("State", cs.get("state")))
        lines.extend(_state_lines("Last State", cs.get("lastState")))
        lines.append(_field("Ready", str(bool(cs.get("ready"))), 20, "    "))
        lines.append(_field("Restart Count", cs.get("restartCount", 0), 20, "    "))
    lines.append("Conditions:")
    conds = [[str(c.get("type")), str(c.get("status"))] for c in status.get("conditions") or []]
    lines.extend("  " + row for row in format_table(["Type", "Status"], conds).splitlines())
    lines.extend(_events(events, now))
    return "\n".join(lines)


# --- services -------------------------------------------------------------------------------------------


def describe_service(svc: Obj, endpoints: Mapping[int, Sequence[str]], cluster_ip: str = "") -> str:
    """kubectl describe service; ``endpoints``: service port -> ``ip:port`` list (from the registry)."""
    meta, spec = _meta(svc), _spec(svc)
    w = 19
    selector = spec.get("selector") if isinstance(spec.get("selector"), Mapping) else {}
    lines = [
        _field("Name", meta.get("name", ""), w),
        _field("Namespace", meta.get("namespace", ""), w),
        *_map_lines("Labels", meta.get("labels"), w),
        *_map_lines("Annotations", meta.get("annotations"), w),
        _field("Selector", ",".join(f"{k}={v}" for k, v in sorted((selector or {}).items())) or "<none>", w),
        _field("Type", spec.get("type") or "ClusterIP", w),
        _field("IP", spec.get("clusterIP") or cluster_ip or "<none>", w),
    ]
    if spec.get("externalName"):
        lines.append(_field("External Name", spec["externalName"], w))
    for p in spec.get("ports") or []:
        if not isinstance(p, Mapping):
            continue
        number = p.get("port")
        proto = p.get("protocol") or "TCP"
        lines.append(_field("Port", f"{p.get('name') or '<unset>'}  {number}/{proto}", w))
        target = p.get("targetPort", number)
        lines.append(_field("TargetPort", f"{target}/{proto}" if isinstance(target, int) else str(target), w))
        eps = list(endpoints.get(int(number), ())) if isinstance(number, int) else []
        shown = ",".join(eps[:3]) + (f" + {len(eps) - 3} more..." if len(eps) > 3 else "")
        lines.append(_field("Endpoints", shown or "<none>", w))
    lines.append(_field("Session Affinity", spec.get("sessionAffinity") or "None", w))
    lines.append(_field("Events", "<none>", w))
    return "\n".join(lines)


# --- Istio objects --------------------------------------------------------------------------------------


def smart_label(key: str) -> str:
    """kubectl's label for a field name: ``matchLabels`` -> ``Match Labels``, ``tls`` -> ``Tls``."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key).split(" ")
    return " ".join(w[:1].upper() + w[1:] for w in words)


def _render(value: Any, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(v, Mapping | list) and v:
                out.append(f"{pad}{smart_label(str(k))}:")
                _render(v, indent + 2, out)
            else:
                out.append(f"{pad}{smart_label(str(k))}:  {_scalar(v)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, Mapping | list):
                _render(item, indent, out)
            else:
                out.append(f"{pad}{_scalar(item)}")
    else:
        out.append(f"{pad}{_scalar(value)}")


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None or v == {} or v == []:
        return ""
    return str(v)


def _fqdn(host: str, namespace: str, suffix: str) -> str:
    return resolve_short_name(host, namespace, suffix)


def _ref(obj: Obj) -> str:
    m = _meta(obj)
    return f"{obj.get('kind')} {m.get('namespace')}/{m.get('name')}"


def references(obj: Obj, others: Sequence[Obj], suffix: str = "cluster.local") -> tuple[list[str], list[str]]:
    """(objects that reference ``obj``, objects ``obj`` references), as ``Kind ns/name`` lines.

    VirtualService -> its Gateways and the DestinationRules/Services of its destinations; Gateway <- the
    VirtualServices bound to it; DestinationRule <- the VirtualServices routing to its host, -> the Service;
    Service <- VirtualServices and DestinationRules for its host; ServiceEntry likewise by its hosts."""
    kind, meta, spec = obj.get("kind"), _meta(obj), _spec(obj)
    ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    by_kind: dict[str, list[Obj]] = {}
    for o in others:
        by_kind.setdefault(str(o.get("kind")), []).append(o)

    def vs_hosts_routed(vs: Obj) -> set[str]:
        vns = str(_meta(vs).get("namespace") or "")
        return {_fqdn(str(d.get("host", "")), vns, suffix) for _, d in destinations(_spec(vs))}

    def dr_host(dr: Obj) -> str:
        return _fqdn(str(_spec(dr).get("host", "")), str(_meta(dr).get("namespace") or ""), suffix)

    def service_hosts(o: Obj) -> set[str]:
        ons = str(_meta(o).get("namespace") or "")
        if o.get("kind") == "Service":
            return {f"{_meta(o).get('name')}.{ons}.svc.{suffix}"}
        return {_fqdn(str(h), ons, suffix) for h in _spec(o).get("hosts") or []}

    def covers(pattern: str, hosts: set[str]) -> bool:
        return any(host_matches(pattern, h) or host_matches(h, pattern) for h in hosts)

    used_by: list[str] = []
    uses: list[str] = []
    if kind == "VirtualService":
        for g in spec.get("gateways") or []:
            ref = resolve_gateway_ref(str(g), ns)
            if ref != MESH_GATEWAY:
                found = [gw for gw in by_kind.get("Gateway", []) if f"{_meta(gw).get('namespace')}/"
                         f"{_meta(gw).get('name')}" == ref]
                uses.append(_ref(found[0]) if found else f"Gateway {ref} (not found)")
        routed = vs_hosts_routed(obj)
        for svc in by_kind.get("Service", []) + by_kind.get("ServiceEntry", []):
            if any(covers(h, routed) for h in service_hosts(svc)):
                uses.append(_ref(svc))
        uses.extend(_ref(dr) for dr in by_kind.get("DestinationRule", []) if covers(dr_host(dr), routed))
    elif kind == "Gateway":
        me = f"{ns}/{name}"
        for vs in by_kind.get("VirtualService", []):
            vns = str(_meta(vs).get("namespace") or "")
            if any(resolve_gateway_ref(str(g), vns) == me for g in _spec(vs).get("gateways") or []):
                used_by.append(_ref(vs))
    elif kind == "DestinationRule":
        host = dr_host(obj)
        used_by.extend(_ref(vs) for vs in by_kind.get("VirtualService", [])
                       if covers(host, vs_hosts_routed(vs)))
        for svc in by_kind.get("Service", []) + by_kind.get("ServiceEntry", []):
            if covers(host, service_hosts(svc)):
                uses.append(_ref(svc))
    elif kind in ("Service", "ServiceEntry"):
        hosts = service_hosts(obj)
        for vs in by_kind.get("VirtualService", []):
            if any(covers(h, hosts) for h in vs_hosts_routed(vs)):
                used_by.append(_ref(vs))
        used_by.extend(_ref(dr) for dr in by_kind.get("DestinationRule", []) if covers(dr_host(dr), hosts))
    return sorted(set(used_by)), sorted(set(uses))


def describe_object(obj: Obj, others: Sequence[Obj] = (), pods: Sequence[Obj] = (),
                    suffix: str = "cluster.local") -> str:
    """kubectl describe for a config object: metadata, the spec in kubectl's generic layout, references,
    and (for objects with a workload selector) the pods it selects."""
    meta, spec = _meta(obj), _spec(obj)
    w = 13
    lines = [
        _field("Name", meta.get("name", ""), w),
        _field("Namespace", meta.get("namespace", ""), w),
        *_map_lines("Labels", meta.get("labels"), w),
        *_map_lines("Annotations", meta.get("annotations"), w),
        _field("API Version", obj.get("apiVersion", ""), w),
        _field("Kind", obj.get("kind", ""), w),
        "Metadata:",
        _field("Creation Timestamp", meta.get("creationTimestamp") or "<unknown>", 22, "  "),
        "Spec:",
    ]
    body: list[str] = []
    _render(spec, 2, body)
    lines.extend(body or ["  <empty>"])
    used_by, uses = references(obj, others, suffix)
    lines.append("Referenced By:" + ("" if used_by else "  <none>"))
    lines.extend(f"  {r}" for r in used_by)
    lines.append("References:" + ("" if uses else "     <none>"))
    lines.extend(f"  {r}" for r in uses)
    ws = spec.get("workloadSelector")
    selector = spec.get("selector") if obj.get("kind") == "Gateway" else (
        ws.get("labels") if isinstance(ws, Mapping) else None)
    if isinstance(selector, Mapping):
        ns = meta.get("namespace")
        picked = [p for p in pods if labels_match(selector, _meta(p).get("labels") or {})
                  and (obj.get("kind") == "Gateway" or _meta(p).get("namespace") == ns)]
        lines.append("Selected Pods:" + ("" if picked else "  <none>"))
        lines.extend(f"  {_meta(p).get('namespace')}/{_meta(p).get('name')}" for p in picked)
    lines.append(_field("Events", "<none>", w))
    return "\n".join(lines)



_SIZE = re.compile(r"^\[redacted: (\d+) bytes\]$")


def describe_secret(secret: Obj) -> str:
    """kubectl describe secret: metadata, type, and each key with its size (never a value)."""
    meta = _meta(secret)
    w = 13
    lines = [
        _field("Name", meta.get("name", ""), w),
        _field("Namespace", meta.get("namespace", ""), w),
        *_map_lines("Labels", meta.get("labels"), w),
        *_map_lines("Annotations", meta.get("annotations"), w),
        "",
        _field("Type", secret.get("type") or "Opaque", 7),
        "",
        "Data",
        "====",
    ]
    data: dict[str, Any] = {**(secret.get("data") or {}), **(secret.get("stringData") or {})}
    for key in sorted(data):
        m = _SIZE.match(str(data[key]))
        lines.append(f"{key}:  {m.group(1) if m else '?'} bytes")
    return "\n".join(lines)
