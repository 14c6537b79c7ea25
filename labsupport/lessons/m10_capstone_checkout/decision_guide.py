"""Module 10 · The brief's decision guide, filled in from this notebook's measurements.

The brief's table says which style to prefer in four scenarios. Here each row gets one
deciding figure measured on this lab, with its interval, and a threshold; the choice is
*derived* from them, so a different lab (or a different scenario) can flip it:

1. **Fast, low-latency, simple call**: a lookup asked directly (HTTP) and over the broker
   (request on a topic, reply on another, timed by the caller: :func:`measure_lookup`).
   Figure: what the broker adds, as a share of the direct call (p50s). Rule: synchronous
   when the broker adds at least half the call's own time; for a 1 s job it adds little,
   and the row flips to asynchronous.
2. **Long-running or variable latency**: how much the customer's p50 wait grows while
   inventory is slow (slow window minus calm, model ms) in each design. Rule:
   asynchronous when the synchronous wait grows by 100 ms or more and the 202's does not.
   A difference, not a ratio: the lab's own overhead (large at a small time scale) cancels.
3. **Critical workflows with high availability needs**: the share of checkouts answered
   yes while payment was down, event-driven minus synchronous (the same orders, paired).
   Rule: event-driven when it is 10 points or more and no accepted order was lost.
4. **Third-party or external service**: a flaky gateway called once and with retries
   (module 03), and calls reaching it while it is down with retries only and through a
   breaker (module 04). Rule: async + retry + breaker when retries add at least 5 points
   of success and the breaker cuts the calls to a dead service by half or more.

A row whose interval straddles its threshold says *undecided* rather than guess.
"""
from __future__ import annotations

import asyncio
import html
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from labsupport.kit.claims import Claim, expect_at_least, expect_at_most
from labsupport.kit.evidence import Estimate, bootstrap, difference
from labsupport.lessons.m03_retries_and_backoff.retries import FullJitter, Policy, retry_guard
from labsupport.lessons.m04_circuit_breakers.breakers import (
    AsyncPyBreaker,
    BreakerOpen,
    DependencyFailed,
)
from labsupport.runtime.errors import require
from labsupport.runtime.services import CallResult, Guard, Service
from labsupport.runtime.settings import to_model, to_wall

if TYPE_CHECKING:
    from labsupport.lessons.m10_capstone_checkout.checkout import Scoreboard
    from labsupport.runtime.lab import Lab

SYNC, ASYNC, EVENTS, EXTERNAL = ("Synchronous", "Asynchronous", "Event-driven or messaging",
                                 "Async + retry + circuit breaker")
UNDECIDED = "undecided (the interval straddles the threshold)"
BRIEF = {
    "Fast, low-latency, simple call": SYNC,
    "Long-running or variable latency": ASYNC,
    "Critical workflows with high availability needs": EVENTS,
    "Third-party or external service": EXTERNAL,
}
"""The brief's decision guide: scenario -> preferred communication."""
BROKER_ADDS, GROWTH_MS, YES_GAIN, RETRY_GAIN, BREAKER_CUT = 0.5, 100.0, 0.10, 0.05, 0.5
"""The rules' thresholds (see the module docstring)."""


@dataclass(frozen=True)
class Row:
    """One scenario: the deciding figure (with its interval), the rule, the choice.

    ``figure`` at or over ``threshold`` gives the brief's choice; ``control`` (optional) is
    a second figure that must stay *under* ``threshold`` for it (row 2: the 202's wait)."""

    scenario: str
    measured: str
    rule: str
    choice: str
    figure: Estimate | None = None
    threshold: float = math.nan
    control: Estimate | None = None

    @property
    def brief(self) -> str:
        return BRIEF[self.scenario]

    @property
    def agrees(self) -> bool:
        return self.choice == self.brief


def decide(figure: Estimate, threshold: float, above: str, below: str) -> str:
    """``above`` when the whole interval is at or over ``threshold``, ``below`` when it is
    all under it, :data:`UNDECIDED` when it straddles."""
    if figure.low >= threshold:
        return above
    if figure.high < threshold:
        return below
    return UNDECIDED


