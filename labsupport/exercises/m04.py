"""Module 04 · Circuit breakers: the exercise questions.

::

    from labsupport.exercises.m04 import q1, q2, q3

* ``q1``: a class ``Breaker(fail_max=5, reset_timeout=60.0, clock=time.monotonic)`` with
  ``state`` (``"closed"``, ``"open"``, ``"half-open"``), ``add_listener(fn)`` where
  ``fn(old_state, new_state)`` hears every change, and ``async call(fn)``: awaits ``fn()``
  while closed, raises :class:`~labsupport.lessons.m04_circuit_breakers.breakers.BreakerOpen` without calling ``fn``
  while open, lets one trial call through after ``reset_timeout`` seconds of ``clock()``.

The checker asserts what pybreaker's and resilience4j's own tests assert, on a fake clock
(no sleeping): it opens at exactly ``fail_max`` consecutive failures; a success resets
the count; while open it refuses without calling; after the timeout one trial; a failed
trial re-opens, a good one closes; listeners hear the changes in order; and with many
concurrent callers only one trial is in flight while half-open.

* ``q2``: a number ``seconds_until_open``: how long a "3 failures in a row" breaker stays
  closed, on average, in front of a dependency failing 60% of calls at random (10 calls/s).
* ``q3``: a dict ``breaker_diagnosis``: for each of six breakers' logs (:data:`BREAKER_LOGS`),
  what is wrong with it (or ``"healthy"``). The logs are ground truth: each is printed
  from a run of real pybreaker 1.4 code on a model clock, the wrong ones built as small
  configurations or subclasses of it (see :class:`BreakerLog`).
"""
from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import itertools
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pybreaker

from labsupport.course.checks import LearnerRaised, Mistake, NotYet, Question, Step, Value
from labsupport.lessons.m04_circuit_breakers.breakers import AsyncPyBreaker, BreakerOpen

MODULE = "04"
SCENARIO_TIMEOUT_S = 5.0   # wall seconds; nothing in a check sleeps, so this means "stuck"
RESET = 10.0               # the reset_timeout the checker gives (seconds of its fake clock)


class DependencyDown(Exception):
    """What the checker's fake dependency raises when it fails."""


class FakeClock:
    """A clock the checker moves by hand: ``clock()`` is the time, ``advance(s)`` moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Dependency:
    """A fake async dependency: counts its calls, fails on demand, can be held at a gate."""

    breaker: Any = None
    fail: bool = False
    calls: int = 0
    gate: asyncio.Event | None = None
    seen_states: list[str] = field(default_factory=list)
    heard_before: list[list[tuple[str, str]]] = field(default_factory=list)
    log: list[tuple[str, str]] | None = None

    async def __call__(self) -> str:
        self.calls += 1
        self.seen_states.append(getattr(self.breaker, "state", "?"))
        self.heard_before.append(list(self.log or []))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise DependencyDown("the dependency failed")
        return "answer"


# ----- running the learner's breaker --------------------------------------------------------
class _Harness:
    """Builds the learner's breaker and runs calls, turning what happens into outcomes."""

    def __init__(self, cls: type, fail_max: int = 3) -> None:
        self.clock = FakeClock()
        self.fail_max = fail_max
        try:
            self.breaker = cls(fail_max=fail_max, reset_timeout=RESET, clock=self.clock)
        except Exception as exc:
            raise LearnerRaised(exc, f"Breaker(fail_max={fail_max}, reset_timeout={RESET:g}, "
                                     "clock=clock)") from exc
        self.log: list[tuple[str, str]] = []
        self.breaker.add_listener(lambda old, new: self.log.append((old, new)))
        self.dep = Dependency(self.breaker, log=self.log)

    @property
    def state(self) -> Any:
        return self.breaker.state

    async def call(self, fail: bool = False) -> str:
        """One call; returns ``ok``, ``failed`` (the dependency's error came back),
        ``refused`` (BreakerOpen) or raises NotYet/LearnerRaised."""
        self.dep.fail = fail
        before = self.dep.calls
        try:
            result = await self.breaker.call(self.dep)
        except BreakerOpen:
            return "refused"
        except DependencyDown:
            return "failed"
        except NotImplementedError as exc:
            raise LearnerRaised(exc, "await breaker.call(fn)") from exc
        except Exception as exc:
            if self.dep.calls == before:
                raise NotYet(f"when it refused a call your breaker raised {type(exc).__name__}; "
                             "raise BreakerOpen (from labsupport.lessons.m04_circuit_breakers.breakers) so callers can tell "
                             "'refused at once' from 'the dependency failed'.") from exc
            raise LearnerRaised(exc, "await breaker.call(fn)") from exc
        if fail:
            raise NotYet("the call failed (fn raised) but breaker.call returned normally: "
                         "count the failure, then re-raise the exception so the caller sees "
                         "it (a bare `raise` in the except block).")
        if result != "answer":
            raise NotYet(f"breaker.call(fn) returned {result!r}; return what fn() returned.")
        return "ok"

    async def fail_times(self, n: int) -> None:
        for _ in range(n):
            outcome = await self.call(fail=True)
            if outcome == "refused":
                raise NotYet(f"your breaker refused a call before {self.fail_max} failures "
                             f"(fail_max={self.fail_max}).")

    async def open_it(self) -> None:
        await self.fail_times(self.fail_max)
        if self.state != "open":
            raise NotYet(f"after {self.fail_max} failures in a row (fail_max={self.fail_max}) "
                         f"the state is {self.state!r}; it should be 'open'.")


