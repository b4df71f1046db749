"""``mizzen analyze``: ``istioctl analyze`` for Mizzen (the messages of :mod:`mizzen.analysis`).

Against the control plane (``GET /debug/analyze``; with ``-f`` the files are applied on top as a what-if, like
``istioctl analyze -f`` against a cluster), or offline over the files alone (``--offline``, or ``-f`` with no
control plane reachable): services from their Services/ServiceEntries, workloads from their Deployments.
Output is istioctl's: ``Error [IST0101] (VirtualService ns/name file:line) text``. Exit codes like istioctl:
0 when clean or only warnings, 79 when any message is an error, 1 for unreadable/invalid input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from mizzen.cli.common import api_call, client, echo_err, fail, read_inputs
from mizzen.cli.resources import OptFiles, Recursive, load_locally
from mizzen.client import ControlPlaneClient, Document, Unreachable

__all__ = ["ERRORS_FOUND_EXIT", "analyze", "analyze_offline", "format_messages"]

ERRORS_FOUND_EXIT = 79   # istioctl analyze's exit code when it finds errors


def analyze_offline(docs: Sequence[Document], namespace: str | None) -> list[dict[str, Any]]:
    """The files alone: loaded and validated like ``mizzen validate`` (invalid input exits 1), then every
    analyzer over them, objects ordered as in the files (the store would create them in that order)."""
    from mizzen.analysis import analyze as run
    from mizzen.analysis import workloads_from_deployments
    from mizzen.config.model import ConfigSnapshot
    from mizzen.registry.registry import build_snapshot

    result = load_locally(docs, namespace)
    if not result.ok:
        for e in result.errors:
            echo_err(str(e))
        raise typer.Exit(1)
    configs = [dataclasses.replace(c, created=float(i)) for i, c in enumerate(result.configs)]
    snapshot = ConfigSnapshot.of(configs)
    registry = build_snapshot(snapshot, workloads_from_deployments(snapshot))
    return [m.to_dict() for m in run(snapshot, registry)]


def _from_server(c: ControlPlaneClient, docs: Sequence[Document],
                 namespace: str | None) -> list[dict[str, Any]]:
    if docs:
        body = c._request("POST", "/debug/analyze", {"documents": [d.to_json() for d in docs],
                                                      "namespace": namespace})
    else:
        body = c._request("GET", "/debug/analyze")
    items = body.get("messages") if isinstance(body, dict) else None
    return [m for m in items or [] if isinstance(m, dict)]


def format_messages(messages: Sequence[dict[str, Any]]) -> list[str]:
    """istioctl's lines: ``Error [IST0101] (VirtualService ns/name file:line) Referenced host ...``."""
    from mizzen.analysis import code_of, render

    lines = []
    for m in messages:
        code, text = code_of(str(m.get("message", "")))
        level = "Error" if m.get("severity") == "error" else "Warning"
        lines.append(render(level, str(m.get("code") or code), str(m.get("kind", "")),
                            str(m.get("namespace", "")), str(m.get("name", "")), str(m.get("file", "")),
                            int(m.get("line") or 0), text))
    return lines


def analyze(
    ctx: typer.Context,
    filename: OptFiles = None,
    namespace: Annotated[str | None, typer.Option(
        "--namespace", "-n", help="Namespace to analyze (and for objects without one)")] = None,
    all_namespaces: Annotated[bool, typer.Option(
        "--all-namespaces", "-A", help="Analyze all namespaces (the default)")] = False,
    offline: Annotated[bool, typer.Option(
        "--offline", help="Analyze the -f files alone, without the control plane")] = False,
    recursive: Recursive = False,
) -> None:
    """Find cross-object problems (Istio's analyzer codes); exit 79 when any is an error."""
    if offline and not filename:
        fail("--offline needs files to analyze (-f FILE|DIR)")
    if namespace and all_namespaces:
        fail("use either -n NAMESPACE or -A, not both")
    docs = read_inputs(filename or [], recursive)
    if offline:
        messages = analyze_offline(docs, namespace)
    else:
        c = client(ctx)
        with api_call(c, "Analyzing..."):
            try:
                messages = _from_server(c, docs, namespace)
            except Unreachable:
                if not docs:
                    raise
                echo_err(f"note: no control plane at {c.server}; analyzing the files alone")
                messages = analyze_offline(docs, namespace)
    if namespace and not all_namespaces:
        messages = [m for m in messages if m.get("namespace") == namespace]
    scope = f"namespace: {namespace}" if namespace else "all namespaces"
    if not messages:
        typer.echo(f"\u2714 No validation issues found when analyzing {scope}.")
        return
    for line in format_messages(messages):
        typer.echo(line)
    if any(m.get("severity") == "error" for m in messages):
        echo_err(f"Error: Analyzers found issues when analyzing {scope}.")
        raise typer.Exit(ERRORS_FOUND_EXIT)
