"""Module 06's question: the worked handle passes; each plausible wrong handle fails with its
own message. The checker needs no broker: it runs on SQLite files in a temporary folder."""
from __future__ import annotations

import re

import pytest

from labsupport.course.exercises_build import solution_source
from labsupport.exercises import declared_questions
from labsupport.exercises.m06 import (
    CONSUMER_LOG,
    CRASH_CASES,
    MAX_ATTEMPTS,
    OUTAGE_CASE,
    apply_payment,
    payments_stream,
    q1,
    q2,
    q3,
    q4,
)

pytestmark = pytest.mark.usefixtures("isolated_progress")


def verdict(answer, capsys) -> tuple[bool, str]:
    ok = q1.check(answer)
    return ok, capsys.readouterr().out.strip()


def solution_function():
    namespace: dict = {}
    exec("from labsupport.exercises.m06 import MAX_ATTEMPTS, apply_payment\n" + q1._solution,
         namespace)
    return namespace["handle"]


def headers_for(event, error, attempts=MAX_ATTEMPTS):
    return {"error": str(error), "error-type": type(error).__name__,
            "original-topic": event.topic, "original-partition": str(event.partition),
            "original-offset": str(event.offset), "attempts": str(attempts)}


def make_handle(mistake: str | None = None):
    """A handle written independently of the solution, with one ``mistake`` switched on."""

    def key_of(event):
        return f"{event.partition}:{event.offset}" if mistake == "by offset" else event.value["id"]

    def once(store, event):
        key = key_of(event)
        if mistake == "no dedup":
            with store.transaction() as tx:
                apply_payment(tx, event.value)
            return
        if mistake == "effect then mark":
            if store.scalar("SELECT 1 FROM processed WHERE message_id = ?", (key,)):
                return
            with store.transaction() as tx:
                apply_payment(tx, event.value)
            store.execute("INSERT INTO processed VALUES (?)", (key,))
            return
        if mistake == "mark then effect":
            if store.execute("INSERT OR IGNORE INTO processed VALUES (?)", (key,)) == 0:
                return
            with store.transaction() as tx:
                apply_payment(tx, event.value)
            return
        if mistake == "integrity error":
            with store.transaction() as tx:
                tx.execute("INSERT INTO processed VALUES (?)", (key,))   # raises when seen
                apply_payment(tx, event.value)
            return
        with store.transaction() as tx:
            if tx.execute("INSERT OR IGNORE INTO processed VALUES (?)", (key,)).rowcount == 0:
                return
            apply_payment(tx, event.value)

    def handle(event, store, dlq):
        attempts = {"once": 1, "five": 5}.get(mistake, MAX_ATTEMPTS)
        attempt = 0
        while True:
            attempt += 1
            try:
                once(store, event)
                return
            except BaseException as error:
                if mistake != "swallow crash" and not isinstance(error, Exception):
                    raise
                if mistake == "no retry":
                    raise
                if mistake == "forever":
                    continue
                if attempt < attempts:
                    continue
                if mistake == "raise":
                    raise
                if mistake == "drop":
                    return
                headers = {} if mistake == "no headers" else headers_for(event, error, attempt)
                dlq(event.value, key=event.key, headers=headers)
                return

    return handle


def test_the_module_declares_its_three_questions():
    assert declared_questions()["06"] == ["q1", "q2", "q3", "q4"]
    assert len(q2.hints) == len(q3.hints) == 3
    assert q1.name == "handle" and len(q1.hints) == 3
    assert "def handle" in solution_source("06", "handle")
    assert "BEGIN SOLUTION" not in q1._solution


def test_the_worked_solution_passes(capsys):
    ok, out = verdict(solution_function(), capsys)
    assert ok, out
    assert out.startswith("Correct:")


def test_an_independent_correct_handle_passes(capsys):
    ok, out = verdict(make_handle(None), capsys)
    assert ok, out


MISTAKES = [
    ("no dedup", "applied twice. Record each message id"),
    ("by offset", "Deduplicate by the message's own id, event.value['id'], not by its offset"),
    ("effect then mark", "The effect and the id must commit together"),
    ("mark then effect", "you record the id *before* the effect"),
    ("forever", "it retries the poison payment forever"),
    ("raise", "let the poison payment's error escape"),
    ("no retry", "made handle raise. Catch the error and try again"),
    ("drop", "the poison payment vanished"),
    ("no headers", "the dead letter has no error, error-type, original-topic"),
    ("once", "failed once (database is locked), and you sent it to the dead-letter queue"),
    ("five", "you tried the poison payment 5 time(s)"),
    ("integrity error", "a message you have already applied is not an error"),
    ("swallow crash", "swallowed it. Catch Exception only"),
]