def _run_async(make: Callable[[], Awaitable[None]]) -> None:
    """Run a check scenario in a private event loop on a short-lived thread.

    A notebook's own loop is already running, so the checker cannot use it; a
    scenario that does not finish within a few seconds is reported as stuck.
    """
    box: dict[str, BaseException] = {}

    def main() -> None:
        try:
            asyncio.run(asyncio.wait_for(make(), SCENARIO_TIMEOUT_S))
        except BaseException as exc:  # handed back to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=main, name="check04-loop", daemon=True)
    thread.start()
    thread.join(SCENARIO_TIMEOUT_S + 5)
    error = box.get("error")
    if isinstance(error, TimeoutError):
        raise NotYet("a call through your breaker never returned (waited "
                     f"{SCENARIO_TIMEOUT_S:g} s): look for an await on something that is "
                     "never set or released, e.g. a lock that is not released on failure.")
    if error is not None:
        raise error


# ----- the scenarios, each with its own message -----------------------------------------------
async def _threshold(cls: type) -> None:
    for fail_max in (3, 5):
        h = _Harness(cls, fail_max)
        for n in range(1, fail_max + 1):
            await h.fail_times(1)
            if n < fail_max and h.state != "closed":
                raise NotYet(f"your breaker opened after {n} failures with fail_max={fail_max}: "
                             "one too early? It should open when the count *reaches* fail_max.")
        if h.state == "closed":
            await h.fail_times(1)
            late = " (it opened one failure later: use >=, not >)" if h.state == "open" else ""
            raise NotYet(f"after {fail_max} failures in a row (fail_max={fail_max}) your breaker "
                         f"was still closed{late}. It should open at exactly fail_max.")
        if h.state != "open":
            raise NotYet(f"after fail_max failures the state is {h.state!r}; use the names "
                         "'closed', 'open' and 'half-open'.")


async def _success_resets(cls: type) -> None:
    h = _Harness(cls, 3)
    await h.fail_times(2)
    if await h.call() != "ok":
        raise NotYet("a call to a working dependency did not go through while closed.")
    for _ in range(2):
        await h.call(fail=True)
        if h.state != "closed":
            raise NotYet("fail, fail, success, fail, fail opened your breaker (fail_max=3): a "
                         "success must reset the count of consecutive failures to 0.")
    await h.fail_times(1)
    if h.state != "open":
        raise NotYet("after a success and then 3 failures in a row (fail_max=3) the breaker "
                     f"is {h.state!r}; it should be open.")


async def _open_and_recover(cls: type) -> list[tuple[str, str]]:
    h = _Harness(cls, 3)
    await h.open_it()
    await _refuses(h, "while open")
    h.clock.advance(RESET - 0.01)
    await _refuses(h, f"{RESET - 0.01:g} s after opening (reset_timeout={RESET:g})")
    h.clock.advance(0.02)
    await _trial(h, fail=True)
    if h.state != "open":
        raise NotYet(f"the trial call failed but the state is then {h.state!r}: a failed trial "
                     "must open the breaker again.")
    h.clock.advance(RESET - 0.01)
    await _refuses(h, "after a failed trial, before a new reset_timeout passed (restart the "
                      "timer when you re-open)")
    h.clock.advance(0.02)
    await _trial(h, fail=False)
    if h.state != "closed":
        raise NotYet(f"the trial call succeeded but the state is then {h.state!r}: a good "
                     "trial must close the breaker.")
    await h.fail_times(h.fail_max - 1)
    if h.state != "closed":
        raise NotYet("after closing, fail_max - 1 failures opened the breaker: start counting "
                     "failures from 0 again when you close.")
    return h.log


async def _refuses(h: _Harness, when: str) -> None:
    before = h.dep.calls
    outcome = await h.call()
    if h.dep.calls != before:
        raise NotYet(f"your breaker called the function {when}: while open it must fail fast, "
                     "raising BreakerOpen *without* calling fn (that is the whole point: the "
                     "sick dependency gets no traffic).")
    if outcome != "refused":
        raise NotYet(f"{when}, breaker.call(fn) should raise BreakerOpen.")


