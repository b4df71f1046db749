"""Temp dirs left by killed processes (``/tmp/mizzen-agent-*``, ``/tmp/mizzen-ca-*``) are swept by the next
start of the same component, and only those: a dir of a live process, or one without an owner marker, stays.
The owners are real processes killed with SIGKILL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Mesh
from mizzen.controlplane.identity import MeshIdentity
from mizzen.tempdirs import OWNER_FILE, sweep_stale

MAKE_DIR = """
import sys, time
{make}
print(path, flush=True)
time.sleep(120)
"""
CA = "from mizzen.controlplane.identity import MeshIdentity; path = MeshIdentity(None)._tmp"
AGENT_DIR = "from mizzen.tempdirs import owned_tempdir; path = owned_tempdir('mizzen-agent-')"


class Owner:
    """A real process that made a temp dir the way the component does, and keeps running until killed."""

    def __init__(self, make: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", MAKE_DIR.format(make=make)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.path = Path(self.proc.stdout.readline().strip())
        assert self.path.is_dir() and (self.path / OWNER_FILE).is_file(), self.path

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def owners() -> Iterator[list[Owner]]:
    made: list[Owner] = []
    try:
        yield made
    finally:
        for o in made:
            o.kill()
            shutil.rmtree(o.path, ignore_errors=True)


def test_ca_scratch_dirs_of_killed_processes_are_swept(owners: list[Owner]) -> None:
    dead, live = Owner(CA), Owner(CA)
    owners += [dead, live]
    unmarked = Path(tempfile.mkdtemp(prefix="mizzen-ca-"))   # as made before markers (or being made)
    dead.kill()
    identity = MeshIdentity(None)
    try:
        assert identity._tmp is not None
        mine = (identity._tmp / OWNER_FILE).read_text().split()
        assert mine[0] == str(os.getpid())
        assert not dead.path.exists()                  # its owner is gone: swept
        assert live.path.is_dir() and unmarked.is_dir()   # a live owner's, and an unmarked one, stay
    finally:
        shutil.rmtree(unmarked, ignore_errors=True)
        if identity._tmp is not None:
            shutil.rmtree(identity._tmp, ignore_errors=True)


def test_a_reused_pid_is_not_the_owner(owners: list[Owner]) -> None:
    o = Owner(AGENT_DIR)
    owners.append(o)
    marker = o.path / OWNER_FILE
    pid, _start, pidns = marker.read_text().split()
    marker.write_text(f"{pid} 1 {pidns}\n")            # same pid, another start time: a different process
    assert o.path in sweep_stale("mizzen-agent-")
    assert not o.path.exists()


async def test_agent_start_sweeps_work_dirs_of_killed_agents(owners: list[Owner]) -> None:
    dead, live = Owner(AGENT_DIR), Owner(AGENT_DIR)
    owners += [dead, live]
    dead.kill()
    async with Mesh() as mesh:
        agent = await mesh.sidecar("default", "sweeper")
        work = agent.work_dir
        assert (work / OWNER_FILE).read_text().split()[0] == str(os.getpid())
        assert not dead.path.exists() and live.path.is_dir()
    assert not work.exists()                           # a clean stop still removes its own
