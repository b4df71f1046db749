"""Loopback address blocks for test processes: a block is one 127.<a>.<x>.0/24, claimed by binding an abstract
Unix socket named after it, so pytest processes running at once on one machine (two engineers, a helper and
CI) never hand out the same addresses. Only one process can bind a name; the kernel frees it when that process
exits, however it ends, and nothing is left on disk.

The first block a process tries is derived from its pid, so concurrent processes rarely even contend.
"""

from __future__ import annotations

import os
import socket

__all__ = ["claim"]

_held: dict[tuple[int, int], socket.socket] = {}   # (a, x) -> its bound socket: kept open while we live


def claim(a: int, first: int = 1, last: int = 250) -> int:
    """A block 127.<a>.<x>.0/24 no other live process holds, ``first <= x <= last``; returns ``x``. Each
    call claims a new block."""
    span = last - first + 1
    start = os.getpid() % span
    for i in range(span):
        x = first + (start + i) % span
        if (a, x) in _held:
            continue
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)   # (not inherited by child processes)
        try:
            s.bind(f"\0mizzen-test-address-block-127.{a}.{x}")   # the abstract namespace: no file
        except OSError:
            s.close()
            continue
        _held[(a, x)] = s
        return x
    raise RuntimeError(f"every block 127.{a}.{first}-{last}.0/24 is claimed (by this or other processes)")
