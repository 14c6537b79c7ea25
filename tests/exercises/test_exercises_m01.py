"""Module 01's questions: each passes with its solution and fails, specifically, on the
wrong answers a learner would plausibly write. q4 runs on real services at time scale 0.2."""
from __future__ import annotations

import asyncio
import math
import threading
import time

import aiohttp
import pytest

from labsupport.exercises import declared_questions
from labsupport.exercises.m01 import q1, q2, q3, q4

pytestmark = pytest.mark.usefixtures("isolated_progress", "checker_time_scale")


def solution_namespace(question) -> dict:
    """Run the worked answer from solutions/01 with the imports that notebook made earlier."""
    import asyncio

    import aiohttp

    namespace: dict = {"asyncio": asyncio, "aiohttp": aiohttp}
    exec(question._solution, namespace)  # the solution text the learner is shown
    return namespace


def verdict(question, answer, capsys) -> tuple[bool, str]:
    ok = question.check(answer)
    return ok, capsys.readouterr().out.strip()


def test_the_module_declares_q1_to_q4():
    assert declared_questions()["01"] == ["q1", "q2", "q3", "q4"]
    assert [q.name for q in (q1, q2, q3, q4)] == [
        "chain_p99_ms", "each_availability", "max_fan_out", "fetch_all"]
    assert all(len(q.hints) == 3 and q._solution for q in (q1, q2, q3, q4))


# ----- q1 ----------------------------------------------------------------------------------
def test_q1_solution_passes(capsys):
    answer = solution_namespace(q1)["chain_p99_ms"]
    assert answer == pytest.approx(380.6, abs=0.1)
    assert verdict(q1, answer, capsys)[0]
    assert verdict(q1, 381.0, capsys)[0]  # within 2%


@pytest.mark.parametrize("wrong, message", [
    (3 * (100 + 2.3263 * 20), "you added the three p99s"),
    (300 + 2.3263 * 60, "Tails do not add, variances do"),
    (300, "that is the mean of the chain, not its p99"),
    (146.5, "that is the p99 of one service"),
    (0.3806, "that looks like seconds"),
    (500, "500 ms is too high"),
])
def test_q1_wrong_answers(wrong, message, capsys):
    ok, out = verdict(q1, wrong, capsys)
    assert not ok and out.startswith("Not yet:") and message in out


# ----- q2: availability, run backwards ------------------------------------------------------
def test_q2_solution_passes(capsys):
    answer = solution_namespace(q2)["each_availability"]
    assert answer ** 8 == pytest.approx(0.999, abs=1e-12)
    assert verdict(q2, answer, capsys)[0]


@pytest.mark.parametrize("right", [0.999 ** (1 / 8), 1 - 0.001 / 8, math.exp(math.log(0.999) / 8)])
def test_q2_accepts_every_correct_method(right, capsys):
    """The root, the split failure budget (5e-8 away) and logarithms all pass."""
    assert verdict(q2, right, capsys)[0]


@pytest.mark.parametrize("wrong, message", [
    (0.999, "that is the end-to-end target itself"),
    (0.999 ** 8, "The question runs the other way"),
    (1 - 8 * 0.001, "The question runs the other way"),
    (0.999 / 8, "you divided the availability by 8"),
    (1 - 0.001 ** (1 / 8), "you took the root of the failure rate"),
    (99.987, "that looks like a percentage"),
    (0.9999, "it is not the lowest that still does"),
    (0.99987, "rounded too far"),
])
def test_q2_wrong_answers(wrong, message, capsys):
    ok, out = verdict(q2, wrong, capsys)
    assert not ok and message in out, out


# ----- q3: the widest fan-out, run backwards -------------------------------------------------
def test_q3_solution_passes(capsys):
    answer = solution_namespace(q3)["max_fan_out"]
    assert answer == 52 and 1 - 0.998 ** 52 < 0.10 <= 1 - 0.998 ** 53
    assert verdict(q3, answer, capsys)[0]


