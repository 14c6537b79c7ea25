"""Module 02's questions: each passes with its solution and fails, specifically, on the
wrong answers a learner would plausibly write. q3 runs on real services at time scale 0.2."""
from __future__ import annotations

import threading

import pytest

from labsupport.exercises import declared_questions
from labsupport.exercises.m02 import q1, q2, q3

pytestmark = pytest.mark.usefixtures("isolated_progress", "checker_time_scale")


def solution_namespace(question) -> dict:
    """Run the worked answer from solutions/02 (the text the learner is shown)."""
    namespace: dict = {}
    exec(question._solution, namespace)
    return namespace


def verdict(question, answer, capsys) -> tuple[bool, str]:
    ok = question.check(answer)
    return ok, capsys.readouterr().out.strip()


def test_the_module_declares_q1_to_q3():
    assert declared_questions()["02"] == ["q1", "q2", "q3"]
    assert [q.name for q in (q1, q2, q3)] == ["busy_workers", "seconds_to_fill", "protect"]
    assert all(len(q.hints) == 3 and q._solution for q in (q1, q2, q3))


# ----- q1 and q2 -----------------------------------------------------------------------------
def test_q1_solution_passes(capsys):
    answer = solution_namespace(q1)["busy_workers"]
    assert answer == pytest.approx(10)
    assert verdict(q1, answer, capsys)[0]


@pytest.mark.parametrize("wrong, message", [
    (10_000, "as a number of milliseconds"),
    (160, "that is λ / W"),
    (0.00625, "that is W / λ"),
    (40, "not how many are inside at once"),
    (7, "7 workers is too low"),
])
def test_q1_wrong_answers(wrong, message, capsys):
    ok, out = verdict(q1, wrong, capsys)
    assert not ok and out.startswith("Not yet:") and message in out, out


def test_q2_solution_passes(capsys):
    answer = solution_namespace(q2)["seconds_to_fill"]
    assert answer == pytest.approx(0.5)
    assert verdict(q2, answer, capsys)[0]


@pytest.mark.parametrize("wrong, message", [
    (3, "that is how long one slow call takes"),
    (2, "that is λ / K"),
    (60, "that is λ·W"),
    (500, "that looks like milliseconds"),
])
def test_q2_wrong_answers(wrong, message, capsys):
    ok, out = verdict(q2, wrong, capsys)
    assert not ok and out.startswith("Not yet:") and message in out, out


# ----- q3: real services ---------------------------------------------------------------------
def test_q3_solution_passes(capsys):
    before = threading.active_count()
    ok, out = verdict(q3, solution_namespace(q3)["protect"], capsys)
    assert ok, out
    assert "Measured with a timeout of 398 ms, 4 own workers for /local" in out
    assert out.splitlines()[-1].startswith("Correct:")
    assert threading.active_count() == before  # its private lab is closed again


def no_protection(a, downstream_p99_ms):
    pass


def timeout_only(a, downstream_p99_ms):
    a.set(call_timeout_ms=1.2 * downstream_p99_ms)


def long_timeout_only(a, downstream_p99_ms):
    a.set(call_timeout_ms=5000)


def bulkhead_only(a, downstream_p99_ms):
    a.set(local_workers=4)


def tight_timeout(a, downstream_p99_ms):
    a.set(call_timeout_ms=100, local_workers=4)


def long_timeout_and_bulkhead(a, downstream_p99_ms):
    a.set(call_timeout_ms=1500, local_workers=4)


def more_workers(a, downstream_p99_ms):
    a.set(workers=100)


def raises(a, downstream_p99_ms):
    a.set(timeout=300)


@pytest.mark.parametrize("wrong, message", [
    (no_protection, "no protection: while C was slow, /local's p99 was"),
    (timeout_only, "a timeout alone holds at 20 requests/s, but not when traffic doubles"),
    (long_timeout_only, "your timeout of 5000 ms is too long to save A's pool on its own"),
    (bulkhead_only, "a bulkhead with no timeout: /local is fine, but while C was slow"),
    (tight_timeout, "your timeout of 100 ms is below the p99 of a healthy call to B"),
    (long_timeout_and_bulkhead, "your timeout of 1500 ms is too long: while C was slow"),
    (more_workers, "More workers (100) only move the line"),
    (raises, "Your code raised BadParameter"),
])
def test_q3_wrong_answers(wrong, message, capsys):
    ok, out = verdict(q3, wrong, capsys)
    assert not ok and out.startswith("Not yet:") and message in out, out


def test_q3_not_a_function_or_async(capsys):
    ok, out = verdict(q3, 300, capsys)
    assert not ok and "`protect` should be a function" in out

    async def protect(a, downstream_p99_ms):
        a.set(call_timeout_ms=400)

    ok, out = verdict(q3, protect, capsys)
    assert not ok and "protect should be a plain function" in out


def test_q3_not_attempted(capsys):
    def protect(a, downstream_p99_ms):
        # YOUR CODE HERE
        raise NotImplementedError("Your turn")

    ok, out = verdict(q3, protect, capsys)
    assert not ok and out.startswith("Not attempted yet: define `protect`")


def test_q3_reuses_the_learners_lab_and_leaves_it_as_it_was(capsys):
    from labsupport import Lab

    with Lab(seed=3) as lab:
        mine = lab.service("mine", 10)
        assert verdict(q3, solution_namespace(q3)["protect"], capsys)[0]
        assert list(lab.services) == ["mine"] and not lab.closed
        assert lab.call(mine).status == 200


def _healthy(failures: int, calls: int = 300):
    from labsupport.runtime.metrics import Recorder

    record = Recorder("healthy")
    for i in range(calls):
        record.record(i / 100, 50.0, 0 if i < failures else 200)
    return record


def test_a_busy_machine_does_not_blame_a_sensible_timeout():
    """30 of 300 healthy calls lost: with a timeout above the healthy p99 that is the
    machine (the timeout itself cuts ~0.5%); with one at the p90 it is the timeout."""
    from labsupport.lessons.m02_cascading_failures.cascading import (
        ProtectionReport,
        downstream_p99_ms,
    )

    p99 = downstream_p99_ms()
    sensible = ProtectionReport(1.2 * p99, 4, 10, p99, _healthy(30))
    tight = ProtectionReport(150, 4, 10, p99, _healthy(30))
    assert sensible.timeout_loss() < 0.01 and not sensible.healthy_too_lossy()
    assert tight.timeout_loss() > 0.05 and tight.healthy_too_lossy()
    assert not ProtectionReport(150, 4, 10, p99, _healthy(3)).healthy_too_lossy()
