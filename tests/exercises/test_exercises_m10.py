"""Module 10's question: the worked harden passes on the real services and broker; each
plausible wrong hardening fails with its own message."""
from __future__ import annotations

import math

import pytest

from labsupport.course.exercises_build import solution_source
from labsupport.exercises import declared_questions
from labsupport.exercises.m10 import OUTAGE, SHOPS, TARGETS, q1, q2, q3
from labsupport.lessons.m03_retries_and_backoff.retries import FullJitter
from labsupport.lessons.m04_circuit_breakers.breakers import AsyncPyBreaker
from labsupport.lessons.m10_capstone_checkout.chaos import CRASH

pytestmark = pytest.mark.usefixtures("isolated_progress", "lab_broker", "checker_time_scale")


def verdict(answer, capsys) -> tuple[bool, str]:
    ok = q1.check(answer)
    return ok, capsys.readouterr().out.strip()


def solution_function():
    namespace: dict = {"AsyncPyBreaker": AsyncPyBreaker, "FullJitter": FullJitter}
    exec(q1._solution, namespace)  # the text learners are shown by q1.solution()
    return namespace["harden"]


def make_harden(mistake: str | None = None):
    """A hardening written independently of the solution, with one ``mistake`` on."""

    def harden(checkout):
        if mistake == "unchanged":
            return
        timeouts = {"long timeout": (130, 900), "no timeout": (None, 120)}
        payment_ms, inventory_ms = timeouts.get(mistake, (130, 120))
        checkout.timeouts(payment_ms=payment_ms, inventory_ms=inventory_ms)
        if mistake == "timeout only":
            return
        if mistake == "no retries":
            checkout.retries(attempts=1, idempotency_key=True)
        else:
            checkout.retries(attempts=2, backoff=FullJitter(5, 30),
                             idempotency_key=mistake != "no key")
        if mistake != "no breaker":
            reset = 10_000 if mistake == "never closes" else 0.6
            fail_max = 50 if mistake == "late breaker" else 5   # 50: never opens in 3 s
            checkout.breaker(AsyncPyBreaker(fail_max=fail_max, reset_timeout_s=reset))

        async def says_yes(order):
            return True

        async def raises(order):
            raise KeyError("customer")

        fallback = {"pretend": says_yes, "raises": raises}.get(mistake, checkout.defer)
        checkout.fallback(fallback)

    return harden


def test_the_module_declares_q1():
    assert declared_questions()["10"] == ["q1", "q2", "q3"]
    assert (q1.name, q2.name, q3.name) == ("harden", "caught_up_s", "diagnosis")
    assert all(len(q.hints) == 3 for q in (q1, q2, q3))
    assert "def harden" in solution_source("10", "harden")
    assert "BEGIN SOLUTION" not in q1._solution
    assert "p99" in TARGETS.describe()


def test_the_worked_solution_passes(capsys):
    ok, out = verdict(solution_function(), capsys)
    assert ok, out
    assert out.startswith("Correct:")
    for used in ("timeouts of 120 ms (payment) and 120 ms", "2 attempts (full jitter", "the same idempotency key",
                 "the breaker (AsyncPyBreaker)", "the fallback (defer)"):
        assert used in out, out


def test_an_independent_correct_hardening_passes(capsys):
    ok, out = verdict(make_harden(None), capsys)
    assert ok, out


def test_the_praise_names_only_the_patterns_in_place():
    from labsupport.exercises.m10 import praise
    from labsupport.lessons.m10_capstone_checkout.checkout_sync import SyncCheckout

    bare = SyncCheckout.__new__(SyncCheckout)
    bare.payment_timeout_ms = bare.inventory_timeout_ms = None
    bare.attempts, bare.backoff, bare.idempotency_key = 1, None, False
    bare._breaker = bare._fallback = None
    text = praise(bare)
    assert "breaker" not in text and "attempts" not in text and "timeouts" not in text
    bare.attempts, bare.payment_timeout_ms, bare.inventory_timeout_ms = 3, 100, 120
    text = praise(bare)
    assert "3 attempts (no backoff, no idempotency key)" in text and "breaker" not in text


MISTAKES = [
    ("unchanged", "the checkout is unchanged"),
    ("timeout only", "Timeouts alone make failures fast, not fewer"),
    ("no key", "charged twice: your retries (and the completer) send no idempotency key"),
    ("no breaker", "it hung: a slow dependency is worse than a dead one"),
    ("late breaker", "your breaker did not spare them"),
    ("no retries", "you make one attempt only"),
    ("no timeout", "without a timeout on every call"),
    ("pretend", "Your fallback answers yes without keeping the order"),
    ("never closes", "the breaker is still open"),
    ("long timeout", "longer than the p99 target"),
]


@pytest.mark.parametrize("mistake, message", MISTAKES)
def test_each_wrong_hardening_gets_its_own_message(mistake, message, capsys):
    ok, out = verdict(make_harden(mistake), capsys)
    assert not ok and out.startswith("Not yet:"), out
    assert message in out, out


