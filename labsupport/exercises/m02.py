"""Module 02 · Cascading failures: the exercise questions.

::

    from labsupport.exercises.m02 import q1, q2, q3

* ``q1``: a number ``busy_workers``, Little's law: requests in flight at 40/s and 250 ms each.
* ``q2``: a number ``seconds_to_fill``: how soon a pool of 10 is full at 20/s once calls hang.
* ``q3``: a function ``protect(a, downstream_p99_ms)`` that sets knobs on service ``a``
  (a timeout and a bulkhead). The check runs it on real services: once healthy, once with
  C slow (median 1 s) and a burst of traffic.
"""
from __future__ import annotations

import inspect
from typing import Any

from labsupport.course.checks import Mistake, NotYet, Question, Step, Value, call_learner
from labsupport.lessons.m02_cascading_failures.cascading import (
    A_WORK_MS,
    PROTECT_HEALTHY_CALLS,
    PROTECT_HEALTHY_FAIL_MAX,
    PROTECT_LOCAL_RATE,
    PROTECT_RATE,
    PROTECT_SLOW_MS,
    PROTECT_USER_TIMEOUT_MS,
    ProtectionReport,
    measure_protection,
    p99_all,
)

MODULE = "02"

# ----- q1: Little's law -------------------------------------------------------------------------
q1 = Question(
    id="q1", module=MODULE, title="Little's law: how many requests are in flight",
    name="busy_workers",
    what="a number: the average number of A's workers busy at 40 requests/s, 250 ms each",
    steps=[Value(10.0, rel=0.01, unit=" workers", mistakes=[
        Mistake("you multiplied by 250 ms as a number of milliseconds. λ is per second, so "
                "W must be in seconds too: 250 ms = 0.25 s.", like=40 * 250.0),
        Mistake("that is λ / W. In flight is λ times W: more arrivals or longer stays both "
                "mean more requests inside.", like=40 / 0.25),
        Mistake("that is W / λ. In flight is λ times W.", like=0.25 / 40),
        Mistake("that is the number of requests per second, not how many are inside at once.",
                like=40.0),
    ])],
    hints=[
        "Little's law: the average number inside a system is the arrival rate times the "
        "average time each one stays, L = λ · W.",
        "Use one unit of time for both: λ = 40 per second, W = 250 ms = 0.25 s.",
        "L = 40 × 0.25 = 10 workers busy on average: a pool of 10 would be full all the time.",
    ],
    success="L = λ·W = 40/s × 0.25 s = 10 requests in flight: a pool of 10 workers would "
            "have no room left.",
)

# ----- q2: how soon the pool fills --------------------------------------------------------------
q2 = Question(
    id="q2", module=MODULE, title="how soon a pool is full once a dependency hangs",
    name="seconds_to_fill",
    what="a number of seconds: how long until all 10 workers of A are busy at 20 requests/s "
         "once every call starts to take 3 s",
    steps=[Value(0.5, rel=0.02, unit=" s", mistakes=[
        Mistake("that is how long one slow call takes. The pool is full long before the first "
                "slow call ends: count arrivals until 10 workers are taken.", like=3.0),
        Mistake("that is λ / K (arrivals per worker). Divide the other way: K workers at λ "
                "arrivals per second are gone after K / λ seconds.", like=2.0),
        Mistake("that is λ·W, how many would be in flight if the pool were large enough. The "
                "question is how soon the first 10 are taken.", like=60.0),
        Mistake("that looks like milliseconds. Give the answer in seconds.", like=500.0),
    ])],
    hints=[
        "While the slow calls have not finished, no worker comes back. Every new request "
        "takes one more worker.",
        "At 20 arrivals per second, how long until 10 workers are taken?",
        "K / λ = 10 / 20 = 0.5 s. It does not depend on how slow the calls are, as long as "
        "they take longer than that.",
    ],
    success="K / λ = 0.5 s: a pool of 10 at 20 requests/s is full half a second after the "
            "dependency hangs, long before any timeout of seconds fires.",
)


# ----- q3: protect A ------------------------------------------------------------------------------
# /local's p99 (failures count at their 1 s timeout): about 30 ms healthy, up to ~400 ms on a
# busy laptop at a small time scale (the lab's own scheduling), 1 s and more in a collapse.
LOCAL_P99_MAX = 600.0
MAIN_P99_MAX = 1500.0        # while C is slow the main endpoint must fail fast


