"""Module 10 · The brief's decision guide, filled in from this notebook's measurements.

The brief's table says which style to prefer in four scenarios. Here each row gets the
numbers measured on this lab, and the choice is *derived* from them by a stated rule:

1. **Fast, low-latency, simple call**: a 5 ms lookup called directly (p50) against a
   round trip over the broker (two hops, measured on the event-driven checkout).
   Rule: synchronous when the direct call answers sooner.
2. **Long-running or variable latency**: how much the customer's wait grows (p50 during
   the slow-inventory window / before it) in each design. Rule: asynchronous when the
   synchronous wait at least doubles and the 202's does not.
3. **Critical workflows with high availability needs**: share of checkouts answered yes
   while payment was down, and orders lost. Rule: event-driven when it keeps accepting
   (>= 99%, 0 lost) and beats synchronous by at least 10 points.
4. **Third-party or external service**: a flaky gateway (20% transient errors) called
   once vs with retries (backoff, module 03), and calls that reach it while it is down
   with retries only vs through a breaker (module 04). Rule: async + retry + circuit
   breaker when retries add at least 5 points of success and the breaker cuts the calls
   to a dead service by at least half (the async part is row 3's evidence).
"""
from __future__ import annotations

import asyncio
import html
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .breakers import AsyncPyBreaker, BreakerOpen, DependencyFailed
from .claims import Claim, expect
from .errors import require
from .metrics import percentile
from .retries import FullJitter, Policy, retry_guard
from .services import CallResult, Guard, Service
from .settings import to_wall

if TYPE_CHECKING:
    from .checkout import Scoreboard
    from .checkout_events import EventCheckout
    from .lab import Lab

SYNC, ASYNC, EVENTS, EXTERNAL = ("Synchronous", "Asynchronous", "Event-driven or messaging",
                                 "Async + retry + circuit breaker")
BRIEF = {
    "Fast, low-latency, simple call": SYNC,
    "Long-running or variable latency": ASYNC,
    "Critical workflows with high availability needs": EVENTS,
    "Third-party or external service": EXTERNAL,
}
"""The brief's decision guide: scenario -> preferred communication."""


@dataclass(frozen=True)
class Row:
    """One scenario: what was measured, the rule, the choice it gives, the brief's choice."""

    scenario: str
    measured: str
    rule: str
    choice: str

    @property
    def brief(self) -> str:
        return BRIEF[self.scenario]

    @property
    def agrees(self) -> bool:
        return self.choice == self.brief


# ----- small measurements for rows 1 and 4 -------------------------------------------------------------
def lookup_p50_ms(lab: Lab, latency_ms: float = 5.0, requests: int = 30) -> float:
    """p50 (model ms) of a ``latency_ms`` lookup service called directly, one at a time."""
    name = "lookup"
    svc = lab.services.get(name) or lab.service(name, latency_ms)
    return lab.closed_loop(svc, 1, requests, path="local", progress=False).percentile(50)


def broker_round_trip_ms(design: EventCheckout, board: Scoreboard,
                         work_ms: float = 5.0) -> float:
    """The same lookup asked over the broker: two hops (request + reply) measured on the
    event-driven checkout's orders before the chaos (2 x median of 202 accepted -> picked
    up by the payment consumer), plus the lookup's own ``work_ms``."""
    before = [s.order_id for s in board.within("before")]
    return 2 * percentile(design.hop_ms(before), 50) + work_ms


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
    """A flaky external gateway called four ways (row 4)."""

    plain_success: float
    retry_success: float
    calls_retry_only: int
    calls_with_breaker: int
    orders_during_outage: int

    @property
    def retry_gain_points(self) -> float:
        return 100 * (self.retry_success - self.plain_success)

    @property
    def breaker_cut(self) -> float:
        """Share of calls to the dead gateway the breaker saved."""
        return 1 - self.calls_with_breaker / max(self.calls_retry_only, 1)


