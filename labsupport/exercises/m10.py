"""Module 10 · Capstone: make the synchronous checkout survive the bad day.

::

    from labsupport.exercises.m10 import q1, TARGETS, SCENARIO

* ``q1``: a function ``harden(checkout)`` that applies course patterns to a
  :class:`~labsupport.checkout_sync.SyncCheckout` through ``checkout.timeouts(...)``,
  ``checkout.retries(...)``, ``checkout.breaker(...)`` and ``checkout.fallback(...)``.

The check builds a fresh synchronous checkout on real services, calls your ``harden``,
and plays the bad day (:data:`SCENARIO`: inventory ten times slower, then payment down;
payment's gateway also has a tail: 4% of charges answer after 250 ms). It grades the
scoreboard against :data:`TARGETS` and names the first problem it finds.
"""
from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import dataclass
from typing import Any

from ..chaos import ChaosSchedule, run_designs
from ..checkout import Scoreboard
from ..checkout_sync import SyncCheckout
from ..checks import LearnerRaised, NotYet, Question, Step, call_learner
from ..errors import LabError
from ..latency import Constant, Normal, Spikes

MODULE = "10"
_RUNS = itertools.count(1)


@dataclass(frozen=True)
class Targets:
    """What the hardened checkout must achieve on the bad day."""

    success: float = 0.97
    p99_ms: float = 400.0
    lost: int = 0
    charged_twice: int = 0
    recover_s: float = 6.0
    payment_calls_per_order: float = 1.75

    def describe(self) -> str:
        return (f"at least {self.success:.0%} of customers hear yes (200 or 202); user-facing "
                f"p99 at most {self.p99_ms:g} ms; {self.lost} orders lost; {self.charged_twice} "
                f"customers charged twice; back to normal within {self.recover_s:g} s after the "
                f"chaos (the synchronous path answers 200 again and every deferred order is "
                f"confirmed); at most {self.payment_calls_per_order:g} calls to payment per "
                "order (no retry storm)")


TARGETS = Targets()
SCENARIO = ChaosSchedule(seconds=14.0, slow_factor=10.0, slow_s=(2.0, 5.0), crash_s=(7.0, 10.0))
RATE = 8.0
PAYMENT_WITH_TAIL = Spikes(Normal(30, 8), Constant(250), p=0.04)
"""Payment's gateway in the check: usually about 30 ms, 4% of charges take 250 ms."""


@dataclass
class CheckRun:
    """One check: the checkout as hardened and its scoreboard."""

    checkout: SyncCheckout
    board: Scoreboard

    def describe(self) -> str:
        return f"{self.checkout.policy()}\n{self.board.summary()}"


last_run: CheckRun | None = None
"""The last check's run (the solution notebook shows its timeline)."""


def your_run() -> CheckRun:
    """The run the last ``q1.check()`` measured (its checkout and scoreboard).

    Raises a clear :class:`~labsupport.errors.LabError` when the check has not run yet.
    """
    if last_run is None:
        raise LabError("The check has not run your checkout yet, so there is nothing to show.",
                       "write harden(checkout) above and run q1.check() first")
    return last_run


def run_bad_day(harden: Any, seed: int = 10) -> CheckRun:
    """Build a fresh synchronous checkout, ``harden`` it, play :data:`SCENARIO`."""
    from .. import lab as lab_module

    current = lab_module.current()
    lab = current if current is not None else lab_module.Lab(seed=seed)
    checkout = SyncCheckout(lab, prefix=f"chk{next(_RUNS)}_", payment=PAYMENT_WITH_TAIL,
                            name="hardened synchronous")
    try:
        call_learner(harden, checkout, call="harden(checkout)")
        _static(checkout)
        if checkout.completer is not None:
            checkout.completer.wait_assigned()
        board = run_designs(lab, [checkout], SCENARIO, RATE, seed, "chk")[0]
    finally:
        if checkout.completer is not None:
            checkout.completer.stop(raise_error=False)
        if current is None:
            lab.close()
    return CheckRun(checkout, board)


def _static(checkout: SyncCheckout) -> None:
    """Problems visible before anything runs."""
    for name, value in (("payment", checkout.payment_timeout_ms),
                        ("inventory", checkout.inventory_timeout_ms)):
        if value is not None and value >= TARGETS.p99_ms:
            raise NotYet(f"your {name} timeout is {value:g} ms, longer than the p99 target of "
                         f"{TARGETS.p99_ms:g} ms: a customer whose call times out has already "
                         "waited too long. A timeout must fit inside the target with the other "
                         "steps: e.g. 100-150 ms per call.")


