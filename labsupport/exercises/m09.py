"""Module 09 · Backpressure: the exercise question.

::

    from labsupport.exercises.m09 import q1, SERVICE

* ``q1``: admission control. Define ``class Admission`` whose instances sit in front of a
  service as ``await admission(request, handler)``: serve the request
  (``return await handler(request)``) or turn it away at once with **503** (or 429) and a
  ``Retry-After`` header, so that under overload the requests it admits stay fast, and at
  low load it turns nobody away. The constructor takes no arguments: the limit is yours to
  choose from :data:`SERVICE`.

The checker starts a real service (:data:`SERVICE`: 2 workers, 100 ms of work each, so
20 requests a second at most), puts a new ``Admission()`` in front of it and offers twice
that (ρ = 2) for 3 model seconds, then a quarter of it (ρ = 0.5) for 3 s, Poisson arrivals.
It measures what the clients saw: served p99, goodput, how fast rejections came, Retry-After,
rejections at low load. Then a handler that fails 30 times in a row, and 8 requests
whose handler hangs until the server's request deadline cancels them (pending work after
a timeout: ``asyncio.CancelledError`` is not an ``Exception``): afterwards the service
must still serve and ``in_flight`` be back at 0 (no slot leaked).
"""
from __future__ import annotations

import asyncio
import email.utils
import gc
import inspect
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from labsupport.course.checks import LearnerRaised, Mistake, NotYet, Question, Step, describe_error
from labsupport.exercises.m05 import scratch_lab
from labsupport.kit.dashboard import PALETTE
from labsupport.lessons.m09_backpressure_and_observability.backpressure import Shot, offered_load
from labsupport.runtime.errors import LabError
from labsupport.runtime.latency import Constant
from labsupport.runtime.metrics import percentile
from labsupport.runtime.services import fetch
from labsupport.runtime.settings import to_wall

MODULE = "09"


@dataclass(frozen=True)
class ServiceSpec:
    """The service your admission control protects."""

    workers: int = 2
    work_ms: float = 100.0
    p99_target_ms: float = 500.0     # served requests, under overload
    reject_fast_ms: float = 60.0     # a rejection must come back within this (median)
    goodput_share: float = 0.6       # served within the target per s / capacity, at least
    low_load_rejections: float = 0.01

    @property
    def capacity_per_s(self) -> float:
        return self.workers / (self.work_ms / 1000)

    @property
    def max_inside(self) -> int:
        """The most requests that may be inside (at work + waiting) and still meet the target
        (Little's law): the workers, plus as many waiting as each adds 1000/capacity ms to the
        wait before the target is reached. 2 + (500 - 100) / 50 = 10."""
        return self.workers + int((self.p99_target_ms - self.work_ms)
                                  * self.capacity_per_s / 1000)


SERVICE = ServiceSpec()
OVERLOAD = (2 * SERVICE.capacity_per_s, 3.0)    # (requests per model s, model s): ρ = 2
LOW_LOAD = (0.5 * SERVICE.capacity_per_s, 3.0)  # ρ = 0.5
FAILURES = 30
HUNG = 8
DEADLINE_MS = 300.0
"""The server's request deadline in the hang phase: it cancels the admission call."""
_COUNTER = itertools.count(1)


class DownstreamFailed(Exception):
    """What the checker's handler raises when it is told to fail."""


@dataclass
class _Record:
    """What the service saw while one answer ran."""

    handled: int = 0
    inside: int = 0
    peak_inside: int = 0
    admitted: int = 0         # inside the service's handler now: at work or waiting for a worker
    peak_admitted: int = 0
    errors: list[tuple[BaseException, str]] = field(default_factory=list)
    not_responses: list[Any] = field(default_factory=list)
    fail: bool = False
    hang: bool = False


