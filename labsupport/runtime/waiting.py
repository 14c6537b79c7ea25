"""Waiting for something to happen, with a deadline: one helper instead of hand-written loops.

>>> import itertools
>>> ticks = itertools.count()
>>> wait_until(lambda: next(ticks) >= 3, timeout=1, interval=0.001)
True
>>> wait_until(lambda: False, timeout=0.01, interval=0.001)
False
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from labsupport.runtime.errors import LabError, require

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, interval: float = 0.02,
               what: str = "") -> T:
    """Call ``condition()`` every ``interval`` wall seconds until it returns something true,
    or ``timeout`` wall seconds pass; return its last answer.

    With ``what`` (e.g. ``"the consumer to catch up"``), running out of time raises a
    :class:`LabError` that names it, instead of returning the false answer.
    """
    require(timeout >= 0 and interval > 0, "timeout must be >= 0 and interval > 0 (seconds).")
    deadline = time.monotonic() + timeout
    while True:
        answer = condition()
        if answer or time.monotonic() >= deadline:
            break
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    if not answer and what:
        raise LabError(f"Gave up waiting for {what} after {timeout:g} s.",
                       "run the cell again; if it keeps happening, run the doctor in 00")
    return answer
