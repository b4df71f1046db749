"""One framework for every command: help without type placeholders or reStructuredText and with defaults,
shell completion that really completes in bash, and no Python traceback from any command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import MIZZEN, REPO, FakeApi, run_cli
from typer.main import get_command
from typer.testing import CliRunner

from mizzen.cli.main import app

PLACEHOLDER = re.compile(r"<(str|int|float|bool|path|list\[[^\]]*\]|Path)>")


def _commands() -> list[list[str]]:
    """Every command path of the app (groups and leaves), hidden aliases included."""
    out: list[list[str]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        out.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])

    walk(get_command(app), [])
    return out


def test_every_help_has_metavars_defaults_and_no_rest_markup() -> None:
    paths = _commands()
    names = {" ".join(p) for p in paths}
    assert {"demo", "controlplane", "agent", "get", "load", "proxy-config routes", "pc routes", "ps",
            "config set-context", "completion"} <= names
    for path in paths:
        res = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
        assert res.exit_code == 0, (path, res.output)
        assert not PLACEHOLDER.search(res.stdout), (path, res.stdout)
        assert "``" not in res.stdout and ":func:" not in res.stdout and ":mod:" not in res.stdout, path
        assert "{" not in res.stdout.splitlines()[1], (path, res.stdout)       # usage line: KIND, not {KIND}
    demo = CliRunner().invoke(app, ["demo", "--help"], terminal_width=200).stdout
    for default in ("[default: 8080]", "[default: 8443]", "[default: 15010]", "[default: 15014]",
                    "[default: 127.0.0.1]"):
        assert default in demo, default
    get = CliRunner().invoke(app, ["get", "--help"], terminal_width=200).stdout
    assert "Usage: mizzen get [OPTIONS] KIND [NAME]..." in get
    assert re.search(r"--namespace\s+-n\s+NAMESPACE", get) and re.search(r"--output\s+-o\s+FORMAT", get)


def test_n_means_namespace_in_every_command() -> None:
    for path in _commands():
        cmd: Any = get_command(app)
        for name in path:
            cmd = cmd.commands[name]
        for p in getattr(cmd, "params", []):
            if "-n" in getattr(p, "opts", []):
                assert "--namespace" in p.opts, (path, p.opts)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_completes_subcommands_and_options(tmp_path: Path) -> None:
    script = run_cli("completion", "bash")
    assert script.returncode == 0 and "_MIZZEN_COMPLETE=complete_bash" in script.stdout, script.stderr
    (tmp_path / "mizzen.bash").write_text(script.stdout)   # what `source <(mizzen completion bash)` sources
    env = {**os.environ, "PATH": f"{os.path.dirname(MIZZEN)}:{os.environ.get('PATH', '')}"}

    def complete(words: str) -> list[str]:
        line = f"""source {tmp_path / "mizzen.bash"}
COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
_mizzen_completion mizzen
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
        proc = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=60, env=env,
                              cwd=REPO, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    # each completion and each script is a `mizzen` process of its own: run them side by side
    with ThreadPoolExecutor(4) as pool:
        completions = pool.map(
            complete, ['mizzen ""', "mizzen proxy-c", 'mizzen proxy-config ""', "mizzen get --all"])
        scripts = pool.map(lambda shell: run_cli("completion", shell), ("zsh", "fish", "tcsh"))
        (top, proxy_c, proxy_config, get_all), shells = list(completions), list(scripts)
    want = {"apply", "get", "proxy-config", "proxy-status", "demo", "load", "config", "completion"}
    assert want <= set(top), top
    assert proxy_c == ["proxy-config"]
    assert {"clusters", "routes", "listeners", "endpoints"} <= set(proxy_config)
    assert "--all-namespaces" in get_all
    for shell, proc in zip(("zsh", "fish"), shells, strict=False):
        assert proc.returncode == 0 and "_MIZZEN_COMPLETE=complete_" + shell in proc.stdout, proc.stdout
    proc = shells[2]   # tcsh: not supported
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def _broken_dump(api: FakeApi) -> str:
    proxy = "sidecar~127.0.91.5~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local"
    api.syncz = [{"proxy": proxy, "types": {}}]
    api.dumps = {proxy: {"RDS": [{"name": "9080", "virtual_hosts": 5}]}}   # not a list: the table code breaks
    return proxy


def test_an_unexpected_error_is_one_line_not_a_traceback(fake_api: FakeApi) -> None:
    _broken_dump(fake_api)
    env_debug = os.environ.pop("MIZZEN_DEBUG", None)
    try:
        proc = run_cli("proxy-config", "routes", "reviews", server=fake_api.url)
    finally:
        if env_debug is not None:
            os.environ["MIZZEN_DEBUG"] = env_debug
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr == ("error: internal error: TypeError: 'int' object is not iterable "
                           "(set MIZZEN_DEBUG=1 for the traceback)\n")


def test_mizzen_debug_shows_the_traceback(fake_api: FakeApi) -> None:
    _broken_dump(fake_api)
    env = {**os.environ, "MIZZEN_SERVER": fake_api.url, "MIZZEN_DEBUG": "1"}
    proc = subprocess.run([MIZZEN, "proxy-config", "routes", "reviews"], capture_output=True, text=True,
                          timeout=30, env=env, cwd=REPO, check=False)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "TypeError" in proc.stderr


def test_usage_errors_stay_usage_errors() -> None:
    proc = run_cli("get")
    assert proc.returncode == 2 and "Missing argument 'KIND'" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("nope")
    assert proc.returncode == 2 and "No such command 'nope'" in proc.stderr