class _Harness:
    """A real service with the learner's admission control in front of it."""

    def __init__(self, lab: Any, make: Callable[[], Any] | None, label: str = "chk09") -> None:
        self.lab, self.record = lab, _Record()
        self.admission = _construct(make) if make is not None else None
        n = next(_COUNTER)
        self.svc = lab.service(f"{label}_svc{n}", Constant(SERVICE.work_ms),
                               workers=SERVICE.workers, routes={"/work": self._route})

    async def _handler(self, request: web.Request) -> web.Response:
        r = self.record
        r.admitted += 1
        r.peak_admitted = max(r.peak_admitted, r.admitted)
        try:
            if r.fail:
                raise DownstreamFailed("the database is down")
            if r.hang:
                await asyncio.sleep(to_wall(30.0))   # until the deadline cancels it
            await self.svc.work()
            r.handled += 1
            return web.json_response({"served": True})
        finally:
            r.admitted -= 1

    async def _route(self, request: web.Request) -> web.StreamResponse:
        if self.admission is None:
            return await self._handler(request)
        self.record.inside += 1
        self.record.peak_inside = max(self.record.peak_inside, self.record.inside)
        try:
            response = await self._admit(request)
        except TimeoutError:
            return web.json_response({"error": "request deadline passed"}, status=504)
        except DownstreamFailed:
            return web.json_response({"error": "downstream failed"}, status=500)
        except Exception as exc:  # the learner's code: reported as theirs
            self.record.errors.append((exc, "await admission(request, handler)"))
            return web.json_response({"error": repr(exc)}, status=500)
        finally:
            self.record.inside -= 1
        if not isinstance(response, web.StreamResponse):
            self.record.not_responses.append(response)
            return web.json_response({"error": "not a response"}, status=500)
        return response

    async def _admit(self, request: web.Request) -> Any:
        """The learner's admission call; in the hang phase under the server's deadline,
        which cancels it (as a request-timeout middleware does)."""
        call = self.admission(request, self._handler)
        if not self.record.hang:
            return await call
        return await asyncio.wait_for(call, to_wall(DEADLINE_MS / 1000))

    def at_once(self, n: int) -> list[int]:
        async def calls() -> list[int]:
            answers = await asyncio.gather(*(fetch(self.lab.session, self.svc.url + "work",
                                                   None, "chk") for _ in range(n)))
            return [a["status"] for a in answers]

        return self.lab.run(calls(), timeout=60)

    def offer(self, phase: tuple[float, float], seed: int) -> list[Shot]:
        return self.lab.run(offered_load(self.lab.session, self.svc.url + "work", [phase],
                                         seed=seed), timeout=120)

    def one_by_one(self, n: int) -> list[int]:
        async def calls() -> list[int]:
            return [(await fetch(self.lab.session, self.svc.url + "work", None, "chk"))["status"]
                    for _ in range(n)]

        return self.lab.run(calls(), timeout=60)

    def close(self) -> None:
        self.lab.remove(self.svc.name, timeout=10)

    def raise_learner_error(self) -> None:
        if self.record.errors:
            error, call = self.record.errors[0]
            raise LearnerRaised(error, call)
        if self.record.not_responses:
            got = self.record.not_responses[0]
            raise NotYet(f"admission(request, handler) returned {type(got).__name__} {got!r}; "
                         "return a response: `return await handler(request)` to serve, or "
                         "web.json_response(..., status=503, headers={'Retry-After': '1'}) to "
                         "turn the request away.")


def _construct(make: Callable[[], Any]) -> Any:
    try:
        admission = make()
    except Exception as exc:
        raise LearnerRaised(exc, "Admission()") from exc
    if not callable(admission) or not inspect.iscoroutinefunction(admission.__call__):
        raise NotYet("an Admission instance must be awaitable as admission(request, "
                     "handler): define `async def __call__(self, request, handler):`.")
    return admission


# ----- what the clients saw ---------------------------------------------------------------------------
@dataclass
class Outcome:
    """The overload phase and the low-load phase, as the clients saw them."""

    overload: list[Shot]
    low: list[Shot]

    def served(self, shots: list[Shot]) -> list[Shot]:
        return [s for s in shots if s.status == 200]

    def rejected(self, shots: list[Shot]) -> list[Shot]:
        return [s for s in shots if s.status in (429, 503)]

    def served_ms(self) -> list[float]:
        """What each request served under overload waited (model ms)."""
        return [s.ms for s in self.served(self.overload)]

    def served_p99(self) -> float:
        return percentile(self.served_ms(), 99)

    def rejected_p50(self) -> float:
        return percentile([s.ms for s in self.rejected(self.overload)], 50)

    def goodput_share(self) -> float:
        """Goodput: requests served *within the latency target* per second of overload, as a
        share of what the workers can do (a late answer is work the client no longer uses)."""
        rate, seconds = OVERLOAD
        useful = [s for s in self.served(self.overload) if s.ms <= SERVICE.p99_target_ms]
        return len(useful) / (SERVICE.capacity_per_s * seconds)

    def low_load_rejected(self) -> float:
        return len(self.rejected(self.low)) / len(self.low) if self.low else math.nan


