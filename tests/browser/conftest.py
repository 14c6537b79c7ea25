"""One Chromium per browser worker, shared by its tests (Playwright's sync API allows one per
thread); workers beyond the first ``BROWSER_TEST_BESIDE`` start when `make test`'s pytest
stage has ended (see gate.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from .gate import wait_for_pytest_stage, worker_number

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


@pytest.fixture(scope="session", autouse=True)
def _start_when_the_cores_are_free() -> None:
    """Workers beyond the first ``BROWSER_TEST_BESIDE`` (default 1) start once the pytest
    stage ended."""
    if worker_number() >= int(os.environ.get("BROWSER_TEST_BESIDE", "1")):
        wait_for_pytest_stage(f"browser worker {worker_number()} waits for free cores")


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