async def _trial(h: _Harness, fail: bool) -> None:
    before = h.dep.calls
    outcome = await h.call(fail=fail)
    if h.dep.calls == before:
        raise NotYet(f"{RESET:g} s after opening (reset_timeout={RESET:g}) your breaker still "
                     "refused the call: it never goes half-open, so it stays open forever. "
                     "Compare self.clock() (the clock you were given, not time.monotonic()) "
                     "with the time it opened, and let one trial call through.")
    if h.dep.calls - before > 1:
        raise NotYet("one call to the breaker called fn more than once: no retries inside "
                     "the breaker.")
    seen = h.dep.seen_states[-1]
    if seen != "half-open":
        raise NotYet(f"during the trial call the state was {seen!r}; it should be 'half-open'. "
                     "Closing before the trial has succeeded lets all traffic back to a "
                     "dependency that may still be down.")
    heard = h.dep.heard_before[-1]
    if not heard or "half-open" not in heard[-1]:
        raise NotYet("the trial call ran before your listeners heard ('open', 'half-open'): "
                     "announce a change as you make it, before calling fn.")
    expected = "failed" if fail else "ok"
    if outcome != expected:
        raise NotYet(f"the trial call {'failed' if fail else 'succeeded'} but the caller "
                     f"got {outcome!r}.")


EXPECTED_LOG = [("closed", "open"), ("open", "half-open"), ("half-open", "open"),
                ("open", "half-open"), ("half-open", "closed")]


def _check_log(log: list[tuple[str, str]]) -> None:
    log = [tuple(item) if isinstance(item, (list, tuple)) else item for item in log]
    if log == EXPECTED_LOG:
        return
    if log == [(new, old) for old, new in EXPECTED_LOG]:
        raise NotYet("your listeners were called as listener(new, old); the order is "
                     "listener(old_state, new_state).")
    if any(isinstance(item, tuple) and len(item) == 2 and item[0] == item[1] for item in log):
        raise NotYet(f"your listeners heard {log}: call them only when the state really "
                     f"changes (old != new). Expected {EXPECTED_LOG}.")
    raise NotYet(f"open, failed trial, good trial: your listeners heard {log}, expected "
                 f"{EXPECTED_LOG} (each change once, in the order it happened).")


async def _concurrent(cls: type) -> None:
    h = _Harness(cls, 2)
    h.dep.gate = asyncio.Event()
    calls = [asyncio.ensure_future(h.call()) for _ in range(5)]
    await _settle()
    in_flight = h.dep.calls
    h.dep.gate.set()
    await asyncio.gather(*calls)
    if in_flight != 5:
        raise NotYet(f"while closed, 5 concurrent callers reached fn only {in_flight} at a "
                     "time: a closed breaker must not serialise traffic (hold no lock across "
                     "the await).")
    h.dep.gate = None
    await h.open_it()
    h.clock.advance(RESET + 1)
    h.dep.gate = asyncio.Event()
    before = h.dep.calls
    tasks = [asyncio.ensure_future(h.call()) for _ in range(10)]
    await _settle()
    refused_at_once = sum(t.done() and t.result() == "refused" for t in tasks)
    trials = h.dep.calls - before
    h.dep.gate.set()
    outcomes = await asyncio.gather(*tasks)
    trials = max(trials, h.dep.calls - before)
    if trials > 1:
        raise NotYet(f"10 callers arrived together while half-open and {trials} of them "
                     "reached fn: only one trial may be in flight. Mark the trial as running "
                     "before you await it, and refuse the others with BreakerOpen.")
    if trials == 0:
        raise NotYet("10 callers arrived together after reset_timeout and none reached fn: "
                     "one of them should be the trial.")
    if refused_at_once < 9:
        raise NotYet(f"while the trial was in flight only {refused_at_once} of the other 9 "
                     "callers were refused at once; the rest waited. Refuse them at once "
                     "(BreakerOpen) instead of making them queue behind the trial.")
    if outcomes.count("ok") != 1 or h.state != "closed":
        raise NotYet(f"after the one good trial the state is {h.state!r}; it should be closed.")


