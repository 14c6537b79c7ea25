"""Module 08: the saga services, both styles on the broker, crashes, duplicates, isolation."""
from __future__ import annotations

import pytest

from labsupport import BadParameter
from labsupport.lessons.m08_sagas.choreography import Choreography
from labsupport.lessons.m08_sagas.orchestration import (
    STEPS,
    Orchestration,
    Reply,
    Saga,
    isolation_run,
    reverse_compensation,
)
from labsupport.lessons.m08_sagas.saga_bench import SagaBench
from labsupport.lessons.m08_sagas.sagas import (
    SagaFaults,
    check_invariants,
    draw_swimlanes,
    reverse_compensated,
)

pytestmark = pytest.mark.usefixtures("lab_broker")


def seeded(system):
    system.shop.open_accounts({"ann": 1_000, "ben": 1_000})
    system.shop.stock_items({"lamp": 40})
    return system.ready()


@pytest.mark.parametrize("kwargs, words", [
    ({"fail": "boom"}, "fail must be one of"),
    ({"every": 0}, "every must be a whole number"),
    ({"duplicates": 1.5}, "duplicates is a share"),
    ({"crash": "kafka"}, "crash must be one of"),
    ({"capture_failures": 9}, "capture_failures must be 0 to 5"),
])
def test_bad_faults_name_the_fix(kwargs, words):
    with pytest.raises(BadParameter, match=words):
        SagaFaults(**kwargs)


def test_reverse_compensation_is_a_stack_and_ignores_duplicates():
    saga = Saga("o1")
    assert reverse_compensation(saga, Reply("r1", "create_order", True)) == ["authorize_payment"]
    assert reverse_compensation(saga, Reply("r1", "create_order", True)) == []
    assert reverse_compensation(saga, Reply("r2", "authorize_payment", True)) == ["reserve_stock"]
    assert reverse_compensation(saga, Reply("r3", "reserve_stock", False)) == [
        "refund_payment", "cancel_order"]
    assert reverse_compensation(Saga("o2"), Reply("r4", "capture_payment", False)) == [
        "capture_payment"]
    assert [s.kind for s in STEPS].count("pivot") == 1


@pytest.mark.parametrize("style", [Choreography, Orchestration])
def test_failures_at_every_point_keep_the_invariants(lab_at, style):
    lab = lab_at(0.2, seed=3)
    system = seeded(style(lab))
    orders = [system.shop.new_order("ann", "lamp", 50, fail=point)
              for point in ("none", "payment", "stock", "capture")]
    system.faults = SagaFaults(capture_failures=2)
    inv = system.run(orders)
    assert inv.ok, inv.report()
    assert system.shop.order_states(orders) == {
        orders[0]["id"]: "CONFIRMED", orders[1]["id"]: "CANCELLED",
        orders[2]["id"]: "CANCELLED", orders[3]["id"]: "CONFIRMED"}
    assert reverse_compensated(system.shop, orders) == (1, 1)
    assert system.shop.trace.count("retry", [orders[3]["id"]]) == 2


def test_orchestrator_crash_and_duplicates_resume_from_the_store(lab_at):
    lab = lab_at(0.2, seed=4)
    system = seeded(Orchestration(lab))
    system.faults = SagaFaults(fail="stock", every=2, duplicates=0.4, crash="orchestrator",
                           crash_at=4)
    orders = [system.shop.new_order(["ann", "ben"][k % 2], "lamp", 30) for k in range(6)]
    inv = system.run(orders)
    assert inv.ok, inv.report()
    assert [name for name, _ in system.restarts] == ["orchestrator"]
    assert inv.cancelled == 3 and inv.confirmed == 3
    assert system.shop.trace.count("duplicate") >= 1


def test_a_participant_crash_in_the_choreography_loses_nothing(lab_at):
    lab = lab_at(0.2, seed=5)
    system = seeded(Choreography(lab))
    system.faults = SagaFaults(fail="stock", every=3, crash="payment", crash_at=2)
    orders = [system.shop.new_order("ann", "lamp", 20) for _ in range(6)]
    inv = system.run(orders)
    assert inv.ok, inv.report()
    assert [name for name, _ in system.restarts] == ["payment"]
    assert system.shop.unsent() == 0


