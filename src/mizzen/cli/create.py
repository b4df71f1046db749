"""``mizzen create secret tls|generic``: kubectl's commands for the Secrets Istio's secure-ingress tasks
create (``kubectl create -n istio-system secret tls NAME --key=K --cert=C``, ``secret generic NAME
--from-file=tls.crt=... --from-file=ca.crt=...``). The Secret is built locally, validated like ``mizzen
apply`` and applied through the API; file contents are never printed (errors name files and keys only).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Annotated

import typer

from mizzen.cli.common import api_call, client, fail
from mizzen.cli.contexts import context_namespace
from mizzen.cli.resources import Namespace, _print_issues
from mizzen.client import Document
from mizzen.config.loader import load_text

__all__ = ["app"]

app = typer.Typer(help="Create a resource from the command line (kubectl create).", no_args_is_help=True)
secret_app = typer.Typer(help="Create a Secret (tls or generic), like kubectl create secret.",
                         no_args_is_help=True)
app.add_typer(secret_app, name="secret")
_NS_KEY = "mizzen.create.namespace"


@app.callback()
def _create(ctx: typer.Context, namespace: Namespace = None) -> None:
    """``kubectl create -n NS secret ...``: -n before the subcommand, as in Istio's tasks."""
    ctx.meta[_NS_KEY] = namespace

DryRun = Annotated[bool, typer.Option("--dry-run", help="Validate on the server only")]


def _apply(ctx: typer.Context, name: str, namespace: str | None, typ: str, data: dict[str, bytes],
           dry_run: bool) -> None:
    ns = namespace or ctx.meta.get(_NS_KEY) or context_namespace() or "default"
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
                "type": typ, "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}
    doc = Document(f"<create secret {name}>", json.dumps(manifest))
    if not _print_issues(load_text(doc.text, doc.file, ns)):
        raise typer.Exit(1)
    c = client(ctx)
    with api_call(c, "Creating secret..."):
        result = c.apply([doc], ns, dry_run)
    for r in result.results:
        action = "created" if r.get("action") == "created" else str(r.get("action", ""))
        typer.echo(f"secret/{name} {action}" + (" (dry run)" if dry_run else ""))


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        fail(f"error reading {what} {path}: {e.strerror or e}")


@secret_app.command("tls")
def tls(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME")],
    cert: Annotated[str, typer.Option("--cert", metavar="FILE", help="PEM certificate (chain) file")],
    key: Annotated[str, typer.Option("--key", metavar="FILE", help="PEM private key file")],
    namespace: Namespace = None,
    dry_run: DryRun = False,
) -> None:
    """A kubernetes.io/tls Secret (tls.crt, tls.key) from PEM files."""
    _apply(ctx, name, namespace, "kubernetes.io/tls",
           {"tls.crt": _read(cert, "certificate"), "tls.key": _read(key, "key")}, dry_run)


@secret_app.command("generic")
def generic(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME")],
    from_file: Annotated[list[str] | None, typer.Option(
        "--from-file", metavar="[KEY=]FILE",
        help="A key from a file (the key defaults to the file's name)")] = None,
    from_literal: Annotated[list[str] | None, typer.Option(
        "--from-literal", metavar="KEY=VALUE", help="A key with a literal value")] = None,
    secret_type: Annotated[str, typer.Option("--type", help="The Secret's type")] = "Opaque",
    namespace: Namespace = None,
    dry_run: DryRun = False,
) -> None:
    """A Secret from files and literals (Istio's generic credentials: cert, key, cacert)."""
    data: dict[str, bytes] = {}
    for spec in from_file or ():
        key, sep, path = spec.partition("=")
        if not sep:
            key, path = Path(spec).name, spec
        if not key or not path:
            fail(f"--from-file {spec!r}: want [KEY=]FILE")
        _add(data, key, _read(path, "file"))
    for spec in from_literal or ():
        key, sep, value = spec.partition("=")
        if not sep or not key:
            fail("--from-literal: want KEY=VALUE")
        _add(data, key, value.encode())
    if not data:
        fail("create secret generic needs --from-file or --from-literal")
    _apply(ctx, name, namespace, secret_type, data, dry_run)


def _add(data: dict[str, bytes], key: str, value: bytes) -> None:
    if key in data:
        fail(f"cannot add key {key}, another key by that name already exists")
    data[key] = value
