"""Module 01 · Blocking calls: the exercise questions.

::

    from labsupport.exercises.m01 import q1, q2, q3, q4

* ``q1``: a number ``chain_p99_ms``, the p99 of three Normal(100, 20) ms services in series.
* ``q2``: a number ``each_availability``: what each of 8 services in a chain needs for 99.9%
  end to end (availability multiplies, run backwards).
* ``q3``: a number ``max_fan_out``: the widest fan-out whose slow share stays under 10% when
  each leaf is slow 0.2% of the time (the tail at scale, run backwards).
* ``q4``: an async function ``fetch_all(session, urls, timeout_s)``; ``timeout_s`` is in
  wall-clock seconds (the checker converts the lab's model times for you).
"""
from __future__ import annotations

import asyncio
import inspect
import itertools
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from labsupport.course.checks import LearnerRaised, Mistake, NotYet, Question, Step, Value
from labsupport.runtime import settings

MODULE = "01"
Z99 = NormalDist().inv_cdf(0.99)  # 2.3263...

# ----- q1: the p99 of a chain ---------------------------------------------------------------
CHAIN_P99 = 300 + Z99 * 20 * math.sqrt(3)
ONE_P99 = 100 + Z99 * 20

q1 = Question(
    id="q1", module=MODULE, title="the p99 of a chain of three services",
    name="chain_p99_ms",
    what="a number: the p99 latency in ms of three Normal(100, 20) ms services in series",
    steps=[Value(CHAIN_P99, rel=0.02, unit=" ms", mistakes=[
        Mistake("you added the three p99s (or the three standard deviations, 3 × 20 ms). "
                "Tails do not add, variances do: the chain's sd is 20·√3 ≈ 34.6 ms, not 60 ms.",
                like=3 * ONE_P99),
        Mistake("that is the mean of the chain, not its p99. Add 2.326 standard deviations "
                "of the sum.", like=300.0),
        Mistake("that is the p99 of one service. The request goes through all three.",
                like=ONE_P99),
        Mistake("that looks like seconds. Give the answer in milliseconds.",
                when=lambda got: 0.3 < got < 0.5),
    ])],
    hints=[
        "The chain's latency is the sum of three independent normal latencies, and a sum of "
        "independent normals is itself normal. Find its mean and its standard deviation.",
        "Means add: 100 + 100 + 100. Variances add, not standard deviations: "
        "20² + 20² + 20² = 1200 ms².",
        "p99 = mean + 2.326 · sd, with mean = 300 ms and sd = √1200 = 20·√3 ≈ 34.6 ms.",
    ],
    success="the chain's p99 is about 380.6 ms: means and variances add, tails do not "
            "(adding the three p99s would say 439.6 ms).",
)


# ----- q2: the availability each service needs ----------------------------------------------
CHAIN_SERVICES = 8
TARGET = 0.999
EACH_NEEDED = TARGET ** (1 / CHAIN_SERVICES)      # 0.9998749...
# 1 - (1 - TARGET) / 8 (splitting the failure budget) is 5e-9 away: accepted as well.
EACH_TOLERANCE = 2.5e-6                            # 2% of the 0.000125 failure budget each


def _above_needed(got: float) -> bool:
    return EACH_NEEDED + EACH_TOLERANCE < got < 1


