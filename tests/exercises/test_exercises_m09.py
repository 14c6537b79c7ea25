"""Module 09's question on a real service: the worked answer passes; each plausible wrong
answer fails with its own message."""
from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from labsupport.course.exercises_build import solution_source
from labsupport.exercises import declared_questions
from labsupport.exercises.m09 import (
    QUEUE_CASE,
    SERVICE,
    TRACES,
    _own_ms,
    q1,
    q2,
    q3,
    side_by_side,
)
from labsupport.exercises.m09 import (
    TRACE_HOPS as TRACES_HOPS,
)
from labsupport.runtime.metrics import percentile
from labsupport.runtime.settings import to_wall

pytestmark = pytest.mark.usefixtures("isolated_progress", "checker_time_scale")


def verdict(answer, capsys) -> tuple[bool, str]:
    ok = q1.check(answer)
    return ok, capsys.readouterr().out.strip()


def solution() -> type:
    namespace: dict = {"web": web}
    exec(solution_source("09", "Admission"), namespace)
    return namespace["Admission"]


def admission(limit: int = 6, mistake: str | None = None) -> type:
    """An admission control written independently of the solution, one ``mistake`` on."""

    class Admission:
        def __init__(self):
            self.in_flight = 0
            self.last_admitted = 0.0

        async def __call__(self, request, handler):
            if mistake == "none":
                return await handler(request)
            if mistake == "rate limit":
                now = time.monotonic()
                if now - self.last_admitted < to_wall(0.04):
                    return web.json_response({}, status=429, headers={"Retry-After": "1"})
                self.last_admitted = now
                return await handler(request)
            if self.in_flight >= limit:
                if mistake == "slow":
                    await asyncio.sleep(to_wall(0.5))
                status = {"500": 500, "200": 200}.get(mistake, 503)
                headers = {} if mistake == "no retry-after" else {"Retry-After": "1"}
                return web.json_response({"error": "busy"}, status=status, headers=headers)
            if mistake == "crash":
                raise KeyError("limit")
            self.in_flight += 1
            if mistake == "leak":
                response = await handler(request)
                self.in_flight -= 1
                return response
            if mistake == "except only":   # misses asyncio.CancelledError (a BaseException)
                try:
                    response = await handler(request)
                except Exception:
                    self.in_flight -= 1
                    raise
                self.in_flight -= 1
                return response
            try:
                return await handler(request)
            finally:
                self.in_flight -= 1

    return Admission


def test_the_module_declares_q1():
    assert declared_questions()["09"] == ["q1", "q2", "q3"]
    assert (q2.name, q3.name) == ("queue_prediction", "slow_hop")
    assert all(len(q.hints) == 3 for q in (q1, q2, q3))
    assert "BEGIN SOLUTION" not in q1._solution


def test_the_worked_solution_passes(capsys):
    ok, out = verdict(solution(), capsys)
    assert ok, out


def test_an_independent_correct_answer_passes(capsys):
    ok, out = verdict(admission(), capsys)
    assert ok, out


@pytest.mark.parametrize("limit, mistake, message", [
    (6, "none", "nothing was turned away"),
    (0, None, "every request was turned away"),
    (100, None, "your limit is above that and never acts"),
    (30, None, "your limit lets too many wait"),
    (11, None, "so at most 10 may be inside"),
    (1, None, "Your limit is too low"),
    (6, "slow", "Do not sleep or wait for a slot"),
    (6, "500", "some requests were answered [500]"),
    (6, "200", "got 200 OK although the service never served them"),
    (6, "no retry-after", "without a Retry-After header"),
    (6, "leak", "Release the slot in a `finally:` block"),
    (6, "except only", "that is not an Exception"),
    (6, "rate limit", "at half the capacity"),
    (6, "crash", "Your code raised KeyError"),
])
def test_each_wrong_answer_gets_its_own_message(limit, mistake, message, capsys):
    ok, out = verdict(admission(limit, mistake), capsys)
    assert not ok and out.startswith("Not yet:"), out
    assert message in out, out


def test_not_a_class_and_a_sync_call(capsys):
    ok, out = verdict(lambda request, handler: None, capsys)
    assert not ok and "should be a class" in out, out

    class Sync:
        def __call__(self, request, handler):
            return None

    ok, out = verdict(Sync, capsys)
    assert not ok and "async def __call__" in out, out


def test_returning_something_else_than_a_response(capsys):
    class Admission:
        async def __call__(self, request, handler):
            await handler(request)
            return {"ok": True}

    ok, out = verdict(Admission, capsys)
    assert not ok and "return a response" in out, out


