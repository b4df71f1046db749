"""Fixtures for the analyzer tests: the real ControlPlane in-process (HTTP + xDS on 127.0.94.1, ephemeral
ports), driven from a background event loop like the CLI tests do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.cli_helpers import LoopThread, RealControlPlane


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[RealControlPlane]:
    from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions

    lt = LoopThread()
    opts = ControlPlaneOptions(xds_host="127.0.94.1", xds_port=0, http_host="127.0.94.1", http_port=0,
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