async def _cancelled_trial(cls: type) -> None:
    """A trial whose dependency hangs is cut off by its caller's timeout (``wait_for``
    cancels the await). The breaker must not believe that trial is still in flight."""
    h = _Harness(cls, 2)
    await h.open_it()
    h.clock.advance(RESET + 1)
    h.dep.gate = asyncio.Event()        # the dependency hangs: the trial never answers
    trial = asyncio.ensure_future(h.call())
    await _settle()
    trial.cancel()                      # what asyncio.wait_for does when the caller gives up
    with contextlib.suppress(asyncio.CancelledError):
        await trial
    h.dep.gate = None
    h.clock.advance(RESET + 1)
    before = h.dep.calls
    await h.call()
    if h.dep.calls == before:
        raise NotYet("a trial call whose dependency hung was cancelled by its caller's timeout "
                     f"(asyncio.wait_for), and {RESET:g} s later your breaker still refused "
                     "every call: it believes the trial is in flight forever. CancelledError "
                     "is not an Exception, so `except Exception` never sees it: clear the "
                     "trial flag in a `finally:` block.")


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


class _BreakerStep(Step):
    """The scenarios in order; the first that fails gives its message."""

    def run(self, answer: Any) -> None:
        self._interface(answer)
        _run_async(lambda: _threshold(answer))
        _run_async(lambda: _success_resets(answer))
        logs: list[list[tuple[str, str]]] = []

        async def recover() -> None:
            logs.append(await _open_and_recover(answer))

        _run_async(recover)
        _check_log(logs[0])
        _run_async(lambda: _concurrent(answer))
        _run_async(lambda: _cancelled_trial(answer))

    @staticmethod
    def _interface(answer: Any) -> None:
        if not inspect.isclass(answer):
            raise NotYet(f"`Breaker` should be a class (class Breaker: ...), got "
                         f"{type(answer).__name__}.")
        call = getattr(answer, "call", None)
        if call is None or not inspect.iscoroutinefunction(call):
            raise NotYet("Breaker.call must be an async method: `async def call(self, fn):` "
                         "and `await fn()` inside it.")
        if not callable(getattr(answer, "add_listener", None)):
            raise NotYet("Breaker needs add_listener(listener) (it was given in the cell: "
                         "keep it).")
        h = _Harness(answer, 3)
        if h.state != "closed":
            raise NotYet(f"a new breaker should be 'closed', yours is {h.state!r}.")


q1 = Question(
    id="q1", module=MODULE, title="build a circuit breaker", name="Breaker",
    what="a class Breaker(fail_max, reset_timeout, clock) with state, add_listener and "
         "async call(fn)",
    steps=[_BreakerStep()],
    hints=[
        "Three states. closed: call fn; count failures in a row; a success sets the count to "
        "0; at fail_max failures open. open: refuse (raise BreakerOpen) without calling fn "
        "until reset_timeout has passed on self.clock(). half-open: one trial call decides.",
        "Write one small method that changes the state and tells every listener "
        "listener(old, new), and use it for every change. Remember when you opened "
        "(self.opened_at = self.clock()) each time you open, also after a failed trial.",
        "In call(): if open and the timeout has passed, move to half-open. If half-open and a "
        "trial is already running, raise BreakerOpen. Set self.trial_running = True *before* "
        "`await fn()`, so callers that arrive during the await are refused, and clear it in a "
        "`finally:` (a cancelled trial raises CancelledError, not an Exception); a half-open "
        "failure re-opens and a half-open success closes.",
    ],
    success="your breaker opens at exactly fail_max, fails fast while open, sends one trial "
            "after reset_timeout (only one, even with concurrent callers), re-opens on a failed "
            "trial, closes on a good one, recovers from a trial cut off by a timeout, and tells "
            "its listeners in order.",
)



# ----- q2: how long a consecutive-count breaker stays closed under random failures -----------
P_FAIL, FAIL_MAX, RATE = 0.6, 3, 10.0   # 60% of calls fail at random; 3 in a row; 10 calls/s


def _calls_to_open(p: float, k: int) -> float:
    """The lesson's formula: mean calls until k failures in a row, each failing with p."""
    return (1 - p ** k) / ((1 - p) * p ** k)


SECONDS_UNTIL_OPEN = _calls_to_open(P_FAIL, FAIL_MAX) / RATE   # 0.907 s (9.07 calls)


