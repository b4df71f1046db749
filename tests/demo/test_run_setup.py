"""``./run``'s first setup is not silent: step lines and pip's per-package progress as it goes (the real
script over a tiny stand-in project, so pip really creates a venv and installs from PyPI), and a second
run with nothing to do says nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from demo_helpers import ROOT

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "mizzen"
version = "0.0.1"
dependencies = ["six"]

[project.optional-dependencies]
test = []
"""


def _pypi_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/six/", timeout=5).close()
    except OSError:
        return False
    return True


@pytest.mark.e2e
def test_first_setup_shows_progress_then_later_runs_are_quiet(tmp_path: Path) -> None:
    if not _pypi_reachable():
        pytest.skip("PyPI is not reachable from here: pip cannot install")
    shutil.copy(ROOT / "run", tmp_path / "run")
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "src" / "mizzen").mkdir(parents=True)
    (tmp_path / "src" / "mizzen" / "__init__.py").write_text('"""stand-in"""\n')
    env = {**os.environ, "PYTHON": sys.executable, "PIP_CONFIG_FILE": os.devnull}
    proc = subprocess.Popen(["./run", "setup"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()          # printed before pip starts, not after a silent minute
    rest = proc.stdout.read()
    assert proc.wait(timeout=300) == 0, first + rest
    assert first.startswith("==> creating .venv with Python 3."), first
    lines = rest.splitlines()
    assert lines[0].startswith("==> installing Mizzen and its dependencies"), lines
    assert any(x.startswith("    Collecting six") for x in lines), lines
    assert any(x.startswith("    Successfully installed") and "six" in x for x in lines), lines
    assert lines[-1] == "==> installed; the mizzen command is .venv/bin/mizzen", lines
    again = subprocess.run(["./run", "setup"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0 and again.stdout == again.stderr == "", again
