"""Browser workers beyond the first ``BROWSER_TEST_BESIDE`` start when `make test`'s pytest
stage has ended (see gate.py)."""
from __future__ import annotations

import os

import pytest

from .gate import wait_for_pytest_stage, worker_number


@pytest.fixture(scope="session", autouse=True)
def _start_when_the_cores_are_free() -> None:
    """Workers beyond the first ``BROWSER_TEST_BESIDE`` (default 1) start once the pytest
    stage ended."""
    if worker_number() >= int(os.environ.get("BROWSER_TEST_BESIDE", "1")):
        wait_for_pytest_stage(f"browser worker {worker_number()} waits for free cores")