def test_the_invariants_notice_a_broken_shop(lab_at):
    lab = lab_at(0.2)
    system = Orchestration(lab)
    system.shop.open_accounts({"ann": 100})
    system.shop.store("payment").execute("UPDATE accounts SET balance = 90")
    inv = check_invariants(system.shop)
    assert not inv.ok and "money is not conserved" in inv.report()
    with pytest.raises(BadParameter):
        system.shop.open_accounts({"bob": -5})


def test_a_semantic_lock_removes_the_dirty_read(lab_at):
    lab = lab_at(0.2, seed=6)
    system = Orchestration(lab).ready()
    without = isolation_run(system, pairs=3, lock=False)
    with_lock = isolation_run(system, pairs=3, lock=True)
    assert without.dirty_declines >= 2 and without.b_confirmed <= 1
    assert with_lock.dirty_declines == 0 and with_lock.b_confirmed == 3
    assert with_lock.b_waits >= 3
    assert without.invariants.ok and with_lock.invariants.ok
    with pytest.raises(BadParameter, match="pairs must be 1 to 20"):
        isolation_run(system, pairs=0)


def test_the_bench_dashboard_runs_headless_and_draws(lab_at, monkeypatch):
    monkeypatch.setenv("LAB_HEADLESS", "1")
    lab = lab_at(0.2, seed=7)
    bench = SagaBench(lab)
    inv = bench.press_run(style="choreography", fail="payment", every=2, orders=4)
    assert inv.ok and inv.cancelled == 2
    assert "all invariants hold" in bench.summary()
    assert bench.shown == bench.orders[1]["id"]
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    draw_swimlanes(ax, bench.marks())
    assert [t.get_text() for t in ax.get_yticklabels()] == ["order", "payment"]
    with pytest.raises(BadParameter, match="style must be one of"):
        bench.run("telepathy")
    with pytest.raises(BadParameter, match="No control"):
        bench.press_run(colour="red")
    bench.close()


@pytest.mark.parametrize("style", [Choreography, Orchestration])
def test_a_non_idempotent_payment_charges_twice_while_the_totals_still_balance(lab_at, style,
                                                                             capsys):
    from labsupport.lessons.m08_sagas.sagas import duplicate_run

    lab = lab_at(0.2, seed=9)
    system = style(lab).ready()
    careful = duplicate_run(system, orders=4, idempotent=True)
    careless = duplicate_run(system, orders=4, idempotent=False)
    assert careful.ok and careful.mischarged == [], careful.report()
    assert len(careless.mischarged) == 4, careless.report()   # every message came twice
    assert "has 940, should have 970" in careless.mischarged[0]
    # conservation cannot see it: it is a sanity check, not evidence
    assert careless.money_now == careless.money_in and careless.held == 0
    claims = careful.claims()
    out = capsys.readouterr().out
    assert [c.name.startswith("sanity check, not a finding") for c in claims] == [
        False, False, False, True, True], out
    with pytest.raises(BadParameter, match="orders must be 1 to 20"):
        duplicate_run(system, orders=0)


def test_the_mischarge_check_compares_two_services_records(lab_at):
    lab = lab_at(0.2, seed=10)
    system = seeded(Orchestration(lab))
    orders = [system.shop.new_order("ann", "lamp", 50)]
    assert system.run(orders).ok
    pay = system.shop.store("payment")   # give the charge back, keeping every total equal
    pay.execute("UPDATE payments SET amount = 0 WHERE order_id = ?", (orders[0]["id"],))
    pay.execute("UPDATE accounts SET balance = balance + 50 WHERE customer = 'ann'")
    inv = check_invariants(system.shop, orders)
    assert inv.money_now == inv.money_in and inv.held == 0
    assert inv.mischarged == ["ann has 1,000, should have 950 (1,000 minus 50 of confirmed "
                              "orders)"], inv.report()