def test_learner_errors_and_bad_settings_are_explained(capsys):
    ok, out = verdict(make_harden("raises"), capsys)
    assert not ok and "Your code raised KeyError" in out, out

    def bad_setting(checkout):
        checkout.retries(attempts=0)

    ok, out = verdict(bad_setting, capsys)
    assert not ok and "attempts counts the first try" in out and "Your code raised" in out, out


def test_not_a_function_and_the_placeholder(capsys):
    ok, out = verdict(42, capsys)
    assert not ok and "should be a function" in out
    ok, out = verdict(lambda: None, capsys)
    assert not ok and "one argument" in out

    def placeholder(checkout):
        raise NotImplementedError("Your turn")

    ok, out = verdict(placeholder, capsys)
    assert not ok and out.startswith("Not attempted yet"), out


def test_showing_the_run_before_the_check_says_what_to_do(monkeypatch):
    from labsupport.exercises import m10
    from labsupport.runtime.errors import LabError

    monkeypatch.setattr(m10, "last_run", None)
    with pytest.raises(LabError, match="run q1.check\\(\\) first"):
        m10.your_run()


# ----- q2: predict the drain ---------------------------------------------------------------------------
def solution_value(question, name):
    namespace: dict = {"OUTAGE": OUTAGE}
    exec(question._solution, namespace)
    return namespace[name]


def simulated_catch_up(step_s: float = 0.0005) -> float:
    """Another correct method: orders one by one, a consumer that joins, then works."""
    o = OUTAGE
    arrivals = [i / o.rate_per_s for i in range(1, 400)]   # from the outage's start
    back = o.down_s + o.join_s
    free, t_done = back, back
    for a in arrivals:
        start = max(a, free)
        free = start + 1 / o.drain_per_s
        if start <= a and a > back:   # the consumer was idle when this order came: caught up
            return t_done - o.down_s
        t_done = free
    return float("inf")


def test_q2_the_formula_and_a_simulation_both_pass(capsys):
    assert q2.check(solution_value(q2, "caught_up_s")), capsys.readouterr().out
    simulated = simulated_catch_up()
    assert q2.check(simulated), (simulated, capsys.readouterr().out)


@pytest.mark.parametrize("wrong, words", [
    (1 + 35 / 25, "as if no order arrived"),
    (30 / 20, "forgets the join"),
    (1 + 30 / 20, "not the orders that arrived during it"),
    (7.0, "outage + join"),
    (2750, "not milliseconds"),
    (4.0, "too high"),
    ("2.75 s", "should be a number"),
])
def test_q2_each_wrong_prediction_gets_its_own_message(wrong, words, capsys):
    assert not q2.check(wrong)
    assert words in capsys.readouterr().out


# ----- q3: read four scoreboards ----------------------------------------------------------------------
def test_q3_the_worked_diagnosis_passes_and_matches_the_shops_mistakes(capsys):
    answer = solution_value(q3, "diagnosis")
    assert answer == SHOPS.truth() and q3.check(answer), capsys.readouterr().out


def test_q3_each_shop_shows_its_symptom_and_only_it():
    boards = dict(zip(SHOPS.causes, SHOPS.boards(), strict=True))
    assert boards["no_idempotency_key"].double_charged > 0
    assert boards["fallback_keeps_nothing"].lost > 0
    assert math.isinf(boards["breaker_never_closes"].recover_s)
    assert boards["no_breaker"].p(50, during=CRASH) > 5 * max(
        b.p(50, during=CRASH) for c, b in boards.items() if c != "no_breaker")
    for cause, b in boards.items():
        marks = [b.double_charged > 0, b.lost > 0, math.isinf(b.recover_s),
                 b.p(50, during=CRASH) > 200]
        assert sum(marks) == 1, (cause, marks)


RIGHT = SHOPS.truth()


def swapped(a: str, b: str) -> dict:
    answer = dict(RIGHT)
    answer[a], answer[b] = answer[b], answer[a]
    return answer


@pytest.mark.parametrize("answer, words", [
    (swapped("no_breaker", "breaker_never_closes"), "breaker_never_closes: shop C is not it: "
     "every customer who ordered while payment hung waited out the timeouts"),
    (swapped("no_idempotency_key", "fallback_keeps_nothing"), "no_idempotency_key: shop D is "
     "not it: it said yes to everyone, and orders it said yes to were never confirmed"),
    (swapped("breaker_never_closes", "no_idempotency_key"), "no_idempotency_key: shop A is "
     "not it: it answered at once while payment was down"),
    (swapped("fallback_keeps_nothing", "no_breaker"), "fallback_keeps_nothing: shop C is not "
     "it: every customer who ordered while payment hung waited out the timeouts"),
    ({**RIGHT, "no_breaker": RIGHT["breaker_never_closes"]}, "one shop for two symptoms"),
    ({**RIGHT, "no_breaker": "shop Z"}, "is not a shop of the table"),
    ({"no_breaker": "shop C"}, "a dict with these keys"),
])
def test_q3_each_wrong_diagnosis_gets_its_own_message(answer, words, capsys):
    assert not q3.check(answer)
    assert words in capsys.readouterr().out
