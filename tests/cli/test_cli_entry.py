"""The console entry point runs a listed command from an app holding only it (mizzen.cli.entry): the table
matches the full app's registrations, such an app answers exactly as the full one (help of every command and
sub-command, usage errors), only the command's own module is imported, and everything else still goes
through the full app."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from cli_helpers import MIZZEN
from typer.main import get_command
from typer.testing import CliRunner

from mizzen.cli import entry
from mizzen.cli.main import app


def _registered() -> dict[str, object]:
    """The full app's top-level names -> their command function or sub-app."""
    out: dict[str, object] = {c.name or "": c.callback for c in app.registered_commands}
    out.update({g.name or "": g.typer_instance for g in app.registered_groups})
    return out


def test_the_table_names_what_the_full_app_registers() -> None:
    registered = _registered()
    for name, (module, attribute) in entry.COMMANDS.items():
        target = getattr(__import__(module, fromlist=[attribute]), attribute)
        assert registered.get(name) is target, (name, module, attribute)
        assert name in {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}


def _paths(cmd: Any, path: list[str]) -> list[list[str]]:
    out = [path]
    for name, sub in getattr(cmd, "commands", {}).items():
        out += _paths(sub, [*path, name])
    return out


@pytest.mark.parametrize("name", sorted(entry.COMMANDS))
def test_a_single_command_app_answers_as_the_full_app(name: str) -> None:
    single = entry.single_command_app(name)
    full_paths = [p for p in _paths(get_command(app), []) if p[:1] == [name]]
    assert full_paths == [p for p in _paths(get_command(single), []) if p], name
    runner = CliRunner()
    for path in full_paths:
        want = runner.invoke(app, [*path, "--help"], prog_name="mizzen", env={"COLUMNS": "100"})
        got = runner.invoke(single, [*path, "--help"], prog_name="mizzen", env={"COLUMNS": "100"})
        assert (got.exit_code, got.output) == (want.exit_code, want.output), path
    want = runner.invoke(app, [name, "--no-such-option"], prog_name="mizzen", env={"COLUMNS": "100"})
    got = runner.invoke(single, [name, "--no-such-option"], prog_name="mizzen", env={"COLUMNS": "100"})
    assert (got.exit_code, got.output) == (want.exit_code, want.output) and got.exit_code == 2


def test_command_name_skips_the_global_options() -> None:
    assert entry.command_name(["apply", "-f", "x.yaml"]) == "apply"
    assert entry.command_name(["--server", "http://127.0.0.1:1", "get", "pods"]) == "get"
    assert entry.command_name(["-s", "u", "--token-file", "t", "proxy-status"]) == "proxy-status"
    assert entry.command_name(["--server=u", "--token-file=t", "version"]) == "version"
    assert entry.command_name(["--help"]) is None
    assert entry.command_name(["-s", "u", "-h", "get"]) is None
    assert entry.command_name([]) is None


def test_only_the_commands_module_is_imported() -> None:
    code = ("import sys\nfrom mizzen.cli import entry\nentry.single_command_app('apply')\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('mizzen.cli.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=60).stdout.split()
    assert "mizzen.cli.resources" in out
    others = {"mizzen.cli.main", "mizzen.cli.dashboard", "mizzen.cli.proxy", "mizzen.cli.describe"}
    assert not others & set(out), out


def test_the_console_script_runs_listed_and_other_commands() -> None:
    listed = subprocess.run([MIZZEN, "--server", "http://127.0.0.1:9", "version"], capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0 and "client version:" in listed.stdout, (listed.stdout, listed.stderr)
    other = subprocess.run([MIZZEN, "x", "--help"], capture_output=True, text=True, timeout=60)
    assert other.returncode == 0 and "authz" in other.stdout, other.stderr     # the full app's `x` group
    unknown = subprocess.run([MIZZEN, "nope"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "No such command 'nope'" in unknown.stderr, unknown.stderr
