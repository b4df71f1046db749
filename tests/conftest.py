"""Suite-wide settings and isolation. gRPC runs with the control plane's settings
(``mizzen.controlplane.grpcenv``). The CLI's contexts (``mizzen config set-context``) live in the user's
state dir; every test (and every ``mizzen`` subprocess it starts) uses an empty config of its own instead, so
a default namespace the user chose cannot change what a test sees."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mizzen.controlplane import grpcenv

# the control plane process's gRPC settings (iomgr TCP endpoints) for the control planes tests build in
# process too, so the suite runs what `mizzen controlplane` runs; before any test module loads grpc
grpcenv.configure()


@pytest.fixture(autouse=True, scope="session")
def _isolated_cli_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    old = os.environ.get("MIZZEN_CONFIG")
    os.environ["MIZZEN_CONFIG"] = str(tmp_path_factory.mktemp("cli-config") / "cli-config.yaml")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MIZZEN_CONFIG", None)
        else:
            os.environ["MIZZEN_CONFIG"] = old


@pytest.fixture(autouse=True, scope="session")
def _isolated_api_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test (nor a ``mizzen`` it starts) finds the user's own API token (``~/.local/state/mizzen/token``, a
    running demo's) by default: each control plane under test hands its token over explicitly."""
    names = ("MIZZEN_STATE_DIR", "MIZZEN_TOKEN", "MIZZEN_TOKEN_FILE")
    old = {n: os.environ.get(n) for n in names}
    os.environ["MIZZEN_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    os.environ.pop("MIZZEN_TOKEN", None)
    os.environ.pop("MIZZEN_TOKEN_FILE", None)
    try:
        yield
    finally:
        for n, v in old.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


if os.environ.get("MIZZEN_TEST_LOOP") == "uvloop":
    import uvloop

    def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
        """``MIZZEN_TEST_LOOP=uvloop``: every async test runs on uvloop, the control plane's loop in
        production (mizzen.eventloop), instead of asyncio's own."""
        factory: object = uvloop.new_event_loop
        return {"uvloop": factory}
