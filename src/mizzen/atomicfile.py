"""Files written atomically: a reader (or a restart after a crash) sees the old content or the new, never a
mix or a partial file. The one way the code base does it (state files, key material, the API token).

The data goes to a private temp file in the target's directory (``.<name>.<random>.tmp``, mode 0600 from
the first byte), is fsynced, then renamed over the target (or, with ``replace=False``, linked into place
only if the target does not exist yet, so concurrent starters agree on one file), and the directory is
fsynced. It has no other dependency so that every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["fsync_dir", "write_atomic"]


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (best effort: some filesystems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, data: bytes, *, sync: bool = True, replace: bool = True,
                 dir_mode: int = 0o777, before_rename: Callable[[], None] | None = None) -> bool:
    """Write ``data`` to ``path`` (mode 0600). ``sync=False``: the caller syncs (nothing is fsynced);
    ``replace=False``: only create, returning False (and writing nothing) when ``path`` already exists;
    ``dir_mode``: of the parent directories created; ``before_rename``: called between the written temp
    file and the rename (a test's crash point). Returns True when ``path`` now holds ``data``."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        if before_rename is not None:
            before_rename()
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync:
        fsync_dir(path.parent)
    return True
