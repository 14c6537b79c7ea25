"""Module 03 · Retries and backoff: the exercise questions.

::

    from labsupport.exercises.m03 import q1, q2, q3

* ``q1``: a function ``full_jitter_ms(retry, base_ms, cap_ms, rng)``: the wait before
  retry number ``retry`` (1 = the first retry), drawn with ``rng``.
* ``q2``: a class ``RetryBudget(ratio=0.1, max_tokens=10)`` with ``on_request()`` and
  ``can_retry() -> bool``.
* ``q3``: a function ``call_with_retries(call, attempts, delay_ms, budget, sleep) -> bool``.

The checkers judge behaviour, not code: many seeded draws for q1 (bounds, mean,
spread), scripted traffic for q2 and q3 (how many retries were let through).
"""
from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from labsupport.course.checks import NotYet, Question, Step, call_learner

MODULE = "03"

# ----- q1: full jitter with a cap -------------------------------------------------------------
BASE, CAP, DRAWS = 100.0, 2000.0, 3000


def window(retry: int, base: float = BASE, cap: float = CAP) -> float:
    """The capped exponential window before retry ``retry`` (1 = first retry)."""
    return min(cap, base * 2 ** (retry - 1))


@dataclass(frozen=True)
class Draws:
    """Statistics of many waits before one retry."""

    retry: int
    window: float
    low: float
    high: float
    mean: float
    sd: float


def _number(value: Any, call: str) -> float:
    if value is None:
        raise NotYet(f"{call} returned None. Did you forget `return`?")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NotYet(f"{call} returned {type(value).__name__} {value!r}; it should return a "
                     "number of milliseconds.")
    if math.isnan(value):
        raise NotYet(f"{call} returned nan.")
    return float(value)


def _draw(fn: Callable[..., Any], retry: int, n: int, seed: int, base: float = BASE,
          cap: float = CAP) -> Draws:
    rng = random.Random(seed)
    call = f"full_jitter_ms({retry}, {base:g}, {cap:g}, rng)"
    values = [_number(call_learner(fn, retry, base, cap, rng, call=call), call)
              for _ in range(n)]
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    return Draws(retry, window(retry, base, cap), min(values), max(values), mean, sd)


class _FullJitterStep(Step):
    """Seeded draws for retries 1..10 (base 100 ms, cap 2000 ms): bounds, mean, spread."""

    def run(self, answer: Any) -> None:
        if not callable(answer):
            raise NotYet(f"`full_jitter_ms` should be a function, got {type(answer).__name__}.")
        call = "full_jitter_ms(1, 100, 2000, rng)"
        runs = []
        for _ in range(2):
            rng = random.Random(7)  # the same seed twice: the same waits
            runs.append([_number(call_learner(answer, 1, BASE, CAP, rng, call=call), call)
                         for _ in range(20)])
        first, again = runs
        if first != again:
            raise NotYet("two runs with random.Random(7) gave different delays: draw with the "
                         "`rng` you are given (rng.uniform(...)), not the `random` module, so a "
                         "seeded experiment repeats.")
        stats = {r: _draw(answer, r, DRAWS, seed=r) for r in range(1, 11)}
        _judge(stats)
        small_cap = _draw(answer, 3, 500, seed=99, base=100, cap=50)
        if small_cap.high > 50 * 1.001:
            raise NotYet(f"with base_ms=100 and cap_ms=50, retry 3 waited up to "
                         f"{small_cap.high:.0f} ms: the cap is the longest wait, even when it "
                         "is smaller than base_ms.")