def _q2_mistakes() -> list[Mistake]:
    p, k, r = P_FAIL, FAIL_MAX, RATE
    run = p ** k
    return [
        Mistake(f"that is the number of CALLS. At {r:g} calls a second, divide by the rate to "
                "get seconds.", like=_calls_to_open(p, k), rel=0.05),
        Mistake("you multiplied the calls by the rate. Calls / (calls per second) = seconds: "
                "divide.", like=_calls_to_open(p, k) * r, rel=0.05),
        Mistake(f"that is {k} calls at {r:g}/s: the time to open when EVERY call fails (a hard "
                "outage, the lesson's 5 × 50 ms). Here 40% of calls succeed and each success "
                "sets the count back to 0.", like=k / r, rel=0.02),
        Mistake(f"that is p^k = {run:g}, the chance that a given call ends a run of {k} "
                "failures, not a time. The mean wait grows as that chance shrinks.",
                like=run, rel=0.02),
        Mistake(f"that is 1 / p^k = {1 / run:.3g} calls (per {r:g}/s): as if each call started "
                "a fresh, independent try at k failures in a row. Runs overlap: a success "
                "in the middle of a run restarts the count, which makes the wait LONGER, "
                "(1 − p^k) / ((1 − p) · p^k).", like=1 / run / r, rel=0.02),
        Mistake(f"that is k / p = {k / p:.3g} calls (per {r:g}/s), the mean wait for k "
                "failures in all, not k in a row: the successes in between reset the count.",
                like=k / p / r, rel=0.02),
        Mistake("that is (1 − p^k) / p^k, without the 1 / (1 − p): the formula is "
                "(1 − p^k) / ((1 − p) · p^k).", like=(1 - run) / run / r, rel=0.02),
        Mistake("that is 1 / ((1 − p) · p^k), without the (1 − p^k) on top: the formula is "
                "(1 − p^k) / ((1 − p) · p^k), 2.5 calls (0.25 s) less.",
                like=1 / ((1 - p) * run) / r, rel=0.02),
        Mistake(f"you used {1 - p:g}, the chance of a SUCCESS, as p. p is the chance that a "
                f"call fails: {p:g}.", like=_calls_to_open(1 - p, k) / r, rel=0.03),
    ]


q2 = Question(
    id="q2", module=MODULE, title="how long a breaker stays closed under random failures",
    name="seconds_until_open",
    what=f"a number of seconds: the mean time, from closing, until a fail_max={FAIL_MAX} "
         f"breaker opens when {P_FAIL:.0%} of calls fail at random, at {RATE:g} calls/s",
    steps=[Value(SECONDS_UNTIL_OPEN, rel=0.05, unit=" s", mistakes=_q2_mistakes())],
    hints=[
        "The breaker opens at the first run of fail_max failures in a row; every success in "
        "between sets its count back to 0. The lesson worked out the mean number of calls "
        "until such a run for p = 0.3, k = 5, and checked it on 1,000 pybreakers.",
        "Use the same reasoning (or the same simulation) with p = 0.6 and k = 3, which gives "
        "a number of CALLS; then turn calls into seconds with the rate.",
        "calls = (1 - p**k) / ((1 - p) * p**k) with p = 0.6, k = 3; seconds_until_open = "
        "calls / 10. (A simulation: the mean of calls_until_open(0.6, 3, runs=2000) / 10.)",
    ],
    success=f"(1 − 0.6³) / (0.4 × 0.6³) = {_calls_to_open(P_FAIL, FAIL_MAX):.2f} calls, "
            f"{SECONDS_UNTIL_OPEN:.2f} s at {RATE:g}/s: a dependency that still answers 40% of "
            "calls opens a 3-in-a-row breaker about once a second, and each opening refuses "
            "everything for the reset timeout.",
)


# ----- q3: six breakers' logs, each from a run of real pybreaker code ---------------------------
STRETCH = 1000.0   # one model second is this many seconds of pybreaker's (real) clock


