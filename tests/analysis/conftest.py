"""Fixtures for the analyzer tests: the real ControlPlane in-process (HTTP + xDS on 127.0.94.1, ephemeral
ports), driven from a background event loop like the CLI tests do."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cli.cli_helpers import RealControlPlane, running_control_plane


@pytest.fixture
def control_plane() -> Iterator[RealControlPlane]:
    """The real ControlPlane in-process on 127.0.94.1 (see cli_helpers.running_control_plane)."""
    with running_control_plane("127.0.94.1") as cp:
        yield cp