def _judge(stats: dict[int, Draws]) -> None:
    """Name the mistake the statistics show, most specific first."""
    one, three, ten = stats[1], stats[3], stats[10]
    if any(s.low < 0 for s in stats.values()):
        raise NotYet(f"some delays are negative (lowest {min(s.low for s in stats.values()):.1f}"
                     " ms): a wait is between 0 and the window.")
    if three.mean < three.window / 100 and three.high <= three.window / 100:
        raise NotYet(f"for retry 3 your delays average {three.mean:.3g}: that looks like "
                     "seconds. Return milliseconds, like base_ms and cap_ms.")
    if three.sd < 1e-9:
        raise NotYet(f"every delay for retry 3 is {three.mean:.0f} ms: there is no jitter, so "
                     "clients that failed together retry together and collide again. Draw the "
                     "delay at random between 0 and the window.")
    if three.low >= 0.98 * three.window and three.high > three.window * 1.001:
        raise NotYet(f"for retry 3 your delays go from {three.low:.0f} to {three.high:.0f} ms: "
                     f"you added jitter on top of the exponential delay ({three.window:.0f} ms),"
                     " so every client still waits at least that long and they stay bunched. "
                     "Full jitter draws the whole delay: uniform(0, window).")
    if all(abs(s.mean - window(s.retry + 1) / 2) < 0.06 * window(s.retry + 1) / 2
           and s.high > s.window * 1.01 for s in (stats[1], stats[2], stats[3])):
        raise NotYet(f"retry 1 waited up to {one.high:.0f} ms, but the first retry's window is "
                     f"base_ms = {one.window:.0f} ms: off by one. Retries count from 1, so the "
                     "window is base_ms * 2 ** (retry - 1).")
    if ten.high > CAP * 1.001:
        raise NotYet(f"retry 10 waited up to {ten.high:,.0f} ms although cap_ms = {CAP:.0f}: "
                     "there is no cap. Take min(cap_ms, base_ms * 2 ** (retry - 1)) as the "
                     "window, then draw from it.")
    if three.low >= 0.45 * three.window:
        raise NotYet(f"for retry 3 your delays go from {three.low:.0f} to {three.high:.0f} ms: "
                     "that is 'equal jitter' (half the window fixed, half random). Full jitter "
                     f"draws from 0 to the whole window ({three.window:.0f} ms), which spreads "
                     "clients out more.")
    if ten.mean > 0.85 * CAP:
        raise NotYet(f"at retry 10 your delays average {ten.mean:.0f} ms, close to cap_ms = "
                     f"{CAP:.0f}: you drew from the uncapped window and capped the result, so "
                     "most late retries wait exactly cap_ms and bunch up again. Cap the window "
                     "first, then draw from 0 to it.")
    for s in stats.values():
        _judge_one(s)


def _judge_one(s: Draws) -> None:
    if s.high > s.window * 1.001:
        raise NotYet(f"retry {s.retry} waited up to {s.high:.0f} ms, more than its window "
                     f"min(cap, base * 2 ** (retry - 1)) = {s.window:.0f} ms.")
    if s.low > 0.02 * s.window:
        raise NotYet(f"retry {s.retry} never waited less than {s.low:.0f} ms: full jitter "
                     "draws from 0, so some clients retry almost at once.")
    if abs(s.mean - s.window / 2) > 0.05 * s.window / 2:
        raise NotYet(f"over {DRAWS} draws for retry {s.retry} your mean is {s.mean:.0f} ms; "
                     f"a uniform draw from 0 to {s.window:.0f} ms averages {s.window / 2:.0f}.")
    expected_sd = s.window / math.sqrt(12)
    if abs(s.sd - expected_sd) > 0.1 * expected_sd:
        raise NotYet(f"for retry {s.retry} the spread (sd) of your delays is {s.sd:.0f} ms; a "
                     f"uniform draw from 0 to {s.window:.0f} ms has sd {expected_sd:.0f} ms "
                     "(window / √12). Draw uniformly: rng.uniform(0, window).")


q1 = Question(
    id="q1", module=MODULE, title="full-jitter backoff with a cap", name="full_jitter_ms",
    what="a function full_jitter_ms(retry, base_ms, cap_ms, rng) -> float (ms), with retry "
         "counted from 1",
    steps=[_FullJitterStep()],
    hints=[
        "Two steps: first the window, an exponential that doubles each retry and stops "
        "growing at cap_ms; then a random wait inside that window.",
        "The first retry (retry=1) has a window of base_ms, the second 2·base_ms: "
        "window = min(cap_ms, base_ms * 2 ** (retry - 1)). Cap the window, not the draw.",
        "return rng.uniform(0, min(cap_ms, base_ms * 2 ** (retry - 1)))",
    ],
    success="your waits fill 0..min(cap, base·2^(retry−1)) uniformly: mean half the window, "
            "never above the cap, and the same seed gives the same waits.",
)