# ----- row 1: the same lookup, directly and over the broker ----------------------------------------
@dataclass
class LookupFigures:
    """One lookup of ``work_ms`` asked ``len(direct)`` times each way (model ms)."""

    work_ms: float
    direct: list[float]
    broker: list[float]

    def broker_adds(self) -> Estimate:
        """(broker p50 - direct p50) / direct p50, with a bootstrap interval."""
        def share(over: np.ndarray, plain: np.ndarray) -> float:
            base = float(np.median(plain))
            return (float(np.median(over)) - base) / base if base > 0 else math.inf
        return bootstrap(share, self.broker, self.direct,
                         method="bootstrap of (broker p50 - direct p50) / direct p50")


def measure_lookup(lab: Lab, work_ms: float = 5.0, requests: int = 30,
                   users: int = 1) -> LookupFigures:
    """A ``work_ms`` lookup called directly over HTTP and asked over the broker (a request
    on one topic, the answer on another, timed from publish to the reply consumed), with
    ``users`` callers at a time, ``requests`` each way."""
    from labsupport.lessons.m05_async_messaging.request_reply import RequestReply

    require(work_ms > 0 and requests >= 5, "give work_ms > 0 and at least 5 requests.")
    name = f"lookup{work_ms:g}".replace(".", "_")
    svc = lab.services.get(name) or lab.service(name, work_ms)
    direct = lab.closed_loop(svc, users, requests, path="local", progress=False).latencies()

    async def work(value: Any) -> Any:
        await svc.work()
        return value

    rr = RequestReply(lab, work, responders=max(1, min(users, 4)),
                      prefix=f"guide-{name}.", timeout_ms=10 * work_ms + 20_000)
    rr.wait_ready()
    try:
        lab.run(rr.request({"warm": True}, key="warm-up"), timeout=60)   # metadata, first fetch
        broker = lab.run(_timed_requests(rr, users, requests), timeout=600)
    finally:
        rr.stop()
    return LookupFigures(work_ms, direct, broker)


async def _timed_requests(rr: Any, users: int, requests: int) -> list[float]:
    loop = asyncio.get_running_loop()
    keys = iter(range(requests))
    out: list[float] = []

    async def user() -> None:
        for i in keys:
            start = loop.time()
            await rr.request({"i": i}, key=f"k{i}")
            out.append(to_model(loop.time() - start) * 1000)

    await asyncio.gather(*(user() for _ in range(users)))
    return out


def lookup_row(figures: LookupFigures) -> Row:
    """Row 1 from a lookup measured both ways."""
    adds = figures.broker_adds()
    return Row("Fast, low-latency, simple call",
               f"{figures.work_ms:g} ms lookup: direct p50 {np.median(figures.direct):.0f} ms, "
               f"over the broker p50 {np.median(figures.broker):.0f} ms: the broker adds "
               f"{adds.value:.0%} (interval {adds.low:.0%} to {adds.high:.0%})",
               f"synchronous if the broker adds at least {BROKER_ADDS:.0%} of the call's time",
               decide(adds, BROKER_ADDS, SYNC, ASYNC), adds, BROKER_ADDS)


# ----- row 4: an external gateway ------------------------------------------------------------------
def breaker_guard(breaker: Any, attempts: int = 3, policy: Policy | None = None) -> Guard:
    """A service guard: up to ``attempts`` tries (``policy`` between them), each through
    ``breaker``; once the breaker refuses, no more tries (503 at once)."""
    rng = random.Random("breaker_guard")

    async def guard(child: Service, call: Callable[[], Awaitable[CallResult]]) -> CallResult:
        delays = policy.delays(rng) if policy is not None else iter(())
        result: CallResult = {"service": child.name, "status": 503, "ms": 0.0, "body": None}

        async def must_succeed() -> CallResult:
            answer = await call()
            if answer["status"] != 200:
                raise DependencyFailed(answer)
            return answer

        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(to_wall(next(delays, 0.0) / 1000))
            try:
                return await breaker.call(must_succeed)
            except BreakerOpen:
                return result
            except DependencyFailed as failed:
                result = failed.result
        return result

    guard.__name__ = f"breaker_guard({attempts} attempts)"
    return guard


