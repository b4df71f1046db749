"""End-to-end scenario tests: the ``mesh`` fixture (a started harness.Mesh) for every test here."""

from harness import mesh

__all__ = ["mesh"]