# ----- q2: a retry budget -------------------------------------------------------------------
def _make(cls: Any, ratio: float = 0.1, max_tokens: float = 10) -> Any:
    call = f"RetryBudget(ratio={ratio:g}, max_tokens={max_tokens:g})"
    budget = call_learner(cls, ratio=ratio, max_tokens=max_tokens, call=call)
    for method in ("on_request", "can_retry"):
        if not callable(getattr(budget, method, None)):
            raise NotYet(f"a RetryBudget needs a method {method}(); yours has none.")
    return budget


def _allowed(budget: Any, limit: int) -> int:
    """How many of ``limit`` back-to-back can_retry() calls said yes."""
    return sum(bool(call_learner(budget.can_retry, call="budget.can_retry()"))
               for _ in range(limit))


def _exhaust(budget: Any) -> None:
    for _ in range(100_000):
        if not call_learner(budget.can_retry, call="budget.can_retry()"):
            return
    raise NotYet("can_retry() said yes 100,000 times in a row with no requests at all: the "
                 "budget never says no. Spend a token per retry and refuse when none is left.")


def _requests(budget: Any, n: int) -> None:
    for _ in range(n):
        call_learner(budget.on_request, call="budget.on_request()")


class _BudgetStep(Step):
    """Scripted traffic: a fresh budget, refilling, the cap, another ratio, a long storm."""

    def run(self, answer: Any) -> None:
        if not inspect.isclass(answer) and not callable(answer):
            raise NotYet(f"`RetryBudget` should be a class, got {type(answer).__name__}.")
        self._fresh(answer)
        self._refills(answer)
        self._other_ratio(answer)
        self._capped(answer)
        self._storm(answer)

    @staticmethod
    def _fresh(cls: Any) -> None:
        got = _allowed(_make(cls), 1000)
        if got == 0:
            raise NotYet("a fresh RetryBudget(max_tokens=10) refused every retry: start with a "
                         "full reserve of max_tokens, so a new client may retry a few times.")
        if got >= 1000:
            raise NotYet("a fresh budget said yes to 1000 retries with no requests at all: it "
                         "never says no. Each retry must spend a token.")
        if got != 10:
            raise NotYet(f"a fresh RetryBudget(max_tokens=10) allowed {got} retries before any "
                         "request; it should start full and allow exactly 10.")

    @staticmethod
    def _refills(cls: Any) -> None:
        budget = _make(cls)
        _exhaust(budget)
        got = 0
        for _ in range(100):
            _requests(budget, 1)
            got += _allowed(budget, 3)
        if got == 0:
            raise NotYet("after the reserve was spent, 100 more requests allowed no retry at "
                         "all: the budget never refills. Each on_request() should earn ratio "
                         "(0.1) of a token.")
        if got >= 90:
            raise NotYet(f"after the reserve was spent, 100 requests allowed {got} retries: each "
                         "request should earn 0.1 of a token, not a whole one.")
        if not 9 <= got <= 11:
            raise NotYet(f"after the reserve was spent, 100 requests allowed {got} retries "
                         "(asking after each); at ratio 0.1 that should be 10.")

    @staticmethod
    def _other_ratio(cls: Any) -> None:
        budget = _make(cls, ratio=0.2, max_tokens=5)
        _exhaust(budget)
        got = 0
        for _ in range(100):
            _requests(budget, 1)
            got += _allowed(budget, 3)
        if got == 10:
            raise NotYet("RetryBudget(ratio=0.2) allowed 10 retries per 100 requests: use the "
                         "ratio you are given, not 0.1 written into the code.")
        if not 19 <= got <= 21:
            raise NotYet(f"RetryBudget(ratio=0.2, max_tokens=5) allowed {got} retries over 100 "
                         "requests (asking after each); that should be 20.")

    @staticmethod
    def _capped(cls: Any) -> None:
        budget = _make(cls)
        _requests(budget, 10_000)
        got = _allowed(budget, 5000)
        if got > 11:
            raise NotYet(f"after 10,000 quiet requests the budget allowed {got} retries in a "
                         "burst: it saves without a limit, so a storm after a quiet hour could "
                         "spend them all at once. Keep at most max_tokens (10).")
        if got < 9:
            raise NotYet(f"after 10,000 quiet requests the budget allowed only {got} retries; "
                         "it should hold its full reserve of max_tokens (10).")

    @staticmethod
    def _storm(cls: Any) -> None:
        budget, rng, retries = _make(cls), random.Random(3), 0
        requests = 2000
        for _ in range(requests):
            _requests(budget, 1)
            for _ in range(3):  # each failing request wants up to 3 retries (4 attempts)
                if rng.random() < 0.5 or not call_learner(budget.can_retry,
                                                          call="budget.can_retry()"):
                    break
                retries += 1
        limit = 0.1 * requests + 10
        if retries > limit + 1:
            raise NotYet(f"in a seeded storm of {requests} failing requests your budget let "
                         f"{retries} retries through, more than 10% of the requests plus the "
                         f"reserve ({limit:.0f}).")