@dataclass
class ExternalFigures:
    """A flaky external gateway called four ways (row 4): each call's outcome (1 = ok)."""

    plain_ok: list[int]
    retry_ok: list[int]
    calls_retry_only: int
    calls_with_breaker: int
    orders_during_outage: int

    @property
    def plain_success(self) -> float:
        return float(np.mean(self.plain_ok))

    @property
    def retry_success(self) -> float:
        return float(np.mean(self.retry_ok))

    def retry_gain(self) -> Estimate:
        """Success with retries minus success called once (a share), bootstrap interval."""
        return bootstrap(lambda a, b: float(np.mean(a) - np.mean(b)), self.retry_ok,
                         self.plain_ok, method="bootstrap of the difference in success")

    @property
    def breaker_cut(self) -> float:
        """Share of calls to the dead gateway the breaker saved (exact counts of one run)."""
        return 1 - self.calls_with_breaker / max(self.calls_retry_only, 1)


def external_figures(lab: Lab, error_rate: float = 0.2, requests: int = 100,
                     outage_requests: int = 30) -> ExternalFigures:
    """Measure row 4 on two small services: ``shop_front`` calls ``gateway``."""
    require(0 < error_rate < 1, f"error_rate must be between 0 and 1, got {error_rate!r}.")
    gateway = lab.services.get("gateway") or lab.service("gateway", 10)
    front = lab.services.get("shop_front") or lab.service("shop_front", 0, calls=[gateway])
    backoff = FullJitter(5, 40)

    def outcomes(guard: Guard | None) -> list[int]:
        gateway.set(error_rate=error_rate, outage=False)
        front.set(guard=guard)
        return [int(s.ok) for s in lab.closed_loop(front, 5, requests, progress=False).samples]

    def calls_while_down(guard: Guard) -> int:
        gateway.set(error_rate=0.0, outage=True)
        front.set(guard=guard)
        gateway.reset_counts()
        lab.closed_loop(front, 3, outage_requests, progress=False)
        return gateway.received

    plain, retried = outcomes(None), outcomes(retry_guard(3, backoff))
    retry_only = calls_while_down(retry_guard(3, backoff))
    with_breaker = calls_while_down(
        breaker_guard(AsyncPyBreaker(fail_max=5, reset_timeout_s=60), 3, backoff))
    gateway.set(outage=False, error_rate=0.0)
    front.set(guard=None)
    return ExternalFigures(plain, retried, retry_only, with_breaker, outage_requests)


# ----- the guide ----------------------------------------------------------------------------------------
@dataclass
class DecisionGuide:
    """The four rows, each with its deciding figure and the choice it gives."""

    rows: list[Row] = field(default_factory=list)
    broker: str = ""

    def table_html(self) -> str:
        """The guide as an HTML table (what the notebook shows)."""
        head = ("<tr><th>Scenario</th><th>Measured here</th><th>Rule</th>"
                "<th>Choice from the numbers</th><th>The brief says</th></tr>")
        body = "".join(
            f"<tr><td>{html.escape(r.scenario)}</td><td>{html.escape(r.measured)}</td>"
            f"<td>{html.escape(r.rule)}</td><td><b>{html.escape(r.choice)}</b></td>"
            f"<td>{'&#10003; ' if r.agrees else '&#10007; '}{html.escape(r.brief)}</td></tr>"
            for r in self.rows)
        note = f"<caption>Measured on the {html.escape(self.broker)} broker</caption>" \
            if self.broker else ""
        return f"<table>{note}{head}{body}</table>"

    def _repr_html_(self) -> str:
        return self.table_html()

    def text(self) -> str:
        """The guide as plain text (screen readers, CI logs)."""
        return "\n".join(f"{r.scenario}: {r.measured} -> {r.choice} "
                         f"({'agrees with' if r.agrees else 'differs from'} the brief)"
                         for r in self.rows)

    def __repr__(self) -> str:
        return self.text()

    def claims(self) -> list[Claim]:
        """One claim per deciding figure: on the side of its threshold that gives the
        brief's choice (each can fail, or stay inconclusive, on its own)."""
        out = []
        for r in self.rows:
            meaning = f"the numbers choose '{r.brief}', as the brief does"
            if r.figure is not None:
                out.append(expect_at_least(f"{r.scenario}: deciding figure", r.figure,
                                           r.threshold, meaning=meaning))
            if r.control is not None:
                out.append(expect_at_most(f"{r.scenario}: the other design's figure",
                                          r.control, r.threshold, meaning=meaning))
        return out


