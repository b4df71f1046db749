"""childproc.tied_to_parent: a child started through it is SIGKILLed by the kernel when the process that
started it dies (even by SIGKILL), and no Python runs between fork and exec (no preexec_fn)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mizzen.childproc import tied_to_parent

_PARENT = """
import subprocess, sys, time
from mizzen.childproc import tied_to_parent
child = subprocess.Popen(tied_to_parent([sys.executable, "-c", "import time; time.sleep(60)"]))
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_child_dies_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:   # setpriv has exec'd the sleeper
            with open(f"/proc/{child}/cmdline", "rb") as f:
                cmdline = f.read()
            if b"time.sleep" in cmdline and b"setpriv" not in cmdline:
                break
            time.sleep(0.02)
        assert _alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(child), "the child outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)


def test_argv_is_kept() -> None:
    argv = tied_to_parent(["true", "-c", "x.yaml"])
    assert argv[-3:] == ["true", "-c", "x.yaml"]


def test_a_program_that_cannot_run_fails_at_spawn_with_its_reason(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No such file"):
        tied_to_parent(["/nonexistent/mizzen-bin"])
    with pytest.raises(FileNotFoundError):
        tied_to_parent(["mizzen-no-such-program"], env={"PATH": str(tmp_path)})
    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\n")
    with pytest.raises(PermissionError):
        tied_to_parent([str(plain)])
    assert tied_to_parent(["sh", "-c", "true"], env={"PATH": "/usr/bin:/bin"})[-3:] == ["sh", "-c", "true"]
