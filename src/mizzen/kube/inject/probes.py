"""Istio's probe rewrite (``sidecar.istio.io/rewriteAppHTTPProbers``): the kubelet cannot reach an app's
HTTP/TCP probe through the sidecar's inbound capture (and not at all under STRICT mTLS), so each app
container's readiness/liveness/startup probe is sent to the agent instead, at
``:<statusPort>/app-health/<container>/readyz|livez|startupz``, and the agent runs the original probe
against the app. The originals travel to the agent in the ``ISTIO_KUBE_APP_PROBERS`` env var (JSON, keys
sorted as Go marshals a map).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["APP_PROBERS_ENV", "REWRITE_ANNOTATION", "rewrite_probes"]

APP_PROBERS_ENV = "ISTIO_KUBE_APP_PROBERS"
REWRITE_ANNOTATION = "sidecar.istio.io/rewriteAppHTTPProbers"
_KINDS = (("readinessProbe", "readyz"), ("livenessProbe", "livez"), ("startupProbe", "startupz"))


def _port(value: Any, container: Mapping[str, Any]) -> Any:
    """A named port resolved to the container's number (the agent has no pod spec); else as is."""
    if isinstance(value, str) and not value.isdigit():
        for p in container.get("ports") or []:
            if p.get("name") == value:
                return int(p["containerPort"])
    return int(value) if isinstance(value, str) else value


def rewrite_probes(containers: list[dict[str, Any]], status_port: int) -> str:
    """Rewrite the probes of ``containers`` (the app containers, in place) to the agent; returns the
    ``ISTIO_KUBE_APP_PROBERS`` JSON ("" when no probe was rewritten). gRPC probes are left alone."""
    probers: dict[str, dict[str, Any]] = {}
    for c in containers:
        for field, suffix in _KINDS:
            probe = c.get(field)
            if not isinstance(probe, dict):
                continue
            path = f"/app-health/{c.get('name')}/{suffix}"
            prober: dict[str, Any] = {}
            if isinstance(probe.get("httpGet"), dict):
                h = probe["httpGet"]
                if _port(h.get("port"), c) == status_port:
                    continue                  # already the agent's
                action: dict[str, Any] = {"path": h.get("path", ""), "port": _port(h.get("port"), c)}
                for k in ("host", "scheme", "httpHeaders"):
                    if h.get(k):
                        action[k] = copy.deepcopy(h[k])
                prober["httpGet"] = action
            elif isinstance(probe.get("tcpSocket"), dict):
                t = probe["tcpSocket"]
                prober["tcpSocket"] = {"port": _port(t.get("port"), c),
                                       **({"host": t["host"]} if t.get("host") else {})}
            else:
                continue
            if probe.get("timeoutSeconds"):
                prober["timeoutSeconds"] = int(probe["timeoutSeconds"])
            probers[path] = prober
            new = {k: v for k, v in probe.items() if k not in ("httpGet", "tcpSocket")}
            new["httpGet"] = {"path": path, "port": status_port, "scheme": "HTTP"}
            c[field] = new
    if not probers:
        return ""
    return json.dumps(dict(sorted(probers.items())), separators=(",", ":"))
