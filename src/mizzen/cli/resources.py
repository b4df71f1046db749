"""``mizzen apply``, ``delete``, ``get`` and ``validate``: configuration objects, kubectl-style.

apply/validate load and validate locally first with :mod:`mizzen.config.loader` (precise
``file:line: Kind/name: field.path: reason`` lines, exit 1, nothing sent); apply then posts the files' text to
the control plane and prints one ``kind.group/name action`` line per object.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from mizzen.cli import get_tables, pods
from mizzen.cli.common import STDIN, api_call, client, echo_err, fail, read_inputs, resource_ref
from mizzen.client import Document
from mizzen.config import kinds
from mizzen.config.model import DEFAULT_NAMESPACE

if TYPE_CHECKING:
    from mizzen.config.loader import LoadResult

__all__ = ["apply", "delete", "get", "load_locally", "validate"]

FILES_HELP = "File or directory (.yaml/.yml/.json), or - for stdin; repeatable"
Files = Annotated[list[str], typer.Option("--filename", "-f", help=FILES_HELP)]
OptFiles = Annotated[list[str] | None, typer.Option("--filename", "-f", help=FILES_HELP)]
Namespace = Annotated[str | None, typer.Option("--namespace", "-n", help="Namespace for objects without one")]
Recursive = Annotated[bool, typer.Option("--recursive", "-R", help="Recurse into directories")]


def load_locally(docs: Sequence[Document], namespace: str | None) -> LoadResult:
    """Run the shared loader over the inputs (files as one unit, so cross-file duplicates are caught)."""
    try:
        from mizzen.config.loader import LoadResult, load_paths, load_text
    except ImportError as e:
        fail(f"the configuration loader (mizzen.config.loader) is not available: {e}")
    files = [d.file for d in docs if d.file != STDIN]
    result = load_paths(files, namespace) if files else LoadResult()
    for d in docs:
        if d.file == STDIN:
            result.extend(load_text(d.text, d.file, namespace))
    return result


def _print_issues(result: LoadResult) -> bool:
    """Print warnings then errors (stderr), one per line; True when the inputs are valid."""
    for w in result.warnings:
        echo_err(str(w))
    for e in result.errors:
        echo_err(str(e))
    return result.ok


def _action_line(r: dict[str, Any], dry_run: bool) -> str:
    line = f"{resource_ref(str(r.get('kind', '')), str(r.get('name', '')))} {r.get('action', '')}"
    return line + (" (dry run)" if dry_run else "")


def apply(
    ctx: typer.Context,
    filename: Files,
    namespace: Namespace = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate on the server only")] = False,
    recursive: Recursive = False,
) -> None:
    """Validate locally, then create or update the objects in the files."""
    docs = read_inputs(filename, recursive)
    local = load_locally(docs, namespace)
    if not _print_issues(local):
        raise typer.Exit(1)
    shown = {str(w) for w in local.warnings}
    c = client(ctx)
    with api_call(c, "Applying configuration..."):
        result = c.apply(docs, namespace, dry_run)
    for w in result.warnings:
        if w not in shown:
            echo_err(w if "warning" in w.lower() else f"Warning: {w}")
    for r in result.results:
        typer.echo(_action_line(r, dry_run))


def delete(
    ctx: typer.Context,
    args: Annotated[list[str] | None, typer.Argument(help="KIND NAME [NAME...] (instead of -f)")] = None,
    filename: OptFiles = None,
    namespace: Namespace = None,
    recursive: Recursive = False,
) -> None:
    """Delete the objects in files (-f), or by KIND NAME [NAME...]."""
    args = list(args or [])
    if filename and args:
        fail("use either -f FILE or KIND NAME, not both")
    c = client(ctx)
    missing = 0
    if filename:
        documents = read_inputs(filename, recursive)
    elif len(args) >= 2:
        # the API deletes by documents: send the stored manifests themselves
        kind = _resolve_kind(args[0])
        ns = (namespace or DEFAULT_NAMESPACE) if kind.namespaced else None
        manifests = []
        with api_call(c):
            for n in args[1:]:
                got = c.objects(kind.kind, ns, n)
                if not got:
                    missing += 1
                    echo_err(_not_found(kind, n))
                manifests.extend(got)
        if not manifests:
            raise typer.Exit(1)
        documents = [Document("<command line>", yaml.safe_dump_all(manifests, sort_keys=False))]
    else:
        fail("specify -f FILE or KIND NAME")
    with api_call(c, "Deleting..."):
        results = c.delete(documents, namespace)
    for r in results:
        kind_name, name = str(r.get("kind", "")), str(r.get("name", ""))
        if r.get("action") == "deleted":
            typer.echo(f'{resource_ref(kind_name, name)} deleted')
        else:
            missing += 1
            echo_err(_not_found(kinds.BY_NAME.get(kind_name) or kind_name, name))
    if missing:
        raise typer.Exit(1)


def _not_found(kind: kinds.Kind | str, name: str) -> str:
    if isinstance(kind, str):
        plural = kind.lower() + "s"
    else:
        plural = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
    return f'Error from server (NotFound): {plural} "{name}" not found'


_PASSIVE_SHORT = {"sa": "ServiceAccount", "cm": "ConfigMap"}


def _resolve_kind(arg: str) -> kinds.Kind:
    k = kinds.lookup(arg)
    if k is None:   # stored-only core kinds (ServiceAccount, ConfigMap, Secret)
        for name in kinds.PASSIVE_KINDS:
            if arg.lower() in (name.lower(), name.lower() + "s") or _PASSIVE_SHORT.get(arg.lower()) == name:
                k = kinds.Kind(name, "", ("v1",), name.lower() + "s", istio=False)
    if k is None:
        fail(f'the server doesn\'t have a resource type "{arg}"')
    return k


def get(
    ctx: typer.Context,
    kind_arg: Annotated[str, typer.Argument(metavar="KIND", help="vs, dr, gw, se, svc, ... (a,b ok)")],
    names: Annotated[list[str] | None, typer.Argument(metavar="[NAME]...")] = None,
    namespace: Namespace = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A")] = False,
    output: Annotated[str | None, typer.Option("--output", "-o", help="yaml | json | wide | name")] = None,
) -> None:
    """List objects, like kubectl get."""
    if kind_arg.lower() in pods.POD_KINDS:       # the demo's running pods, not a config kind
        pods.get_pods(ctx, list(names or []), namespace, all_namespaces, output)
        return
    if output not in (None, "yaml", "json", "wide", "name"):
        fail(f'unable to match a printer suitable for the output format "{output}", '
             "allowed formats are: json,name,wide,yaml")
    kind_list = [_resolve_kind(a) for a in kind_arg.split(",") if a]
    if not kind_list:
        fail("you must specify the type of resource to get")
    ns = None if all_namespaces else (namespace or DEFAULT_NAMESPACE)
    c = client(ctx)
    found: list[tuple[kinds.Kind, list[dict[str, Any]]]] = []
    not_found: list[str] = []
    with api_call(c, "Listing..."):
        for k in kind_list:
            items: list[dict[str, Any]] = []
            if names:
                for n in names:
                    got = c.objects(k.kind, ns if k.namespaced else None, n)
                    if not got:
                        not_found.append(_not_found(k, n))
                    items.extend(got)
            else:
                items = c.objects(k.kind, ns if k.namespaced else None)
            found.append((k, items))
    _print_get(found, output, all_namespaces, ns, bool(names))
    for line in not_found:
        echo_err(line)
    if not_found:
        raise typer.Exit(1)


def _print_get(
    found: list[tuple[kinds.Kind, list[dict[str, Any]]]], output: str | None, all_ns: bool, ns: str | None,
    named: bool,
) -> None:
    items = [i for _, its in found for i in its]
    if output in ("yaml", "json"):
        if not items and not named:
            echo_err(_no_resources(ns))
            return
        doc: Any = items[0] if named and len(items) == 1 else {"apiVersion": "v1", "kind": "List",
                                                                "items": items}
        typer.echo(json.dumps(doc, indent=2) if output == "json"
                   else yaml.safe_dump(doc, sort_keys=False).rstrip())
        return
    if output == "name":
        for i in items:
            typer.echo(resource_ref(str(i.get("kind", "")), str((i.get("metadata") or {}).get("name", ""))))
        return
    if not items:
        if not named:
            echo_err(_no_resources(ns))
        return
    multi = len(found) > 1
    blocks = []
    for k, its in found:
        if not its:
            continue
        if multi:  # kubectl prefixes names with kind.group/ when listing several kinds
            its = [{**i, "metadata": {**(meta := i.get("metadata") or {}),
                                      "name": resource_ref(k.kind, meta.get("name", ""))}} for i in its]
        blocks.append(get_tables.render(k.kind, its, all_ns, output == "wide"))
    typer.echo("\n\n".join(blocks))


def _no_resources(ns: str | None) -> str:
    return "No resources found" if ns is None else f"No resources found in {ns} namespace."


def validate(
    filename: Files,
    namespace: Namespace = None,
    recursive: Recursive = False,
) -> None:
    """Validate files offline: exit 0 when valid, 1 with one file:line: ... line per error."""
    docs = read_inputs(filename, recursive)
    result = load_locally(docs, namespace)
    if not _print_issues(result):
        raise typer.Exit(1)
    counts: dict[str, int] = {}
    for cfg in result.configs:
        name = cfg.source.file if cfg.source else ""
        counts[name] = counts.get(name, 0) + 1
    for d in docs:
        n = counts.get(d.file, 0)
        typer.echo(f'"{d.file}" is valid ({n} object{"" if n == 1 else "s"})')
