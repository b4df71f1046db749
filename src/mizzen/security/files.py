"""Private files and directories for key material: mode 0600 (dirs 0700), written atomically.

A file is written to a private temp file in the same directory, fsynced and renamed over the target, so a
reader sees the old or the new content, never a mix; a directory of files (a CA's key and certificate) is
built as a temp directory and renamed into place, so the set appears at once or not at all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["publish_private_dir", "write_private_file"]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600 from the first byte (mkstemp creates 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def publish_private_dir(target: Path, files: Mapping[str, bytes]) -> bool:
    """Create ``target`` (0700) holding ``files`` (each 0600) all at once; False if ``target`` already exists
    (another starter won the race: use its content). The temp dir is removed on any failure."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))  # mkdtemp: 0700
    try:
        for name, data in files.items():
            write_private_file(tmp / name, data)
        try:
            os.rename(tmp, target)        # fails if target exists and is not empty
        except OSError:
            if target.exists():
                return False
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _fsync_dir(target.parent)
    return True