def _yes(board: Scoreboard, during: str) -> list[int]:
    return [int(s.ok) for s in board.within(during)]


def build_guide(sync: Scoreboard, events: Scoreboard, lookup: LookupFigures,
                external: ExternalFigures, broker: str = "") -> DecisionGuide:
    """Fill in the four rows from the measurements; each choice follows its rule."""
    from labsupport.lessons.m10_capstone_checkout.chaos import CRASH, SLOW

    grow_sync = difference(sync.waits(SLOW), sync.waits("calm"))
    grow_async = difference(events.waits(SLOW), events.waits("calm"))
    async_flat = decide(grow_async, GROWTH_MS, SYNC, ASYNC)
    variable = Row("Long-running or variable latency",
                   f"inventory slow: customer's p50 wait +{grow_sync.value:.0f} ms synchronous "
                   f"(interval {grow_sync.low:.0f} to {grow_sync.high:.0f}), "
                   f"{grow_async.value:+.0f} ms with 202 ({grow_async.low:.0f} to "
                   f"{grow_async.high:.0f})",
                   f"asynchronous if the synchronous wait grows by {GROWTH_MS:g} ms or more "
                   "and the 202's does not",
                   decide(grow_sync, GROWTH_MS, async_flat, SYNC), grow_sync, GROWTH_MS,
                   grow_async)
    gain = _share_gain(_yes(events, CRASH), _yes(sync, CRASH),
                       paired=len(_yes(events, CRASH)) == len(_yes(sync, CRASH)))
    critical = Row("Critical workflows with high availability needs",
                   f"payment down: {np.mean(_yes(sync, CRASH)):.0%} said yes synchronous, "
                   f"{np.mean(_yes(events, CRASH)):.0%} event-driven (gain {gain.value:.0%}, "
                   f"interval {gain.low:.0%} to {gain.high:.0%}), {events.lost} lost",
                   f"event-driven if it says yes to {YES_GAIN:.0%} more of them and loses none",
                   decide(gain, YES_GAIN, EVENTS if events.lost == 0 else SYNC, SYNC),
                   gain, YES_GAIN)
    retry_gain = external.retry_gain()
    cut = external.breaker_cut >= BREAKER_CUT
    third = Row("Third-party or external service",
                f"flaky gateway: {external.plain_success:.0%} ok called once, "
                f"{external.retry_success:.0%} with retries (gain interval "
                f"{retry_gain.low:.0%} to {retry_gain.high:.0%}); while down "
                f"{external.calls_retry_only} calls with retries only, "
                f"{external.calls_with_breaker} through a breaker",
                f"async + retry + breaker if retries add {RETRY_GAIN:.0%} or more and the "
                f"breaker cuts calls to a dead service by {BREAKER_CUT:.0%} or more",
                decide(retry_gain, RETRY_GAIN, EXTERNAL if cut else SYNC, SYNC),
                retry_gain, RETRY_GAIN)
    return DecisionGuide([lookup_row(lookup), variable, critical, third], broker)


def _share_gain(a: list[int], b: list[int], paired: bool = False) -> Estimate:
    """Share of yes in ``a`` minus in ``b`` (paired when they are the same orders)."""
    return bootstrap(lambda x, y: float(np.mean(x) - np.mean(y)), a, b, paired=paired,
                     method=("paired " if paired else "") + "bootstrap of the difference in "
                     "the share of yes")
