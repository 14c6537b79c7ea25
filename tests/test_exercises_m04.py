"""Module 04's question: the worked Breaker passes; each plausible wrong breaker fails with
its own message. The checker runs on a fake clock, so these tests never sleep."""
from __future__ import annotations

import asyncio
import time

import pytest

from labsupport.breakers import BreakerOpen
from labsupport.exercises import declared_questions
from labsupport.exercises.m04 import FakeClock, q1
from labsupport.exercises_build import solution_source

pytestmark = pytest.mark.usefixtures("isolated_progress")


def verdict(answer, capsys) -> tuple[bool, str]:
    ok = q1.check(answer)
    return ok, capsys.readouterr().out.strip()


def solution_class() -> type:
    namespace: dict = {}
    exec(q1._solution, namespace)  # the text learners are shown by q1.solution()
    return namespace["Breaker"]


def make_breaker(mistake: str | None = None) -> type:
    """A breaker written independently of the solution, with one ``mistake`` switched on."""

    class Wrong:
        def __init__(self, fail_max=5, reset_timeout=60.0, clock=time.monotonic):
            self.fail_max, self.reset_timeout, self.clock = fail_max, reset_timeout, clock
            self.state, self.failures, self.opened_at = "closed", 0, 0.0
            self.trial, self.listeners = False, []

        def add_listener(self, listener):
            self.listeners.append(listener)

        def _become(self, new):
            if mistake == "late news" and new == "half-open":
                self.state = new                  # silently...
                return
            if mistake == "late news" and self.state == "half-open":
                for listener in self.listeners:   # ...announced only after the trial
                    listener("open", "half-open")
            old, self.state = self.state, new
            if new == "open":
                self.opened_at = self.clock()
            if new == "closed":
                self.failures = 0
            for listener in self.listeners:
                if mistake == "listener new-old":
                    listener(new, old)
                else:
                    listener(old, new)

        async def call(self, fn):
            if self.state == "open":
                if mistake == "calls while open":
                    await fn()
                    raise BreakerOpen("open")
                if mistake == "never half-open" or \
                        self.clock() - self.opened_at < self.reset_timeout:
                    raise BreakerOpen("open")
                if mistake == "closes without trial":
                    self._become("closed")
                else:
                    self._become("half-open")
            if self.state == "half-open":
                if self.trial and mistake != "many trials":
                    raise BreakerOpen("trial in flight")
                self.trial = True
                try:
                    result = await fn()
                except Exception:
                    self.trial = False
                    self._become("open")
                    raise
                finally:
                    if mistake != "flag kept on cancel":  # the flag cleared only on errors
                        self.trial = False
                self.trial = False
                self._become("closed")
                return result
            try:
                result = await fn()
            except Exception:
                self.failures += 1
                limit = {"one too late": self.fail_max + 1,
                         "one too early": self.fail_max - 1}.get(mistake, self.fail_max)
                if self.failures >= limit and self.state == "closed":
                    self._become("open")
                raise
            if mistake != "success keeps count":
                self.failures = 0
            return result

    return Wrong


def test_the_module_declares_q1():
    assert declared_questions()["04"] == ["q1"]
    assert q1.name == "Breaker" and len(q1.hints) == 3
    assert "class Breaker" in solution_source("04", "Breaker")
    assert "BEGIN SOLUTION" not in q1._solution


def test_the_worked_solution_passes(capsys):
    ok, out = verdict(solution_class(), capsys)
    assert ok, out
    assert out.startswith("Correct:")


def test_an_independent_correct_breaker_passes(capsys):
    ok, out = verdict(make_breaker(None), capsys)
    assert ok, out


@pytest.mark.parametrize("mistake, message", [
    ("one too late", "it opened one failure later: use >=, not >"),
    ("one too early", "opened after 2 failures with fail_max=3: one too early"),
    ("success keeps count", "a success must reset the count of consecutive failures"),
    ("calls while open", "your breaker called the function while open"),
    ("never half-open", "it never goes half-open, so it stays open forever"),
    ("closes without trial", "during the trial call the state was 'closed'"),
    ("many trials", "10 of them reached fn: only one trial may be in flight"),
    ("listener new-old", "listener(new, old); the order is listener(old_state, new_state)"),
    ("late news", "the trial call ran before your listeners heard"),
    ("flag kept on cancel", "clear the trial flag in a `finally:` block"),
])
def test_each_wrong_breaker_gets_its_own_message(mistake, message, capsys):
    ok, out = verdict(make_breaker(mistake), capsys)
    assert not ok and out.startswith("Not yet:"), out
    assert message in out, out


def test_messages_are_distinct():
    """No two mistakes share an explanation: each message names its own bug."""
    outs = set()
    for mistake in ("one too late", "one too early", "success keeps count", "calls while open",
                    "never half-open", "closes without trial", "many trials",
                    "listener new-old", "late news", "flag kept on cancel"):
        q1_status = q1._evaluate(make_breaker(mistake))
        outs.add(q1_status[1])
    assert len(outs) == 10


def test_a_breaker_that_serialises_closed_traffic_is_rejected(capsys):
    class Serialising(make_breaker(None)):
        _lock: asyncio.Lock | None = None

        async def call(self, fn):
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                return await super().call(fn)

    ok, out = verdict(Serialising, capsys)
    assert not ok and "must not serialise traffic" in out, out


def test_a_failing_call_that_is_swallowed_is_rejected(capsys):
    class Swallow(make_breaker(None)):
        async def call(self, fn):
            try:
                return await super().call(fn)
            except BreakerOpen:
                raise
            except Exception:
                return None

    ok, out = verdict(Swallow, capsys)
    assert not ok and "re-raise the exception" in out, out


def test_refusing_with_another_exception_names_breaker_open(capsys):
    class Other(make_breaker(None)):
        async def call(self, fn):
            try:
                return await super().call(fn)
            except BreakerOpen:
                raise RuntimeError("circuit open") from None

    ok, out = verdict(Other, capsys)
    assert not ok and "raise BreakerOpen" in out, out


def test_a_breaker_that_hangs_is_reported_as_stuck(capsys, monkeypatch):
    from labsupport.exercises import m04

    monkeypatch.setattr(m04, "SCENARIO_TIMEOUT_S", 0.3)

    class Stuck(make_breaker(None)):
        async def call(self, fn):
            await asyncio.Event().wait()

    ok, out = verdict(Stuck, capsys)
    assert not ok and "never returned" in out, out


def test_the_exercise_placeholder_counts_as_not_attempted(capsys):
    class Placeholder(make_breaker(None)):
        async def call(self, fn):
            raise NotImplementedError("Your turn")

    ok, out = verdict(Placeholder, capsys)
    assert not ok and out.startswith("Not attempted yet"), out


def test_not_a_class_and_not_async(capsys):
    ok, out = verdict(lambda: None, capsys)
    assert not ok and "should be a class" in out

    class Sync:
        def call(self, fn):
            return fn()

        def add_listener(self, listener):
            pass

    ok, out = verdict(Sync, capsys)
    assert not ok and "must be an async method" in out


def test_the_fake_clock_moves_only_by_hand():
    clock = FakeClock()
    start = clock()
    clock.advance(2.5)
    assert clock() == start + 2.5