q2 = Question(
    id="q2", module=MODULE, title="a retry budget (at most 10% extra load)", name="RetryBudget",
    what="a class RetryBudget(ratio=0.1, max_tokens=10) with on_request() and "
         "can_retry() -> bool",
    steps=[_BudgetStep()],
    hints=[
        "Think of a jar of tokens. Every new request drops in `ratio` of a token; every retry "
        "takes out a whole one; no token, no retry. The jar starts full and holds at most "
        "max_tokens.",
        "Keep one number, self.tokens = max_tokens. on_request(): self.tokens = "
        "min(self.max_tokens, self.tokens + self.ratio). can_retry(): if at least one token is "
        "left, take it and return True, else return False.",
        "Adding 0.1 ten times gives 0.9999999999999999, not 1.0: compare with a little "
        "slack, e.g. `if self.tokens >= 1 - 1e-9:`.",
    ],
    success="retries stay under 10% of requests plus a small reserve, the budget refills as "
            "requests arrive, and a quiet spell cannot save up for a storm.",
)


# ----- q3: the retry loop ----------------------------------------------------------------------
class _Budget:
    """A scripted budget: says yes ``allow`` times; records what it was told."""

    def __init__(self, allow: int = 1000) -> None:
        self.allow, self.requests, self.asked = allow, 0, 0

    def on_request(self) -> None:
        self.requests += 1

    def can_retry(self) -> bool:
        self.asked += 1
        if self.allow > 0:
            self.allow -= 1
            return True
        return False


@dataclass
class _Trace:
    result: Any
    calls: int
    sleeps: list[float]
    budget: _Budget


def _trace(fn: Callable[..., Any], attempts: int, succeed_on: int | None,
           allow: int = 1000) -> _Trace:
    calls, sleeps, budget = [0], [], _Budget(allow)

    def call() -> bool:
        calls[0] += 1
        return succeed_on is not None and calls[0] >= succeed_on

    def delay_ms(retry: int) -> float:
        return 10.0 * retry

    text = f"call_with_retries(call, attempts={attempts}, delay_ms, budget, sleep)"
    result = call_learner(fn, call, attempts, delay_ms, budget, sleeps.append, call=text)
    return _Trace(result, calls[0], sleeps, budget)