class _ModelStorage(pybreaker.CircuitMemoryStorage):
    """pybreaker's own storage, with its opening time kept on a model clock.

    pybreaker compares ``datetime.now()`` with ``opened_at + reset_timeout``; this storage
    records the model time it opened and answers with the real now minus the model time
    since (stretched by :data:`STRETCH`, and so is the breaker's reset_timeout), so that
    comparison asks "have reset_timeout model seconds passed?" and the real microseconds
    between pybreaker's two looks at the clock cannot change the answer."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(pybreaker.STATE_CLOSED)
        self.clock = clock
        self.opened_model: float | None = None

    @property
    def opened_at(self) -> datetime | None:
        if self.opened_model is None:
            return None
        since = self.clock() - self.opened_model
        return datetime.now(timezone.utc) - timedelta(seconds=since * STRETCH)

    @opened_at.setter
    def opened_at(self, when: datetime) -> None:
        self.opened_model = self.clock()


class _RestartsTimer(_ModelStorage):
    """The mistake: every call that finds it open restarts its reset timer, so under steady
    traffic reset_timeout never runs out."""

    @property
    def opened_at(self) -> datetime | None:
        if self.opened_model is not None:
            self.opened_model = self.clock()
        return _ModelStorage.opened_at.fget(self)

    @opened_at.setter
    def opened_at(self, when: datetime) -> None:
        _ModelStorage.opened_at.fset(self, when)


class _KeepsCount(_ModelStorage):
    """The mistake: a success leaves the failure count alone (only closing resets it), so
    it counts failures since it closed, not failures in a row."""

    closing = False

    @property
    def state(self) -> str:
        return pybreaker.CircuitMemoryStorage.state.fget(self)

    @state.setter
    def state(self, state: str) -> None:
        self.closing = state == pybreaker.STATE_CLOSED
        pybreaker.CircuitMemoryStorage.state.fset(self, state)

    def reset_counter(self) -> None:
        if self.closing:
            super().reset_counter()
            self.closing = False


class _ModelPyBreaker(AsyncPyBreaker):
    """The lesson's AsyncPyBreaker (pybreaker + a gate of ``trial_limit`` trials), on a
    model clock and with a chosen storage."""

    def __init__(self, clock: FakeClock, fail_max: int, trial_limit: int | None,
                 storage: type[_ModelStorage] = _ModelStorage) -> None:
        super().__init__(fail_max=fail_max, reset_timeout_s=LOG_RESET_S, trial_limit=trial_limit)
        self.breaker = pybreaker.CircuitBreaker(fail_max=fail_max,
                                                reset_timeout=LOG_RESET_S * STRETCH,
                                                throw_new_error_on_trip=False,
                                                state_storage=storage(clock))


LOG_FAIL_MAX, LOG_RESET_S, LOG_LATENCY_S = 4, 2.0, 0.2
LOG_MOMENTS = tuple(0.5 * i for i in range(20))     # 2 callers at once every 0.5 s
LOG_CALLERS = 2
OUTAGE = (1.0, 5.0)                                 # "outage": calls sent then fail
FLAKY_FAILS = (5, 13, 19, 28, 34)                   # "flaky": these call numbers fail

DIAGNOSES = {
    "healthy": "nothing wrong: it does what the lesson's breaker does",
    "stuck_open": "once open it never tries again: no trial call after reset_timeout",
    "no_trial_gate": "half-open lets every caller through, not one trial",
    "trips_on_one": "fail_max is 1: a single failure opens it",
    "count_never_resets": "a success does not reset its failure count: scattered failures "
                          "add up until it opens",
}
"""The answers q3 accepts, each with what it means."""


@dataclass(frozen=True)
class CallRecord:
    """One call through a breaker in a log's run (model seconds)."""

    n: int
    sent: float
    outcome: str          # "ok", "failed" or "refused"
    ended: float
    seq: int = 0          # the order in which calls ended and states changed


@dataclass
class BreakerLog:
    """A breaker, a dependency script, and what happened when the breaker ran it."""

    name: str
    dependency: str                         # "outage" or "flaky"
    mistake: str                            # a key of DIAGNOSES: how the breaker was built
    calls: list[CallRecord] = field(default_factory=list)
    changes: list[tuple[float, str, str, int]] = field(default_factory=list)

    def build(self, clock: FakeClock) -> _ModelPyBreaker:
        fail_max = 1 if self.mistake == "trips_on_one" else LOG_FAIL_MAX
        limit = None if self.mistake == "no_trial_gate" else 1
        storage = {"stuck_open": _RestartsTimer,
                   "count_never_resets": _KeepsCount}.get(self.mistake, _ModelStorage)
        return _ModelPyBreaker(clock, fail_max, limit, storage)

    def fails(self, n: int, sent: float) -> bool:
        """Does the dependency fail call number ``n`` sent at ``sent``?"""
        if self.dependency == "outage":
            return OUTAGE[0] <= sent < OUTAGE[1]
        return n in FLAKY_FAILS

    def run(self) -> BreakerLog:
        """Run the breaker over :data:`LOG_MOMENTS` on a model clock (once)."""
        if not self.calls:
            _run_async(lambda: _drive(self))
        return self

    def text(self) -> str:
        """The log as the service printed it: state changes and each moment's calls."""
        self.run()
        rows = [(t, 0, f"{t:5.2f} s  ** {old} -> {new}") for t, old, new, _ in self.changes]
        for moment in LOG_MOMENTS:
            calls = [c for c in self.calls if c.sent == moment]
            said = ", ".join(f"#{c.n} refused" if c.outcome == "refused"
                             else f"#{c.n} {c.outcome} at {c.ended:.2f}" for c in calls)
            rows.append((moment, 1, f"{moment:5.2f} s  calls {said}"))
        return f"log {self.name}\n" + "\n".join(text for _, _, text in sorted(rows))

    # ----- what the log shows, read from the run (not from how it was built) --------------
    def first_open(self) -> tuple[float, int, int] | None:
        """(time, failures in a row, failures since the start) when it first opened."""
        opened = next((change for change in self.changes if change[2] == "open"), None)
        if opened is None:
            return None
        when, seq = opened[0], opened[3]
        done = sorted((c for c in self.calls if c.outcome != "refused" and c.seq < seq),
                      key=lambda c: c.seq)
        streak = 0
        for call in done:
            streak = streak + 1 if call.outcome == "failed" else 0
        return when, streak, sum(c.outcome == "failed" for c in done)

    def longest_streak(self) -> int:
        """The most failures in a row, in the order the answers came back."""
        longest = streak = 0
        for call in sorted((c for c in self.calls if c.outcome != "refused"),
                           key=lambda c: c.seq):
            streak = streak + 1 if call.outcome == "failed" else 0
            longest = max(longest, streak)
        return longest

    def trials(self) -> int:
        """Times it went half-open."""
        return sum(new == "half-open" for _, _, new, _ in self.changes)

    def most_through_half_open(self) -> int:
        """The most calls of one moment that reached the dependency while not closed."""
        return max((sum(c.outcome != "refused" for c in self.calls if c.sent == moment)
                    for moment in LOG_MOMENTS if self._state_at(moment) != "closed"), default=0)

    def _state_at(self, t: float) -> str:
        before = [new for when, _, new, _ in self.changes if when <= t]
        return before[-1] if before else "closed"

    def refused(self) -> int:
        return sum(c.outcome == "refused" for c in self.calls)

    def shows(self) -> str:
        """What the log shows, in words, from the run."""
        first = self.first_open()
        if first is None:
            failed = sum(c.outcome == "failed" for c in self.calls)
            return (f"log {self.name} never opened ({failed} failures, at most "
                    f"{self.longest_streak()} in a row)")
        when, streak, total = first
        text = (f"log {self.name} first opened at {when:.2f} s after {streak} failure"
                f"{'s' * (streak != 1)} in a row ({total} since the start)")
        if not self.trials():
            return text + (f", then refused all of its {self.refused()} later calls and never "
                           "went half-open")
        most = self.most_through_half_open()
        return text + (f", went half-open {_times(self.trials())}, and let up to {most} "
                       f"call{'s' * (most != 1)} of one moment through while not closed")


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


