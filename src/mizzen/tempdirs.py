"""Temp directories owned by a process (an agent's work dir, the CA's scratch dir), and the sweep of those
whose owner is gone.

A process killed with SIGKILL cannot remove its temp dirs. So :func:`owned_tempdir` marks each one it makes
with its owner (a ``.mizzen-owner`` file: the pid; the process's start time, which tells a reused pid from
the owner; its pid namespace, so a marker from another one is never judged) and first sweeps the dirs of the
same prefix whose owner no longer runs. Only dirs of this user with a marker are ever removed: one of a live
process (a running demo next to a test), one being created (no marker yet) or one from before markers
existed is left alone.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from mizzen.atomicfile import write_atomic

__all__ = ["OWNER_FILE", "owned_tempdir", "sweep_stale"]

log = logging.getLogger(__name__)

OWNER_FILE = ".mizzen-owner"


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat field 22), or None if none runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()   # the command name may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else None


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return "?"


def _owner_alive(marker: str) -> bool:
    parts = marker.split()
    if len(parts) != 3 or not parts[0].isdigit() or parts[2] != _pid_namespace():
        return True                                    # not ours to judge (another pid namespace): keep
    return _start_time(int(parts[0])) == parts[1]


def sweep_stale(prefix: str, directory: Path | None = None) -> list[Path]:
    """Remove the ``<prefix>*`` dirs in ``directory`` (the temp dir) marked by an owner that is gone."""
    base = Path(directory or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = [e for e in os.scandir(base) if e.name.startswith(prefix)]
    except OSError:
        return removed
    uid = os.getuid()
    for entry in entries:
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != uid:
                continue
            marker = (Path(entry.path) / OWNER_FILE).read_text()
        except OSError:
            continue                                   # no marker (yet): not ours to judge
        if _owner_alive(marker):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    if removed:
        log.info("removed %d temp dirs %s* left by processes that are gone", len(removed), prefix)
    return removed


def owned_tempdir(prefix: str) -> Path:
    """A new private (0700) temp dir ``<prefix>XXXX`` marked as this process's, after sweeping the stale
    ones of the same prefix."""
    sweep_stale(prefix)
    path = Path(tempfile.mkdtemp(prefix=prefix))
    me = _start_time(os.getpid())
    if me is not None:
        write_atomic(path / OWNER_FILE, f"{os.getpid()} {me} {_pid_namespace()}\n".encode(), sync=False)
    return path