def _run(h: _Harness) -> Outcome:
    gc.collect()   # a collection mid-run would be a pause that is not the answer's
    overload = h.offer(OVERLOAD, seed=91)
    low = h.offer(LOW_LOAD, seed=92)
    return Outcome(overload, low)


def _retry_after_ok(value: str | None) -> bool:
    if value is None:
        return False
    value = value.strip()
    if value.isdigit():
        return True
    try:
        return email.utils.parsedate_to_datetime(value) is not None
    except (TypeError, ValueError):
        return False


def _check(h: _Harness, out: Outcome) -> None:
    h.raise_learner_error()
    everything = out.overload + out.low
    odd = sorted({s.status for s in everything} - {200, 429, 503})
    if odd:
        raise NotYet(f"some requests were answered {odd}. Turn a request away with 503 "
                     "Service Unavailable (or 429 Too Many Requests): a 500 says the server "
                     "is broken, and clients, load balancers and retry policies treat it as "
                     "a failure, not as 'slow down'.")
    served = sum(s.status == 200 for s in everything)
    if served > h.record.handled:
        raise NotYet(f"{served - h.record.handled} requests got 200 OK although the service "
                     "never served them: a '200 with an error in the body' hides the "
                     "rejection from clients and from every dashboard. Answer 503 (or 429) "
                     "with a Retry-After header.")
    rejected = out.rejected(out.overload)
    if not rejected:
        raise NotYet(f"under twice the load the service can take, nothing was turned away, "
                     f"so the line grew and served requests took up to "
                     f"{out.served_p99():,.0f} ms (p99). Up to {h.record.peak_inside} "
                     "requests were inside at once: either nothing limits them, or your "
                     "limit is above that and never acts. Count the requests inside "
                     "(self.in_flight) and answer 503 at once when it reaches your limit.")
    if not out.served(out.overload):
        raise NotYet("every request was turned away: admit requests while fewer than your "
                     "limit are inside (and give the slot back when each one ends).")
    if not all(_retry_after_ok(s.retry_after) for s in rejected):
        raise NotYet("a rejection came without a Retry-After header (or with one that is not "
                     "a number of seconds). Add headers={'Retry-After': '1'}: it tells "
                     "well-behaved clients when to come back instead of retrying at once.")
    # Judged by the cause, not the clock: a busy machine stretches the p99 of a good limit,
    # but only a limit that is too high lets more requests in than the target allows.
    if h.record.peak_admitted > SERVICE.max_inside:
        raise NotYet(f"up to {h.record.peak_admitted} requests were inside the service at once "
                     f"and served requests took up to {out.served_p99():,.0f} ms (p99); the "
                     f"target is {SERVICE.p99_target_ms:.0f} ms: your limit lets too many "
                     f"wait. With {SERVICE.workers} workers of {SERVICE.work_ms:.0f} ms, "
                     f"each request waiting adds {1000 / SERVICE.capacity_per_s:.0f} ms "
                     f"(Little's law), so at most {SERVICE.max_inside} may be inside: pick "
                     "the limit from the target.")
    if out.rejected_p50() > SERVICE.reject_fast_ms:
        raise NotYet(f"rejections took {out.rejected_p50():,.0f} ms (median); they should "
                     f"come back at once (under {SERVICE.reject_fast_ms:.0f} ms). Do not "
                     "sleep or wait for a slot before saying no: a slow 'no' holds a "
                     "connection and the client's time, which is what backpressure is "
                     "meant to save.")
    if out.goodput_share() < SERVICE.goodput_share:
        raise NotYet(f"under overload the service served only {out.goodput_share():.0%} of "
                     f"what its {SERVICE.workers} workers can do; keep at least "
                     f"{SERVICE.goodput_share:.0%}. Your limit is too low: leave room for "
                     "every worker to be busy, plus a short line.")
    if out.low_load_rejected() > SERVICE.low_load_rejections:
        raise NotYet(f"at half the capacity (ρ = 0.5) {out.low_load_rejected():.0%} of requests "
                     "were turned away; there should be (almost) none. Reject only when "
                     "the service is really full: leave room for short bursts.")
    _no_slot_left(h, "every request had its answer")


