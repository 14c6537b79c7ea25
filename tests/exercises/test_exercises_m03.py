"""Module 03's questions: each passes with its solution and fails, specifically, on the
wrong answers a learner would plausibly write (all checks are seeded and need no services)."""
from __future__ import annotations

import random

import pytest

from labsupport.exercises import declared_questions
from labsupport.exercises.m03 import q1, q2, q3, window

pytestmark = pytest.mark.usefixtures("isolated_progress")


def solution(question):
    """The worked answer from solutions/03, as the learner is shown it."""
    namespace: dict = {"random": random}
    exec(question._solution, namespace)
    return namespace[question.name]


def verdict(question, answer, capsys) -> tuple[bool, str]:
    ok = question.check(answer)
    return ok, capsys.readouterr().out.strip()


def test_the_module_declares_q1_to_q3():
    assert declared_questions()["03"] == ["q1", "q2", "q3"]
    assert [q.name for q in (q1, q2, q3)] == ["full_jitter_ms", "RetryBudget",
                                               "call_with_retries"]
    assert all(len(q.hints) == 3 and q._solution for q in (q1, q2, q3))


def test_window_counts_retries_from_one():
    assert [window(r) for r in (1, 2, 3, 5, 6, 10)] == [100, 200, 400, 1600, 2000, 2000]


# ----- q1 ----------------------------------------------------------------------------------
def test_q1_solution_passes(capsys):
    ok, out = verdict(q1, solution(q1), capsys)
    assert ok, out


def _global_random(retry, base, cap, rng):
    return random.uniform(0, min(cap, base * 2 ** (retry - 1)))


WRONG_Q1 = {
    "no cap": (lambda r, b, c, rng: rng.uniform(0, b * 2 ** (r - 1)), "there is no cap"),
    "no jitter": (lambda r, b, c, rng: min(c, b * 2 ** (r - 1)), "there is no jitter"),
    "jitter on top": (lambda r, b, c, rng: min(c, b * 2 ** (r - 1)) + rng.uniform(0, b),
                      "you added jitter on top"),
    "off by one": (lambda r, b, c, rng: rng.uniform(0, min(c, b * 2 ** r)), "off by one"),
    "capped the draw": (lambda r, b, c, rng: min(c, rng.uniform(0, b * 2 ** (r - 1))),
                        "capped the result"),
    "equal jitter": (lambda r, b, c, rng: (w := min(c, b * 2 ** (r - 1))) / 2
                     + rng.uniform(0, w / 2), "equal jitter"),
    "global random": (_global_random, "draw with the `rng` you are given"),
    "seconds": (lambda r, b, c, rng: rng.uniform(0, min(c, b * 2 ** (r - 1))) / 1000,
                "that looks like seconds"),
    "triangular": (lambda r, b, c, rng: rng.triangular(0, min(c, b * 2 ** (r - 1))),
                   "Draw uniformly"),
    "no return": (lambda r, b, c, rng: None, "Did you forget `return`?"),
}


@pytest.mark.parametrize("name", sorted(WRONG_Q1))
def test_q1_wrong_answers(name, capsys):
    wrong, message = WRONG_Q1[name]
    ok, out = verdict(q1, wrong, capsys)
    assert not ok and out.startswith("Not yet:") and message in out, out


def test_q1_learner_error_is_reported(capsys):
    def broken(retry, base_ms, cap_ms, rng):
        return rng.uniform(0, cap_ms) / 0

    ok, out = verdict(q1, broken, capsys)
    assert not ok and "ZeroDivisionError" in out


# ----- q2 ----------------------------------------------------------------------------------
def test_q2_solution_passes(capsys):
    ok, out = verdict(q2, solution(q2), capsys)
    assert ok, out


class Budget:
    """A correct budget to derive wrong ones from."""

    def __init__(self, ratio=0.1, max_tokens=10):
        self.ratio, self.max_tokens, self.tokens = ratio, max_tokens, float(max_tokens)

    def on_request(self):
        self.tokens = min(self.max_tokens, self.tokens + self.ratio)

    def can_retry(self):
        if self.tokens >= 1 - 1e-9:
            self.tokens -= 1
            return True
        return False


