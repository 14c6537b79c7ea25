"""Module 07's question: the worked projection passes; each plausible wrong projection fails
with its own message. The checker calls apply directly, so these tests need no broker."""
from __future__ import annotations

import pytest

from labsupport.exercises import declared_questions
from labsupport.exercises.m07 import expected_view, q1, random_log, run_apply
from labsupport.exercises_build import solution_source

pytestmark = pytest.mark.usefixtures("isolated_progress")


def verdict(answer, capsys) -> tuple[bool, str]:
    ok = q1.check(answer)
    return ok, capsys.readouterr().out.strip()


def solution_apply():
    namespace: dict = {}
    exec(q1._solution, namespace)  # the text learners are shown by q1.solution()
    return namespace["apply"]


def make_apply(mistake: str | None = None):
    """A projection written independently of the solution, with one ``mistake`` switched on."""
    seen = {"last": 0}

    def apply(view, event):
        orders, customers = view["orders"], view["customers"]
        old = orders.get(event["order"])
        version = event["version"]
        if mistake == "no version check":
            pass
        elif mistake == "waits for version + 1":
            if old is not None and version != old["version"] + 1:
                return
        elif mistake == "one version for the view":
            if version <= seen["last"]:
                return
            seen["last"] = version
        elif old is not None and version <= old["version"]:
            return
        if mistake == "only from OrderPlaced" and old is None and event["type"] != "OrderPlaced":
            raise KeyError(event["order"])
        row = {k: event[k] for k in ("customer", "amount", "state", "version")}
        if mistake == "deletes on cancel" and event["state"] == "CANCELLED":
            orders.pop(event["order"], None)
        else:
            orders[event["order"]] = row
        if mistake in ("counts per event", "adds amounts"):
            totals = customers.setdefault(event["customer"], {"orders": 0, "amount": 0})
            if event["type"] == "OrderPlaced":
                totals["orders"] += 1
                totals["amount"] += event["amount"]
            elif event["type"] == "ItemAdded" and mistake == "adds amounts":
                totals["amount"] += event["amount"]
            return
        for before, sign in ((old, -1), (row, 1)):
            if before is None:
                continue
            cancelled = before["state"] == "CANCELLED" and mistake != "cancel still counts"
            if not cancelled:
                totals = customers.setdefault(before["customer"], {"orders": 0, "amount": 0})
                totals["orders"] += sign
                totals["amount"] += sign * before["amount"]

    return apply


def test_the_module_declares_q1():
    assert declared_questions()["07"] == ["q1"]
    assert q1.name == "apply" and len(q1.hints) == 3
    assert "def apply" in solution_source("07", "apply")
    assert "BEGIN SOLUTION" not in q1._solution


def test_the_worked_solution_passes(capsys):
    ok, out = verdict(solution_apply(), capsys)
    assert ok, out
    assert out.startswith("Correct:")


def test_an_independent_correct_projection_passes(capsys):
    ok, out = verdict(make_apply(None), capsys)
    assert ok, out


@pytest.mark.parametrize("mistake, message", [
    ("no version check", "last writer wins by version, not by arrival"),
    ("waits for version + 1", "Do not wait for version + 1"),
    ("one version for the view", "not one version for the whole view"),
    ("only from OrderPlaced", "need not be OrderPlaced"),
    ("deletes on cancel", "a late older event brings it back"),
    ("cancel still counts", "a cancelled order no longer counts for its customer"),
    ("counts per event", "c1's amount is still 30, it should be 45"),
    ("adds amounts", "c1's amount is 75, it should be 45"),
])
def test_each_wrong_projection_gets_its_own_message(mistake, message, capsys):
    ok, out = verdict(make_apply(mistake), capsys)
    assert not ok and out.startswith("Not yet:"), out
    assert message in out, out


def test_messages_are_distinct():
    mistakes = ("no version check", "waits for version + 1", "one version for the view",
                "only from OrderPlaced", "deletes on cancel", "cancel still counts",
                "counts per event", "adds amounts")
    assert len({q1._evaluate(make_apply(m))[1] for m in mistakes}) == len(mistakes)