def _no_slot_left(h: _Harness, when: str) -> None:
    """If the learner's admission counts ``in_flight``, it must be back at 0."""
    inside = getattr(h.admission, "in_flight", 0)
    if isinstance(inside, int) and not isinstance(inside, bool) and inside != 0:
        raise NotYet(f"after {when}, your in_flight was {inside}, not 0: give the slot back "
                     "on every path, in a `finally:` block.")


def _check_leak(lab: Any, make: Callable[[], Any]) -> None:
    h = _Harness(lab, make)
    try:
        h.record.fail = True
        h.one_by_one(FAILURES)
        h.raise_learner_error()
        h.record.fail = False
        after = h.one_by_one(5)
        h.raise_learner_error()
    finally:
        h.close()
    if any(s != 200 for s in after):
        raise NotYet(f"after the handler failed {FAILURES} times in a row (one request at a "
                     f"time), the idle service answered {after}: your admission control "
                     "still counts the failed requests as inside. Release the slot in a "
                     "`finally:` block so it is given back even when the handler raises.")
    _no_slot_left(h, f"{FAILURES} failed requests")
    _check_cancelled(lab, make)


def _check_cancelled(lab: Any, make: Callable[[], Any]) -> None:
    """Requests cancelled by the server's deadline while inside must give their slot back."""
    h = _Harness(lab, make)
    try:
        h.record.hang = True
        h.at_once(HUNG)
        h.record.hang = False
        h.raise_learner_error()
        after = h.one_by_one(5)
        h.raise_learner_error()
    finally:
        h.close()
    inside = getattr(h.admission, "in_flight", 0)
    leaked = isinstance(inside, int) and not isinstance(inside, bool) and inside != 0
    if leaked or any(s != 200 for s in after):
        raise NotYet(f"{HUNG} requests hung until the server's {DEADLINE_MS:.0f} ms deadline "
                     f"cancelled them; afterwards your in_flight was {inside} and the idle "
                     f"service answered {after}. A cancelled request raises "
                     "asyncio.CancelledError inside `await handler(request)`, and that is not "
                     "an Exception: `except Exception:` does not see it. Give the slot back in "
                     "a `finally:` block, which runs on every way out.")


class _AdmissionStep(Step):
    def run(self, answer: Any) -> None:
        if not inspect.isclass(answer):
            raise NotYet(f"`Admission` should be a class (class Admission: ...), got "
                         f"{type(answer).__name__}.")
        with scratch_lab() as lab:
            h = _Harness(lab, answer)
            try:
                out = _run(h)
                _check(h, out)
            finally:
                h.close()
            _check_leak(lab, answer)


# ----- after the check: yours against none -------------------------------------------------------------
@dataclass
class SideBySide:
    """The same overload, then low load, without admission control and with yours."""

    none: Outcome
    yours: Outcome

    def table(self) -> str:
        rows = [f"{'':<22}{'served p99':>11}{'turned away':>12}{'goodput':>9}"]
        for name, out in (("no admission control", self.none), ("your Admission", self.yours)):
            share = len(out.rejected(out.overload)) / len(out.overload)
            rows.append(f"{name:<22}{out.served_p99():>9,.0f} ms{share:>12.0%}"
                        f"{out.goodput_share():>9.0%}")
        return "\n".join(rows)

    def draw(self, ax: Any) -> None:
        """Served latency by send time, both services, with the target."""
        for name, out, colour in (("no admission control", self.none, PALETTE[3]),
                                  ("your Admission", self.yours, PALETTE[0])):
            shots = out.served(out.overload)
            ax.plot([s.t for s in shots], [s.ms for s in shots], ".", color=colour,
                    markersize=4, label=name)
        ax.axhline(SERVICE.p99_target_ms, color=PALETTE[1], linestyle="--",
                   label=f"target {SERVICE.p99_target_ms:.0f} ms")
        ax.set_xlabel("sent at (model s), ρ = 2")
        ax.set_ylabel("served latency (model ms)")
        ax.set_yscale("log")
        ax.legend(fontsize=8)


