"""Module 01 · Blocking calls: the exercise questions.

::

    from labsupport.exercises.m01 import q1, q2, q3, q4

* ``q1``: a number ``chain_p99_ms``, the p99 of three Normal(100, 20) ms services in series.
* ``q2``: a function ``end_to_end_success(availabilities)``.
* ``q3``: a function ``slow_share(n, p_slow=0.01)``.
* ``q4``: an async function ``fetch_all(session, urls, timeout_s)``; ``timeout_s`` is in
  wall-clock seconds (the checker converts the lab's model times for you).
"""
from __future__ import annotations

import asyncio
import inspect
import itertools
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from .. import settings
from ..checks import Case, Cases, LearnerRaised, Mistake, NotYet, Question, Step, Value

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


# ----- q2: availability multiplies ------------------------------------------------------------
def _success(availabilities: list[float]) -> float:
    return math.prod(availabilities)


def _random_availabilities(seed: int) -> list[float]:
    rng = random.Random(seed)
    return [round(rng.uniform(0.9, 0.99999), 5) for _ in range(rng.randint(2, 8))]


_Q2_INPUTS = [[0.9, 0.5], [0.999] * 10, [0.99, 0.95, 0.999]] + \
    [_random_availabilities(seed) for seed in (1, 2, 3)] + [[], [1.0] * 5, [0.8]]

q2 = Question(
    id="q2", module=MODULE, title="availability multiplies along a chain",
    name="end_to_end_success",
    what="a function end_to_end_success(availabilities) -> float",
    steps=[Cases([Case((list(a),), _success(a)) for a in _Q2_INPUTS],
                 name="end_to_end_success", rel=1e-6, mistakes=[
        Mistake("that is the weakest link (min). Every service must succeed, so even the "
                "strong ones take their share: multiply the availabilities.",
                like=lambda a: min(a)),
        Mistake("that is the average availability. The request needs every service to "
                "succeed: multiply the availabilities.",
                like=lambda a: sum(a) / len(a)),
        Mistake("that is 1 minus the sum of the failure rates (the union bound): close for "
                "tiny failure rates, but not the exact answer, and it can go below 0. "
                "Multiply the availabilities.",
                like=lambda a: 1 - sum(1 - x for x in a), rel=1e-7),
        Mistake("that looks like a percentage. Return a probability between 0 and 1.",
                like=lambda a: 100 * math.prod(a)),
    ])],
    hints=[
        "The request succeeds only if the first service succeeds AND the second AND ... "
        "AND the last.",
        "For independent events, the probability that all of them happen is the product "
        "of their probabilities. An empty chain always succeeds.",
        "Return math.prod(availabilities): 0.999 ** 10 ≈ 0.990, so ten 'three nines' "
        "services give only 'two nines'.",
    ],
    success="availability multiplies: ten services at 99.9% give 99.0% end to end.",
)


# ----- q3: tail at scale ------------------------------------------------------------------------
def _slow_share(n: int, p_slow: float = 0.01) -> float:
    return 1 - (1 - p_slow) ** n


def _random_fanouts(seed: int) -> tuple[int, float]:
    rng = random.Random(seed)
    return rng.randint(2, 500), round(rng.uniform(0.001, 0.2), 4)


def _q3_case(n: int, p: float | None) -> Case:
    if p is None:
        return Case((n,), _slow_share(n))
    return Case((n,), _slow_share(n, p), kwargs={"p_slow": p})


def _q3_mistake_args(case: Case) -> tuple[int, float]:
    return case.args[0], case.kwargs.get("p_slow", 0.01)


_Q3_CASES = ([_q3_case(100, None), _q3_case(1, None), _q3_case(10, 0.05)]
             + [_q3_case(*_random_fanouts(seed)) for seed in (1, 2, 3)]
             + [_q3_case(0, None), _q3_case(50, 0.0), _q3_case(5, 1.0)])


q3 = Question(
    id="q3", module=MODULE, title="the share of fan-out requests that see a slow leaf",
    name="slow_share",
    what="a function slow_share(n, p_slow=0.01) -> float",
    steps=[Cases(_Q3_CASES, name="slow_share", rel=1e-6, mistake_args=_q3_mistake_args, mistakes=[
        Mistake("that is n · p_slow, which grows in a straight line and passes 1 for large n. "
                "Count the requests with NO slow leaf first.",
                like=lambda n, p: n * p),
        Mistake("that is the share of requests with NO slow leaf. The question asks for the "
                "others: 1 minus that.",
                like=lambda n, p: (1 - p) ** n),
        Mistake("that is p_slow ** n, the chance that ALL leaves are slow. One slow leaf is "
                "enough to make the request slow.",
                like=lambda n, p: p ** n),
        Mistake("that looks like a percentage. Return a share between 0 and 1.",
                like=lambda n, p: 100 * (1 - (1 - p) ** n)),
    ])],
    hints=[
        "The request waits for all n leaves, so it is slow as soon as at least one leaf is "
        "slow. 'At least one' is easier through its opposite.",
        "The request is fast only if every leaf is fast: each with probability 1 - p_slow, "
        "independently.",
        "slow share = 1 - (1 - p_slow) ** n. At n = 100 and p_slow = 0.01 that is 0.634: "
        "most requests are slow although 99% of leaf calls are fast.",
    ],
    success="1 − (1 − p)^n: at 100 leaves, 63% of requests wait for a slow one.",
)


# ----- q4: fetch all, concurrently, with a timeout per call -------------------------------------
_COUNTER = itertools.count(1)
TIMEOUT_MS = 1000.0     # model ms given to the learner's function (as wall seconds)
HANG_MS = 5_000.0       # a hung leaf answers only after this long


@contextmanager
def _scratch_lab() -> Iterator[tuple[Any, Callable[..., Any]]]:
    """The learner's current lab (services added and removed again) or a private one."""
    from .. import lab as lab_module
    from ..faults import Faults
    from ..latency import Constant

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
                lab.run(svc.stop(), timeout=10)
                lab.services.pop(svc.name, None)


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