def test_the_placeholder_counts_as_not_attempted(capsys):
    class Admission:
        def __init__(self):
            raise NotImplementedError("Your turn")

    ok, out = verdict(Admission, capsys)
    assert not ok and out.startswith("Not attempted yet"), out


def test_side_by_side_shows_the_difference():
    result = side_by_side(solution())
    yours, none = (percentile(r.served_ms(), 90) for r in (result.yours, result.none))
    assert none > 3 * yours, (yours, none)   # the same machine, the same load, one after another
    assert none > 3 * SERVICE.p99_target_ms
    assert "your Admission" in result.table()


# ----- q2: predict a bounded line's bound and refusals ---------------------------------------------
def solution_value(question, name):
    namespace: dict = {"QUEUE_CASE": QUEUE_CASE}
    exec(question._solution, namespace)
    return namespace[name]


def simulated_queue(seconds: float = 2000.0, seed: int = 5) -> dict:
    """Another correct method: Poisson arrivals into the workers and the bounded line."""
    import heapq
    import random

    case, rng = QUEUE_CASE, random.Random(seed)
    work = case.work_ms / 1000
    free = [0.0] * case.workers          # when each worker is next free
    starts: list[float] = []             # start times of admitted requests still waiting
    t, offered, refused, worst = 0.0, 0, 0, 0.0
    while t < seconds:
        t += rng.expovariate(case.rate_per_s)
        offered += 1
        starts = [s for s in starts if s > t]
        if len(starts) >= case.queue_limit and min(free) > t:
            refused += 1
            continue
        start = max(t, heapq.heappop(free))
        heapq.heappush(free, start + work)
        if start > t:
            starts.append(start)
        worst = max(worst, (start + work - t) * 1000)
    return {"bound_ms": worst, "refused": refused / offered}


def test_q2_the_formula_and_a_simulation_both_pass(capsys):
    assert q2.check(solution_value(q2, "queue_prediction")), capsys.readouterr().out
    simulated = simulated_queue()
    assert q2.check(simulated), (simulated, capsys.readouterr().out)


@pytest.mark.parametrize("wrong, words", [
    ({"bound_ms": 375, "refused": 2 / 3}, "only the wait in line"),
    ({"bound_ms": 1750, "refused": 2 / 3}, "one request at a time"),
    ({"bound_ms": 0.625, "refused": 2 / 3}, "in seconds"),
    ({"bound_ms": 875, "refused": 2 / 3}, "requests at work as well"),
    ({"bound_ms": 625, "refused": 1 / 3}, "share served"),
    ({"bound_ms": 625, "refused": 66.7}, "not a percentage"),
    ({"bound_ms": 625, "refused": 1 - 4 / 48}, "one worker's rate"),
    ({"bound_ms": 625, "refused": 2.0}, "rho - 1"),
    ({"bound_ms": 625, "refused": 0.4}, "too low"),
    ({"bound_ms": 625}, "should be a dict"),
    ({"bound_ms": "625", "refused": 0.67}, "should be a number"),
])
def test_q2_each_wrong_prediction_gets_its_own_message(wrong, words, capsys):
    assert not q2.check(wrong)
    assert words in capsys.readouterr().out


# ----- q3: read a trace waterfall ------------------------------------------------------------------
def test_q3_the_worked_answer_passes_and_matches_how_the_traces_were_built(capsys):
    answer = solution_value(q3, "slow_hop")
    assert answer == TRACES.culprit and q3.check(answer), capsys.readouterr().out


def test_q3_the_traces_show_what_they_are_built_from():
    """The culprit's own time jumps in the slow traces; the steady hop is the slowest in a
    fast trace; every parent span contains its child (a real waterfall)."""
    traces = TRACES.traces()
    own = {h: [_own_ms(t, h) for t in traces] for h in TRACES_HOPS}
    fast, slow = traces[0::2], traces[1::2]
    assert min(t[0][2] for t in slow) > 2 * max(t[0][2] for t in fast)
    assert min(own[TRACES.culprit][1::2]) > 250 > max(own[TRACES.culprit][0::2])
    assert all(max(own, key=lambda h, i=i: own[h][i]) == TRACES.steady for i in range(0, 8, 2))
    for spans in traces:
        for (_, a, b), (_, c, d) in zip(spans, spans[1:], strict=False):
            assert a < c and d < b


@pytest.mark.parametrize("answer, words", [
    ("gateway", "the root span"),
    ("inventory", "the same in the fast traces and the slow ones"),
    ("orders", "because it waits for its child"),
    ("Payment", "should be one of"),
    ("", "should be one of"),
])
def test_q3_each_wrong_hop_gets_its_own_message(answer, words, capsys):
    assert not q3.check(answer)
    assert words in capsys.readouterr().out
