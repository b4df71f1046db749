"""``mizzen analyze``: ``istioctl analyze`` for Mizzen (the messages of :mod:`mizzen.analysis`).

Against the control plane (``GET /debug/analyze``; with ``-f`` the files are applied on top as a what-if, like
``istioctl analyze -f`` against a cluster), or offline over the files alone (``--offline``, or ``-f`` with no
control plane reachable): services from their Services/ServiceEntries, workloads from their Deployments.
Files are read like istioctl reads them: a kind Mizzen does not model is skipped with a note, an object that
fails validation is reported as IST0106 and the rest is still analyzed. Output is istioctl's:
``Error [IST0101] (VirtualService ns/name file:line) text``. Exit codes are istioctl's: 79 when a message is
at or above ``--failure-threshold`` (Error), else 65 when some input could not be parsed, else 0; 1 for
other failures (no control plane and no files, unreadable files).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from mizzen.cli.common import api_call, client, echo_err, fail, read_inputs
from mizzen.cli.resources import OptFiles, Recursive
from mizzen.client import ControlPlaneClient, Document, Unreachable

__all__ = ["DATA_ERROR_EXIT", "ERRORS_FOUND_EXIT", "analyze", "analyze_offline", "format_messages"]

ERRORS_FOUND_EXIT = 79   # istioctl analyze's exit code when it finds issues (ExitAnalyzerFoundIssues)
DATA_ERROR_EXIT = 65     # istioctl's ExitDataError: some input could not be parsed
LEVELS = ("Info", "Warning", "Error")
_RANK = {"info": 0, "warning": 1, "error": 2}


@dataclasses.dataclass
class _Result:
    messages: list[dict[str, Any]]
    skipped: list[str]
    parse_errors: list[str]


def analyze_offline(docs: Sequence[Document], namespace: str | None) -> _Result:
    """The files alone, read like istioctl (unmodelled kinds skipped, invalid objects IST0106), then every
    analyzer over the valid objects in file order (the store would create them in that order)."""
    from mizzen.analysis import analyze as run
    from mizzen.analysis import read_documents, workloads_from_deployments
    from mizzen.config.model import ConfigSnapshot
    from mizzen.registry.registry import build_snapshot

    inputs = read_documents([(d.file, d.text) for d in docs], namespace)
    configs = [dataclasses.replace(c, created=float(i)) for i, c in enumerate(inputs.configs)]
    snapshot = ConfigSnapshot.of(configs)
    registry = build_snapshot(snapshot, workloads_from_deployments(snapshot))
    messages = [m.to_dict() for m in [*inputs.messages, *run(snapshot, registry)]]
    return _Result(messages, inputs.skipped, [str(e) for e in inputs.parse_errors])


def _from_server(c: ControlPlaneClient, docs: Sequence[Document], namespace: str | None) -> _Result:
    if docs:
        body = c._request("POST", "/debug/analyze", {"documents": [d.to_json() for d in docs],
                                                      "namespace": namespace})
    else:
        body = c._request("GET", "/debug/analyze")
    body = body if isinstance(body, dict) else {}
    items = body.get("messages") or []
    return _Result([m for m in items if isinstance(m, dict)],
                   [str(s) for s in body.get("skipped") or []],
                   [str(e.get("text") or e.get("message")) if isinstance(e, dict) else str(e)
                    for e in body.get("parse_errors") or []])


def format_messages(messages: Sequence[dict[str, Any]]) -> list[str]:
    """istioctl's lines: ``Error [IST0101] (VirtualService ns/name file:line) Referenced host ...``."""
    from mizzen.analysis import code_of, render

    lines = []
    for m in messages:
        code, text = code_of(str(m.get("message", "")))
        level = str(m.get("severity") or "error").capitalize()
        lines.append(render(level, str(m.get("code") or code), str(m.get("kind", "")),
                            str(m.get("namespace", "")), str(m.get("name", "")), str(m.get("file", "")),
                            int(m.get("line") or 0), text))
    return lines


def _suppressions(values: Sequence[str]) -> list[tuple[str, str]]:
    """istioctl's ``--suppress CODE=RESOURCE``; an unknown code is a warning (it suppresses nothing)."""
    from mizzen.analysis import CODES

    out = []
    for v in values:
        code, sep, resource = v.partition("=")
        if not sep or not code or not resource or "=" in resource:
            fail(f"{v} is not a valid suppression value: want CODE=RESOURCE, e.g. "
                 "'IST0102=Namespace default'")
        if code not in CODES:
            echo_err(f"Warning: Supplied message code '{code}' is an unknown message code and will not have "
                     "any effect.")
        out.append((code, resource))
    return out


