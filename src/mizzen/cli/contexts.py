"""kubectl-style contexts for the ``mizzen`` CLI: a default namespace (and control-plane address) per context,
kept in ``<state dir>/cli-config.yaml`` (``$MIZZEN_CONFIG`` names another file, like ``$KUBECONFIG``), and the
``mizzen config`` commands that edit it: ``view``, ``current-context``, ``get-contexts``, ``use-context``,
``set-context [NAME|--current] [--namespace NS] [--server URL]``.

Every command resolves its namespace the same way (:func:`namespace_of`): ``-n`` wins, then the current
context's namespace, then ``default``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from mizzen.cli.common import fail, format_table

__all__ = ["CONFIG_ENV", "CliConfig", "app", "config_path", "context_namespace", "load", "namespace_of"]

CONFIG_ENV = "MIZZEN_CONFIG"
STATE_DIR_ENV = "MIZZEN_STATE_DIR"
DEFAULT_CONTEXT = "default"
DEFAULT_NAMESPACE = "default"


def config_path() -> Path:
    """``$MIZZEN_CONFIG``, else ``cli-config.yaml`` in the state dir (``$MIZZEN_STATE_DIR`` or
    ``~/.local/state/mizzen``, the demo's default)."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    state = os.environ.get(STATE_DIR_ENV) or str(Path.home() / ".local/state/mizzen")
    return Path(state) / "cli-config.yaml"


@dataclass
class CliConfig:
    """The file's content: contexts by name (``namespace``, ``server``) and the current one."""

    current: str = DEFAULT_CONTEXT
    contexts: dict[str, dict[str, str]] = field(default_factory=dict)

    def context(self) -> dict[str, str]:
        return self.contexts.get(self.current, {})

    def to_doc(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": self.current,
            "contexts": [{"name": n, "context": dict(c)} for n, c in sorted(self.contexts.items())],
        }


def load(path: Path | None = None) -> CliConfig:
    """The CLI config (empty when the file does not exist); a broken file is one clear error."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return CliConfig()
    except (OSError, UnicodeDecodeError) as e:
        fail(f"cannot read the CLI config {path}: {e}")
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        fail(f"the CLI config {path} is not valid YAML ({str(e).splitlines()[0]}); fix or delete it")
    if not isinstance(doc, dict):
        fail(f"the CLI config {path} is not a mapping; fix or delete it")
    contexts: dict[str, dict[str, str]] = {}
    for entry in doc.get("contexts") or []:
        if isinstance(entry, dict) and entry.get("name"):
            ctx = entry.get("context") if isinstance(entry.get("context"), dict) else {}
            contexts[str(entry["name"])] = {str(k): str(v) for k, v in (ctx or {}).items() if v is not None}
    return CliConfig(str(doc.get("current-context") or DEFAULT_CONTEXT), contexts)


def save(cfg: CliConfig, path: Path | None = None) -> Path:
    """Write atomically (a temp file renamed over the old one)."""
    path = path or config_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(cfg.to_doc(), sort_keys=False), encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        fail(f"cannot write the CLI config {path}: {e}")
    return path


def namespace_of(namespace: str | None) -> str:
    """``-n`` if given, else the current context's namespace, else ``default`` (kubectl's order)."""
    return namespace or context_namespace() or DEFAULT_NAMESPACE


def context_namespace() -> str | None:
    """The current context's namespace, None when none is set."""
    return load().context().get("namespace") or None


def server_of_context() -> str | None:
    return load().context().get("server") or None


app = typer.Typer(help="Show or change the CLI's contexts (default namespace, control-plane address), "
                       "like kubectl config.", no_args_is_help=True)


@app.command("view")
def view() -> None:
    """Print the CLI config (the file's YAML)."""
    cfg = load()
    typer.echo(yaml.safe_dump(cfg.to_doc(), sort_keys=False).rstrip())


@app.command("current-context")
def current_context() -> None:
    """Print the name of the current context."""
    typer.echo(load().current)


@app.command("get-contexts")
def get_contexts() -> None:
    """List the contexts; * marks the current one."""
    cfg = load()
    names = sorted(set(cfg.contexts) | {cfg.current})
    rows = [["*" if n == cfg.current else "", n, cfg.contexts.get(n, {}).get("server", ""),
             cfg.contexts.get(n, {}).get("namespace", "")] for n in names]
    typer.echo(format_table(["CURRENT", "NAME", "SERVER", "NAMESPACE"], rows))


@app.command("use-context")
def use_context(name: Annotated[str, typer.Argument(metavar="NAME", help="Context to make current")]) -> None:
    """Make NAME the current context."""
    cfg = load()
    if name not in cfg.contexts and name != DEFAULT_CONTEXT:
        fail(f'no context exists with the name: "{name}"')
    cfg.current = name
    save(cfg)
    typer.echo(f'Switched to context "{name}".')


@app.command("set-context")
def set_context(
    name: Annotated[str | None, typer.Argument(metavar="[NAME]", help="Context to create or change")] = None,
    current: Annotated[bool, typer.Option("--current", help="Change the current context")] = False,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", metavar="NAMESPACE",
                                                  help="Default namespace of the context")] = None,
    server: Annotated[str | None, typer.Option("--server", metavar="URL",
                                               help="Control-plane HTTP API address of the context")] = None,
) -> None:
    """Set a context's default namespace and/or server (kubectl config set-context)."""
    if bool(name) == current:
        fail("give a context NAME or --current (not both)")
    cfg = load()
    target = cfg.current if current else str(name)
    entry = dict(cfg.contexts.get(target, {}))
    if namespace is not None:
        from mizzen.config.validation.common import is_dns1123_label

        if not is_dns1123_label(namespace) or namespace != namespace.lower():
            fail(f'namespace "{namespace}": a lowercase RFC 1123 label must consist of lower case '
                 "alphanumeric characters or '-', and must start and end with an alphanumeric character")
        entry["namespace"] = namespace
    if server is not None:
        entry["server"] = server
    existed = target in cfg.contexts
    cfg.contexts[target] = entry
    save(cfg)
    typer.echo(f'Context "{target}" {"modified" if existed else "created"}.')
