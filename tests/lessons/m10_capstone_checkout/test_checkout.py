"""Module 10: the capstone checkout's pieces, both designs under the same chaos, the guide."""
from __future__ import annotations

import math

import pytest

from labsupport.kit.evidence import Estimate, difference, ratio
from labsupport.lessons.m10_capstone_checkout.chaos import CRASH, SLOW, ChaosSchedule, SideBySide
from labsupport.lessons.m10_capstone_checkout.checkout import (
    INVENTORY_SCHEMA,
    ORDER_SCHEMA,
    PAYMENT_SCHEMA,
    Scoreboard,
    Sent,
    charge,
    drain_recovery_s,
    order_times,
    refund,
    reserve,
    sync_recovery_s,
)
from labsupport.lessons.m10_capstone_checkout.checkout_events import EventCheckout, read_status
from labsupport.lessons.m10_capstone_checkout.checkout_sync import SyncCheckout
from labsupport.lessons.m10_capstone_checkout.decision_guide import (
    ASYNC,
    BRIEF,
    EVENTS,
    EXTERNAL,
    SYNC,
    UNDECIDED,
    ExternalFigures,
    LookupFigures,
    build_guide,
    decide,
    lookup_row,
)
from labsupport.runtime.errors import BadParameter


# ----- local transactions ------------------------------------------------------------------------
def test_a_charge_with_an_idempotency_key_happens_once(lab_at):
    lab = lab_at(1.0)
    store = lab.store("pay").create(PAYMENT_SCHEMA)
    first = charge(store, "o-1", 30, "pay-o-1")
    assert charge(store, "o-1", 30, "pay-o-1") == first
    charge(store, "o-2", 30)
    charge(store, "o-2", 30)   # no key: a second charge
    assert store.scalar("SELECT COUNT(*) FROM charges") == 3
    assert refund(store, "o-2") == 2 and refund(store, "o-2") == 0


def test_a_reservation_and_an_order_are_idempotent(lab_at):
    lab = lab_at(1.0)
    stock = lab.store("inv").create(INVENTORY_SCHEMA)
    assert reserve(stock, "o-1") and not reserve(stock, "o-1")
    assert lab.store("ord").create(ORDER_SCHEMA).scalar("SELECT COUNT(*) FROM orders") == 0


# ----- the schedule ---------------------------------------------------------------------------------
def test_the_schedule_orders_its_actions_and_names_its_windows():
    s = ChaosSchedule()
    assert [a for _, a in s.actions()] == ["slow", "normal", "crash", "restore"]
    assert [w[0] for w in s.windows] == [SLOW, CRASH] and s.end_s == 15
    calm = ChaosSchedule(slow_factor=1, crash_s=(11, 11))
    assert calm.windows == [] and calm.end_s == 0 and "no chaos" in calm.describe()


@pytest.mark.parametrize("kwargs, words", [
    ({"slow_factor": 0.5}, "slow_factor must be from 1"),
    ({"crash_s": (15, 11)}, "crash_s must be (start, end)"),
    ({"slow_s": (4, 99)}, "slow_s must be (start, end)"),
    ({"seconds": 1}, "seconds must be from 2"),
])
def test_bad_schedules_are_refused_with_the_fix(kwargs, words):
    with pytest.raises(BadParameter, match=words.replace("(", r"\(").replace(")", r"\)")):
        ChaosSchedule(**kwargs)


def test_order_times_are_seeded_and_checked():
    assert order_times(5, 20, 1) == order_times(5, 20, 1)
    with pytest.raises(BadParameter, match="rate must be"):
        order_times(0, 10, 1)


# ----- the scoreboard ---------------------------------------------------------------------------------
def board(states, statuses, left=0):
    sent = [Sent(float(i), 10.0, st, f"o{i}") for i, st in enumerate(statuses)]
    return Scoreboard("x", sent, states, {}, 0, left, [(CRASH, 1.0, 2.0)])


def test_lost_and_stuck_depend_on_what_is_left_in_the_log():
    states = {"o0": "CONFIRMED", "o1": "PENDING", "o2": "FAILED"}
    assert board(states, [200, 202, 503]).lost == 1
    assert board(states, [200, 202, 503], left=1).stuck == 1
    assert board(states, [200, 202, 503], left=1).lost == 0
    assert board(states, [200, 202, 503]).failed == 1
    assert board(states, [200, 202, 503]).success_during(CRASH) == 1.0


def test_recovery_measures():
    sent = [Sent(0.5, 10, 200, "a"), Sent(3.0, 500, 200, "b"), Sent(4.0, 10, 200, "c")]
    assert sync_recovery_s(sent, 2.0, normal_ms=100) == pytest.approx(1.5)
    assert sync_recovery_s([Sent(3.0, 5, 202, "b")], 2.0, 100) == math.inf
    streak = [Sent(2.0 + i, 10, 200, f"o{i}") for i in range(5)] + [Sent(9.0, 5, 202, "late")]
    assert sync_recovery_s([Sent(2.0, 300, 200, "x"), *streak], 2.0, 100, streak=5) == \
        pytest.approx(0.3)   # the 202 after five normal answers is the everyday tail
    assert drain_recovery_s(sent, {"a": 2.5, "b": 3.5, "c": 4.5}, 2.0) == pytest.approx(0.5)
    assert drain_recovery_s(sent, {"b": 3.5}, 2.0) == math.inf


