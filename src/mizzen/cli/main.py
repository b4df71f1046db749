"""The ``mizzen`` typer app: global ``--server`` option and the command table.

The console script (pyproject: ``mizzen = "mizzen.cli.entry:main"``) runs a listed command from an app holding
only that command (:mod:`.entry`); this full app answers everything else. Commands live in sibling modules
(:mod:`.resources`, :mod:`.analyze`, :mod:`.proxy`, :mod:`.convert`, :mod:`.runtime`, :mod:`.contexts`, ...);
this module only wires them. :mod:`.framework` gives every command the same help style and error handling.
"""

from __future__ import annotations

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
from mizzen.cli.entry import new_app

__all__ = ["app", "main"]

app = new_app()
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
    """The entry point of console scripts installed before :mod:`.entry` took the job over."""
    from mizzen.cli import entry

    entry.main()