def _is_suppressed(m: dict[str, Any], suppressions: Sequence[tuple[str, str]]) -> bool:
    """A message on a resource matching ``Kind namespace/name`` (istioctl's friendly name; ``Kind
    name.namespace`` too) with the suppressed code."""
    kind, ns, name = str(m.get("kind", "")), str(m.get("namespace", "")), str(m.get("name", ""))
    names = [f"{kind} {ns}/{name}", f"{kind} {name}.{ns}"] if ns else [f"{kind} {name}"]
    return any(code == m.get("code") and any(fnmatch.fnmatchcase(n, pattern) for n in names)
               for code, pattern in suppressions)


def _level(value: str, option: str) -> int:
    for name in LEVELS:
        if value.lower() == name.lower():
            return _RANK[name.lower()]
    fail(f"{option} must be one of {', '.join(LEVELS)}, not {value!r}")


def analyze(
    ctx: typer.Context,
    filename: OptFiles = None,
    namespace: Annotated[str | None, typer.Option(
        "--namespace", "-n", help="Namespace to analyze (and for objects without one)")] = None,
    all_namespaces: Annotated[bool, typer.Option(
        "--all-namespaces", "-A", help="Analyze all namespaces (the default)")] = False,
    offline: Annotated[bool, typer.Option(
        "--offline", help="Analyze the -f files alone, without the control plane")] = False,
    output_threshold: Annotated[str, typer.Option(
        "--output-threshold", metavar="LEVEL", help="Lowest level shown: Info, Warning or Error")] = "Info",
    failure_threshold: Annotated[str, typer.Option(
        "--failure-threshold", metavar="LEVEL",
        help="Lowest level that makes the exit code 79: Info, Warning or Error")] = "Error",
    suppress: Annotated[list[str] | None, typer.Option(
        "--suppress", "-S", metavar="CODE=RESOURCE",
        help="Leave out a code on matching resources, like istioctl: 'IST0102=Namespace default' or "
             "'IST0173=DestinationRule bookinfo/*' (* matches anything; repeatable)")] = None,
    recursive: Recursive = False,
) -> None:
    """Find configuration problems with Istio's analyzer codes (exit 79 on an error, like istioctl)."""
    if offline and not filename:
        fail("--offline needs files to analyze (-f FILE|DIR)")
    if namespace and all_namespaces:
        fail("use either -n NAMESPACE or -A, not both")
    suppressions = _suppressions(suppress or [])
    shown_from = _level(output_threshold, "--output-threshold")
    fail_from = _level(failure_threshold, "--failure-threshold")
    docs = read_inputs(filename or [], recursive)
    if offline:
        result = analyze_offline(docs, namespace)
    else:
        c = client(ctx)
        with api_call(c, "Analyzing..."):
            try:
                result = _from_server(c, docs, namespace)
            except Unreachable:
                if not docs:
                    raise
                echo_err(f"note: no control plane at {c.server}; analyzing the files alone")
                result = analyze_offline(docs, namespace)
    for note in result.skipped:
        echo_err(f"note: {note}")
    for problem in result.parse_errors:
        echo_err(f"Error(s) adding files: {problem}")
    messages = result.messages
    if namespace and not all_namespaces:
        messages = [m for m in messages if m.get("namespace") == namespace
                    or (m.get("kind") == "Namespace" and m.get("name") == namespace)]
    messages = [m for m in messages if not _is_suppressed(m, suppressions)]
    scope = f"namespace: {namespace}" if namespace else "all namespaces"
    shown = [m for m in messages if _RANK.get(str(m.get("severity")), 2) >= shown_from]
    for line in format_messages(shown):
        typer.echo(line)
    if not shown:
        bad = len(result.parse_errors)
        extra = f" (but {bad} file(s) could not be parsed)" if bad else ""
        typer.echo(f"\u2714 No validation issues found when analyzing {scope}{extra}.")
    if any(_RANK.get(str(m.get("severity")), 2) >= fail_from for m in messages):
        echo_err(f"Error: Analyzers found issues when analyzing {scope}.")
        raise typer.Exit(ERRORS_FOUND_EXIT)
    if result.parse_errors:
        echo_err("Error: Some files couldn't be parsed.")
        raise typer.Exit(DATA_ERROR_EXIT)
