"""Bookinfo test fixtures (defined in bookinfo_helpers)."""

from bookinfo_helpers import fake_mesh, start_app

__all__ = ["fake_mesh", "start_app"]