# ----- the synchronous design's knobs -------------------------------------------------------------------
def test_bad_hardening_settings_name_the_fix(lab_at):
    lab = lab_at(0.2)
    checkout = SyncCheckout(lab, prefix="t_")
    with pytest.raises(BadParameter, match="payment_ms must be None or a number"):
        checkout.timeouts(payment_ms=-5)
    with pytest.raises(BadParameter, match="attempts counts the first try"):
        checkout.retries(attempts=0)
    with pytest.raises(BadParameter, match="backoff must be a policy"):
        checkout.retries(attempts=2, backoff=100)
    with pytest.raises(BadParameter, match="async function"):
        checkout.fallback(lambda order: True)
    with pytest.raises(BadParameter, match="breaker must have"):
        checkout.breaker(object())
    checkout.timeouts(100, 120).retries(3)
    assert checkout.worst_case_ms() == 3 * 100 + 120


# ----- both designs, the same bad day ---------------------------------------------------------------------
def not_refuted(estimate: Estimate, low: float = -math.inf, high: float = math.inf) -> None:
    """Decide as the notebook's claims do: an interval that straddles the line is noise
    (the notebook would run again), only an interval wholly on the wrong side fails."""
    assert estimate.high >= low and estimate.low <= high, (estimate.describe(), low, high)


def test_side_by_side_claims_hold_on_a_short_bad_day(lab_at, lab_broker):
    lab = lab_at(0.2, seed=4)
    sync, events = SyncCheckout(lab), EventCheckout(lab).ready()
    side = SideBySide(lab, [sync, events], rate=6.0, seed=4)
    s, e = side.run(ChaosSchedule(seconds=10, slow_s=(2, 4), crash_s=(5, 7)))
    assert s.success_during(CRASH) <= 0.5 and s.lost == 0 and s.failed >= 2
    not_refuted(difference(s.waits(SLOW), s.waits("calm")), low=225)
    assert e.failed == 0 and e.said_yes().value == 1.0
    assert (e.lost, e.stuck, e.double_charged) == (0, 0, 0)
    not_refuted(difference(s.waits(), e.waits(), q=0.9, paired=True), low=250)
    not_refuted(difference(e.waits(SLOW) + e.waits(CRASH), e.waits("calm")), high=100)
    not_refuted(ratio(e.e2e_samples(CRASH), e.e2e_samples("before")), low=3)
    assert events.restarts == 1
    assert read_status(lab, events, e.sent[0].order_id)["state"] == "CONFIRMED"
    assert "synchronous" in side.table() and "event-driven" in side.table()
    with pytest.raises(BadParameter, match="no design called"):
        side.scoreboard("hybrid")
    events.close()


def test_the_customer_wait_claim_fails_for_a_design_that_waits_for_everything():
    """The control arm of the p90 claim: two synchronous-looking boards differ by nothing."""
    waits = [100.0 + (500 if i % 5 == 0 else 0) + i % 7 for i in range(100)]
    assert difference(waits, waits, q=0.9, paired=True).high < 250
    assert difference(waits, [20.0 + i % 9 for i in range(100)], q=0.9, paired=True).low > 250


# ----- the decision guide ------------------------------------------------------------------------------------
def test_the_guide_derives_each_choice_from_its_rule_and_can_flip(monkeypatch):
    monkeypatch.delenv("LAB_STRICT", raising=False)   # the flipped guide's claims must fail
    windows = [(SLOW, 0.0, 10.0), (CRASH, 10.0, 20.0)]

    def make(slow_ms, calm_ms, yes_while_down):
        sent = [Sent(0.1 * i, slow_ms + i % 7, 200, f"s{i}") for i in range(60)]
        sent += [Sent(10 + 0.1 * i, 5, 200 if yes_while_down else 503, f"c{i}")
                 for i in range(60)]
        sent += [Sent(25 + 0.1 * i, calm_ms + i % 5, 200, f"q{i}") for i in range(60)]
        return Scoreboard("d", sent, {s.order_id: "CONFIRMED" for s in sent}, {}, 0, 0,
                          windows)

    fast = LookupFigures(5, [7.0 + i % 3 for i in range(30)], [40.0 + i % 9 for i in range(30)])
    slow_job = LookupFigures(1000, [1005.0 + i for i in range(8)], [1050.0 + i for i in range(8)])
    ext = ExternalFigures([1] * 80 + [0] * 20, [1] * 99 + [0], 90, 5, 30)
    guide = build_guide(make(600, 100, False), make(20, 20, True), fast, ext, "embedded")
    assert [r.choice for r in guide.rows] == [SYNC, ASYNC, EVENTS, EXTERNAL]
    assert all(r.agrees for r in guide.rows)
    assert all(c.passed for c in guide.claims()) and len(guide.claims()) == 5
    assert "<table>" in guide.table_html() and "embedded" in guide.table_html()
    assert lookup_row(slow_job).choice == ASYNC   # the same rule, a 1 s job: it flips
    flat = build_guide(make(100, 100, True), make(20, 20, True), slow_job,
                       ExternalFigures([1] * 800 + [0] * 200, [1] * 805 + [0] * 195, 90, 80, 30))
    assert [r.choice for r in flat.rows] == [ASYNC, SYNC, SYNC, SYNC]
    assert [c.verdict for c in flat.claims()] == ["FAIL", "FAIL", "PASS", "FAIL", "FAIL"]
    assert set(BRIEF.values()) == {SYNC, ASYNC, EVENTS, EXTERNAL}


def test_a_straddling_interval_leaves_the_row_undecided():
    assert decide(Estimate(0.5, 0.3, 0.7, 10, "x"), 0.5, SYNC, ASYNC) == UNDECIDED
    assert decide(Estimate(0.9, 0.6, 1.2, 10, "x"), 0.5, SYNC, ASYNC) == SYNC
    assert decide(Estimate(0.1, 0.0, 0.2, 10, "x"), 0.5, SYNC, ASYNC) == ASYNC
