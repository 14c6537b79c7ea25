"""Module 08's question: the worked on_reply passes on the real services and broker; each
plausible wrong orchestrator fails with its own message."""
from __future__ import annotations

import pytest

from labsupport.exercises import declared_questions
from labsupport.exercises.m08 import q1
from labsupport.exercises_build import solution_source

pytestmark = pytest.mark.usefixtures("isolated_progress", "lab_broker", "checker_time_scale")


def verdict(answer, capsys) -> tuple[bool, str]:
    ok = q1.check(answer)
    return ok, capsys.readouterr().out.strip()


def solution_function():
    namespace: dict = {}
    exec(q1._solution, namespace)  # the text learners are shown by q1.solution()
    return namespace["on_reply"]


def make_on_reply(mistake: str | None = None):
    """An orchestrator written independently of the solution, with one ``mistake`` on."""

    memory = {"seen": set(), "done": {}}   # process memory: what a restart loses

    def on_reply(saga, reply):
        if mistake == "seen in memory":
            if reply.id in memory["seen"]:
                return []
            memory["seen"].add(reply.id)
        elif mistake != "no dedupe":
            if reply.id in saga.seen:
                return []
            saga.seen.add(reply.id)
        step = saga.step(reply.command)
        done = memory["done"].setdefault(saga.order, []) if mistake == "done in memory" \
            else saga.done
        if reply.ok:
            done.append(reply.command)
            if mistake == "stalls":
                return []
            nxt = saga.step_after(reply.command)
            return [nxt.command] if nxt else []
        if step.kind == "retriable" and mistake not in ("compensates after pivot", "no retry"):
            return [reply.command]
        if mistake == "no retry" and step.kind == "retriable":
            return []
        if mistake == "retries everything":
            return [reply.command]
        if mistake == "no compensation":
            return []
        done = list(done)
        if mistake == "undoes the failed step":
            done.append(reply.command)
        undo = [saga.step(c).compensation for c in done if saga.step(c).compensation]
        if mistake == "forward order":
            return undo
        undo.reverse()
        if mistake == "forgets first":
            undo = undo[:-1]
        return undo

    return on_reply


def test_the_module_declares_q1():
    assert declared_questions()["08"] == ["q1"]
    assert q1.name == "on_reply" and len(q1.hints) == 3
    assert "def on_reply" in solution_source("08", "on_reply")
    assert "BEGIN SOLUTION" not in q1._solution


def test_the_worked_solution_passes(capsys):
    ok, out = verdict(solution_function(), capsys)
    assert ok, out
    assert out.startswith("Correct:")


def test_an_independent_correct_orchestrator_passes(capsys):
    ok, out = verdict(make_on_reply(None), capsys)
    assert ok, out


MISTAKES = [
    ("forward order", "It compensated in forward order"),
    ("undoes the failed step", "It compensated a step that never ran"),
    ("no dedupe", "A duplicated reply made it send"),
    ("compensates after pivot", "After the point of no return a saga only goes forward"),
    ("forgets first", "It forgot to compensate the first step"),
    ("no compensation", "After the stock was unavailable it sent no compensation"),
    ("no retry", "your orchestrator gave up"),
    ("retries everything", "It retried a step before the pivot"),
    ("stalls", "The saga stopped half-way"),
    ("seen in memory", "a reply it had handled before the crash came again"),
    ("done in memory", "after the stock failed it chose other compensations"),
]


@pytest.mark.parametrize("mistake, message", MISTAKES)
def test_each_wrong_orchestrator_gets_its_own_message(mistake, message, capsys):
    ok, out = verdict(make_on_reply(mistake), capsys)
    assert not ok and out.startswith("Not yet:"), out
    assert message in out, out


@pytest.mark.parametrize("mistake", ["seen in memory", "done in memory"])
def test_memory_a_restart_loses_is_named(mistake, capsys):
    ok, out = verdict(make_on_reply(mistake), capsys)
    assert not ok and "keeps per-saga state in its own memory" in out, out
    assert "restarted, as a new process" in out, out


def test_module_level_memory_is_lost_on_restart_too(capsys):
    namespace: dict = {}
    exec("seen = set()\n" + solution_function_source().replace("saga.seen", "seen"), namespace)
    ok, out = verdict(namespace["on_reply"], capsys)
    assert not ok and "keeps per-saga state in its own memory" in out, out


def test_success_says_what_the_orchestrator_did(capsys):
    ok, out = verdict(solution_function(), capsys)
    assert ok, out
    assert "the orchestrator crashed on its 4th reply" in out, out
    assert "4 cancelled" in out and "6 compensations" in out, out
    assert "retried capture" in out and "changed nothing" in out, out


def solution_function_source() -> str:
    return q1._solution


def test_wrong_return_types_and_raising_code_are_explained(capsys):
    ok, out = verdict(lambda saga, reply: "reserve_stock", capsys)
    assert not ok and "return a list of commands" in out, out

    def raises(saga, reply):
        return saga.missing_attribute

    ok, out = verdict(raises, capsys)
    assert not ok and "Your code raised AttributeError" in out, out
    ok, out = verdict(lambda saga, reply: ["ship_it"], capsys)
    assert not ok and "'ship_it', which is not a command" in out, out


def test_not_a_function_and_the_placeholder(capsys):
    ok, out = verdict(42, capsys)
    assert not ok and "should be a function" in out
    ok, out = verdict(lambda saga: [], capsys)
    assert not ok and "two arguments" in out

    def placeholder(saga, reply):
        raise NotImplementedError("Your turn")

    ok, out = verdict(placeholder, capsys)
    assert not ok and out.startswith("Not attempted yet"), out