q2 = Question(
    id="q2", module=MODULE, title="the availability each service of a chain needs",
    name="each_availability",
    what=f"a number between 0 and 1: the lowest availability each of {CHAIN_SERVICES} services "
         f"in a synchronous chain needs for {TARGET:.1%} end to end",
    steps=[Value(EACH_NEEDED, abs_=EACH_TOLERANCE, mistakes=[
        Mistake("that looks like a percentage. Give a share between 0 and 1 (0.99 for 99%).",
                when=lambda got: 1 < got <= 100),
        Mistake(f"that is the end-to-end target itself. {CHAIN_SERVICES} services at 99.9% "
                f"each give only 0.999^{CHAIN_SERVICES} = {TARGET ** CHAIN_SERVICES:.2%}: "
                "each must do better than the whole.", like=TARGET, rel=1e-7),
        Mistake(f"that is what the chain gives when each service has 99.9% "
                f"(0.999^{CHAIN_SERVICES}, or 1 − {CHAIN_SERVICES} × 0.001). The question runs "
                "the other way: from the chain's target back to each service.",
                like=TARGET ** CHAIN_SERVICES, rel=1e-3),
        Mistake(f"you divided the availability by {CHAIN_SERVICES}. Availabilities multiply, "
                f"so undo a product of {CHAIN_SERVICES} equal factors with a root (or split "
                "the failure budget 0.001, not the availability).",
                like=TARGET / CHAIN_SERVICES),
        Mistake(f"you took the root of the failure rate, 0.001^(1/{CHAIN_SERVICES}). It is the "
                "successes that multiply along the chain: take the root of 0.999.",
                like=1 - (1 - TARGET) ** (1 / CHAIN_SERVICES)),
        Mistake(f"that is enough ({CHAIN_SERVICES} services at that level give more than "
                f"{TARGET:.1%}), but it is not the lowest that still does: solve "
                f"a^{CHAIN_SERVICES} = {TARGET} for a.", when=_above_needed),
        Mistake("close, but rounded too far: each service's failure budget is only about "
                "0.000125, so keep at least six decimals (compute it with Python).",
                when=lambda got: abs(got - EACH_NEEDED) < 5e-5),
    ])],
    hints=[
        "A request succeeds only if every one of the services succeeds, so the chain's "
        "availability is the product of theirs. Here all are equal: the chain gives a^8.",
        f"Solve a^{CHAIN_SERVICES} = {TARGET} for a (a root), or, nearly the same for small "
        f"failure rates, give each service an equal share of the failure budget 1 − {TARGET}.",
        f"each_availability = {TARGET} ** (1 / {CHAIN_SERVICES})  # about 0.999875",
    ],
    success=f"each of {CHAIN_SERVICES} services needs about {EACH_NEEDED:.4%}: a failure rate "
            f"of about 1 in 8,000, eight times stricter than the 1 in 1,000 the user gets.",
)


# ----- q3: the widest fan-out with a small slow share --------------------------------------------
P_SLOW = 0.002        # each leaf is slow 0.2% of the time
SLOW_SHARE_MAX = 0.10


def _slow(n: float) -> float:
    return 1 - (1 - P_SLOW) ** n


MAX_FAN_OUT = math.floor(math.log(1 - SLOW_SHARE_MAX) / math.log(1 - P_SLOW))   # 52
assert _slow(MAX_FAN_OUT) < SLOW_SHARE_MAX <= _slow(MAX_FAN_OUT + 1)

q3 = Question(
    id="q3", module=MODULE, title="the widest fan-out that keeps slow requests rare",
    name="max_fan_out",
    what=f"a whole number: the largest N leaves per request, each slow {P_SLOW:.1%} of the "
         f"time, that keeps the share of slow requests under {SLOW_SHARE_MAX:.0%}",
    steps=[Value(MAX_FAN_OUT, mistakes=[
        Mistake(f"that is {SLOW_SHARE_MAX:g} / {P_SLOW:g}: N · p counts a request with two slow "
                "leaves twice. Use the exact share 1 − (1 − p)^N; it grows a little slower, so "
                "a few more leaves fit.", like=SLOW_SHARE_MAX / P_SLOW, rel=1e-9),
        Mistake(f"one too many: at that N the share is {_slow(MAX_FAN_OUT + 1):.2%}, already "
                f"over {SLOW_SHARE_MAX:.0%}. You want the last N under the limit, not the first "
                "one over it (round down).", like=MAX_FAN_OUT + 1, rel=1e-9),
        Mistake("a fan-out is a whole number of leaves. Which whole N is the largest that stays "
                "under the limit?", when=lambda got: got != int(got)),
        Mistake(f"that N makes only {SLOW_SHARE_MAX:.0%} of requests FAST: you solved "
                f"(1 − p)^N = {SLOW_SHARE_MAX:g}. The slow share is 1 − (1 − p)^N; keep that "
                f"under {SLOW_SHARE_MAX:g}.",
                when=lambda got: abs(got - math.log(SLOW_SHARE_MAX) / math.log(1 - P_SLOW)) < 2),
        Mistake(f"that is the answer for leaves slow 1% of the time. Here each leaf is slow "
                f"{P_SLOW:.1%} of the time (p = {P_SLOW:g}).",
                like=math.floor(math.log(1 - SLOW_SHARE_MAX) / math.log(0.99)), rel=1e-9),
    ])],
    hints=[
        "A request waits for all its leaves, so it is slow as soon as one leaf is slow: the "
        "slow share at N leaves is 1 − (1 − p)^N, and it grows with N.",
        f"Solve 1 − (1 − p)^N < {SLOW_SHARE_MAX:g} for N: take logarithms (careful, log(1 − p) "
        "is negative and flips the inequality), or try N = 1, 2, 3, ... until the share "
        "reaches the limit.",
        f"math.floor(math.log(1 - {SLOW_SHARE_MAX:g}) / math.log(1 - {P_SLOW:g})), "
        "then check that N gives under 10% and N + 1 does not.",
    ],
    success=f"at most {MAX_FAN_OUT} leaves: {_slow(MAX_FAN_OUT):.2%} of requests slow, and "
            f"{MAX_FAN_OUT + 1} would give {_slow(MAX_FAN_OUT + 1):.2%}. A rare slow leaf "
            "limits how wide a synchronous fan-out can go.",
)