def _knobs(report: ProtectionReport) -> str:
    timeout = ("no timeout" if report.timeout_ms is None
               else f"a timeout of {report.timeout_ms:.0f} ms")
    bulkhead = ("no bulkhead" if report.local_workers is None
                else f"{report.local_workers} own workers for /local")
    return f"{timeout}, {bulkhead}, {report.workers} workers"


def _little(report: ProtectionReport, rate: float) -> float:
    """Requests in flight in A's main pool when every call waits for the timeout."""
    assert report.timeout_ms is not None
    return rate * (A_WORK_MS + report.timeout_ms) / 1000


def _check_healthy(report: ProtectionReport) -> None:
    failed = report.healthy_failed()
    if not report.healthy_too_lossy():
        return
    count = report.healthy.errors
    if report.timeout_ms is not None and report.timeout_ms < report.downstream_p99_ms:
        raise NotYet(
            f"with C healthy, {count} of {PROTECT_HEALTHY_CALLS} calls ({failed:.1%}) failed: "
            f"your timeout of {report.timeout_ms:.0f} ms is below the p99 of a healthy call to "
            f"B ({report.downstream_p99_ms:.0f} ms), so it cuts off calls that would have "
            "succeeded. A timeout at the pX costs about (100 − X)% of healthy calls: set it at "
            "or above the p99, with some headroom.")
    raise NotYet(f"with C healthy, {count} of {PROTECT_HEALTHY_CALLS} calls ({failed:.1%}) "
                 f"failed with {_knobs(report)}; at most {PROTECT_HEALTHY_FAIL_MAX:.0%} may fail. "
                 "Protection must not break the service on a good day.")


def _check_local(report: ProtectionReport) -> None:
    local = report.local("normal")
    p99, failed = p99_all(local), local.error_rate()
    if p99 <= LOCAL_P99_MAX:
        return
    seen = f"/local's p99 was {p99:.0f} ms and {failed:.0%} of its calls failed"
    if report.local_workers is None and report.timeout_ms is None:
        raise NotYet(
            f"no protection: while C was slow, {seen}. /local calls nothing, yet it waits in "
            f"the same line as the main endpoint, whose requests hold all {report.workers} of "
            "A's workers while they wait for B. Give A a timeout on its call to B "
            "(call_timeout_ms) and give /local its own workers (local_workers).")
    if report.local_workers is None:
        assert report.timeout_ms is not None
        raise NotYet(
            f"your timeout of {report.timeout_ms:.0f} ms is too long to save A's pool on its "
            f"own: while C was slow, {seen}. By Little's law, {PROTECT_RATE:g} requests/s "
            f"that each hold a worker for up to {A_WORK_MS:g} + {report.timeout_ms:.0f} ms "
            f"keep {_little(report, PROTECT_RATE):.1f} workers busy, more than the "
            f"{report.workers} A has. Shorten it (near the healthy p99) and add a bulkhead.")
    raise NotYet(f"while C was slow, {seen} although /local has {report.local_workers} own "
                 f"workers. It receives {PROTECT_LOCAL_RATE:g} requests/s of {A_WORK_MS:g} ms: "
                 "give it enough workers for that, and keep the main endpoint's knobs "
                 "separate.")


def _check_main(report: ProtectionReport) -> None:
    main = report.main("normal")
    p99, failed = p99_all(main), main.error_rate()
    if p99 <= MAIN_P99_MAX:
        return
    seen = (f"the main endpoint's p99 was {p99:.0f} ms ({failed:.0%} failed; users give up "
            f"after {PROTECT_USER_TIMEOUT_MS / 1000:g} s)")
    if report.timeout_ms is None:
        more = (f" More workers ({report.workers}) only move the line: B's pool fills "
                "instead." if report.workers > 10 else "")
        raise NotYet(
            f"a bulkhead with no timeout: /local is fine, but while C was slow {seen}. Its "
            "requests wait for B with no limit, so A's main pool stays full and the line in "
            f"front of it grows without end: the main path drowns.{more} Add a timeout "
            "(call_timeout_ms) so A gives up on B and frees the worker.")
    raise NotYet(
        f"your timeout of {report.timeout_ms:.0f} ms is too long: while C was slow, {seen}. "
        f"By Little's law {PROTECT_RATE:g} requests/s × ({A_WORK_MS:g} + "
        f"{report.timeout_ms:.0f}) ms = {_little(report, PROTECT_RATE):.1f} workers busy, more "
        f"than A's {report.workers}, so a line grows. Keep the timeout close to the healthy "
        f"p99 ({report.downstream_p99_ms:.0f} ms), where it fails fast.")


