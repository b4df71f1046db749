"""Private files and directories for key material: mode 0600 (dirs 0700), written atomically.

A file is written by :func:`mizzen.atomicfile.write_atomic` (a private temp file in the same directory,
fsynced and renamed over the target), so a reader sees the old or the new content, never a mix; a directory
of files (a CA's key and certificate) is built as a temp directory and renamed into place, so the set
appears at once or not at all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from mizzen.atomicfile import fsync_dir, write_atomic

__all__ = ["publish_private_dir", "write_private_file"]


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600 from the first byte, in a 0700 directory."""
    write_atomic(path, data, dir_mode=0o700)


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
    fsync_dir(target.parent)
    return True
