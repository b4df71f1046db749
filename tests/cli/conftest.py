"""Fixtures for the CLI tests: the real ControlPlane in-process, a fake of the debug API (see cli_helpers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import FakeApi, LoopThread, RealControlPlane, start_site


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
def control_plane(tmp_path: Path) -> Iterator[RealControlPlane]:
    """The real :class:`mizzen.controlplane.server.ControlPlane`, in memory, HTTP + xDS on ephemeral ports."""
    from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions

    lt = LoopThread()
    opts = ControlPlaneOptions(xds_host="127.0.91.1", xds_port=0, http_host="127.0.91.1", http_port=0,
                               debounce_quiet_s=0.01, debounce_max_s=0.05)

    async def start() -> Any:
        cp = ControlPlane(opts)
        await cp.start()
        return cp

    cp = lt.call(start())
    try:
        yield RealControlPlane(cp.http_url, cp, lt)
    finally:
        lt.call(cp.stop())
        lt.close()


