"""Module 10 · Capstone: make the synchronous checkout survive the bad day.

::

    from labsupport.exercises.m10 import q1, TARGETS, SCENARIO

* ``q1``: a function ``harden(checkout)`` that applies course patterns to a
  :class:`~labsupport.checkout_sync.SyncCheckout` through ``checkout.timeouts(...)``,
  ``checkout.retries(...)``, ``checkout.breaker(...)`` and ``checkout.fallback(...)``.

The check builds a fresh synchronous checkout on real services, calls your ``harden``,
and plays the bad day (:data:`SCENARIO`: inventory ten times slower, then payment down).
Payment goes down the nasty way: it **hangs** (accepts the call, never answers) rather
than refusing at once, so every call without a breaker waits out its whole timeout. Its
gateway also has a tail on normal days: one charge in four answers only after 250 ms. It
grades the scoreboard against :data:`TARGETS` and names the first problem it finds; the
success message describes the policy you set, nothing more.
"""
from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import dataclass
from typing import Any

from ..chaos import CRASH, ChaosSchedule, run_designs
from ..checkout import Scoreboard, Sent
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
    p99_ms: float = 600.0
    lost: int = 0
    charged_twice: int = 0
    recover_s: float = 8.0
    payment_calls_per_order: float = 1.75
    one_try_deferrals: int = 8
    hung_share: float = 0.5

    def describe(self) -> str:
        return (f"at least {self.success:.0%} of customers hear yes (200 or 202); user-facing "
                f"p99 at most {self.p99_ms:g} ms; {self.lost} orders lost; {self.charged_twice} "
                f"customers charged twice; back to normal within {self.recover_s:g} s after the "
                f"chaos (the synchronous path answers 200 again and every deferred order is "
                f"confirmed); at most {self.payment_calls_per_order:g} calls to payment per "
                f"order (no retry storm); away from the chaos at most "
                f"{self.one_try_deferrals} orders deferred after a single try at payment; "
                f"while payment hangs, at most {self.hung_share:.0%} of customers wait out a "
                "payment timeout")


TARGETS = Targets()
SCENARIO = ChaosSchedule(seconds=30.0, slow_factor=10.0, slow_s=(3.0, 6.0), crash_s=(8.0, 11.0))
RATE = 8.0
PAYMENT_WITH_TAIL = Spikes(Normal(30, 8), Constant(250), p=0.25)
"""Payment's gateway in the check: usually about 30 ms, one charge in four takes 250 ms."""
AWAY_S = 2.0
"""Orders sent this long before the chaos or after it count as "away from the chaos"."""


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
                            name="hardened synchronous", outage="hang")
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


def away_from_chaos(board: Scoreboard) -> list[Sent]:
    """Orders sent at least :data:`AWAY_S` before the first window or after the last one."""
    start = min(a for _, a, _ in board.windows)
    end = max(b for _, _, b in board.windows)
    return [s for s in board.sent if s.t < start - AWAY_S or s.t >= end + AWAY_S]


def one_try_deferrals(run: CheckRun) -> int:
    """Orders away from the chaos deferred (202) after exactly one payment call: one slow
    answer from the gateway's everyday tail, and no second try. (Orders the breaker
    refused made no call; a load-slowed first try followed by a retry made two.)"""
    return sum(s.status == 202 and run.checkout.tries.get(s.order_id, 0) == 1
               for s in away_from_chaos(run.board))


def hung_share(run: CheckRun) -> float:
    """Share of the customers who ordered while payment hung and waited at least the
    payment timeout (all of them when there is no timeout): each waited on a dead call."""
    down = run.board.within(CRASH)
    limit = run.checkout.payment_timeout_ms or 0.0
    return sum(s.ms >= limit for s in down) / len(down) if down else math.nan


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
    if c._fallback is not None and b.p(99) > t.p99_ms:
        _untimed(run, score)   # a call with no timeout also keeps the completer waiting
    protected = c._fallback is not None and c.payment_timeout_ms is not None
    if protected:
        _tail(run)   # deferring the everyday tail fills the completer's backlog
        _hung(run)   # the root cause of slow answers and of a slow recovery
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
        _untimed(run, score)
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
    _hung(run)
    _tail(run)


def _untimed(run: CheckRun, score: str) -> None:
    """A call without a timeout waits as long as its dependency does."""
    c, b = run.checkout, run.board
    if c.payment_timeout_ms is None or c.inventory_timeout_ms is None:
        raise NotYet(f"p99 was {b.p(99):.0f} ms (target {TARGETS.p99_ms:g}): without a timeout "
                     "on every call, customers wait for slow inventory, or for as long as "
                     f"payment hangs. Set both timeouts. {score}")


