"""``mizzen get pods`` and ``mizzen logs``: the local mesh's pods, kubectl-shaped, from ``GET /apis/pods``
and ``GET /apis/pods/{ns}/{name}/logs`` (served while ``mizzen demo`` runs; a plain control plane answers
404 with a clear message, printed as one ``error:`` line).
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer
import yaml

from mizzen.cli.common import api_call, client, echo_err, fail, format_table, human_duration
from mizzen.cli.contexts import context_namespace
from mizzen.client import ControlPlaneClient

__all__ = ["POD_KINDS", "get_pods", "list_pods", "logs", "pod_object", "pod_rows", "resolve_pod"]

POD_KINDS = ("pods", "pod", "po")
PROXY_CONTAINER = "istio-proxy"
FOLLOW_PERIOD_S = 0.5


def list_pods(c: ControlPlaneClient, namespace: str | None) -> list[dict[str, Any]]:
    """``GET /apis/pods`` items (all namespaces when ``namespace`` is None)."""
    return _pods(c, namespace)


def _pods(c: ControlPlaneClient, namespace: str | None) -> list[dict[str, Any]]:
    query = "?" + urllib.parse.urlencode({"namespace": namespace}) if namespace else ""
    body = c._request("GET", "/apis/pods" + query)
    return [p for p in (body or {}).get("items") or [] if isinstance(p, dict)]


def with_mtls(c: ControlPlaneClient, pods: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods with ``mtls``: what their proxy's inbound accepts, as the control plane sent it
    (``/debug/syncz``; STRICT, PERMISSIVE, DISABLE, or - when the pod has no connected proxy)."""
    by_ip: dict[str, str] = {}
    for e in c.syncz():
        parts = str(e.get("proxy", "")).split("~")
        if len(parts) == 4:
            by_ip[parts[1]] = str(e.get("mtls") or "-")
    return [{**p, "mtls": by_ip.get(str(p.get("pod_ip") or ""), "-")} for p in pods]


def _logs(c: ControlPlaneClient, namespace: str, name: str, container: str | None,
          tail: int | None, offsets: Sequence[int] | None = None) -> tuple[list[str], list[int]]:
    """(lines, offsets to pass back for what is written next)."""
    query: dict[str, str] = {}
    if container:
        query["container"] = container
    if tail is not None:
        query["tail"] = str(tail)
    if offsets is not None:
        query["offsets"] = ",".join(str(o) for o in offsets)
    path = f"/apis/pods/{urllib.parse.quote(namespace)}/{urllib.parse.quote(name)}/logs"
    body = c._request("GET", path + ("?" + urllib.parse.urlencode(query) if query else "")) or {}
    return [str(line) for line in body.get("lines") or []], [int(o) for o in body.get("offsets") or []]


def pod_rows(pods: Sequence[Mapping[str, Any]], all_namespaces: bool, wide: bool) -> str:
    """kubectl's pod table: NAME READY STATUS RESTARTS AGE (NAMESPACE first with -A; IP, APP-HOST and MTLS
    wide, MTLS from :func:`with_mtls`)."""
    headers = (["NAMESPACE"] if all_namespaces else []) + ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    if wide:
        headers += ["IP", "APP-HOST", "MTLS"]
    rows = []
    for p in pods:
        row = ([str(p.get("namespace", ""))] if all_namespaces else []) + [
            str(p.get("name", "")), str(p.get("ready", "")), str(p.get("status") or p.get("phase", "")),
            str(p.get("restarts", 0)), human_duration(int(float(p.get("age_s") or 0))),
        ]
        if wide:
            row += [str(p.get("pod_ip") or "<none>"), str(p.get("app_host") or "<none>"),
                    str(p.get("mtls") or "-")]
        rows.append(row)
    return format_table(headers, rows)


