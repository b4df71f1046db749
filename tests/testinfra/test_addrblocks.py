"""The test processes' loopback address blocks (tests/addrblocks.py): a block another live process claimed is
never handed out, and it is free again once that process exits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import addrblocks

TESTS = Path(__file__).resolve().parents[1]
A, FIRST = 249, 1 + os.getpid() % 120 * 2   # two blocks of 127.249 (another test process: most likely others)
# a child process claims one of the two and holds it until its stdin closes
CHILD = ("import sys; sys.path.insert(0, sys.argv[1]); import addrblocks; "
         "print(addrblocks.claim(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[3]) + 1), flush=True); "
         "sys.stdin.read()")


def test_a_block_held_by_another_process_is_not_handed_out() -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(TESTS), str(A), str(FIRST)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        theirs = int(child.stdout.readline())
        ours = addrblocks.claim(A, FIRST, FIRST + 1)
        assert {theirs, ours} == {FIRST, FIRST + 1}
        with pytest.raises(RuntimeError, match=rf"127\.{A}\.{FIRST}-{FIRST + 1}\.0/24 is claimed"):
            addrblocks.claim(A, FIRST, FIRST + 1)   # both taken: one by each process
        child.stdin.close()
        assert child.wait(timeout=10) == 0
        assert addrblocks.claim(A, FIRST, FIRST + 1) == theirs   # its claim ended with it
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