@pytest.mark.parametrize("mistake, message", MISTAKES)
def test_each_wrong_handle_gets_its_own_message(mistake, message, capsys):
    ok, out = verdict(make_handle(mistake), capsys)
    assert not ok and out.startswith("Not yet:"), out
    assert message in out, out


def without_suffix(message: str) -> str:
    """The message with each payment id's fresh suffix taken off (p-20-3fa2c1 -> p-20)."""
    return re.sub(r"(p-\d+)-[0-9a-f]{6}", r"\1", message)


def test_messages_are_distinct():
    outs = {without_suffix(q1._evaluate(make_handle(mistake))[1]) for mistake, _ in MISTAKES}
    outs |= {without_suffix(q1._evaluate(in_memory(kind))[1]) for kind, _ in IN_MEMORY}
    assert len(outs) == len(MISTAKES) + len(IN_MEMORY)


def test_every_check_uses_fresh_payment_ids():
    first = q1._evaluate(make_handle("no dedup"))[1]
    second = q1._evaluate(make_handle("no dedup"))[1]
    assert first != second and without_suffix(first) == without_suffix(second)


# Handlers that remember applied ids in process memory, written as a learner would in a
# notebook cell: module-level state, the effect in its own transaction. Each passes a run in
# one process (the redelivery and the re-published duplicate are skipped); only a restart,
# which empties the process's memory, shows the payment applied twice.
IN_MEMORY_SOURCES = {
    "set": """
seen = set()

def handle(event, store, dlq):
    pid = event.value["id"]
    if pid in seen:
        return
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            with store.transaction() as tx:
                apply_payment(tx, event.value)
            seen.add(pid)
            return
        except Exception as error:
            last = error
    dlq(event.value, key=event.key, headers=headers_for(event, last))
""",
    "dict": """
cache = {}

def already(pid):
    return cache.get(pid, False)

def handle(event, store, dlq):
    pid = event.value["id"]
    if already(pid):
        return
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            with store.transaction() as tx:
                apply_payment(tx, event.value)
            cache[pid] = True
            return
        except Exception as error:
            last = error
    dlq(event.value, key=event.key, headers=headers_for(event, last))
""",
    "set, marked first": """
def handle(event, store, dlq, done=set()):
    pid = event.value["id"]
    if pid in done:
        return
    done.add(pid)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            with store.transaction() as tx:
                apply_payment(tx, event.value)
            return
        except Exception as error:
            last = error
    dlq(event.value, key=event.key, headers=headers_for(event, last))
""",
}
IN_MEMORY = [
    ("set", "remembers what it applied in `seen` (a set), in the process's memory"),
    ("dict", "remembers what it applied in `cache` (a dict), in the process's memory"),
    ("set, marked first", "remembers what it applied in a default argument of handle (a set)"),
]


def in_memory(kind: str):
    namespace = {"MAX_ATTEMPTS": MAX_ATTEMPTS, "apply_payment": apply_payment,
                 "headers_for": headers_for, "__name__": "__main__"}
    exec(IN_MEMORY_SOURCES[kind], namespace)
    return namespace["handle"]


@pytest.mark.parametrize("kind, message", IN_MEMORY)
def test_dedup_in_process_memory_is_caught_by_a_restart(kind, message, capsys):
    handle = in_memory(kind)
    assert verdict(handle, capsys)[0] is False
    ok, out = verdict(handle, capsys)   # twice: ids from the first check must not hide it
    assert not ok and "the consumer process restarted" in out, out
    assert message in out, out


def test_the_check_leaves_the_learners_memory_alone(capsys):
    namespace = {"MAX_ATTEMPTS": MAX_ATTEMPTS, "apply_payment": apply_payment,
                 "headers_for": headers_for, "__name__": "__main__"}
    exec(IN_MEMORY_SOURCES["set"], namespace)
    verdict(namespace["handle"], capsys)
    assert namespace["seen"] == set()   # every run used a fresh copy, as a new process would