def get_pods(
    ctx: typer.Context, names: Sequence[str], namespace: str | None, all_namespaces: bool, output: str | None,
) -> None:
    """``mizzen get pods``: list the demo's pods (default namespace ``default``, like kubectl)."""
    if output not in (None, "wide", "json", "yaml", "name"):
        fail(f'unable to match a printer suitable for the output format "{output}", '
             "allowed formats are: json,name,wide,yaml")
    ns = None if all_namespaces else (namespace or "default")
    c = client(ctx)
    with api_call(c, "Listing pods..."):
        pods = _pods(c, ns)
    missing = [n for n in names if not any(p.get("name") == n for p in pods)]
    if names:
        pods = [p for p in pods if p.get("name") in names]
    if output in ("json", "yaml"):
        objects = [pod_object(p) for p in pods]
        doc: Any = (objects[0] if len(names) == 1 and objects
                    else {"apiVersion": "v1", "kind": "List", "items": objects})
        typer.echo(json.dumps(doc, indent=2) if output == "json"
                   else yaml.safe_dump(doc, sort_keys=False).rstrip())
    elif output == "name":
        for p in pods:
            typer.echo(f"pod/{p.get('name', '')}")
    elif pods:
        if output == "wide":
            with api_call(c, "Listing pods..."):
                pods = with_mtls(c, pods)
        typer.echo(pod_rows(pods, all_namespaces, output == "wide"))
    elif not names:
        echo_err("No resources found" if ns is None else f"No resources found in {ns} namespace.")
    for n in missing:
        echo_err(f'Error from server (NotFound): pods "{n}" not found')
    if missing:
        raise typer.Exit(1)


def pod_object(p: Mapping[str, Any]) -> dict[str, Any]:
    """The Kubernetes ``v1 Pod`` the API built for a pod (``object``)."""
    obj = p.get("object")
    if not isinstance(obj, dict):
        fail("the control plane's pod API is older than this CLI (no Pod objects); restart mizzen demo")
    return obj


def resolve_pod(
    pods: Sequence[Mapping[str, Any]], ident: str, prefer: str | None = None,
) -> Mapping[str, Any]:
    """The pod named ``ident``, or the only pod whose name starts with it (else one clear error); among
    several, the only one in namespace ``prefer`` (the current context's) wins."""
    exact = [p for p in pods if p.get("name") == ident]
    found = exact or [p for p in pods if str(p.get("name", "")).startswith(ident)]
    if len(found) > 1 and prefer:
        found = [p for p in found if p.get("namespace") == prefer] or found
    if len(found) == 1:
        return found[0]
    if not found:
        fail(f'pods "{ident}" not found')
    fail(f'pod name "{ident}" is ambiguous: ' + ", ".join(f"{p.get('namespace')}/{p.get('name')}"
                                                           for p in found[:6]))


def logs(
    ctx: typer.Context,
    pod: Annotated[str, typer.Argument(metavar="POD", help="Pod name or a unique prefix (e.g. reviews-v2)")],
    container: Annotated[str | None, typer.Option("--container", "-c",
                                                  help="app container (default) or istio-proxy")] = None,
    namespace: Annotated[str | None, typer.Option(
        "--namespace", "-n", show_default="all, the current context's first",
        help="Namespace of the pod")] = None,
    tail: Annotated[int | None, typer.Option("--tail", help="Lines from the end (default: all)")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C)")] = False,
) -> None:
    """Print a pod's container log (the app's output, or Envoy's with -c istio-proxy), like kubectl logs."""
    c = client(ctx)
    with api_call(c):
        found = resolve_pod(_pods(c, namespace), pod, None if namespace else context_namespace())
        ns, name = str(found.get("namespace", "")), str(found.get("name", ""))
        lines, offsets = _logs(c, ns, name, container, tail)
    for line in lines:
        typer.echo(line)
    try:
        while follow:
            time.sleep(FOLLOW_PERIOD_S)
            with api_call(c):
                lines, offsets = _logs(c, ns, name, container, None, offsets)
            for line in lines:
                typer.echo(line)
    except KeyboardInterrupt:
        pass
