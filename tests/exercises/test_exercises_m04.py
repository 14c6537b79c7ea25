"""Module 04's questions: the worked answers pass; each plausible wrong answer fails with
its own message. The checkers run on fake clocks, so these tests never sleep."""
from __future__ import annotations

import asyncio
import time

import pytest

from labsupport.course.exercises_build import solution_source
from labsupport.exercises import declared_questions
from labsupport.exercises.m04 import FakeClock, q1, q2, q3
from labsupport.lessons.m04_circuit_breakers.breakers import BreakerOpen

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


def test_the_module_declares_three_questions():
    assert declared_questions()["04"] == ["q1", "q2", "q3"]
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



# ----- q2: seconds until a 3-in-a-row breaker opens at 60% random failures ----------------------
def solution_value(question, name: str):
    namespace: dict = {}
    exec(question._solution, namespace)
    return namespace[name]


def check(question, answer, capsys) -> tuple[bool, str]:
    ok = question.check(answer)
    return ok, capsys.readouterr().out.strip()


def markov_seconds(p: float, k: int, rate: float) -> float:
    """Another method: E[i] = 1 + p·E[i+1] + (1-p)·E[0], E[k] = 0, solved by iteration."""
    e = [0.0] * (k + 1)
    for _ in range(5000):
        e = [1 + p * e[i + 1] + (1 - p) * e[0] for i in range(k)] + [0.0]
    return e[0] / rate


def test_q2_the_worked_solution_passes(capsys):
    ok, out = check(q2, solution_value(q2, "seconds_until_open"), capsys)
    assert ok and out.startswith("Correct:"), out
    assert "9.07 calls" in out


def test_q2_a_markov_chain_and_a_pybreaker_simulation_pass_too(capsys):
    from labsupport.lessons.m04_circuit_breakers.breakers import calls_until_open

    assert check(q2, markov_seconds(0.6, 3, 10), capsys)[0]
    for seed in (1, 2, 3):
        counts = calls_until_open(0.6, 3, runs=2000, seed=seed)
        ok, out = check(q2, sum(counts) / len(counts) / 10, capsys)
        assert ok, out


Q2_WRONG = [
    (9.074, "that is the number of CALLS"),
    (90.7, "you multiplied the calls by the rate"),
    (0.3, "the time to open when EVERY call fails"),
    (0.216, "the chance that a given call ends a run"),
    (1 / 0.216 / 10, "as if each call started a fresh"),
    (3 / 0.6 / 10, "not k in a row"),
    ((1 - 0.216) / 0.216 / 10, "without the 1 / (1 − p)"),
    (1 / (0.4 * 0.216) / 10, "without the (1 − p^k) on top"),
    (markov_seconds(0.4, 3, 10), "the chance of a SUCCESS, as p"),
]


@pytest.mark.parametrize("answer, message", Q2_WRONG)
def test_q2_each_classic_wrong_answer_gets_its_own_message(answer, message, capsys):
    ok, out = check(q2, answer, capsys)
    assert not ok and out.startswith("Not yet:"), out
    assert message in out, out


def test_q2_messages_are_distinct_and_unexplained_answers_get_a_direction():
    messages = {q2._evaluate(answer)[1] for answer, _ in Q2_WRONG}
    assert len(messages) == len(Q2_WRONG)
    assert "too high" in q2._evaluate(1.5)[1]
    assert "too low" in q2._evaluate(0.7)[1]


def test_q2_not_attempted_and_bad_types(capsys):
    ok, out = check(q2, None, capsys)
    assert not ok and out.startswith("Not attempted yet") and "seconds_until_open" in out
    for bad in ("0.9", True, [0.9]):
        ok, out = check(q2, bad, capsys)
        assert not ok and "should be a number (in s)" in out, out


# ----- q3: six breakers' logs -------------------------------------------------------------------
def test_q3_the_worked_solution_passes(capsys):
    answer = solution_value(q3, "breaker_diagnosis")
    ok, out = check(q3, answer, capsys)
    assert ok and out.startswith("Correct:"), out


def read_the_log(log) -> str:
    """Classify a log from what its run shows, the way a learner reads it (not from how
    the breaker was built): the logs must be ground truth that tells the mistakes apart."""
    first = log.first_open()
    if first is None:
        return "healthy"
    _, streak, _ = first
    if streak == 1 and log.longest_streak() < 4:
        return "trips_on_one" if first[2] == 1 else "count_never_resets"
    if not log.trials():
        return "stuck_open"
    return "no_trial_gate" if log.most_through_half_open() > 1 else "healthy"


