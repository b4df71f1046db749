"""Loopback address blocks for test processes: a block is one 127.<a>.<x>.0/24, claimed with an exclusive
lock file, so pytest processes running at once on one machine (two engineers, a helper and CI) never hand out
the same addresses. A claim lasts until the process exits (the kernel drops its flock locks however it ends).

The first block a process tries is derived from its pid, so concurrent processes rarely even contend.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from typing import IO

__all__ = ["claim"]

LOCK_DIR = Path(tempfile.gettempdir()) / "mizzen-test-address-blocks"
_held: dict[tuple[int, int], IO[str]] = {}   # (a, x) -> its open, locked file: kept open while we live


def claim(a: int, first: int = 1, last: int = 250) -> int:
    """A block 127.<a>.<x>.0/24 no other live process holds, ``first <= x <= last``; returns ``x``. Each
    call claims a new block."""
    LOCK_DIR.mkdir(exist_ok=True)
    span = last - first + 1
    start = os.getpid() % span
    for i in range(span):
        x = first + (start + i) % span
        if (a, x) in _held:
            continue
        f = open(LOCK_DIR / f"127.{a}.{x}.lock", "a")   # noqa: SIM115 (held open: the lock is the claim)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        _held[(a, x)] = f
        return x
    raise RuntimeError(f"every block 127.{a}.{first}-{last}.0/24 is claimed (by this or other processes)")
