"""The ``mizzen`` console entry point: it imports only the module of the command it runs.

Importing every command module (the one app of :mod:`.main`) costs about a second of CPU before any command
starts, and scripts, tests and pods (``mizzen agent``, ``mizzen controlplane``) run the CLI many times. A
command named in :data:`COMMANDS` therefore runs from an app that holds just that command, built with the same
global options (:func:`new_app`, shared with :mod:`.main`) and the same :mod:`.framework`, so its usage lines,
help and errors are those of the full app. Anything else (``mizzen``, ``mizzen --help``, an unknown command,
shell completion) goes through the full app. tests/cli checks the table against :mod:`.main`'s registrations.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from mizzen.auth.token import TOKEN_FILE_ENV
from mizzen.cli import framework
from mizzen.cli.common import Options
from mizzen.client import DEFAULT_SERVER, SERVER_ENV

__all__ = ["COMMANDS", "command_name", "main", "new_app", "single_command_app"]

# top-level command -> (module, attribute): a command function, or a Typer sub-app for a command group
COMMANDS: dict[str, tuple[str, str]] = {
    "apply": ("mizzen.cli.resources", "apply"),
    "delete": ("mizzen.cli.resources", "delete"),
    "validate": ("mizzen.cli.resources", "validate"),
    "create": ("mizzen.cli.create", "app"),
    "get": ("mizzen.cli.get", "get"),
    "describe": ("mizzen.cli.describe", "describe"),
    "analyze": ("mizzen.cli.analyze", "analyze"),
    "proxy-status": ("mizzen.cli.proxy", "proxy_status"),
    "proxy-config": ("mizzen.cli.proxy", "config_app"),
    "simulate": ("mizzen.cli.simulate", "simulate"),
    "convert": ("mizzen.cli.convert", "app"),
    "kube-inject": ("mizzen.cli.kubeinject", "kube_inject"),
    "load": ("mizzen.cli.load", "load"),
    "logs": ("mizzen.cli.pods", "logs"),
    "config": ("mizzen.cli.contexts", "app"),
    "version": ("mizzen.cli.runtime", "version"),
    "completion": ("mizzen.cli.framework", "completion"),
    "demo": ("mizzen.cli.runtime", "demo"),
    "dashboard": ("mizzen.cli.dashboard", "app"),
    "controlplane": ("mizzen.cli.runtime", "controlplane"),
    "agent": ("mizzen.cli.runtime", "agent"),
    "install": ("mizzen.cli.install", "install"),
    "uninstall": ("mizzen.cli.install", "uninstall"),
    "verify-install": ("mizzen.cli.install", "verify_install"),
}
_GLOBAL_WITH_VALUE = ("--server", "-s", "--token-file")


def _global(
    ctx: typer.Context,
    server: Annotated[str | None, typer.Option(
        "--server", "-s", envvar=SERVER_ENV, metavar="URL",
        show_default=f"the current context's server, else {DEFAULT_SERVER}",
        help="Control-plane HTTP API address")] = None,
    token_file: Annotated[str | None, typer.Option(
        "--token-file", envvar=TOKEN_FILE_ENV, metavar="FILE",
        show_default="$MIZZEN_TOKEN, else $MIZZEN_STATE_DIR/token or ~/.local/state/mizzen/token",
        help="The control plane's API token file")] = None,
) -> None:
    ctx.obj = Options(server=server, token_file=token_file)


def new_app() -> typer.Typer:
    """The ``mizzen`` Typer app with its global options and no commands yet."""
    app = typer.Typer(
        name="mizzen",
        help="Mizzen: a service mesh that speaks Istio's YAML and drives Envoy.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_global)
    return app


def command_name(argv: Sequence[str]) -> str | None:
    """The top-level command ``argv`` (without the program) names, past the global options; None when an
    option other than those comes first (``--help``) or there is no command."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _GLOBAL_WITH_VALUE:
            i += 2
        elif arg.startswith(("--server=", "--token-file=")):
            i += 1
        elif arg.startswith("-"):
            return None
        else:
            return arg
    return None


def single_command_app(name: str) -> typer.Typer:
    """An app holding only the command ``name`` of :data:`COMMANDS` (its module alone imported)."""
    module, attribute = COMMANDS[name]
    target = getattr(importlib.import_module(module), attribute)
    app = new_app()
    if isinstance(target, typer.Typer):
        app.add_typer(target, name=name)
    else:
        app.command(name)(target)
    return framework.finish(app)


def main() -> None:
    argv = sys.argv[1:]
    # pilot-agent's `proxy sidecar`, `istio-iptables` and `wait` (the proxyv2 image's entrypoint)
    if len(argv) > 1 and argv[0] == "agent":
        from mizzen.agent import pilot

        if argv[1] in pilot.SUBCOMMANDS:
            raise SystemExit(pilot.main(argv[1:]))
    framework.enable_completion()
    name = command_name(argv)
    if name in COMMANDS and not os.environ.get(framework.COMPLETE_VAR):
        app = single_command_app(name)
    else:
        from mizzen.cli.main import app
    app(prog_name=framework.PROG)
