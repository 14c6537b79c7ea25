"""Module 07's question: the worked projection passes; each plausible wrong projection fails
with its own message. The checker calls apply directly, so these tests need no broker."""
from __future__ import annotations

import math
import random

import pytest

from labsupport.course.exercises_build import solution_source
from labsupport.exercises import declared_questions
from labsupport.exercises.m07 import (
    STALENESS_RUN,
    TTL_CASE,
    expected_view,
    q1,
    q2,
    q3,
    q4,
    random_log,
    run_apply,
)

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


def test_the_module_declares_three_questions():
    assert declared_questions()["07"] == ["q1", "q2", "q3", "q4"]
    assert (q2.name, q3.name) == ("ttl_hit_rate", "diagnosis")
    assert all(len(q.hints) == 3 for q in (q2, q3))
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


# ----- q2: predict the TTL cache's hit rate ------------------------------------------------------
def solution_value(question, name):
    namespace: dict = {}
    exec(question._solution, namespace)
    return namespace[name]


def simulated_ttl_hit_rate(reads: int = 200_000, seed: int = 3) -> float:
    """Another correct method: simulate random reads against one entry per customer."""
    rng = random.Random(seed)
    rate, customers = TTL_CASE["read_rate"], TTL_CASE["customers"]
    ttl, compute = TTL_CASE["ttl_ms"] / 1000, TTL_CASE["compute_ms"] / 1000
    ready = dict.fromkeys(range(customers), -math.inf)     # the entry is there from ...
    expires = dict.fromkeys(range(customers), -math.inf)   # ... until
    t, hits = 0.0, 0
    for _ in range(reads):
        t += rng.expovariate(rate)
        customer = rng.randrange(customers)
        if ready[customer] <= t < expires[customer]:
            hits += 1
        elif t >= expires[customer]:   # no entry and no compute under way: start one
            ready[customer] = t + compute
            expires[customer] = ready[customer] + ttl
    return hits / reads


def test_q2_the_formula_and_a_simulation_both_pass(capsys):
    assert q2.check(solution_value(q2, "ttl_hit_rate")), capsys.readouterr().out
    simulated = simulated_ttl_hit_rate()
    assert q2.check(simulated), (simulated, capsys.readouterr().out)


R = TTL_CASE["read_rate"] / TTL_CASE["customers"]


@pytest.mark.parametrize("wrong, words", [
    (1 - 0.625, "miss rate"),
    (62.5, "not a percentage"),
    (2.5 / 3.5, "while the first miss is being computed"),
    (30 / 37, "one entry"),
    (R * 500 / (1 + R * 100 + R * 500), "with the times in ms"),
    (0.5 / 0.6, "a share of time"),
    (0.3, "too low"),
    ("62%", "should be a number"),
])
def test_q2_each_wrong_prediction_gets_its_own_message(wrong, words, capsys):
    assert not q2.check(wrong)
    assert words in capsys.readouterr().out


# ----- q3: diagnose the staleness and lag table -------------------------------------------------
def test_q3_the_worked_diagnosis_passes_and_matches_the_runs_construction(capsys):
    answer = solution_value(q3, "diagnosis")
    assert answer == STALENESS_RUN.truth()
    assert q3.check(answer)
    out = capsys.readouterr().out
    assert "staleness is above its lag" in out and "when it resumes" in out


def test_q3_the_table_shows_the_symptoms_it_is_built_from():
    groups = {p.group: p for p in STALENESS_RUN.projections}
    assert STALENESS_RUN.hidden(groups["search-index"]) >= 5
    assert all(STALENESS_RUN.hidden(p) == 0 for name, p in groups.items()
               if name != "search-index")   # the honest ones: staleness <= lag every look
    assert "search-index" in STALENESS_RUN.table()


@pytest.mark.parametrize("answer, words", [
    ({"commits_first": "customer-totals", "stalled": "search-index"}, "its lag says so"),
    ({"commits_first": "audit-feed", "stalled": "customer-totals"}, "applies more slowly"),
    ({"commits_first": "order-summary", "stalled": "customer-totals"}, "healthy"),
    ({"commits_first": "search-index", "stalled": "audit-feed"}, "falls steadily behind"),
    ({"commits_first": "search-index", "stalled": "order-summary"}, "healthy"),
    ({"commits_first": "search-index", "stalled": "search-index"}, "one group for two symptoms"),
    ({"commits_first": "search", "stalled": "customer-totals"}, "is not a group of the table"),
    ("search-index", "a dict with these keys"),
])
def test_q3_each_wrong_diagnosis_gets_its_own_message(answer, words, capsys):
    assert not q3.check(answer)
    assert words in capsys.readouterr().out


