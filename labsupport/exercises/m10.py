"""Module 10 · Capstone: make the synchronous checkout survive the bad day.

::

    from labsupport.exercises.m10 import q1, TARGETS, SCENARIO

* ``q1``: a function ``harden(checkout)`` that applies course patterns to a
  :class:`~labsupport.lessons.m10_capstone_checkout.checkout_sync.SyncCheckout` through ``checkout.timeouts(...)``,
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
import random
from dataclasses import dataclass
from typing import Any

from labsupport.course.checks import (
    Diagnosis,
    LearnerRaised,
    Mistake,
    NotYet,
    Question,
    Step,
    Value,
    call_learner,
)
from labsupport.kit.evidence import Estimate, quantile, share
from labsupport.lessons.m10_capstone_checkout.chaos import CRASH, ChaosSchedule, run_designs
from labsupport.lessons.m10_capstone_checkout.checkout import Scoreboard, Sent, drain_recovery_s
from labsupport.lessons.m10_capstone_checkout.checkout_sync import SyncCheckout
from labsupport.runtime.errors import LabError
from labsupport.runtime.latency import Constant, Normal, Spikes

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
    one_try_share: float = 0.1
    hung_share: float = 0.5

    def describe(self) -> str:
        return (f"at least {self.success:.0%} of customers hear yes (200 or 202); user-facing "
                f"p99 at most {self.p99_ms:g} ms; {self.lost} orders lost; {self.charged_twice} "
                f"customers charged twice; within {self.recover_s:g} s after the chaos the "
                f"synchronous path confirms orders at once (200) again, and every deferred "
                f"order is confirmed in the end; at most {self.payment_calls_per_order:g} calls to payment per "
                f"order (no retry storm); away from the chaos at most "
                f"{self.one_try_share:.0%} of orders deferred after a single failed try at "
                "payment; "
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

    Raises a clear :class:`~labsupport.runtime.errors.LabError` when the check has not run yet.
    """
    if last_run is None:
        raise LabError("The check has not run your checkout yet, so there is nothing to show.",
                       "write harden(checkout) above and run q1.check() first")
    return last_run


def run_bad_day(harden: Any, seed: int = 10) -> CheckRun:
    """Build a fresh synchronous checkout, ``harden`` it, play :data:`SCENARIO`."""
    from labsupport.runtime import lab as lab_module

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


def one_try_share(run: CheckRun) -> Estimate:
    """Share of the orders away from the chaos deferred (202) because payment failed after
    exactly one call: one slow answer from the gateway's everyday tail, and no second try
    (Wilson's interval). Orders deferred by a slow inventory, or refused by the breaker
    without a call, do not count: the question is whether a retry rode out the tail."""
    c, away = run.checkout, away_from_chaos(run.board)
    hits = sum(s.status == 202 and s.order_id in c.unpaid and c.tries.get(s.order_id, 0) == 1
               for s in away)
    return share(hits, len(away))


def hung_share(run: CheckRun) -> Estimate:
    """Share of the customers who ordered while payment hung and waited at least the
    payment timeout (all of them when there is no timeout): each waited on a dead call
    (Wilson's interval)."""
    down = run.board.within(CRASH)
    limit = run.checkout.payment_timeout_ms or 0.0
    return share(sum(s.ms >= limit for s in down), len(down))


def back_s(run: CheckRun) -> tuple[float, float]:
    """(synchronous path back, every deferred order confirmed): model seconds after the
    chaos. The first is the policy's: when the first order sent after the chaos was
    confirmed at once (200), i.e. the breaker closed again; ``inf`` if none was. The second
    is the completer's backlog, which a busy machine stretches, so only its end is graded.
    (A streak of normal answers would be stricter, but on a busy machine a 120 ms timeout
    defers calm orders too and the streak measures the machine, not the breaker.)"""
    b, end = run.board, SCENARIO.end_s
    first = min((s.t + s.ms / 1000 - end for s in b.sent if s.t >= end and s.status == 200),
                default=math.inf)
    confirmed_at = {s.order_id: s.t + b.end_to_end_ms[s.order_id] / 1000
                    for s in b.sent if s.order_id in b.end_to_end_ms}
    deferred = [s for s in b.sent if s.status == 202]
    return max(0.0, first), drain_recovery_s(deferred, confirmed_at, end)


def p99(board: Scoreboard) -> Estimate:
    """The customers' p99 wait with its order-statistics interval (240 orders: the interval
    runs from the 7th slowest answer to the slowest)."""
    return quantile(board.waits(), 0.99)


NORMAL_WORK_MS = 80.0
"""A calm checkout's own work: payment's usual 30 ms and inventory's 50 ms."""