class NeverRefills(Budget):
    def on_request(self):
        pass


class NoCap(Budget):
    def on_request(self):
        self.tokens += self.ratio


class StartsEmpty(Budget):
    def __init__(self, ratio=0.1, max_tokens=10):
        super().__init__(ratio, max_tokens)
        self.tokens = 0.0


class Unlimited(Budget):
    def can_retry(self):
        return True


class WholeToken(Budget):
    def on_request(self):
        self.tokens = min(self.max_tokens, self.tokens + 1)


class HardCodedRatio(Budget):
    def on_request(self):
        self.tokens = min(self.max_tokens, self.tokens + 0.1)


class TooGenerous(Budget):
    """Lets retries through at 0.1 tokens: more than 10% once the reserve is gone."""

    def can_retry(self):
        if self.tokens > 0:
            self.tokens -= 0.5
            return True
        return False


@pytest.mark.parametrize("wrong, message", [
    (NeverRefills, "the budget never refills"),
    (NoCap, "it saves without a limit"),
    (StartsEmpty, "start with a full reserve"),
    (Unlimited, "it never says no"),
    (WholeToken, "not a whole one"),
    (HardCodedRatio, "not 0.1 written into the code"),
    (TooGenerous, "allowed 20 retries"),
])
def test_q2_wrong_answers(wrong, message, capsys):
    ok, out = verdict(q2, wrong, capsys)
    assert not ok and out.startswith("Not yet:") and message in out, out


def test_q2_storm_limit_catches_a_budget_that_passes_the_simple_scripts(capsys):
    class LeaksInStorms(Budget):
        """Correct in the scripted checks, but every 5th refusal is let through anyway."""

        def __init__(self, ratio=0.1, max_tokens=10):
            super().__init__(ratio, max_tokens)
            self.refusals, self.requests = 0, 0

        def on_request(self):
            self.requests += 1
            super().on_request()

        def can_retry(self):
            if super().can_retry():
                return True
            self.refusals += 1
            return 1000 < self.requests < 5000 and self.refusals % 5 == 0

    ok, out = verdict(q2, LeaksInStorms, capsys)
    assert not ok and "more than 10% of the requests plus the reserve" in out, out


# ----- q3 ----------------------------------------------------------------------------------
def test_q3_solution_passes(capsys):
    ok, out = verdict(q3, solution(q3), capsys)
    assert ok, out


def loop(extra_attempt=False, sleep_last=False, zero_based=False, no_request=False,
         request_each=False, ignore_budget=False, ask_last=False, sleep_first=False):
    """A retry loop with one chosen mistake."""

    def call_with_retries(call, attempts, delay_ms, budget, sleep):
        if not no_request:
            budget.on_request()
        total = attempts + 1 if extra_attempt else attempts
        for attempt in range(1, total + 1):
            if request_each and attempt > 1:
                budget.on_request()
            if call():
                return True
            last = attempt == total
            if last and not (sleep_last or ask_last):
                break
            if sleep_first:
                sleep(delay_ms(attempt - 1 if zero_based else attempt))
            if not ignore_budget and not budget.can_retry():
                return False
            if last:
                if sleep_last:
                    sleep(delay_ms(attempt))
                break
            if not sleep_first:
                sleep(delay_ms(attempt - 1 if zero_based else attempt))
        return False

    return call_with_retries


@pytest.mark.parametrize("wrong, message", [
    (loop(extra_attempt=True), "attempts counts the first try too"),
    (loop(sleep_last=True), "not after the last one"),
    (loop(zero_based=True), "the first retry is retry 1"),
    (loop(no_request=True), "you never called budget.on_request()"),
    (loop(request_each=True), "once per call, not per attempt"),
    (loop(ignore_budget=True), "give up"),
    (loop(ask_last=True), "after the last attempt too"),
    (loop(sleep_first=True), "ask the budget first"),
])
def test_q3_wrong_answers(wrong, message, capsys):
    ok, out = verdict(q3, wrong, capsys)
    assert not ok and out.startswith("Not yet:") and message in out, out


def test_q3_correct_helper_loop_passes(capsys):
    assert verdict(q3, loop(), capsys)[0]
