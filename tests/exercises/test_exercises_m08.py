"""Module 08's question: the worked on_reply passes on the real services and broker; each
plausible wrong orchestrator fails with its own message."""
from __future__ import annotations

import pytest

from labsupport.course.exercises_build import solution_source
from labsupport.exercises import declared_questions
from labsupport.exercises.m08 import (
    TRIP,
    TRIP_FAILURES,
    after_failure,
    log_facts,
    log_text,
    log_truth,
    q1,
    q2,
    q3,
    saga_log,
)

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


def test_the_module_declares_three_questions():
    assert declared_questions()["08"] == ["q1", "q2", "q3"]
    assert (q2.name, q3.name) == ("after_failures", "saga_diagnosis")
    assert all(len(q.hints) == 3 for q in (q2, q3))
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


# ----- q2: predict what the orchestrator sends after a failure -----------------------------------
def solution_value(question, name):
    """The worked answer as q.solution() shows it, run where the notebook's imports are."""
    from labsupport.exercises import m08

    namespace = dict(vars(m08))
    exec(question._solution, namespace)
    return namespace[name]


RIGHT = {"charge_card": ["release_hotel", "release_flight", "cancel_trip"],
         "issue_tickets": ["refund_card", "release_hotel", "release_flight", "cancel_trip"],
         "send_itinerary": ["send_itinerary"]}


def test_q2_the_worked_answer_and_the_rule_agree_and_pass(capsys):
    answer = solution_value(q2, "after_failures")
    assert answer == RIGHT == {f: after_failure(TRIP, f) for f in TRIP_FAILURES}
    assert q2.check(answer), capsys.readouterr().out


def test_q2_the_lessons_own_saga_gives_the_lessons_compensations():
    from labsupport.lessons.m08_sagas.orchestration import STEPS
    assert after_failure(STEPS, "reserve_stock") == ["refund_payment", "cancel_order"]
    assert after_failure(STEPS, "capture_payment") == ["capture_payment"]


@pytest.mark.parametrize("change, words", [
    ({"charge_card": ["cancel_trip", "release_flight", "release_hotel"]}, "last step first"),
    ({"charge_card": ["refund_card", "release_hotel", "release_flight", "cancel_trip"]},
     "never committed"),
    ({"charge_card": ["charge_card"]}, "before the pivot"),
    ({"issue_tickets": ["issue_tickets"]}, "the pivot itself"),
    ({"send_itinerary": ["refund_card", "release_hotel", "release_flight", "cancel_trip"]},
     "cannot be taken back"),
    ({"send_itinerary": []}, "cannot be taken back"),
    ({"charge_card": ["release_hotel", "undo_check_visa", "release_flight", "cancel_trip"]},
     "has no compensation"),
    ({"charge_card": ["release_hotel", "release_flight"]}, "cancel_trip is missing"),
    ({"charge_card": ["release_hotel", "release_flight", "cancel_trip", "cancel_trip"]},
     "sends 3 commands"),
    ({"charge_card": "release_hotel"}, "should be a list"),
])
def test_q2_each_wrong_prediction_gets_its_own_message(change, words, capsys):
    assert not q2.check({**RIGHT, **change})
    assert words in capsys.readouterr().out


def test_q2_a_missing_key_is_named(capsys):
    assert not q2.check({"charge_card": RIGHT["charge_card"]})
    assert "'issue_tickets'" in capsys.readouterr().out


# ----- q3: diagnose the saga log ------------------------------------------------------------------
def test_q3_the_worked_diagnosis_matches_what_the_log_shows(capsys):
    answer = solution_value(q3, "saga_diagnosis")
    assert answer == log_truth() == {"never_ran": "o-2", "twice": "o-4"}
    assert q3.check(answer)
    out = capsys.readouterr().out
    assert "o-2: authorize_payment FAILED" in out and "each sent twice" in out


def test_q3_the_truth_is_read_from_the_log_lines():
    facts = log_facts("o-4")
    assert facts["compensations"] == ["refund_payment", "cancel_order"] * 2
    assert "authorize_payment" not in log_facts("o-2")["committed"]
    assert log_facts("o-7")["ignored"] == 1 and len(log_facts("o-7")["compensations"]) == 2
    assert "o-2" in log_text() and len(saga_log()) > 80


@pytest.mark.parametrize("answer, words", [
    ({"never_ran": "o-3", "twice": "o-4"}, "a correct saga"),
    ({"never_ran": "o-6", "twice": "o-4"}, "undo only steps that committed (create_order)"),
    ({"never_ran": "o-2", "twice": "o-7"}, "duplicate reply was ignored"),
    ({"never_ran": "o-2", "twice": "o-5"}, "was confirmed (a reply came twice and was ignored)"),
    ({"never_ran": "o-4", "twice": "o-2"}, "each was sent twice: that is the other symptom"),
    ({"never_ran": "o-2", "twice": "o-2"}, "for both"),
    ({"never_ran": "o-9", "twice": "o-4"}, "not an order of the log"),
    (["o-2", "o-4"], "a dict with two keys"),
])
def test_q3_each_wrong_diagnosis_gets_its_own_message(answer, words, capsys):
    assert not q3.check(answer)
    assert words in capsys.readouterr().out