def side_by_side(admission_class: type) -> SideBySide:
    """Offer the checker's overload to two services at once: one without admission control,
    one behind a new ``admission_class()``."""
    if not inspect.isclass(admission_class):
        raise LabError("side_by_side needs your Admission class.", "side_by_side(Admission)")
    with scratch_lab() as lab:
        none = _Harness(lab, None, "none09")
        try:
            yours = _Harness(lab, admission_class, "yours09")
        except (LearnerRaised, NotYet) as wrong:
            none.close()
            text = describe_error(wrong.error, wrong.call) if isinstance(wrong, LearnerRaised) \
                else str(wrong)
            raise LabError(text, "make q1.check() pass first") from None

        async def both() -> list[list[Shot]]:
            return list(await asyncio.gather(
                *(offered_load(lab.session, h.svc.url + "work", [phase], seed=seed)
                  for h in (none, yours) for phase, seed in ((OVERLOAD, 91),))))

        try:
            overload = lab.run(both(), timeout=120)
            low = [none.offer(LOW_LOAD, 92), yours.offer(LOW_LOAD, 92)]
        finally:
            none.close()
            yours.close()
    return SideBySide(Outcome(overload[0], low[0]), Outcome(overload[1], low[1]))


q1 = Question(
    id="q1", module=MODULE, title="admission control with a Retry-After", name="Admission",
    what="a class Admission() with `async def __call__(self, request, handler)`",
    steps=[_AdmissionStep()],
    hints=[
        "Keep a count of the requests inside (self.in_flight). When it is at your limit, "
        "return web.json_response({...}, status=503, headers={'Retry-After': '1'}) at once; "
        "otherwise count this one in and `return await handler(request)`.",
        "Pick the limit from the target: 2 workers of 100 ms serve 20 requests/s, so each "
        "request waiting in line adds 50 ms. A p99 under 500 ms allows a few waiting on top "
        "of the 2 at work; too tight a limit turns work away that the workers could do.",
        "Give the slot back in `finally:` around `await handler(request)`, so a handler "
        "that raises does not leave it counted: `self.in_flight += 1`, then `try: return "
        "await handler(request)` / `finally: self.in_flight -= 1`.",
    ],
    success="under twice its capacity your service served requests within the target, "
            "turned the rest away at once with 503 and Retry-After, kept its workers busy, "
            "turned nobody away at low load, and leaked no slot when the handler failed.",
)


# ----- q2: predict a bounded queue's bound and refusals ----------------------------------------------
@dataclass(frozen=True)
class QueueCase:
    """A service with a bounded line, offered more than it can serve for a long time."""

    workers: int = 4
    work_ms: float = 250.0
    queue_limit: int = 6
    rate_per_s: float = 48.0

    @property
    def capacity_per_s(self) -> float:
        return self.workers * 1000 / self.work_ms

    def bound_ms(self) -> float:
        """The longest an admitted request waits, by the lesson's reasoning: at most
        ``queue_limit`` must leave before it (itself included, the line drains at the
        capacity rate), then its own work."""
        return self.queue_limit / self.capacity_per_s * 1000 + self.work_ms

    def exact_bound_ms(self) -> float:
        """The same bound, exact for a fixed work time: the workers free up in rounds, so
        ``ceil(queue_limit / workers)`` rounds of work before its own (a simulation finds
        this; every wait lies under it)."""
        return math.ceil(self.queue_limit / self.workers) * self.work_ms + self.work_ms

    def refused(self) -> float:
        """The share turned away once the line is full: what exceeds the capacity."""
        return max(0.0, 1 - self.capacity_per_s / self.rate_per_s)


QUEUE_CASE = QueueCase()
_QC = QUEUE_CASE


def _queue_mistakes(key: str) -> list[Mistake]:
    mu, lam, work = _QC.capacity_per_s, _QC.rate_per_s, _QC.work_ms
    if key == "bound_ms":
        return [
            Mistake("that counts only the wait in line. An admitted request also does its own "
                    f"work ({work:g} ms) before it is answered.", like=_QC.queue_limit / mu * 1000),
            Mistake("that serves the line one request at a time. The "
                    f"{_QC.workers} workers take from the line together: it moves at "
                    f"{mu:g} requests a second.", like=(_QC.queue_limit + 1) * work),
            Mistake("that is in seconds; give milliseconds.", like=_QC.bound_ms() / 1000),
            Mistake("that counts the requests at work as well as the full line ahead of you. "
                    "When you join the line, the workers' current requests are part of what "
                    "drains at the capacity rate: queue_limit / capacity, then your own work.",
                    like=(_QC.queue_limit + _QC.workers) / mu * 1000 + work),
        ]
    return [
        Mistake("that is the share served (capacity / offered). The question asks for the "
                "share turned away.", like=mu / lam),
        Mistake("give a share between 0 and 1, not a percentage.", like=100 * _QC.refused()),
        Mistake(f"that takes one worker's rate ({1000 / work:g}/s) as the capacity. "
                f"{_QC.workers} workers serve {mu:g} a second.", like=1 - (1000 / work) / lam),
        Mistake("that is rho - 1, the excess as a multiple of the capacity, not a share of "
                "the offered requests.", like=lam / mu - 1),
    ]