# ----- q4: fetch all, concurrently, with a timeout per call -------------------------------------
_COUNTER = itertools.count(1)
TIMEOUT_MS = 1000.0     # model ms given to the learner's function (as wall seconds)
HANG_MS = 5_000.0       # a hung leaf answers only after this long


@contextmanager
def _scratch_lab() -> Iterator[tuple[Any, Callable[..., Any]]]:
    """The learner's current lab (services added and removed again) or a private one."""
    from labsupport.runtime import lab as lab_module
    from labsupport.runtime.faults import Faults
    from labsupport.runtime.latency import Constant

    current = lab_module.current()
    own = current is None or current.closed
    lab = lab_module.Lab(seed=1) if own else current
    made: list[Any] = []

    def add(ms: float, **faults: Any) -> Any:
        svc = lab.service(f"chk_q4_leaf{next(_COUNTER)}", Constant(ms),
                          faults=Faults(**faults) if faults else None)
        made.append(svc)
        return svc

    try:
        yield lab, add
    finally:
        if own:
            lab.close()
        else:
            for svc in made:
                lab.remove(svc.name)


@dataclass
class _Run:
    result: Any = None
    model_ms: float = 0.0
    error: BaseException | None = None
    hung: bool = False


def _run_learner(lab: Any, fetch_all: Callable[..., Any], urls: list[str],
                 bound_ms: float) -> _Run:
    """Run the learner's coroutine on the lab's loop, never longer than ``bound_ms`` (model)."""
    timeout_s = settings.to_wall(TIMEOUT_MS / 1000)
    bound_s = settings.to_wall(bound_ms / 1000)

    async def timed() -> _Run:
        start = time.perf_counter()
        try:
            task = asyncio.ensure_future(fetch_all(lab.session, list(urls), timeout_s))
        except Exception as exc:  # the learner's call itself failed
            return _Run(error=exc)
        done, _ = await asyncio.wait({task}, timeout=bound_s)
        ms = settings.to_model(time.perf_counter() - start) * 1000
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return _Run(model_ms=ms, hung=True)
        if task.exception() is not None:
            return _Run(model_ms=ms, error=task.exception())
        return _Run(result=task.result(), model_ms=ms)

    return lab.run(timed(), timeout=bound_s + 30)


def _call_text(urls: list[str]) -> str:
    return f"fetch_all(session, <{len(urls)} urls>, timeout_s)"


def _check_shape(run: _Run, urls: list[str]) -> list[Any]:
    result = run.result
    if result is None:
        raise NotYet("fetch_all returned None. Did you forget `return` (a list of statuses)?")
    if not isinstance(result, (list, tuple)):
        raise NotYet(f"fetch_all should return a list of statuses, got "
                     f"{type(result).__name__}.")
    if len(result) != len(urls):
        raise NotYet(f"fetch_all got {len(urls)} urls and returned {len(result)} items: "
                     "give one status per url.")
    for item in result:
        if hasattr(item, "status") and not isinstance(item, int):
            raise NotYet("fetch_all returned response objects. Return the status code of "
                         "each (resp.status, an int such as 200), not the response.")
        if not (item is None or (isinstance(item, int) and not isinstance(item, bool))):
            raise NotYet(f"each item should be an int status such as 200, or None for a call "
                         f"that timed out; got {type(item).__name__} {item!r}.")
    return list(result)


def _raise_learner(run: _Run, urls: list[str]) -> None:
    if run.error is None:
        return
    if isinstance(run.error, TimeoutError):
        raise NotYet("fetch_all raised TimeoutError instead of returning a list. Catch the "
                     "timeout of each call on its own (try/except asyncio.TimeoutError → None): "
                     "a wait_for around the whole gather, or a timeout you do not catch, loses "
                     "every result, even of the calls that answered.")
    raise LearnerRaised(run.error, _call_text(urls))