class _LoopStep(Step):
    """Scripted calls: always failing, failing once, a stingy budget, a single attempt."""

    def run(self, answer: Any) -> None:
        if not callable(answer):
            raise NotYet(f"`call_with_retries` should be a function, got "
                         f"{type(answer).__name__}.")
        self._always_failing(answer)
        self._second_try(answer)
        self._stingy_budget(answer)
        one = _trace(answer, 1, None)
        if one.calls != 1 or one.sleeps:
            raise NotYet(f"with attempts=1 you made {one.calls} calls and slept {one.sleeps}: "
                         "one attempt means no retry and no wait.")

    @staticmethod
    def _always_failing(fn: Callable[..., Any]) -> None:
        t = _trace(fn, 4, None)
        if t.calls == 5:
            raise NotYet("with attempts=4 and a call that always fails you called 5 times: "
                         "attempts counts the first try too, so attempts=4 is 1 try + 3 retries "
                         "(\"3 retries\" means 4 attempts).")
        if t.calls != 4:
            raise NotYet(f"with attempts=4 and a call that always fails you called {t.calls} "
                         "times; it should be exactly 4.")
        if t.sleeps[:1] == [0.0] or t.sleeps[:2] == [0.0, 10.0]:
            raise NotYet(f"you slept {t.sleeps} ms: the first retry is retry 1, so ask "
                         "delay_ms(1), delay_ms(2), delay_ms(3) (10, 20, 30 ms here).")
        if len(t.sleeps) == 4:
            raise NotYet(f"you slept {len(t.sleeps)} times for 4 attempts: wait only between "
                         "attempts, not after the last one (3 sleeps).")
        if t.sleeps != [10.0, 20.0, 30.0]:
            raise NotYet(f"you slept {t.sleeps} ms; expected the waits delay_ms(1), "
                         "delay_ms(2), delay_ms(3) = [10, 20, 30] ms, one before each retry.")
        if t.budget.requests == 0:
            raise NotYet("you never called budget.on_request(): the budget only refills "
                         "from requests, so call it once at the start of each call.")
        if t.budget.requests > 1:
            raise NotYet(f"you called budget.on_request() {t.budget.requests} times for one "
                         "call: once per call, not per attempt, or retries earn their own "
                         "tokens and the 10% limit is lost.")
        if t.budget.asked == 0:
            raise NotYet("you never asked budget.can_retry(): ask it before each retry, and "
                         "when it says False, give up.")
        if t.budget.asked == 4:
            raise NotYet("you asked budget.can_retry() after the last attempt too: that spends "
                         "a token on a retry that never happens. Ask only before a retry.")
        if t.budget.asked != 3:
            raise NotYet(f"you asked budget.can_retry() {t.budget.asked} times for 3 retries: "
                         "ask once before each retry.")
        if t.result is not False:
            raise NotYet(f"when every attempt failed you returned {t.result!r}; return False.")

    @staticmethod
    def _second_try(fn: Callable[..., Any]) -> None:
        t = _trace(fn, 4, succeed_on=2)
        if t.calls > 2:
            raise NotYet(f"the call succeeded on attempt 2 but you called {t.calls} times: stop "
                         "at the first success.")
        if t.result is not True:
            raise NotYet(f"the call succeeded on attempt 2 and you returned {t.result!r}; "
                         "return True.")
        if t.sleeps != [10.0]:
            raise NotYet(f"one retry should wait delay_ms(1) = 10 ms once; you slept {t.sleeps}.")

    @staticmethod
    def _stingy_budget(fn: Callable[..., Any]) -> None:
        t = _trace(fn, 4, None, allow=1)
        if t.calls > 2:
            raise NotYet(f"the budget allowed 1 retry but you called {t.calls} times: when "
                         "budget.can_retry() says False, give up.")
        if t.calls < 2:
            raise NotYet("the budget allowed 1 retry but you did not retry at all.")
        if len(t.sleeps) > 1:
            raise NotYet(f"the budget refused the second retry, yet you slept {t.sleeps}: ask "
                         "the budget first, and wait only when you will retry.")


q3 = Question(
    id="q3", module=MODULE, title="a retry loop: attempts, waits and the budget",
    name="call_with_retries",
    what="a function call_with_retries(call, attempts, delay_ms, budget, sleep) -> bool",
    steps=[_LoopStep()],
    hints=[
        "attempts counts every try, the first included. Between two attempts: ask the budget, "
        "then wait delay_ms(retry), where retry is 1 before the second attempt.",
        "Call budget.on_request() once at the start. Loop `for attempt in range(1, attempts + "
        "1)`: return True as soon as call() succeeds; after a failure, stop if it was the last "
        "attempt or the budget says no.",
        "After a failed attempt number `attempt` (not the last): `if not budget.can_retry(): "
        "return False`, then `sleep(delay_ms(attempt))`. After the loop, return False.",
    ],
    success="exactly `attempts` tries at most, a wait only between tries, and the budget "
            "asked before each retry.",
)

QUESTIONS = [q1, q2, q3]
__all__ = ["q1", "q2", "q3", "QUESTIONS", "window"]