def simulated_max_fan_out() -> int:
    """Another correct method: grow N until the exact share reaches 10%."""
    n = 1
    while 1 - 0.998 ** (n + 1) < 0.10:
        n += 1
    return n


def test_q3_accepts_a_search_as_well_as_the_formula(capsys):
    assert verdict(q3, simulated_max_fan_out(), capsys)[0]
    assert verdict(q3, 52.0, capsys)[0]


@pytest.mark.parametrize("wrong, message", [
    (50, "N · p counts a request with two slow leaves twice"),
    (53, "one too many"),
    (math.log(0.9) / math.log(0.998), "a fan-out is a whole number of leaves"),
    (math.ceil(math.log(0.1) / math.log(0.998)), "makes only 10% of requests FAST"),
    (10, "the answer for leaves slow 1% of the time"),
    ("52", "the answer should be a number"),
])
def test_q3_wrong_answers(wrong, message, capsys):
    ok, out = verdict(q3, wrong, capsys)
    assert not ok and message in out, out


# ----- q4: real services -----------------------------------------------------------------
async def sequential(session, urls, timeout_s):
    statuses = []
    for url in urls:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
                statuses.append(r.status)
        except asyncio.TimeoutError:
            statuses.append(None)
    return statuses


async def no_timeout(session, urls, timeout_s):
    async def one(url):
        async with session.get(url) as r:
            return r.status
    return list(await asyncio.gather(*(one(url) for url in urls)))


async def one_timeout_for_all(session, urls, timeout_s):
    return await asyncio.wait_for(no_timeout(session, urls, timeout_s), timeout_s)


async def one_timeout_for_all_caught(session, urls, timeout_s):
    try:
        return await one_timeout_for_all(session, urls, timeout_s)
    except asyncio.TimeoutError:
        return [None] * len(urls)


async def responses(session, urls, timeout_s):
    return list(await asyncio.gather(*(session.get(url) for url in urls)))


async def arrival_order(session, urls, timeout_s):
    async def one(url):
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
                return r.status
        except asyncio.TimeoutError:
            return None
    return [await done for done in asyncio.as_completed([one(url) for url in urls])]


def not_async(session, urls, timeout_s):
    return [200 for _ in urls]


async def uncaught_error(session, urls, timeout_s):
    statuses = {}
    return [statuses[url] for url in urls]


def test_q4_solution_passes(capsys):
    before = threading.active_count()
    start = time.perf_counter()
    ok, out = verdict(q4, solution_namespace(q4)["fetch_all"], capsys)
    assert ok, out
    assert "Measured: four services" in out and "with one service hung it returned" in out
    assert time.perf_counter() - start < 5
    assert threading.active_count() == before  # its private lab is closed again


@pytest.mark.parametrize("wrong, message", [
    (sequential, "your calls ran one after another: took"),
    (no_timeout, "a call with no timeout holds everything up"),
    (one_timeout_for_all, "fetch_all raised TimeoutError instead of returning a list"),
    (one_timeout_for_all_caught, "every result came back None: a timeout around the whole"),
    (responses, "fetch_all returned response objects"),
    (arrival_order, "the statuses are right but in the wrong order"),
    (not_async, "fetch_all must be an async function"),
    (uncaught_error, "Your code raised KeyError"),
])
def test_q4_wrong_answers(wrong, message, capsys):
    ok, out = verdict(q4, wrong, capsys)
    assert not ok and out.startswith("Not yet:") and message in out, out


def test_q4_not_attempted(capsys):
    async def fetch_all(session, urls, timeout_s):
        # YOUR CODE HERE
        raise NotImplementedError("Your turn")

    ok, out = verdict(q4, fetch_all, capsys)
    assert not ok and out.startswith("Not attempted yet: define `fetch_all`")


def test_q4_reuses_the_learners_lab_and_leaves_it_as_it_was(capsys):
    from labsupport import Lab

    with Lab(seed=3) as lab:
        mine = lab.service("mine", 10)
        assert verdict(q4, solution_namespace(q4)["fetch_all"], capsys)[0]
        assert list(lab.services) == ["mine"] and not lab.closed
        assert lab.call(mine).status == 200
