"""Child processes that must not outlive the process that started them (Envoy under its agent, containers
under the runner, the control plane under the demo's supervisor).

Linux's ``PR_SET_PDEATHSIG`` kills the child when its parent dies. It is set by ``setpriv --pdeathsig``
(util-linux) just before it execs the real command, not by a Python ``preexec_fn``: running Python code
between ``fork`` and ``exec`` in a process that has other threads (gRPC's) is unsafe - a lock held by another
thread at fork time stays locked forever in the child, and a child once crashed there with a segmentation
fault.
"""

from __future__ import annotations

import functools
import logging
import shutil
import sys
from collections.abc import Sequence

__all__ = ["tied_to_parent"]

log = logging.getLogger(__name__)


@functools.cache
def _setpriv() -> str | None:
    if not sys.platform.startswith("linux"):
        return None
    path = shutil.which("setpriv")
    if path is None:
        log.warning("setpriv (util-linux) not found: child processes will not die with their parent")
    return path


def tied_to_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` run so that the kernel sends it SIGKILL when the process starting it dies."""
    setpriv = _setpriv()
    if setpriv is None:
        return list(argv)
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]