class _FetchAllStep(Step):
    """Runs ``fetch_all`` against real services: order, concurrency, a hung call."""

    def run(self, answer: Any) -> None:
        if not callable(answer):
            raise NotYet(f"`fetch_all` should be an async function, got "
                         f"{type(answer).__name__}.")
        if not inspect.iscoroutinefunction(answer):
            raise NotYet("fetch_all must be an async function: write "
                         "`async def fetch_all(session, urls, timeout_s):` and await the calls.")
        with _scratch_lab() as (lab, add):
            together_ms = self._concurrent(lab, add, answer)
            hung_ms = self._hung(lab, add, answer)
        print(f"Measured: four services (slowest 400 ms, 900 ms one after another) answered "
              f"your fetch_all in {together_ms:.0f} ms; with one service hung it returned "
              f"after {hung_ms:.0f} ms (timeout {TIMEOUT_MS:.0f} ms) with the other answers.")

    def _concurrent(self, lab: Any, add: Callable[..., Any], answer: Any) -> float:
        slow_error, ok_300, ok_200 = add(400, error_rate=1.0), add(300), add(200)
        urls = [slow_error.url, ok_300.url, ok_300.url + "missing", ok_200.url]
        expected, slowest, total = [500, 200, 404, 200], 400.0, 900.0
        run = _run_learner(lab, answer, urls, bound_ms=3 * total)
        if run.hung:
            raise NotYet(f"fetch_all did not return within {3 * total:.0f} ms although every "
                         f"service answers within {slowest:.0f} ms.")
        _raise_learner(run, urls)
        got = _check_shape(run, urls)
        if got != expected:
            if sorted(got, key=str) == sorted(expected, key=str):
                raise NotYet(f"the statuses are right but in the wrong order: got {got}, "
                             f"expected {expected} (the order of urls). Collect them in url "
                             "order, e.g. with asyncio.gather, not in the order they arrive.")
            raise NotYet(f"for 4 services that answer {expected} you returned {got}.")
        if run.model_ms > slowest + 0.5 * (total - slowest):
            raise NotYet(f"your calls ran one after another: took {run.model_ms:.0f} ms, "
                         f"about the sum of the latencies ({total:.0f} ms); expected about the "
                         f"slowest, {slowest:.0f} ms. Start them all, then await them together "
                         "(asyncio.gather).")
        return run.model_ms

    def _hung(self, lab: Any, add: Callable[..., Any], answer: Any) -> float:
        ok, hung, err = add(100), add(0, hang_rate=1.0, hang_ms=HANG_MS), add(200, error_rate=1.0)
        urls = [ok.url, hung.url, err.url]
        bound = 3 * TIMEOUT_MS
        run = _run_learner(lab, answer, urls, bound_ms=bound)
        if run.hung:
            raise NotYet(f"your function did not return within {bound:.0f} ms (timeout_s was "
                         f"{TIMEOUT_MS:.0f} ms) when one service hangs: a call with no timeout "
                         "holds everything up. Give each call a timeout "
                         "(aiohttp.ClientTimeout(total=timeout_s)).")
        _raise_learner(run, urls)
        got = _check_shape(run, urls)
        if all(item is None for item in got):
            raise NotYet("with one hung service every result came back None: a timeout around "
                         "the whole gather throws away the calls that did answer. Put the "
                         "timeout on each call, so only the hung one gives None.")
        if got[1] is not None:
            raise NotYet(f"the hung call gave {got[1]!r}; a call that does not answer within "
                         "timeout_s should give None.")
        if got != [200, None, 500]:
            raise NotYet(f"with one hung service you returned {got}, expected [200, None, 500]: "
                         "only the hung call should give None.")
        if run.model_ms > 1.5 * TIMEOUT_MS:
            raise NotYet(f"with one hung service fetch_all took {run.model_ms:.0f} ms; with a "
                         f"timeout of {TIMEOUT_MS:.0f} ms per call it should return in about "
                         f"{TIMEOUT_MS:.0f} ms.")
        return run.model_ms


q4 = Question(
    id="q4", module=MODULE, title="call every service at once, with a timeout per call",
    name="fetch_all",
    what="an async function fetch_all(session, urls, timeout_s) returning a status or None per "
         "url; timeout_s is in seconds on the clock (wall time)",
    steps=[_FetchAllStep()],
    hints=[
        "Two things at once: the calls must run concurrently (start them all, then wait), and "
        "each call gets its own timeout, so a hung call costs only its own slot.",
        "Write a small `async def one(url)` that GETs one url with "
        "aiohttp.ClientTimeout(total=timeout_s), returns resp.status, and returns None on "
        "asyncio.TimeoutError. Then run one(url) for every url together.",
        "return list(await asyncio.gather(*(one(url) for url in urls))): gather keeps the "
        "order of urls, and the total time is about the slowest call (or timeout_s).",
    ],
    success="the calls run at once (total ≈ the slowest), keep their order, and a hung call "
            "costs only its own timeout.",
)

QUESTIONS = [q1, q2, q3, q4]
__all__ = ["q1", "q2", "q3", "q4", "QUESTIONS"]
