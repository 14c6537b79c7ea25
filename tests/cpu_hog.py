"""A busy process pinned to one core, the way learners' machines really are.

`python tests/cpu_hog.py SECONDS` spins until SECONDS have passed (it always stops by itself)
or until it is killed. `make test-hog` (LAB_CPU_HOG=1 in run_all.sh) runs the pytest and browser
stages beside it: every notebook must keep its verdicts while one of the machine's cores is taken.
"""
from __future__ import annotations

import os
import sys
import time


def spin(seconds: float) -> int:
    """Burn one core for ``seconds``; return how many loops ran."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    end = time.monotonic() + seconds
    loops = 0
    while time.monotonic() < end:
        for _ in range(10_000):
            loops += 1
    return loops


if __name__ == "__main__":
    spin(float(sys.argv[1]) if len(sys.argv) > 1 else 60.0)
