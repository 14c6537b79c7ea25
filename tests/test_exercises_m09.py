"""Module 09's question on a real service: the worked answer passes; each plausible wrong
answer fails with its own message."""
from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from labsupport.exercises import declared_questions
from labsupport.exercises.m09 import SERVICE, q1, side_by_side
from labsupport.exercises_build import solution_source
from labsupport.metrics import percentile
from labsupport.settings import to_wall

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
    assert declared_questions()["09"] == ["q1"]
    assert len(q1.hints) == 3
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
    assert percentile(result.yours.served_ms(), 90) <= SERVICE.p99_target_ms
    assert percentile(result.none.served_ms(), 90) > 3 * SERVICE.p99_target_ms
    assert "your Admission" in result.table()
