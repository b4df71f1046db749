"""Authorization tests: the ``mesh`` fixture (a started harness.Mesh)."""

from harness import mesh

__all__ = ["mesh"]
