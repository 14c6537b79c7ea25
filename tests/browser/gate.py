"""The browser stage of `make test` starts beside the pytest stage (tests/run_all.sh).

The pytest stage mostly waits on model time (its two workers kept the two cores about 40%
busy here), so the first browser worker runs notebooks in JupyterLab beside it; the other
workers, and the site pages (built from the notebooks the pytest stage executes), wait until
the pytest stage has ended. ``BROWSER_TEST_AFTER`` names the file `make test` creates then;
``BROWSER_TEST_BESIDE`` is how many browser workers start at once (default 1). Without
``BROWSER_TEST_AFTER`` (running tests/browser on its own) nothing waits.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

GATE_TIMEOUT_S = 1800.0
"""The longest a browser worker waits for the pytest stage (its budget is 900 s, more on a
slow machine)."""


def wait_for_pytest_stage(why: str) -> None:
    """Block until the pytest stage of `make test` has ended (``BROWSER_TEST_AFTER`` exists);
    fail with a clear message after :data:`GATE_TIMEOUT_S`."""
    gate = os.environ.get("BROWSER_TEST_AFTER")
    if not gate:
        return
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{why}, but the pytest stage did not end within {GATE_TIMEOUT_S:.0f} s "
                        f"({gate} was never created)", pytrace=False)
        time.sleep(1.0)


def worker_number() -> int:
    """This pytest-xdist worker's number (0 without xdist)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker[2:].isdigit() else 0
