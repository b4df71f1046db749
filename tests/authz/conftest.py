"""Authorization tests: the ``mesh`` fixture (a started harness.Mesh) and, for the translation tests, the
listener test kit of tests/core (configs, proxies, push contexts, ``envoy --mode validate``)."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import mesh
from mizzen.core import plugins
from mizzen.security.authz import AuthzPlugin, register

sys.path.append(str(Path(__file__).resolve().parents[1] / "core"))

__all__ = ["authz_plugin", "mesh"]


@pytest.fixture(autouse=True)
def authz_plugin() -> Iterator[None]:
    """The listener plugin as the control plane registers it; removed again after the test when it was not
    registered before (so pure tests elsewhere see the plugin list they expect)."""
    had = any(p.name == AuthzPlugin.name for p in plugins.PLUGINS)
    register()
    yield
    if not had:
        plugins.unregister(AuthzPlugin.name)
