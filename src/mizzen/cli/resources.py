"""``mizzen apply``, ``delete`` and ``validate``: configuration objects, kubectl-style (``get`` is
:mod:`mizzen.cli.get`). Objects without a namespace go to ``-n``, else the current context's namespace.

apply/validate load and validate locally first with :mod:`mizzen.config.loader` (precise
``file:line: Kind/name: field.path: reason`` lines, exit 1, nothing sent); apply then posts the files' text to
the control plane and prints one ``kind.group/name action`` line per object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from mizzen.cli.common import STDIN, api_call, client, echo_err, fail, read_inputs, resource_ref
from mizzen.cli.contexts import context_namespace, namespace_of
from mizzen.client import Document
from mizzen.config import kinds
from mizzen.config.model import DEFAULT_NAMESPACE

if TYPE_CHECKING:
    from mizzen.config.loader import LoadResult

__all__ = ["apply", "delete", "load_locally", "not_found", "resolve_kind", "validate"]

FILES_HELP = "File or directory (.yaml/.yml/.json), or - for stdin; repeatable"
Files = Annotated[list[str], typer.Option("--filename", "-f", metavar="FILE", help=FILES_HELP)]
OptFiles = Annotated[list[str] | None, typer.Option("--filename", "-f", metavar="FILE", help=FILES_HELP)]
Namespace = Annotated[str | None, typer.Option(
    "--namespace", "-n", metavar="NAMESPACE", show_default="the current context's namespace, else default",
    help="Namespace")]
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


def file_namespace(docs: Sequence[Document], namespace: str | None) -> str | None:
    """The namespace to send with files, like kubectl: ``-n`` is enforced (an object naming another namespace
    is an error); without it the current context's namespace fills in objects without one, and objects that
    name their own keep it. (The API's namespace is one enforced value, so a mix of both kinds of objects
    with a context namespace other than ``default`` is refused here with a clear line.)"""
    if namespace:
        return namespace
    context_ns = context_namespace()
    if context_ns is None:
        return None                   # the API's default: metadata.namespace, else default
    named: set[str] = set()
    unnamed = False
    for d in docs:
        try:
            objs = [o for o in yaml.safe_load_all(d.text) if isinstance(o, dict)]
        except yaml.YAMLError:
            continue                  # the loader reports it with its line
        for o in objs:
            k = kinds.BY_NAME.get(str(o.get("kind", "")))
            if k is not None and not k.namespaced:
                continue
            meta = o.get("metadata") if isinstance(o.get("metadata"), dict) else {}
            ns = meta.get("namespace") if meta else None
            if isinstance(ns, str) and ns:
                named.add(ns)
            else:
                unnamed = True
    others = sorted(named - {context_ns})
    if not others:
        return context_ns
    if not unnamed or context_ns == DEFAULT_NAMESPACE:
        return None
    fail(f"objects without metadata.namespace would go to the context's namespace {context_ns!r} while "
         f"others name {', '.join(others)}: pass -n NAMESPACE, or set metadata.namespace on every object")


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
    namespace = file_namespace(docs, namespace)
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
        namespace = file_namespace(documents, namespace)
    elif len(args) >= 2:
        # the API deletes by documents: send the stored manifests themselves
        kind = resolve_kind(args[0])
        ns = namespace_of(namespace) if kind.namespaced else None
        manifests = []
        with api_call(c):
            for n in args[1:]:
                got = c.objects(kind.kind, ns, n)
                if not got:
                    missing += 1
                    echo_err(not_found(kind, n))
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
            echo_err(not_found(kinds.BY_NAME.get(kind_name) or kind_name, name))
    if missing:
        raise typer.Exit(1)


def not_found(kind: kinds.Kind | str, name: str) -> str:
    if isinstance(kind, str):
        plural = kind.lower() + "s"
    else:
        plural = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
    return f'Error from server (NotFound): {plural} "{name}" not found'


_PASSIVE_SHORT = {"sa": "ServiceAccount", "cm": "ConfigMap"}


def resolve_kind(arg: str) -> kinds.Kind:
    k = kinds.lookup(arg)
    if k is None:   # stored-only core kinds (ServiceAccount, ConfigMap, Secret)
        for name in kinds.PASSIVE_KINDS:
            if arg.lower() in (name.lower(), name.lower() + "s") or _PASSIVE_SHORT.get(arg.lower()) == name:
                k = kinds.Kind(name, "", ("v1",), name.lower() + "s", istio=False)
    if k is None:
        fail(f'the server doesn\'t have a resource type "{arg}"')
    return k


def validate(
    filename: Files,
    namespace: Namespace = None,
    recursive: Recursive = False,
) -> None:
    """Validate files offline: exit 0 when valid, 1 with one file:line: ... line per error."""
    docs = read_inputs(filename, recursive)
    namespace = file_namespace(docs, namespace)
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