def external_figures(lab: Lab, error_rate: float = 0.2, requests: int = 100,
                     outage_requests: int = 30) -> ExternalFigures:
    """Measure row 4 on two small services: ``shop_front`` calls ``gateway``."""
    require(0 < error_rate < 1, f"error_rate must be between 0 and 1, got {error_rate!r}.")
    gateway = lab.services.get("gateway") or lab.service("gateway", 10)
    front = lab.services.get("shop_front") or lab.service("shop_front", 0, calls=[gateway])
    backoff = FullJitter(5, 40)

    def share_ok(guard: Guard | None) -> float:
        gateway.set(error_rate=error_rate, outage=False)
        front.set(guard=guard)
        rec = lab.closed_loop(front, 5, requests, progress=False)
        return 1 - rec.error_rate()

    def calls_while_down(guard: Guard) -> int:
        gateway.set(error_rate=0.0, outage=True)
        front.set(guard=guard)
        gateway.reset_counts()
        lab.closed_loop(front, 3, outage_requests, progress=False)
        return gateway.received

    plain, retried = share_ok(None), share_ok(retry_guard(3, backoff))
    retry_only = calls_while_down(retry_guard(3, backoff))
    with_breaker = calls_while_down(
        breaker_guard(AsyncPyBreaker(fail_max=5, reset_timeout_s=60), 3, backoff))
    gateway.set(outage=False, error_rate=0.0)
    front.set(guard=None)
    return ExternalFigures(plain, retried, retry_only, with_breaker, outage_requests)


# ----- the guide ----------------------------------------------------------------------------------------
@dataclass
class DecisionGuide:
    """The four rows, each with its numbers and the choice they give."""

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

    def claims(self) -> Claim:
        """Claim: every derived choice agrees with the brief, for these measurements."""
        return expect("rows where the choice derived from the numbers matches the brief",
                      sum(r.agrees for r in self.rows), len(BRIEF), tolerance=0,
                      meaning="the brief's decision guide holds on this lab's measurements")


def build_guide(sync: Scoreboard, events: Scoreboard, round_trip_ms: float,
                lookup_ms: float, external: ExternalFigures, broker: str = "") -> DecisionGuide:
    """Fill in the four rows from the measurements; each choice follows its rule."""
    from .chaos import CRASH, SLOW

    fast = Row("Fast, low-latency, simple call",
               f"direct lookup p50 {lookup_ms:.0f} ms; round trip over the broker "
               f"{round_trip_ms:.0f} ms",
               "synchronous if the direct call answers sooner",
               SYNC if lookup_ms < round_trip_ms else ASYNC)
    grow_sync = sync.p(50, during=SLOW) / sync.p(50, during="calm")
    grow_async = events.p(50, during=SLOW) / events.p(50, during="calm")
    variable = Row("Long-running or variable latency",
                   f"inventory slow: customer's p50 wait x{grow_sync:.1f} synchronous, "
                   f"x{grow_async:.1f} with 202",
                   "asynchronous if the synchronous wait at least doubles and the 202's does not",
                   ASYNC if grow_sync >= 2 and grow_async < 2 else SYNC)
    yes_sync, yes_events = sync.success_during(CRASH), events.success_during(CRASH)
    critical = Row("Critical workflows with high availability needs",
                   f"payment down: {yes_sync:.0%} said yes synchronous, {yes_events:.0%} "
                   f"event-driven, {events.lost} lost",
                   "event-driven if it keeps accepting (>= 99%, 0 lost) and beats "
                   "synchronous by 10 points or more",
                   EVENTS if yes_events >= 0.99 and events.lost == 0
                   and yes_events - yes_sync >= 0.10 else SYNC)
    third = Row("Third-party or external service",
                f"flaky gateway: {external.plain_success:.0%} ok called once, "
                f"{external.retry_success:.0%} with retries; while down "
                f"{external.calls_retry_only} calls with retries only, "
                f"{external.calls_with_breaker} through a breaker",
                "async + retry + breaker if retries add >= 5 points and the breaker cuts "
                "calls to a dead service by half or more",
                EXTERNAL if external.retry_gain_points >= 5 and external.breaker_cut >= 0.5
                else SYNC)
    return DecisionGuide([fast, variable, critical, third], broker)