class _QueueStep(Step):
    """Both numbers of the prediction; each checked against the reasoning, with mistakes."""

    def run(self, answer: Any) -> None:
        keys = {"bound_ms", "refused"}
        if not isinstance(answer, dict) or set(answer) != keys:
            raise NotYet('queue_prediction should be a dict: {"bound_ms": <number>, '
                         '"refused": <share 0..1>}.')
        accepted = {"bound_ms": (0.97 * _QC.bound_ms(), 1.03 * _QC.exact_bound_ms()),
                    "refused": (_QC.refused() - 0.03, _QC.refused() + 0.03)}
        for key in ("bound_ms", "refused"):
            got = answer[key]
            if not isinstance(got, (int, float)) or isinstance(got, bool):
                raise NotYet(f"{key} should be a number, got {type(got).__name__}.")
            low, high = accepted[key]
            if low <= got <= high:
                continue
            for mistake in _queue_mistakes(key):
                if mistake.matches(got):
                    raise NotYet(f"{key} = {got:g}: {mistake.message}")
            side = "high" if got > high else "low"
            raise NotYet(f"{key} = {got:g} is too {side}. Follow one request that arrives at "
                         "a full line, or take a hint.")


q2 = Question(
    id="q2", module=MODULE, title="predict a bounded queue's wait bound and refusals",
    name="queue_prediction",
    what='a dict {"bound_ms": number, "refused": share} for the service in QUEUE_CASE',
    steps=[_QueueStep()],
    hints=[
        "Under a long overload the bounded line is full most of the time. Think about one "
        "request that is admitted to a full line: what is ahead of it, and how fast does that "
        "move? And of all offered requests, how many can the workers take?",
        "The workers together serve workers x 1000 / work_ms requests a second. An admitted "
        "request has at most queue_limit ahead of it in line; then it is served itself. "
        "Everything offered above the capacity is turned away.",
        "bound_ms = queue_limit / capacity x 1000 + work_ms (a simulation of fixed 250 ms "
        "work finds up to ceil(6 / 4) x 250 + 250 ms, also accepted); refused = 1 - capacity "
        "/ rate (within 0.03).",
    ],
    success=f"capacity {_QC.capacity_per_s:g}/s: the bound is {_QC.queue_limit} / "
            f"{_QC.capacity_per_s:g} s + {_QC.work_ms:g} ms = {_QC.bound_ms():.0f} ms whatever "
            f"the load (exactly {_QC.exact_bound_ms():.0f} ms with a fixed work time: the "
            "workers free up in rounds), and {_QC.refused():.0%} are turned away at {_QC.rate_per_s:g}/s: a "
            "bounded line trades refusals for a wait it can promise.",
)


# ----- q3: diagnose a trace waterfall -------------------------------------------------------------
TRACE_HOPS = ("gateway", "orders", "payment", "inventory")


