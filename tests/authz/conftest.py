"""Authorization tests: the ``mesh`` fixture (a started harness.Mesh) and, for the translation tests, the
listener test kit of tests/core (configs, proxies, push contexts, ``envoy --mode validate``)."""

import sys
from pathlib import Path

from harness import mesh

sys.path.append(str(Path(__file__).resolve().parents[1] / "core"))

__all__ = ["mesh"]