def overhead_ms(board: Scoreboard) -> float:
    """The machine's own cost per checkout: the calm median of confirmed orders minus the
    services' work (0 on an idle machine; a busy one, at a small time scale, adds 100 ms)."""
    calm = board.p(50, outcome="confirmed", during="calm")
    return 0.0 if math.isnan(calm) else max(0.0, calm - NORMAL_WORK_MS)


def too_slow(board: Scoreboard) -> bool:
    """True only when the whole p99 interval, less the machine's own overhead, lies above
    the target: at least the 7th slowest of 240 customers waited longer than it. A busy
    machine moves a point p99 by a hundred milliseconds; a missing timeout moves the whole
    interval by seconds."""
    return p99(board).low - overhead_ms(board) > TARGETS.p99_ms


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
    if c.fallback_in_use is not None and too_slow(b):
        _untimed(run, score)   # a call with no timeout also keeps the completer waiting
    protected = c.fallback_in_use is not None and c.payment_timeout_ms is not None
    if protected:
        _tail(run)   # deferring the everyday tail fills the completer's backlog
        _hung(run)   # the root cause of slow answers and of a slow recovery
    back, drained = back_s(run)
    if math.isinf(drained):
        raise NotYet(f"after the chaos some deferred orders were never confirmed: they still "
                     f"wait in the log ({b.left_in_log} messages) for a completer that gave up "
                     f"or stopped. {score}")
    if back > t.recover_s:
        state = getattr(c.breaker_in_use, "state", "closed")
        if math.isinf(back) and state != "closed":
            raise NotYet(f"after the chaos the checkout never went back to normal: the breaker "
                         f"is still {state}, so every order after payment came back was "
                         "deferred instead of confirmed. A breaker must close again: give it a "
                         "reset timeout of about a second (model time), so a trial call finds "
                         f"payment healthy. {score}")
        raise NotYet(f"the synchronous path took {back:.1f} s after the chaos to confirm an "
                     f"order at once again (target {t.recover_s:g} s): a breaker that "
                     "waits long before its trial call keeps deferring orders after payment is "
                     f"back. Shorten its reset timeout. {score}")
    if b.success_rate < t.success:
        if c.fallback_in_use is None and (c.payment_timeout_ms or c.inventory_timeout_ms):
            raise NotYet(f"only {b.success_rate:.1%} of customers heard yes. Timeouts alone make "
                         "failures fast, not fewer: while inventory is slow or payment is down "
                         "every customer is still turned away. Add a fallback that keeps the "
                         "order and finishes it later (checkout.fallback(checkout.defer)). "
                         f"{score}")
        if c.fallback_in_use is None:
            raise NotYet(f"the checkout is unchanged as far as the bad day can tell: "
                         f"{b.success_rate:.1%} said yes (target {t.success:.0%}) and p99 was "
                         f"{b.p(99):.0f} ms (target {t.p99_ms:g}). Every customer is turned away "
                         "while payment is down and waits for slow inventory. Start with "
                         f"timeouts, then a fallback. {score}")
        raise NotYet(f"only {b.success_rate:.1%} of customers heard yes (target "
                     f"{t.success:.0%}): your fallback turned customers away. {score}")
    if too_slow(b):
        _untimed(run, score)
        raise NotYet(f"p99 was {p99(b).describe()} ms, wholly above the target of "
                     f"{t.p99_ms:g} ms. The worst case of your "
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
        raise NotYet(f"p99 was {p99(b).describe()} ms, wholly above the target of "
                     f"{TARGETS.p99_ms:g} ms: without a timeout "
                     "on every call, customers wait for slow inventory, or for as long as "
                     f"payment hangs. Set both timeouts. {score}")


def _hung(run: CheckRun) -> None:
    """While payment hangs, only a breaker spares customers the whole timeout."""
    c, hung = run.checkout, hung_share(run)
    if not hung.low > TARGETS.hung_share:   # decided only when the whole interval is above
        return
    waited = f"{hung.value:.0%} of the customers who ordered while payment hung"
    timeout = f"{c.payment_timeout_ms:g} ms"
    if c.breaker_in_use is None:
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
    c, tried_once = run.checkout, one_try_share(run)
    if not tried_once.low > TARGETS.one_try_share:   # the whole interval above the target
        return
    why = ("you make one attempt only (no checkout.retries(...)). One more try, with a short "
           "backoff and the same idempotency key, almost always finds a fast answer"
           if c.attempts == 1 else "a first try failed and no second one followed")
    raise NotYet(f"away from the chaos {tried_once.value:.0%} of the orders (interval "
                 f"{tried_once.low:.0%} to {tried_once.high:.0%}) were deferred after a single "
                 f"slow answer from payment (target at most {TARGETS.one_try_share:.0%}), although "
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
    if checkout.breaker_in_use is not None:
        parts.append(f"the breaker ({type(checkout.breaker_in_use).__name__}) answered at once while "
                     "payment hung, and closed again when it came back")
    if checkout.fallback_in_use is not None:
        name = getattr(checkout.fallback_in_use, "__name__", "your fallback")
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


# ----- q2: predict the drain after an outage -------------------------------------------------------
@dataclass(frozen=True)
class Outage:
    """The event-driven checkout's payment consumer down for ``down_s`` while orders keep
    arriving; back, a new consumer needs ``join_s`` to join its group, then handles
    ``drain_per_s`` orders a second (model seconds)."""

    rate_per_s: float = 5.0
    down_s: float = 6.0
    join_s: float = 1.0
    drain_per_s: float = 25.0

    def caught_up_s(self) -> float:
        """Seconds after payment comes back until the lag is 0: the backlog of the outage and
        of the join, drained at what the consumer does beyond the orders still arriving."""
        backlog = self.rate_per_s * (self.down_s + self.join_s)
        return self.join_s + backlog / (self.drain_per_s - self.rate_per_s)


OUTAGE = Outage()
_O = OUTAGE
_LAM, _MU, _T, _J = _O.rate_per_s, _O.drain_per_s, _O.down_s, _O.join_s

q2 = Question(
    id="q2", module=MODULE, title="predict how long the event-driven checkout takes to catch up",
    name="caught_up_s",
    what="a number of model seconds: from payment coming back until the lag is 0",
    steps=[Value(_O.caught_up_s(), rel=0.04, unit=" s", mistakes=[
        Mistake("that drains the backlog at the consumer's full rate, as if no order arrived "
                "meanwhile. New orders keep coming at 5/s, so the backlog shrinks only by "
                "drain - rate a second.", like=_J + _LAM * (_T + _J) / _MU),
        Mistake("that forgets the join: the new consumer handles nothing for the first "
                f"{_J:g} s, and the orders of that second join the backlog too.",
                like=_LAM * _T / (_MU - _LAM)),
        Mistake("that counts the join's second but not the orders that arrived during it: "
                f"the backlog when draining starts is rate x ({_T:g} + {_J:g}) s.",
                like=_J + _LAM * _T / (_MU - _LAM)),
        Mistake("that is how long the first order of the outage waited for its confirmation "
                "(outage + join), not how long the backlog takes to drain after payment is "
                "back.", like=_T + _J),
        Mistake("give model seconds, not milliseconds.", like=1000 * _O.caught_up_s()),
    ])],
    hints=[
        "Two phases after payment comes back: the new consumer joins (handles nothing), then "
        "it drains. While it drains, do new orders stop arriving?",
        "Backlog when the drain starts = rate x (outage + join). It shrinks at (drain rate - "
        "arrival rate) a second.",
        "caught_up_s = join + rate x (outage + join) / (drain - rate); a simulation of the "
        "orders one by one lands within 4%.",
    ],
    success=f"{_J:g} s to join, then {_LAM * (_T + _J):g} orders drained at {_MU - _LAM:g} a "
            f"second: {_O.caught_up_s():.2f} s. The drain is paid at drain - rate, so a "
            "consumer sized only for the normal rate never catches up.",
)


# ----- q3: diagnose scoreboards -----------------------------------------------------------------------
CAUSES = {
    "no_idempotency_key": "retries without an idempotency key",
    "fallback_keeps_nothing": "a fallback that answers yes and keeps nothing",
    "breaker_never_closes": "a breaker that never closes again",
    "no_breaker": "no breaker while payment hangs",
}
SYMPTOMS = {
    "no_idempotency_key": "its customers heard yes and nothing was lost, but some paid twice",
    "fallback_keeps_nothing": "it said yes to everyone, and orders it said yes to were never "
                              "confirmed (lost)",
    "breaker_never_closes": "it answered at once while payment was down, but never went back "
                            "to normal afterwards (recover: inf)",
    "no_breaker": "every customer who ordered while payment hung waited out the timeouts "
                  "(p50 while down several hundred ms) before hearing yes",
}


def _shop_board(cause: str, name: str, seed: int) -> Scoreboard:
    """One shop's scoreboard on the check's bad day, simulated from its one mistake."""
    rng = random.Random(f"{cause}:{seed}")
    windows = SCENARIO.windows
    (_, slow_a, slow_b), (_, down_a, down_b) = windows
    sent, states, e2e, twice = [], {}, {}, 0
    t = 0.0
    while t < SCENARIO.seconds:
        oid = f"{name}-{len(sent) + 1}"
        tail = rng.random() < 0.25
        status, ms = 200, rng.gauss(95, 12) + (140 if tail else 0)
        if slow_a <= t < slow_b or tail and cause == "fallback_keeps_nothing":
            status, ms = 202, rng.gauss(260, 15)
        if down_a <= t < down_b:
            status = 202
            ms = rng.gauss(390, 20) if cause == "no_breaker" else rng.gauss(12, 3)
        if cause == "breaker_never_closes" and t >= down_a:
            status, ms = 202, rng.gauss(12, 3)
        twice += cause == "no_idempotency_key" and (tail or down_a <= t < down_b)
        lost = cause == "fallback_keeps_nothing" and status == 202
        states[oid] = "PENDING" if lost else "CONFIRMED"
        if not lost:
            e2e[oid] = ms if status == 200 else ms + rng.uniform(300, 4000)
        sent.append(Sent(round(t, 3), max(ms, 1.0), status, oid))
        t += rng.expovariate(RATE)
    board = Scoreboard(name, sent, states, e2e, twice, 0, windows)
    board.recover_s = math.inf if cause == "breaker_never_closes" else rng.uniform(0.6, 1.4)
    return board


@dataclass(frozen=True)
class ShopsRun:
    """Four shops, each hardened with one mistake (ground truth: ``causes``)."""

    causes: tuple[str, ...] = ("breaker_never_closes", "no_idempotency_key", "no_breaker",
                               "fallback_keeps_nothing")
    seed: int = 10

    def names(self) -> list[str]:
        return [f"shop {chr(ord('A') + i)}" for i in range(len(self.causes))]

    def boards(self) -> list[Scoreboard]:
        return [_shop_board(c, n, self.seed) for c, n in zip(self.causes, self.names(),
                                                               strict=True)]

    def truth(self) -> dict[str, str]:
        """``{cause: shop}``."""
        return dict(zip(self.causes, self.names(), strict=True))

    def table(self) -> str:
        """The scoreboards, with the customers' p50 while payment was down."""
        lines = [f"{'shop':<8}{'said yes':>9}{'p50 ms':>8}{'p50 down':>9}{'lost':>6}"
                 f"{'2x paid':>8}{'recover s':>10}"]
        for b in self.boards():
            lines.append(f"{b.design:<8}{b.success_rate:>9.1%}{b.p(50):>8.0f}"
                         f"{b.p(50, during=CRASH):>9.0f}{b.lost:>6}{b.double_charged:>8}"
                         f"{b.recover_s:>10.1f}")
        return "\n".join(lines)


SHOPS = ShopsRun()


def _shop_shows(shop: str) -> str:
    cause = {named: cause for cause, named in SHOPS.truth().items()}[shop]
    return f"{shop} is not it: {SYMPTOMS[cause]}, which is {CAUSES[cause]}"


_SHOPS_DIAGNOSIS = Diagnosis(
    name="diagnosis", noun="shop", options=SHOPS.names, truth=SHOPS.truth, shows=_shop_shows,
    why={cause: f"{CAUSES[cause].capitalize()} shows as: {SYMPTOMS[cause]}." for cause in CAUSES},
    same_for_two="Each shop has exactly one mistake.")


q3 = Question(
    id="q3", module=MODULE, title="read four scoreboards: which mistake made each one",
    name="diagnosis",
    what="a dict {cause: shop} for the four causes in CAUSES",
    steps=[_SHOPS_DIAGNOSIS],
    hints=[
        "Each mistake leaves its own mark on a different column. Ask of each cause: what "
        "does it do to the customer's wait, to the money, to the orders, to the time after "
        "the chaos?",
        "A retry without a key charges again when the first charge went through (2x paid). "
        "A fallback that keeps nothing loses the orders it said yes to (lost). A breaker "
        "that never closes keeps deferring after payment is back (recover). No breaker on a "
        "hanging payment makes customers wait out the timeouts while it is down (p50 down).",
        "print(SHOPS.table()) and take the shop with the non-zero 2x paid, the one with lost "
        "orders, the one whose recover is inf, the one whose p50 down is hundreds of ms.",
    ],
    success="each mistake has one symptom on the scoreboard: money (2x paid), orders (lost), "
            "time after the chaos (recover) and the wait during it (p50 while down). Read the "
            "column, name the pattern.",
)

QUESTIONS = [q1, q2, q3]
__all__ = ["q1", "q2", "q3", "QUESTIONS", "TARGETS", "SCENARIO", "run_bad_day", "diagnose",
           "last_run", "your_run", "OUTAGE", "Outage", "SHOPS", "ShopsRun", "CAUSES"]