@dataclass(frozen=True)
class TraceSet:
    """Traces of a chain gateway -> orders -> payment -> inventory (each hop does its own
    work, then calls the next one and waits for it), simulated from each hop's work: one hop
    (``culprit``) has a slow tail; another (``steady``) is the slowest hop every time."""

    culprit: str = "payment"
    steady: str = "inventory"
    seed: int = 9
    count: int = 8

    def work_ms(self, rng: random.Random, hop: str, slow: bool) -> float:
        if hop == self.culprit:
            return rng.uniform(300, 420) if slow else rng.uniform(10, 18)
        return rng.uniform(55, 70) if hop == self.steady else rng.uniform(4, 12)

    def traces(self) -> list[list[tuple[str, float, float]]]:
        """Each trace as its spans ``(hop, start ms, end ms)``, the root first."""
        rng = random.Random(self.seed)
        out = []
        for i in range(self.count):
            slow = i % 2 == 1
            work = [self.work_ms(rng, hop, slow) for hop in TRACE_HOPS]
            starts, t = [], 0.0
            for w in work:   # each hop starts after its caller's own work and a 1-2 ms hop
                starts.append(t)
                t += w + rng.uniform(1, 2)
            ends, t = [0.0] * len(work), t
            for k in reversed(range(len(work))):   # a caller ends after its callee answers
                ends[k] = t
                t += rng.uniform(0.5, 1.5)
            out.append([(hop, starts[k], ends[k]) for k, hop in enumerate(TRACE_HOPS)])
        return out

    def table(self) -> str:
        """The waterfall's numbers, one trace after the other."""
        lines = []
        for n, spans in enumerate(self.traces(), 1):
            total = spans[0][2] - spans[0][1]
            lines.append(f"trace {n}: {total:.0f} ms")
            for hop, a, b in spans:
                lines.append(f"    {hop:<10} start {a:7.1f}  end {b:7.1f}  ({b - a:6.1f} ms)")
        return "\n".join(lines)


TRACES = TraceSet()


def _own_ms(spans: list[tuple[str, float, float]], hop: str) -> float:
    index = [h for h, _, _ in spans].index(hop)
    child = spans[index + 1] if index + 1 < len(spans) else None
    _, a, b = spans[index]
    return (b - a) - ((child[2] - child[1]) if child else 0.0)


def _trace_message(named: str) -> str:
    """Why the hop the learner named is not the cause, from the traces' own numbers."""
    if named == TRACE_HOPS[0]:
        return (f"{named} is the root span: its duration is the whole request, every hop below "
                "it included. A span's duration blames it for its children's time; subtract "
                "them (its own time = its duration minus its child's).")
    if named == TRACES.steady:
        own = [_own_ms(t, named) for t in TRACES.traces()]
        return (f"{named} has the most time of its own in a typical request ({min(own):.0f}-"
                f"{max(own):.0f} ms), but the same in the fast traces and the slow ones: it "
                "makes every request a bit slow, not the slow ones slow. Compare a slow trace "
                "with a fast one.")
    parent = TRACE_HOPS[TRACE_HOPS.index(TRACES.culprit) - 1]
    if named == parent:
        return (f"{named}'s span is long in the slow traces because it waits for its child, "
                f"{TRACES.culprit}: its own time (duration minus its child's) hardly changes.")
    return (f"{named}'s own time is the same in fast and slow traces. Find the hop whose own "
            "time (its duration minus its child's) jumps in the slow traces.")


class _TraceStep(Step):
    def run(self, answer: Any) -> None:
        if answer not in TRACE_HOPS:
            raise NotYet(f"slow_hop should be one of {', '.join(map(repr, TRACE_HOPS))}, "
                         f"got {answer!r}.")
        if answer != TRACES.culprit:
            raise NotYet(_trace_message(answer))


q3 = Question(
    id="q3", module=MODULE, title="read a trace waterfall: which hop makes slow requests slow",
    name="slow_hop",
    what="the name of one hop: gateway, orders, payment or inventory",
    steps=[_TraceStep()],
    hints=[
        "A span lasts from when its service got the request until it answered, and that "
        "includes waiting for the services it called. Which number tells what a hop spent "
        "itself? And compare the slow traces with the fast ones.",
        "For each hop, own time = its duration minus its child's duration (the next hop "
        "down). Compute it for a fast trace and for a slow trace: which hop's own time grows?",
        "for spans in TRACES.traces(): print the own time per hop, e.g. "
        "[(h, (b - a) - (b2 - a2)) for (h, a, b), (_, a2, b2) in zip(spans, spans[1:])] "
        "(the last hop has no child); the hop whose own time jumps by hundreds of ms is it.",
    ],
    success=f"{TRACES.culprit}'s own time jumps by about 300 ms in the slow traces while every "
            f"other hop's stays put. Its callers' spans grow too, but only because they wait "
            f"for it; and {TRACES.steady}, the slowest hop in a typical request, is not what "
            "makes the slow ones slow.",
)

QUESTIONS = [q1, q2, q3]
__all__ = ["q1", "q2", "q3", "QUESTIONS", "SERVICE", "ServiceSpec", "side_by_side",
           "SideBySide", "QUEUE_CASE", "QueueCase", "TRACES", "TraceSet"]
