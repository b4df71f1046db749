"""What-if snapshots: stored objects plus candidate ones (an apply, ``analyze -f`` against a control plane),
with creation order as the store would give it: a replaced object keeps its timestamp, a new one is newer
than everything stored, in input order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from mizzen.config.model import Config, ConfigKey, ConfigSnapshot

__all__ = ["merge"]


def merge(stored: Iterable[Config], candidates: Iterable[Config]) -> ConfigSnapshot:
    objects: dict[ConfigKey, Config] = {c.key: c for c in stored}
    newest = max((c.created for c in objects.values()), default=0.0)
    for i, c in enumerate(candidates):
        old = objects.get(c.key)
        created = old.created if old is not None else newest + 1.0 + i * 1e-3
        objects[c.key] = dataclasses.replace(c, created=created)
    return ConfigSnapshot.of(objects.values())
