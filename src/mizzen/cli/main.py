"""The ``mizzen`` typer app: global ``--server`` option and the command table.

Console script entry point (pyproject): ``mizzen = "mizzen.cli.main:main"``. Commands live in sibling modules
(:mod:`.resources`, :mod:`.analyze`, :mod:`.proxy`, :mod:`.convert`, :mod:`.runtime`, :mod:`.contexts`, ...);
this module only wires them. :mod:`.framework` gives every command the same help style and error handling.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mizzen.auth.token import TOKEN_FILE_ENV
from mizzen.cli import (
    analyze,
    authz,
    contexts,
    convert,
    create,
    dashboard,
    describe,
    framework,
    get,
    install,
    kubeinject,
    load,
    pods,
    proxy,
    resources,
    runtime,
    simulate,
)
from mizzen.cli.common import Options
from mizzen.client import DEFAULT_SERVER, SERVER_ENV

__all__ = ["app", "main"]

app = typer.Typer(
    name="mizzen",
    help="Mizzen: a service mesh that speaks Istio's YAML and drives Envoy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
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


app.command("apply")(resources.apply)
app.command("delete")(resources.delete)
app.add_typer(create.app, name="create")
app.command("get")(get.get)
app.command("describe")(describe.describe)
describe.x_app.add_typer(authz.app, name="authz")
app.add_typer(describe.x_app, name="x")
app.command("validate")(resources.validate)
app.command("analyze")(analyze.analyze)
app.command("proxy-status")(proxy.proxy_status)
app.command("ps", hidden=True, help="Alias of proxy-status.")(proxy.proxy_status)
app.add_typer(proxy.config_app, name="proxy-config")
app.add_typer(proxy.config_app, name="pc", hidden=True, help="Alias of proxy-config.")
app.command("simulate")(simulate.simulate)
app.add_typer(convert.app, name="convert")
app.command("kube-inject")(kubeinject.kube_inject)
app.command("load")(load.load)
app.command("logs")(pods.logs)
app.add_typer(contexts.app, name="config")
app.command("version")(runtime.version)
app.command("completion")(framework.completion)
app.command("demo")(runtime.demo)
app.add_typer(dashboard.app, name="dashboard")
app.command("controlplane")(runtime.controlplane)
app.command("agent")(runtime.agent)
app.add_typer(install.manifest_app, name="manifest")
app.command("install")(install.install)
app.command("uninstall")(install.uninstall)
app.command("verify-install")(install.verify_install)
framework.finish(app)


def main() -> None:
    import sys

    # pilot-agent's `proxy sidecar`, `istio-iptables` and `wait` (the proxyv2 image's entrypoint)
    if len(sys.argv) > 2 and sys.argv[1] == "agent":
        from mizzen.agent import pilot

        if sys.argv[2] in pilot.SUBCOMMANDS:
            raise SystemExit(pilot.main(sys.argv[2:]))
    framework.enable_completion()
    app(prog_name="mizzen")
