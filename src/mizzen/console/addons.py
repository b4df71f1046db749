"""Where a running ``mizzen demo`` serves its addons: ``<state dir>/addons.json`` (``{"prometheus": url,
"jaeger": url}``), written when they are up and removed when the demo stops, so ``mizzen dashboard
prometheus|jaeger`` and the console (served by the control plane, which shares the state dir) find them
without another API."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["ADDONS_FILE", "read_addons", "remove_addons", "write_addons"]

ADDONS_FILE = "addons.json"


def write_addons(state_dir: Path, urls: dict[str, str]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".addons.", dir=state_dir)
    with os.fdopen(fd, "w") as fh:
        json.dump(urls, fh, indent=1, sort_keys=True)
    os.replace(tmp, state_dir / ADDONS_FILE)


def read_addons(state_dir: Path) -> dict[str, str]:
    """The running demo's addon URLs ({} when none is running or the file is unreadable)."""
    try:
        data = json.loads((state_dir / ADDONS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def remove_addons(state_dir: Path) -> None:
    (state_dir / ADDONS_FILE).unlink(missing_ok=True)