async def _drive(log: BreakerLog) -> None:
    """Virtual time: callers arrive at each moment, the dependency answers LOG_LATENCY_S
    later; the clock jumps from event to event, so the run takes no wall time."""
    clock, queue, order = FakeClock(), [], itertools.count()
    clock.now = 0.0
    breaker = log.build(clock)
    seq = itertools.count()

    def heard(old: str, new: str) -> None:
        # pybreaker also reports open -> open when a second call's failure lands on a
        # breaker that has just opened; the log keeps real changes only.
        if old != new:
            log.changes.append((clock(), old, new, next(seq)))

    breaker.add_listener(heard)
    loop = asyncio.get_running_loop()

    async def caller(n: int, sent: float) -> None:
        answered: list[int | None] = [None]

        async def dependency() -> str:
            answer = loop.create_future()
            heapq.heappush(queue, (clock() + LOG_LATENCY_S, next(order), answer,
                                   log.fails(n, sent)))
            try:
                return await answer
            finally:  # numbered when the answer arrives, before the breaker hears of it
                answered[0] = next(seq)

        try:
            await breaker.call(dependency)
            outcome = "ok"
        except BreakerOpen:
            outcome = "refused"
        except DependencyDown:
            outcome = "failed"
        log.calls.append(CallRecord(n, sent, outcome, clock(), next(seq) if answered[0] is None else answered[0]))

    numbers = itertools.count(1)
    for moment in LOG_MOMENTS:
        for _ in range(LOG_CALLERS):
            heapq.heappush(queue, (moment, next(order), None, next(numbers)))
    while queue:
        clock.now, _, answer, what = heapq.heappop(queue)
        if answer is None:
            loop.create_task(caller(what, clock.now))
        elif what:
            answer.set_exception(DependencyDown("down"))
        else:
            answer.set_result("answer")
        await _settle()
    log.calls.sort(key=lambda c: c.n)


BREAKER_LOGS = {log.name: log for log in (
    BreakerLog("A", "outage", "no_trial_gate"),
    BreakerLog("B", "flaky", "healthy"),
    BreakerLog("C", "outage", "stuck_open"),
    BreakerLog("D", "flaky", "count_never_resets"),
    BreakerLog("E", "outage", "healthy"),
    BreakerLog("F", "flaky", "trips_on_one"),
)}
"""q3's six logs: ``print_logs()`` prints them."""


def print_logs() -> None:
    """Print q3's setting and its six logs."""
    print(f"Six breakers, all meant to be fail_max={LOG_FAIL_MAX}, reset_timeout="
          f"{LOG_RESET_S:g} s, one trial while half-open. Every 0.5 s {LOG_CALLERS} callers "
          f"call at once; the dependency answers {LOG_LATENCY_S:g} s later. 'outage': it is "
          f"down for calls sent from {OUTAGE[0]:g} to {OUTAGE[1]:g} s. 'flaky': a few "
          "scattered calls fail.")
    for log in BREAKER_LOGS.values():
        print(f"\n[{log.dependency}] " + log.text())


