"""Module 04 · Circuit breakers: the exercise question.

::

    from labsupport.exercises.m04 import q1

* ``q1``: a class ``Breaker(fail_max=5, reset_timeout=60.0, clock=time.monotonic)`` with
  ``state`` (``"closed"``, ``"open"``, ``"half-open"``), ``add_listener(fn)`` where
  ``fn(old_state, new_state)`` hears every change, and ``async call(fn)``: awaits ``fn()``
  while closed, raises :class:`~labsupport.breakers.BreakerOpen` without calling ``fn``
  while open, lets one trial call through after ``reset_timeout`` seconds of ``clock()``.

The checker asserts what pybreaker's and resilience4j's own tests assert, on a fake clock
(no sleeping): it opens at exactly ``fail_max`` consecutive failures; a success resets
the count; while open it refuses without calling; after the timeout one trial; a failed
trial re-opens, a good one closes; listeners hear the changes in order; and with many
concurrent callers only one trial is in flight while half-open.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..breakers import BreakerOpen
from ..checks import LearnerRaised, NotYet, Question, Step

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
                             "raise BreakerOpen (from labsupport.breakers) so callers can tell "
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

QUESTIONS = [q1]
__all__ = ["q1", "QUESTIONS", "FakeClock", "DependencyDown"]
