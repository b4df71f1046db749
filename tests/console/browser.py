"""Real Chromium for the console's browser tests: Debian's ``chromium`` driven by Playwright (its own browser
downloads are never used), headless, one fresh context per test; screenshots kept under
``$MIZZEN_TEST_ARTIFACTS`` (default ``test-artifacts/`` in the repo) as test artefacts."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None,
                                    reason="needs Debian's chromium (./run test installs it as root)")
ARTIFACTS = Path(os.environ.get("MIZZEN_TEST_ARTIFACTS")
                 or Path(__file__).resolve().parents[2] / "test-artifacts")


@asynccontextmanager
async def browser_page() -> AsyncIterator[Any]:
    """A new page in a fresh headless Chromium context (no proxy: the demo sets $HTTP_PROXY for apps)."""
    from playwright.async_api import async_playwright

    assert CHROMIUM is not None
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=["--no-sandbox", "--no-proxy-server", "--disable-gpu"])
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 1000})
            page = await context.new_page()
            page.set_default_timeout(20_000)
            yield page
        finally:
            await browser.close()


async def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"console-{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
