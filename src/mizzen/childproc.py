"""Child processes that must not outlive the process that started them (Envoy under its agent, containers
under the runner, the control plane under the demo's supervisor).

Linux's ``PR_SET_PDEATHSIG`` kills the child when its parent dies. It is set by ``setpriv --pdeathsig``
(util-linux) just before it execs the real command, not by a Python ``preexec_fn``: running Python code
between ``fork`` and ``exec`` in a process that has other threads (gRPC's) is unsafe - a lock held by another
thread at fork time stays locked forever in the child, and a child once crashed there with a segmentation
fault.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import shutil
import sys
from collections.abc import Mapping, Sequence

__all__ = ["signal_group", "tied_to_parent"]

log = logging.getLogger(__name__)


@functools.cache
def _setpriv() -> str | None:
    if not sys.platform.startswith("linux"):
        return None
    path = shutil.which("setpriv")
    if path is None:
        log.warning("setpriv (util-linux) not found: child processes will not die with their parent")
    return path


def _check_executable(program: str, env: Mapping[str, str] | None) -> None:
    """Raise the OSError exec would raise for ``program`` (setpriv would only exit non-zero), so a command
    that cannot run still fails at spawn with its reason."""
    if "/" in program:
        if not os.path.exists(program):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if os.path.isdir(program) or not os.access(program, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
        return
    path = (env if env is not None else os.environ).get("PATH", os.defpath)
    if shutil.which(program, path=path) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def tied_to_parent(argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """``argv`` run so that the kernel sends it SIGKILL when the process starting it dies. Raises the
    OSError exec would (``env``: the child's environment, for its PATH) when the program cannot run."""
    if not argv:
        raise ValueError("tied_to_parent needs a command")
    setpriv = _setpriv()
    if setpriv is None:
        return list(argv)
    _check_executable(argv[0], env)
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group ``pid`` leads (gone or not ours: nothing)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