def _check_burst(report: ProtectionReport) -> None:
    local = report.local("burst")
    p99, failed = p99_all(local), local.error_rate()
    if p99 <= LOCAL_P99_MAX:
        return
    seen = f"/local's p99 was {p99:.0f} ms and {failed:.0%} of its calls failed"
    if report.local_workers is None:
        detail = ""
        if report.timeout_ms is not None:
            detail = (f" Little's law: {2 * PROTECT_RATE:g}/s × ({A_WORK_MS:g} + "
                      f"{report.timeout_ms:.0f}) ms = {_little(report, 2 * PROTECT_RATE):.1f} "
                      f"workers busy, more than A's {report.workers}.")
        raise NotYet(
            "a timeout alone holds at 20 requests/s, but not when traffic doubles: during the "
            f"burst (40/s) with C still slow, {seen}.{detail} A timeout bounds how long each "
            "request waits, not how many wait. Give /local its own workers (local_workers), "
            "a bulkhead, so the main endpoint cannot take them.")
    raise NotYet(f"during the burst (40 requests/s) with C slow, {seen} although /local has "
                 f"{report.local_workers} own workers.")


class _ProtectStep(Step):
    """Runs ``protect`` on fresh services: healthy, then C slow with a burst."""

    def run(self, answer: Any) -> None:
        if not callable(answer):
            raise NotYet(f"`protect` should be a function, def protect(a, downstream_p99_ms):, "
                         f"got {type(answer).__name__}.")
        if inspect.iscoroutinefunction(answer):
            raise NotYet("protect should be a plain function (def, not async def): it only "
                         "sets knobs with a.set(...).")

        def apply(a: Any, p99: float) -> None:
            call_learner(answer, a, p99, call=f"protect(a, {p99:.0f})")

        report = measure_protection(apply)
        _check_healthy(report)
        _check_local(report)
        _check_main(report)
        _check_burst(report)
        print(measured(report))


def measured(report: ProtectionReport) -> str:
    """One line with what the scenario measured for a protection that passed."""
    return (f"Measured with {_knobs(report)}: {report.healthy_failed():.1%} of healthy calls "
            f"lost to the timeout; C slow: /local p99 {p99_all(report.local('normal')):.0f} ms "
            f"at 20/s and {p99_all(report.local('burst')):.0f} ms at 40/s, main endpoint p99 "
            f"{p99_all(report.main('normal')):.0f} ms (failing fast).")


_STEP = _ProtectStep()

q3 = Question(
    id="q3", module=MODULE, title="protect A so /local survives a slow C",
    name="protect",
    what="a function protect(a, downstream_p99_ms) that sets knobs on service a "
         "with a.set(...)",
    steps=[_STEP],
    hints=[
        "Two knobs, two jobs. call_timeout_ms bounds how long A waits for B, so a worker comes "
        "back; local_workers gives /local its own pool, so the main endpoint cannot take it.",
        "Set the timeout from the healthy latency: at or a little above downstream_p99_ms "
        "(it then costs about 1% of healthy calls or less). /local needs only a few workers: "
        f"{PROTECT_LOCAL_RATE:g}/s × {A_WORK_MS:g} ms is less than one busy on average.",
        "a.set(call_timeout_ms=1.2 * downstream_p99_ms, local_workers=4)",
    ],
    success=f"with C slow (median {PROTECT_SLOW_MS:.0f} ms), /local kept its p99 at 20 and at "
            f"40 requests/s, the main endpoint failed fast, and at most "
            f"{PROTECT_HEALTHY_FAIL_MAX:.0%} of healthy calls were lost to the timeout.",
)

QUESTIONS = [q1, q2, q3]
__all__ = ["q1", "q2", "q3", "QUESTIONS"]
