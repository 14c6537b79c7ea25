"""One Chromium per browser worker, shared by the notebook and site-page tests (Playwright's
sync API runs one event loop per thread, so a second ``sync_playwright()`` in the same worker
fails)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("BROWSER_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(
                f"{CHROMIUM} is missing, but CI is set: the CI image must install "
                "Debian's chromium package (apt-get install chromium)",
                pytrace=False,
            )
        pytest.skip(f"{CHROMIUM} not found (install Debian's chromium to run browser tests)")
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    pw = sync_api.sync_playwright().start()
    try:
        browser = pw.chromium.launch(
            executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS
        )
    except BaseException:
        pw.stop()
        raise
    yield browser
    browser.close()
    pw.stop()