SIGNS = {
    "healthy": f"a healthy breaker opens only at {LOG_FAIL_MAX} failures in a row, stays open "
               "about reset_timeout, then sends one trial at a time",
    "stuck_open": "a stuck-open breaker opens and then refuses everything for good, with no "
                  "'open -> half-open' line",
    "no_trial_gate": "a breaker without a trial gate shows several calls of one moment "
                     "reaching the dependency while half-open",
    "trips_on_one": "a breaker with fail_max=1 opens on the first failure, with successes "
                    "just before it",
    "count_never_resets": f"a breaker that keeps its count opens after {LOG_FAIL_MAX} "
                          "failures with successes between them (never in a row)",
}


def _confusion(name: str, said: str) -> str:
    """The message for naming ``said`` for log ``name``: what that would look like, and
    what the log shows instead."""
    log = BREAKER_LOGS[name].run()
    tip = ""
    pair = {said, log.mistake}
    if pair == {"trips_on_one", "count_never_resets"}:
        tip = (" Both open under scattered failures: count the failures between the last "
               "'ok' before the opening and the opening.")
    elif pair == {"healthy", "stuck_open"} and log.dependency == "outage":
        tip = f" Look at the calls after the dependency came back ({OUTAGE[1]:g} s)."
    elif pair == {"healthy", "no_trial_gate"} and log.trials():
        tip = " Look at the moments just after '-> half-open': how many calls were NOT refused?"
    return f"log {name}: you said {said!r}, but {SIGNS[said]}; {log.shows()}.{tip}"


class _LogsStep(Step):
    """breaker_diagnosis: every log named, every value one of DIAGNOSES, each right."""

    def run(self, answer: Any) -> None:
        names = list(BREAKER_LOGS)
        if not isinstance(answer, dict):
            raise NotYet(f"breaker_diagnosis should be a dict {{log name: diagnosis}}, e.g. "
                         f'{{"A": "healthy", ...}}, got {type(answer).__name__}.')
        keys = {str(k).upper() if isinstance(k, str) else k for k in answer}
        if keys != set(names):
            missing = ", ".join(sorted(set(names) - keys, key=str)) or "none"
            extra = ", ".join(map(repr, sorted(keys - set(names), key=str))) or "none"
            raise NotYet(f"breaker_diagnosis needs one entry per log, {', '.join(names)} "
                         f"(missing: {missing}; not a log: {extra}).")
        given = {str(k).upper(): v for k, v in answer.items()}
        for name in names:
            if not isinstance(given[name], str) or given[name] not in DIAGNOSES:
                raise NotYet(f"log {name}: {given[name]!r} is not one of the diagnoses: "
                             f"{', '.join(map(repr, DIAGNOSES))}.")
        wrong = [name for name in names if given[name] != BREAKER_LOGS[name].run().mistake]
        if wrong:
            more = (f" ({len(wrong) - 1} other log{'s' * (len(wrong) > 2)} also wrong.)"
                    if len(wrong) > 1 else "")
            raise NotYet(_confusion(wrong[0], given[wrong[0]]) + more)


q3 = Question(
    id="q3", module=MODULE, title="diagnose six breakers from their logs",
    name="breaker_diagnosis",
    what='a dict {"A": diagnosis, ..., "F": diagnosis}, each diagnosis one of '
         + ", ".join(map(repr, DIAGNOSES)),
    steps=[_LogsStep()],
    hints=[
        "Each mistake leaves its own trace in a log. Ask three questions of each: what opened "
        "it (how many failures, in a row or not)? Does it ever go half-open? While half-open, "
        "how many calls reach the dependency?",
        f"For the opening, read the outcomes before the '-> open' line: {LOG_FAIL_MAX} 'failed' "
        f"in a row is right; 1 failure, or {LOG_FAIL_MAX} failures with 'ok's between them, is "
        "not. After the opening, "
        "look for '-> half-open' about 2 s later, and at that moment count the calls not "
        "refused.",
        "Two logs are healthy. In the outage logs: one never goes half-open, one lets both "
        "callers of a moment through while half-open. In the flaky logs: one opens on a lone "
        "failure, one opens on scattered failures.",
    ],
    success=f"you read each mistake from its trace: what opened the breaker (1 failure, "
            f"{LOG_FAIL_MAX} scattered ones, or {LOG_FAIL_MAX} in a row), whether a trial ever went out, and how many calls "
            "got through while half-open.",
)

QUESTIONS = [q1, q2, q3]
__all__ = ["q1", "q2", "q3", "QUESTIONS", "FakeClock", "DependencyDown", "BREAKER_LOGS",
           "BreakerLog", "DIAGNOSES", "print_logs"]
