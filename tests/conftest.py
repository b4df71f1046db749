"""Suite-wide isolation: the CLI's contexts (``mizzen config set-context``) live in the user's state dir;
every test (and every ``mizzen`` subprocess it starts) uses an empty config of its own instead, so a default
namespace the user chose cannot change what a test sees."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


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
