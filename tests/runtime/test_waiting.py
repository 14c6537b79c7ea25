"""labsupport.runtime.waiting: one wait-until-deadline helper."""
from __future__ import annotations

import time

import pytest

from labsupport.runtime.errors import LabError
from labsupport.runtime.waiting import wait_until


def test_returns_the_first_true_answer():
    answers = iter([0, None, "", [1]])
    assert wait_until(lambda: next(answers), timeout=1, interval=0.001) == [1]


def test_gives_up_on_time_and_names_what_it_waited_for():
    start = time.monotonic()
    assert wait_until(lambda: 0, timeout=0.05, interval=0.01) == 0
    assert time.monotonic() - start < 0.5
    with pytest.raises(LabError, match="the consumer to catch up"):
        wait_until(lambda: False, timeout=0.02, what="the consumer to catch up")


def test_bad_parameters_are_named():
    with pytest.raises(LabError):
        wait_until(lambda: True, timeout=-1)