def remembering(what: str):
    """A projection that keeps ``what`` in its own memory instead of the view: it passes
    every replay in one process, and only a restart or a rebuild shows the difference."""
    latest: dict = {}
    totals: dict = {}

    def apply(view, event):
        orders = view["orders"]
        old = orders.get(event["order"])
        if what == "versions":
            if event["version"] <= latest.get(event["order"], 0):
                return
            latest[event["order"]] = event["version"]
        elif old is not None and event["version"] <= old["version"]:
            return
        row = {k: event[k] for k in ("customer", "amount", "state", "version")}
        orders[event["order"]] = row
        for before, sign in ((old, -1), (row, 1)):
            if before is not None and before["state"] != "CANCELLED":
                kept = totals if what == "totals" else view["customers"]
                t = kept.setdefault(before["customer"], {"orders": 0, "amount": 0})
                t["orders"] += sign
                t["amount"] += sign * before["amount"]
        if what == "totals":   # the view gets a copy of the totals it remembers
            for customer in {event["customer"], (old or event)["customer"]}:
                if customer in totals:
                    view["customers"][customer] = dict(totals[customer])

    return apply


@pytest.mark.parametrize("what, words", [("versions", "after a rebuild"),
                                         ("totals", "after a restart")])
def test_state_kept_in_process_memory_is_caught_by_a_restart_or_a_rebuild(what, words, capsys):
    ok, out = verdict(remembering(what), capsys)
    assert not ok and words in out, out
    assert "keeps state outside the view" in out, out


def test_fresh_ids_keep_memory_from_failing_the_ordinary_scenarios(capsys):
    from labsupport.exercises.m07 import A1, A2, A3, B1, expected_view

    apply = remembering("versions")
    for _ in range(2):   # the same story twice: a per-process memory must not notice
        view = run_apply(apply, [A1, B1, A2, A3])
        assert view["orders"] == expected_view([A1, B1, A2, A3])["orders"]


def test_success_says_what_the_projection_did(capsys):
    ok, out = verdict(solution_apply(), capsys)
    assert ok, out
    assert "random_log(0)" in out and "delivered twice" in out and "after a rebuild" in out


def test_duplicates_applied_twice_double_the_counters(capsys):
    def increments(view, event):
        view["orders"][event["order"]] = {k: event[k] for k in
                                          ("customer", "amount", "state", "version")}
        totals = view["customers"].setdefault(event["customer"], {"orders": 0, "amount": 0})
        if event["type"] == "OrderPlaced":
            totals["orders"] += 1
            totals["amount"] += event["amount"]
        elif event["type"] == "ItemAdded":
            totals["amount"] += 15

    ok, out = verdict(increments, capsys)
    assert not ok and "the counters grew twice" in out, out
    assert "c1 {orders 2, amount 90}" in out, out


def test_replacing_the_view_instead_of_changing_it(capsys):
    def rebinds(view, event):
        view = {"orders": {event["order"]: event}, "customers": {}}  # noqa: F841

    ok, out = verdict(rebinds, capsys)
    assert not ok and "assigning view = ... inside apply only renames" in out, out


def test_a_wrong_row_shape_is_named(capsys):
    def no_version(view, event):
        view["orders"][event["order"]] = {"state": event["state"]}

    ok, out = verdict(no_version, capsys)
    assert not ok and "a row is a dict with the keys customer, amount, state, version" in out


def test_a_projection_that_returns_a_new_view_is_accepted(capsys):
    correct = make_apply(None)

    def returns_copy(view, event):
        import copy

        new = copy.deepcopy(view)
        correct(new, event)
        return new

    ok, out = verdict(returns_copy, capsys)
    assert ok, out


def test_the_learners_own_error_is_shown_as_theirs(capsys):
    def broken(view, event):
        return view["orderz"]

    ok, out = verdict(broken, capsys)
    assert not ok and "Your code raised KeyError" in out and "labsupport/" not in out, out


def test_placeholder_not_callable_and_wrong_arity(capsys):
    def placeholder(view, event):
        raise NotImplementedError("Your turn")

    ok, out = verdict(placeholder, capsys)
    assert not ok and out.startswith("Not attempted yet"), out
    ok, out = verdict(42, capsys)
    assert not ok and "should be a function" in out
    ok, out = verdict(lambda view: None, capsys)
    assert not ok and "apply takes two arguments" in out


def test_random_logs_are_adversarial_and_the_reference_agrees_with_the_solution():
    apply = solution_apply()
    for seed in range(10):
        log = random_log(seed)
        versions = [(e["order"], e["version"]) for e in log]
        assert len(versions) > len(set(versions)), "each log should hold duplicates"
        assert run_apply(apply, log) == _normalised(expected_view(log), run_apply(apply, log))


def _normalised(expected, got):
    """The solution keeps customers whose totals went back to 0; the reference leaves them out."""
    customers = {c: t for c, t in got["customers"].items() if t["orders"] or t["amount"]}
    assert customers == expected["customers"]
    return {"orders": expected["orders"], "customers": got["customers"]}