# ----- q4: the stampede fix on the real cache server ----------------------------------------------
Q4_WRONG = {
    "GET then SET (the classic)": '''
async def get_or_compute(cache, key, compute, ttl_ms, lock_ms):
    value = await cache.get(key)
    if value is None:
        value = await compute()
        await cache.set(key, value, px=ttl_ms)
    return value
''',
    "losers return what they find": '''
async def get_or_compute(cache, key, compute, ttl_ms, lock_ms):
    value = await cache.get(key)
    if value is not None:
        return value
    if await cache.set(key + ":lock", "me", nx=True, px=lock_ms):
        value = await compute()
        await cache.set(key, value, px=ttl_ms)
        await cache.delete(key + ":lock")
        return value
    return await cache.get(key)
''',
    "a lock without PX": '''
import asyncio

async def get_or_compute(cache, key, compute, ttl_ms, lock_ms):
    while True:
        value = await cache.get(key)
        if value is not None:
            return value
        if await cache.set(key + ":lock", "me", nx=True):
            try:
                value = await compute()
                await cache.set(key, value, px=ttl_ms)
                return value
            finally:
                await cache.delete(key + ":lock")
        await asyncio.sleep(0.005)
''',
    "waiters never retry the lock": '''
import asyncio

async def get_or_compute(cache, key, compute, ttl_ms, lock_ms):
    value = await cache.get(key)
    if value is not None:
        return value
    if await cache.set(key + ":lock", "me", nx=True, px=lock_ms):
        value = await compute()
        await cache.set(key, value, px=ttl_ms)
        await cache.delete(key + ":lock")
        return value
    while (value := await cache.get(key)) is None:
        await asyncio.sleep(0.005)
    return value
''',
    "ignores whether it got the lock": '''
async def get_or_compute(cache, key, compute, ttl_ms, lock_ms):
    value = await cache.get(key)
    if value is None:
        await cache.set(key + ":lock", "me", nx=True, px=lock_ms)
        value = await compute()
        await cache.set(key, value, px=ttl_ms)
    return value
''',
    "a value without a TTL": '''
import asyncio

async def get_or_compute(cache, key, compute, ttl_ms, lock_ms):
    while True:
        value = await cache.get(key)
        if value is not None:
            return value
        if await cache.set(key + ":lock", "me", nx=True, px=lock_ms):
            value = await compute()
            await cache.set(key, value)
            await cache.delete(key + ":lock")
            return value
        await asyncio.sleep(0.005)
''',
    "a plain function": '''
def get_or_compute(cache, key, compute, ttl_ms, lock_ms):
    return cache.get(key)
''',
}
Q4_MESSAGES = {
    "GET then SET (the classic)": "the backend computed 40 times: every reader that misses",
    "losers return what they find": "39 of 40 readers got None",
    "a lock without PX": "your lock has no expiry (PTTL -1)",
    "waiters never retry the lock": "the waiters only wait for the value",
    "ignores whether it got the lock": "you take a lock",
    "a value without a TTL": "stored without a TTL",
    "a plain function": "should be an async function",
}


def q4_answer(source: str):
    namespace: dict = {}
    exec(source, namespace)
    return namespace["get_or_compute"]


def test_q4_the_worked_answer_passes_and_says_what_it_did(lab_cache, capsys):
    assert q4.check(q4_answer(q4._solution))
    out = capsys.readouterr().out
    assert "computed 1 time(s)" in out and "10 waiting readers got the value" in out


@pytest.mark.parametrize("name", list(Q4_WRONG))
def test_q4_each_wrong_answer_gets_its_own_message(name, lab_cache, capsys):
    assert not q4.check(q4_answer(Q4_WRONG[name]))
    out = capsys.readouterr().out
    assert Q4_MESSAGES[name] in out, out
    others = [m for n, m in Q4_MESSAGES.items() if n != name]
    assert not any(m in out for m in others), out


def test_q4_without_a_cache_server_names_the_fix(monkeypatch, capsys):
    from labsupport.broker import net

    monkeypatch.setenv("LAB_CACHE_URL", f"redis://127.0.0.1:{net.free_port()}/0")
    assert not q4.check(q4_answer(q4._solution))
    out = capsys.readouterr().out
    assert "needs the lab's cache server" in out and "LAB_CACHE_URL" in out
