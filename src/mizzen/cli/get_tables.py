"""Columns of ``mizzen get KIND`` per kind, like kubectl with Istio's CRD printer columns.

``render(kind, items, all_namespaces, wide, labels=...)`` returns the table text; every item is a manifest
dict as returned by ``GET /apis/objects`` (``metadata.creationTimestamp`` gives AGE).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from mizzen.cli.common import format_table, human_age

__all__ = ["render"]

Getter = Callable[[Mapping[str, Any]], str]


def _spec(item: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = item.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _json_list(value: Any) -> str:
    """kubectl prints array printer columns as compact JSON: ["demo-gateway"]."""
    if not value:
        return ""
    return json.dumps(list(value), separators=(",", ":"))


def _ports(item: Mapping[str, Any]) -> str:
    out = []
    for p in _spec(item).get("ports") or []:
        port = f"{p.get('port', '')}"
        if p.get("nodePort"):
            port += f":{p['nodePort']}"
        out.append(f"{port}/{p.get('protocol') or 'TCP'}")
    return ",".join(out) or "<none>"


def _selector(item: Mapping[str, Any]) -> str:
    sel = _spec(item).get("selector") or {}
    if isinstance(sel, Mapping) and "matchLabels" in sel:
        sel = sel.get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sel.items()) if isinstance(sel, Mapping) and sel else "<none>"


def _containers(item: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    tmpl = _spec(item).get("template") or {}
    return list(((tmpl.get("spec") or {}).get("containers")) or [])


# kind -> (normal columns, extra wide columns); AGE is added after the normal columns
COLUMNS: Mapping[str, tuple[Sequence[tuple[str, Getter]], Sequence[tuple[str, Getter]]]] = {
    "VirtualService": (
        [("GATEWAYS", lambda i: _json_list(_spec(i).get("gateways"))),
         ("HOSTS", lambda i: _json_list(_spec(i).get("hosts")))], []),
    "DestinationRule": ([("HOST", lambda i: str(_spec(i).get("host", "")))], []),
    "Gateway": ([], []),
    "ServiceEntry": (
        [("HOSTS", lambda i: _json_list(_spec(i).get("hosts"))),
         ("LOCATION", lambda i: str(_spec(i).get("location", ""))),
         ("RESOLUTION", lambda i: str(_spec(i).get("resolution", "")))], []),
    "WorkloadEntry": ([("ADDRESS", lambda i: str(_spec(i).get("address", "")))], []),
    "Service": (
        [("TYPE", lambda i: str(_spec(i).get("type") or "ClusterIP")),
         ("CLUSTER-IP", lambda i: str(_spec(i).get("clusterIP") or "<none>")),
         ("EXTERNAL-IP", lambda i: ",".join(_spec(i).get("externalIPs") or []) or "<none>"),
         ("PORT(S)", _ports)],
        [("SELECTOR", _selector)]),
    "Deployment": (
        [("REPLICAS", lambda i: str(_spec(i).get("replicas", 1)))],
        [("CONTAINERS", lambda i: ",".join(str(c.get("name", "")) for c in _containers(i))),
         ("IMAGES", lambda i: ",".join(str(c.get("image", "")) for c in _containers(i))),
         ("SELECTOR", _selector)]),
    "Secret": ([("TYPE", lambda i: str(i.get("type") or "Opaque")),
                ("DATA", lambda i: str(len({**(i.get("data") or {}), **(i.get("stringData") or {})})))], []),
    "Namespace": ([("STATUS", lambda i: str((i.get("status") or {}).get("phase") or "Active"))], []),
    "AuthorizationPolicy": ([("ACTION", lambda i: str(_spec(i).get("action", "")))], []),
    # the CRD's additionalPrinterColumns (kubectl get peerauthentication: NAME MODE AGE)
    "PeerAuthentication": ([("MODE", lambda i: str((_spec(i).get("mtls") or {}).get("mode") or ""))], []),
}


def _age(now: datetime | None) -> Getter:
    return lambda i: human_age((i.get("metadata") or {}).get("creationTimestamp"), now)


def _labels(item: Mapping[str, Any]) -> str:
    labels = (item.get("metadata") or {}).get("labels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"


def render(
    kind: str, items: Sequence[Mapping[str, Any]], all_namespaces: bool = False, wide: bool = False,
    now: datetime | None = None, labels: bool = False,
) -> str:
    normal, extra = COLUMNS.get(kind, ([], []))
    cols: list[tuple[str, Getter]] = []
    if all_namespaces:
        cols.append(("NAMESPACE", lambda i: str((i.get("metadata") or {}).get("namespace", ""))))
    cols.append(("NAME", lambda i: str((i.get("metadata") or {}).get("name", ""))))
    cols.extend(normal)
    cols.append(("AGE", _age(now)))
    if wide:
        cols.extend(extra)
    if labels:
        cols.append(("LABELS", _labels))
    rows = [[get(item) for _, get in cols] for item in items]
    return format_table([h for h, _ in cols], rows)