def test_a_memory_shortcut_in_front_of_the_table_passes_and_is_named(capsys):
    namespace = {"MAX_ATTEMPTS": MAX_ATTEMPTS, "apply_payment": apply_payment,
                 "headers_for": headers_for, "__name__": "__main__"}
    exec("""
recent = set()

def handle(event, store, dlq):
    pid = event.value["id"]
    if pid in recent:
        return
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            with store.transaction() as tx:
                if tx.execute("INSERT OR IGNORE INTO processed VALUES (?)", (pid,)).rowcount:
                    apply_payment(tx, event.value)
            recent.add(pid)
            return
        except Exception as error:
            last = error
    dlq(event.value, key=event.key, headers=headers_for(event, last))
""", namespace)
    ok, out = verdict(namespace["handle"], capsys)
    assert ok, out
    assert "`recent` (a set) in process memory is only a shortcut" in out, out


def test_dead_lettering_a_malformed_payment_at_once_passes_and_says_why(capsys):
    from labsupport.lessons.m06_delivery_semantics.dead_letters import BadPayment

    correct = make_handle(None)

    def handle(event, store, dlq):
        amount = event.value["amount"]
        if not isinstance(amount, int):   # can never succeed: no point retrying
            error = BadPayment(f"amount {amount!r} is not a whole number of cents")
            dlq(event.value, key=event.key, headers=headers_for(event, error, attempts=0))
            return
        correct(event, store, dlq)

    ok, out = verdict(handle, capsys)
    assert ok, out
    assert "dead-lettered after 0 tries, not 3" in out and "Better than the worked" in out, out
    assert "BadPayment" in out, out


def test_the_success_message_describes_the_solution(capsys):
    ok, out = verdict(solution_function(), capsys)
    assert ok, out
    assert "tried 3 time(s) and dead-lettered" in out and "Better than" not in out, out
    assert "only a shortcut" not in out and "database steps (1 transaction(s))" in out, out


def test_a_handle_that_never_returns_is_reported(capsys, monkeypatch):
    from labsupport.exercises import m06

    monkeypatch.setattr(m06, "SCENARIO_TIMEOUT_S", 0.3)

    def spins(event, store, dlq):
        import time
        time.sleep(1.0)

    ok, out = verdict(spins, capsys)
    assert not ok and "did not return within" in out, out


def test_the_placeholder_counts_as_not_attempted(capsys):
    def placeholder(event, store, dlq):
        raise NotImplementedError("Your turn")

    ok, out = verdict(placeholder, capsys)
    assert not ok and out.startswith("Not attempted yet"), out


def test_wrong_shapes(capsys):
    ok, out = verdict(42, capsys)
    assert not ok and "should be a function" in out
    ok, out = verdict(lambda event: None, capsys)
    assert not ok and "three arguments" in out


def test_the_stream_has_the_cases_the_checker_claims():
    events = payments_stream("-x")
    ids = [e.value["id"] for e in events]
    assert all(i.endswith("-x") for i in ids)
    assert ids.count("p-6-x") == 2 and ids.count("p-7-x") == 2
    p7 = [e.offset for e in events if e.value["id"] == "p-7-x"]
    assert len(set(p7)) == 2            # re-published: new offset
    p6 = [e.offset for e in events if e.value["id"] == "p-6-x"]
    assert len(set(p6)) == 1            # redelivered: same offset


# ----- q2: predict what a crash loses or repeats ----------------------------------------------------
def solution_value(question, name):
    namespace: dict = {}
    exec(question._solution, namespace)
    return namespace[name]


def test_q2_the_worked_prediction_passes_and_lists_accepted(capsys):
    answer = solution_value(q2, "crash_outcomes")
    assert q2.check(answer), capsys.readouterr().out
    assert q2.check({k: list(v) for k, v in answer.items()})
    assert "decides" in capsys.readouterr().out


def test_q2_the_replay_follows_the_commit_rules():
    # independent of the replay: committed offset at the crash, from the rules by hand
    assert CRASH_CASES["A"].run()[1] == 4 and CRASH_CASES["B"].run()[1] == 8
    assert CRASH_CASES["C"].run()[1] == 6
    assert [c.outcome() for c in CRASH_CASES.values()] == [(0, 3), (2, 0), (0, 0)]


GOOD = {"A": (0, 3), "B": (2, 0), "C": (0, 0)}