def _hung(run: CheckRun) -> None:
    """While payment hangs, only a breaker spares customers the whole timeout."""
    c, share = run.checkout, hung_share(run)
    if not share > TARGETS.hung_share:
        return
    waited = f"{share:.0%} of the customers who ordered while payment hung"
    timeout = f"{c.payment_timeout_ms:g} ms"
    if c._breaker is None:
        raise NotYet(f"{waited} waited out your whole payment timeout ({timeout}, target at "
                     f"most {TARGETS.hung_share:.0%}). Payment did not refuse the calls, it "
                     "hung: a slow dependency is worse than a dead one, because every call "
                     "waits its full timeout before the fallback runs. A circuit breaker "
                     "(module 04) notices the failures, opens, and answers the next calls at "
                     "once: checkout.breaker(AsyncPyBreaker(fail_max=..., reset_timeout_s=...)).")
    raise NotYet(f"{waited} still waited out your payment timeout ({timeout}, target at most "
                 f"{TARGETS.hung_share:.0%}): your breaker did not spare them. It opens too "
                 "late (fail_max too high) or tries payment again too often (reset timeout "
                 "too short for an outage of seconds): each trial call waits the full timeout.")


def _tail(run: CheckRun) -> None:
    """On a normal day a retry rides out the gateway's slow tail."""
    c, count = run.checkout, one_try_deferrals(run)
    if count <= TARGETS.one_try_deferrals:
        return
    why = ("you make one attempt only (no checkout.retries(...)). One more try, with a short "
           "backoff and the same idempotency key, almost always finds a fast answer"
           if c.attempts == 1 else "a first try failed and no second one followed")
    raise NotYet(f"away from the chaos {count} orders were deferred after a single slow "
                 f"answer from payment (target at most {TARGETS.one_try_deferrals}), although "
                 f"nothing was broken: one charge in four is slow on a normal day, and {why}.")


def praise(checkout: SyncCheckout) -> str:
    """The success message, built only from the patterns this checkout uses."""
    parts = []
    if checkout.payment_timeout_ms and checkout.inventory_timeout_ms:
        parts.append(f"timeouts of {checkout.payment_timeout_ms:g} ms (payment) and "
                     f"{checkout.inventory_timeout_ms:g} ms (inventory) bound the wait")
    if checkout.attempts > 1:
        backoff = "no backoff" if checkout.backoff is None else \
            getattr(checkout.backoff, "name", None) or type(checkout.backoff).__name__
        key = "the same idempotency key" if checkout.idempotency_key else "no idempotency key"
        parts.append(f"{checkout.attempts} attempts ({backoff}, {key}) rode out the gateway's "
                     "slow tail without charging anyone twice")
    if checkout._breaker is not None:
        parts.append(f"the breaker ({type(checkout._breaker).__name__}) answered at once while "
                     "payment hung, and closed again when it came back")
    if checkout._fallback is not None:
        name = getattr(checkout._fallback, "__name__", "your fallback")
        parts.append(f"the fallback ({name}) kept every order it answered yes to, and the "
                     "completer confirmed them later: none lost")
    return ("your checkout met every target on the bad day: " + "; ".join(parts) + "."
            if parts else "your checkout met every target on the bad day.")


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


class _HardenQuestion(Question):
    """The success text describes the policy of the run that passed, nothing more."""

    @property
    def success(self) -> str:
        return praise(last_run.checkout) if last_run is not None else "every target met."

    @success.setter
    def success(self, text: str) -> None:  # Question.__init__ sets it; the run decides
        pass


q1 = _HardenQuestion(
    id="q1", module=MODULE, title="a synchronous checkout that survives the bad day",
    name="harden",
    what="a function harden(checkout) that sets timeouts, retries, a breaker and a fallback",
    steps=[_HardenStep()],
    hints=[
        "Four problems, four patterns. Slow inventory: a timeout per call (module 02). A "
        "gateway that is often slow (one charge in four): a retry, with backoff (module 03) "
        "and the same idempotency key on every try (module 06). Payment hanging: a circuit "
        "breaker (module 04), or every customer waits out the timeout. Customers still need "
        "an answer when a step fails: a fallback that keeps the order and finishes it later "
        "over the broker (module 05).",
        "checkout.timeouts(payment_ms=..., inventory_ms=...) with values well under the p99 "
        "target; checkout.retries(attempts=2, backoff=FullJitter(10, 40), "
        "idempotency_key=True); checkout.breaker(AsyncPyBreaker(fail_max=5, "
        "reset_timeout_s=...)); checkout.fallback(checkout.defer).",
        "The breaker's reset timeout decides how soon the synchronous path comes back after "
        "payment does: about half a second (model time) recovers well within the target. "
        "Keep attempts x payment timeout + backoff cap + inventory timeout well under the "
        "p99 target: the network and the fallback's publish add their own milliseconds.",
    ],
)

QUESTIONS = [q1]
__all__ = ["q1", "QUESTIONS", "TARGETS", "SCENARIO", "run_bad_day", "diagnose", "last_run",
           "your_run"]
