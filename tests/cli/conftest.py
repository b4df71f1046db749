"""Fixtures for the CLI tests: the real ControlPlane in-process, a fake of the debug API (see cli_helpers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cli_helpers import FakeApi, LoopThread, RealControlPlane, running_control_plane, start_site


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    lt = LoopThread()
    api = FakeApi()
    runner, api.url = lt.call(start_site(api.app(), "127.0.91.2"))
    try:
        yield api
    finally:
        lt.call(runner.cleanup())
        lt.close()


@pytest.fixture
def control_plane() -> Iterator[RealControlPlane]:
    """The real ControlPlane in-process on 127.0.91.1 (see cli_helpers.running_control_plane)."""
    with running_control_plane("127.0.91.1") as cp:
        yield cp