def diagnose(run: CheckRun) -> None:
    """Raise NotYet naming the first target missed, in the words of the likely cause."""
    c, b, t = run.checkout, run.board, TARGETS
    if c.learner_errors:
        raise LearnerRaised(c.learner_errors[0], "your fallback(order)")
    score = (f"(measured: {b.success_rate:.1%} said yes, p99 {b.p(99):.0f} ms, {b.lost} lost, "
             f"{b.double_charged} charged twice, recovered after {b.recover_s:.1f} s)")
    if b.lost > t.lost:
        raise NotYet(f"{b.lost} orders were lost: the customer was told yes (202) but the order "
                     "was never confirmed, and no message anywhere will finish it. Your fallback "
                     "answers yes without keeping the order: it must hand the order to someone "
                     "who completes it later, e.g. `return await checkout.defer(order)`, which "
                     f"publishes it to the broker for the completer. {score}")
    if b.double_charged > t.charged_twice:
        why = ("your retries (and the completer) send no idempotency key, so a retry after a "
               "timeout charges again: the first charge went through, only its answer was "
               "slow. Pass idempotency_key=True to checkout.retries(...)"
               if not c.idempotency_key else "a retry charged again")
        raise NotYet(f"{b.double_charged} customers were charged twice: {why}. {score}")
    if b.recover_s > t.recover_s:
        state = getattr(c._breaker, "state", "closed")
        if math.isinf(b.recover_s) and state != "closed":
            raise NotYet(f"after the chaos the checkout never went back to normal: the breaker "
                         f"is still {state}, so every order after payment came back was "
                         "deferred instead of confirmed. A breaker must close again: give it a "
                         "reset timeout of about a second (model time), so a trial call finds "
                         f"payment healthy. {score}")
        raise NotYet(f"the checkout took {b.recover_s:.1f} s after the chaos to be normal again "
                     f"(target {t.recover_s:g} s). {score}")
    if b.success_rate < t.success:
        if c._fallback is None and (c.payment_timeout_ms or c.inventory_timeout_ms):
            raise NotYet(f"only {b.success_rate:.1%} of customers heard yes. Timeouts alone make "
                         "failures fast, not fewer: while inventory is slow or payment is down "
                         "every customer is still turned away. Add a fallback that keeps the "
                         "order and finishes it later (checkout.fallback(checkout.defer)). "
                         f"{score}")
        if c._fallback is None:
            raise NotYet(f"the checkout is unchanged as far as the bad day can tell: "
                         f"{b.success_rate:.1%} said yes (target {t.success:.0%}) and p99 was "
                         f"{b.p(99):.0f} ms (target {t.p99_ms:g}). Every customer is turned away "
                         "while payment is down and waits for slow inventory. Start with "
                         f"timeouts, then a fallback. {score}")
        raise NotYet(f"only {b.success_rate:.1%} of customers heard yes (target "
                     f"{t.success:.0%}): your fallback turned customers away. {score}")
    if b.p(99) > t.p99_ms:
        if c.payment_timeout_ms is None or c.inventory_timeout_ms is None:
            raise NotYet(f"p99 was {b.p(99):.0f} ms (target {t.p99_ms:g}): without a timeout on "
                         "every call, customers wait for slow inventory (or a slow charge). "
                         f"Set both timeouts. {score}")
        raise NotYet(f"p99 was {b.p(99):.0f} ms (target {t.p99_ms:g}). The worst case of your "
                     f"policy is {c.worst_case_ms():.0f} ms (attempts x payment timeout + "
                     "backoff + inventory timeout): shorten the timeouts or use fewer attempts. "
                     f"{score}")
    per_order = b.payment_calls / max(len(b.sent), 1)
    if per_order > t.payment_calls_per_order:
        how = ("your retries go out at once, with no backoff" if c.backoff is None
               else "nothing stops the retries while payment is down")
        raise NotYet(f"payment got {b.payment_calls} calls for {len(b.sent)} orders "
                     f"({per_order:.2f} per order, target at most "
                     f"{t.payment_calls_per_order:g}): {how}. While a service is down, retrying "
                     "only adds load: wait between tries (a backoff policy) and put a circuit "
                     f"breaker in front so calls stop until it recovers. {score}")


class _HardenStep(Step):
    def run(self, answer: Any) -> None:
        global last_run
        if not callable(answer) or inspect.isclass(answer):
            raise NotYet(f"`harden` should be a function (def harden(checkout): ...), got "
                         f"{type(answer).__name__}.")
        try:
            inspect.signature(answer).bind(object())
        except TypeError as exc:
            raise NotYet("harden must take one argument: harden(checkout).") from exc
        except ValueError:
            pass
        try:
            last_run = run_bad_day(answer)
        except LabError as exc:
            raise NotYet(f"the check could not run the services: {exc}") from exc
        diagnose(last_run)


q1 = Question(
    id="q1", module=MODULE, title="a synchronous checkout that survives the bad day",
    name="harden",
    what="a function harden(checkout) that sets timeouts, retries, a breaker and a fallback",
    steps=[_HardenStep()],
    hints=[
        "Four problems, four patterns. Slow inventory: a timeout per call (module 02). A "
        "gateway that is sometimes slow: a retry, with backoff (module 03) and the same "
        "idempotency key on every try (module 06). Payment down: a circuit breaker (module "
        "04). Customers still need an answer when a step fails: a fallback that keeps the "
        "order and finishes it later over the broker (module 05).",
        "checkout.timeouts(payment_ms=..., inventory_ms=...) with values well under the p99 "
        "target; checkout.retries(attempts=2, backoff=FullJitter(10, 40), "
        "idempotency_key=True); checkout.breaker(AsyncPyBreaker(fail_max=3, "
        "reset_timeout_s=...)); checkout.fallback(checkout.defer).",
        "The breaker's reset timeout decides how soon the synchronous path comes back after "
        "payment does: about half a second (model time) recovers well within the target. "
        "Keep attempts x payment timeout + backoff cap + inventory timeout at or under the "
        "p99 target.",
    ],
    success="your checkout keeps its customers through the bad day: timeouts bound the wait, "
            "idempotent retries with backoff ride out the gateway's tail without charging "
            "twice, the breaker stops calls to a dead payment service and closes again, and "
            "the deferred orders wait in the log until the completer finishes them: none lost.",
)

QUESTIONS = [q1]
__all__ = ["q1", "QUESTIONS", "TARGETS", "SCENARIO", "run_bad_day", "diagnose", "last_run",
           "your_run"]