def test_q3_each_log_shows_its_mistake_in_the_run_itself():
    from labsupport.exercises.m04 import BREAKER_LOGS

    for log in BREAKER_LOGS.values():
        assert read_the_log(log.run()) == log.mistake, log.text()
    healthy = [log for log in BREAKER_LOGS.values() if log.mistake == "healthy"]
    assert {log.dependency for log in healthy} == {"outage", "flaky"}


def test_q3_the_logs_come_from_pybreaker_on_a_model_clock():
    import pybreaker

    from labsupport.exercises.m04 import BREAKER_LOGS, BreakerLog

    clock = FakeClock()
    built = BREAKER_LOGS["E"].build(clock)
    assert isinstance(built.breaker, pybreaker.CircuitBreaker)
    again = BreakerLog("E2", "outage", "healthy").run()   # a fresh run prints the same log
    assert again.text().replace("log E2", "log E") == BREAKER_LOGS["E"].text()
    # the control arm: the same outage without the mistake closes again; stuck-open never does
    assert BREAKER_LOGS["E"].changes[-1][2] == "closed"
    assert BREAKER_LOGS["C"].changes[-1][2] == "open"
    assert BREAKER_LOGS["C"].refused() > BREAKER_LOGS["E"].refused()


RIGHT = {"A": "no_trial_gate", "B": "healthy", "C": "stuck_open", "D": "count_never_resets",
         "E": "healthy", "F": "trips_on_one"}


@pytest.mark.parametrize("change, message", [
    ({"D": "trips_on_one", "F": "count_never_resets"},
     "count the failures between the last 'ok' before the opening"),
    ({"A": "healthy"}, "how many calls were NOT refused?"),
    ({"C": "healthy"}, "Look at the calls after the dependency came back (5 s)"),
    ({"E": "no_trial_gate"}, "log E first opened at 1.70 s after 4 failures in a row"),
    ({"B": "count_never_resets"}, "log B never opened (5 failures, at most 1 in a row)"),
    ({"C": "no_trial_gate"}, "never went half-open"),
    ({"A": "stuck_open"}, "went half-open twice, and let up to 2 calls"),
])
def test_q3_each_confusion_gets_its_own_message(change, message, capsys):
    ok, out = check(q3, {**RIGHT, **change}, capsys)
    assert not ok and out.startswith("Not yet:"), out
    assert message in out, out


def test_q3_messages_name_the_log_and_count_the_others(capsys):
    everything_healthy = {name: "healthy" for name in RIGHT}
    ok, out = check(q3, everything_healthy, capsys)
    assert not ok and "log A: you said 'healthy'" in out and "3 other logs also wrong" in out
    from labsupport.exercises.m04 import DIAGNOSES

    pairs = [(name, other) for name in RIGHT for other in DIAGNOSES if other != RIGHT[name]]
    messages = {q3._evaluate({**RIGHT, name: other})[1] for name, other in pairs}
    assert len(messages) == len(pairs) == 24   # every (log, wrong diagnosis) has its own


def test_q3_not_attempted_and_bad_shapes(capsys):
    ok, out = check(q3, None, capsys)
    assert not ok and out.startswith("Not attempted yet") and "breaker_diagnosis" in out
    ok, out = check(q3, list(RIGHT.values()), capsys)
    assert not ok and "should be a dict" in out and "got list" in out, out
    ok, out = check(q3, {k: v for k, v in RIGHT.items() if k != "F"}, capsys)
    assert not ok and "missing: F" in out, out
    ok, out = check(q3, {**RIGHT, "G": "healthy"}, capsys)
    assert not ok and "not a log: 'G'" in out, out
    ok, out = check(q3, {**RIGHT, "B": "fine"}, capsys)
    assert not ok and "log B: 'fine' is not one of the diagnoses" in out, out
    ok, out = check(q3, {**RIGHT, "C": ["stuck_open"]}, capsys)
    assert not ok and "log C: ['stuck_open'] is not one of the diagnoses" in out, out
    ok, out = check(q3, {k.lower(): v for k, v in RIGHT.items()}, capsys)
    assert ok, out   # "a" for "A" is fine