@pytest.mark.parametrize("change, words", [
    ({"A": (0, 1)}, "not only offset 6. The restart begins at the last COMMIT"),
    ({"A": (0, 4)}, "one too many. A committed offset is the NEXT offset"),
    ({"A": (1, 3)}, "commits only after processing: a crash can only make"),
    ({"B": (1, 0)}, "The commit covered the whole batch, up to offset 7"),
    ({"B": (0, 2)}, "you swapped lost and duplicated"),
    ({"B": (2, 1)}, "commits before it processes"),
    ({"C": (0, 1)}, "died BEFORE processing offset 6"),
    ({"C": (0, 2)}, "died BEFORE processing offset 6"),
    ({"C": 0}, "pair of whole numbers"),
])
def test_q2_each_wrong_prediction_gets_its_own_message(change, words, capsys):
    assert not q2.check({**GOOD, **change})
    assert words in capsys.readouterr().out


def test_q2_wrong_shape(capsys):
    assert not q2.check({"A": (0, 3)})
    assert "a dict" in capsys.readouterr().out


# ----- q3: diagnose a consumer log ---------------------------------------------------------------------
def test_q3_the_worked_diagnosis_passes_and_matches_the_log(capsys):
    answer = solution_value(q3, "log_diagnosis")
    assert {k: set(v) for k, v in answer.items()} == CONSUMER_LOG.truth()
    assert q3.check(answer), capsys.readouterr().out
    assert q3.check({"lost": [[1, 5]], "duplicated": ((2, 4), (2, 3))})


def test_q3_the_log_shows_the_bug_it_is_built_from():
    lines = CONSUMER_LOG.lines()
    crash = next(i for i, line in enumerate(lines) if "CRASH" in line[3])
    assert lines[crash - 1] == ("worker-1", 1, 6, "committed")   # committed past offset 5 first
    assert CONSUMER_LOG.times_processed(0, 2) == 1                 # the failed try is not counted
    assert "failed (database locked)" in CONSUMER_LOG.text()


@pytest.mark.parametrize("answer, words", [
    ({"lost": [(1, 6)], "duplicated": [(2, 3), (2, 4)]}, "the NEXT one to read"),
    ({"lost": [(1, 5)], "duplicated": [(2, 3), (2, 4), (0, 2)]}, "rolled back wrote nothing"),
    ({"lost": [(1, 5)], "duplicated": [(1, 5)]}, "p1 offset 5 was processed 0 times"),
    ({"lost": [(2, 3), (2, 4)], "duplicated": []}, "p2 offset 3 was processed 2 times"),
    ({"lost": [(1, 5)], "duplicated": []}, "processed twice; 2 more, on p2"),
    ({"lost": [(1, 5)], "duplicated": [(2, 3)]}, "1 more"),
    ({"lost": [], "duplicated": [(2, 3), (2, 4)]}, "you found 0 of the messages lost"),
    ({"lost": [(1, 9)], "duplicated": []}, "no p1 offset 9"),
    ({"lost": (1, 5), "duplicated": []}, "list of (partition, offset) pairs"),
    ({"lost": [(1, 5)]}, "a dict"),
])
def test_q3_each_wrong_diagnosis_gets_its_own_message(answer, words, capsys):
    assert not q3.check(answer)
    assert words in capsys.readouterr().out


# ----- q4: which pushed events are dead-lettered? ------------------------------------------------
def test_q4_the_solution_and_the_lessons_predictor_both_pass(capsys):
    from labsupport.lessons.m05_async_messaging.pushpull import Policy, predict_push

    assert q4.check(solution_value(q4, "dead_lettered")), capsys.readouterr().out
    fates = predict_push(OUTAGE_CASE.published(), (0, OUTAGE_CASE.outage_ms),
                         Policy(max_attempts=OUTAGE_CASE.max_attempts))
    assert q4.check(sum(f is None for f in fates)), capsys.readouterr().out


@pytest.mark.parametrize("wrong, words", [
    (10, "RETRIES after the first try"),
    (50, "every event published while"),
    (0, "retried until the"),
    (44, "waits BETWEEN attempts"),
    (47, "first wait only"),
    (40 / 60, "a share of the events"),
    (41, "too high"),
])
def test_q4_each_wrong_answer_gets_its_own_message(wrong, words, capsys):
    assert not q4.check(wrong)
    assert words in capsys.readouterr().out


def test_q4_the_wrong_answers_are_all_different():
    values = [m.like for m in q4.steps[0].mistakes]
    assert len(set(values)) == len(values) and OUTAGE_CASE.dead() not in values
