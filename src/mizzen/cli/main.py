"""The ``mizzen`` typer app: global ``--server`` option and the command table.

Console script entry point (pyproject): ``mizzen = "mizzen.cli.main:app"``. Commands live in sibling modules
(:mod:`.resources`, :mod:`.analyze`, :mod:`.proxy`, :mod:`.convert`, :mod:`.runtime`); this module only wires
them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mizzen.cli import analyze, convert, load, pods, proxy, resources, runtime, simulate
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
    server: Annotated[
        str, typer.Option("--server", "-s", envvar=SERVER_ENV, help="Control-plane HTTP API address")
    ] = DEFAULT_SERVER,
) -> None:
    ctx.obj = Options(server=server)


app.command("apply")(resources.apply)
app.command("delete")(resources.delete)
app.command("get")(resources.get)
app.command("validate")(resources.validate)
app.command("analyze")(analyze.analyze)
app.command("proxy-status")(proxy.proxy_status)
app.add_typer(proxy.config_app, name="proxy-config")
app.command("simulate")(simulate.simulate)
app.add_typer(convert.app, name="convert")
app.command("load")(load.load)
app.command("logs")(pods.logs)
app.command("version")(runtime.version)
app.command("demo", context_settings=runtime.PASSTHROUGH)(runtime.demo)
app.command("controlplane", context_settings=runtime.PASSTHROUGH)(runtime.controlplane)
app.command("agent", context_settings=runtime.PASSTHROUGH)(runtime.agent)


def main() -> None:
    app()
