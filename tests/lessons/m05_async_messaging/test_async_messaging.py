"""Module 05's instrumentation on real services and the lab's broker, at time scale 0.2:
keys and partitions, groups, the three order designs, the hybrid read, the burst, the
outage, request-reply and webhook versus polling."""
from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from labsupport.kit.evidence import difference
from labsupport.lessons.m05_async_messaging.async_orders import (
    Burst,
    OrderSystem,
    Outage,
    ThreeWays,
    fetch_wait_ms,
    poisson_times,
    status_reads,
    status_right_after_202,
)
from labsupport.lessons.m05_async_messaging.callbacks import CallbackRace
from labsupport.lessons.m05_async_messaging.kafka_basics import (
    GroupsDemo,
    KeysExperiment,
    LagSeries,
    Placement,
    customer_keys,
)
from labsupport.runtime.errors import BadParameter, LabError
from labsupport.runtime.messaging import Delivery

pytestmark = pytest.mark.usefixtures("lab_broker")


@pytest.fixture(scope="module")
def system():
    """One order system for the module (its consumer groups join once)."""
    from labsupport.runtime import settings
    from labsupport.runtime.lab import Lab

    saved = settings.time_scale_override()
    settings.set_time_scale(0.2)
    lab = Lab(seed=5)
    orders = OrderSystem(lab).wait_ready()
    orders.warm()
    yield orders
    lab.close()
    settings.set_time_scale(saved)


def draws(draw) -> None:
    ax = Figure().add_subplot()
    draw(ax)


# ----- pure helpers -------------------------------------------------------------------------------
def test_customer_keys_round_robin_and_bad_input():
    assert customer_keys(3, 7) == ["c1", "c2", "c3", "c1", "c2", "c3", "c1"]
    with pytest.raises(BadParameter, match="customers"):
        customer_keys(0, 5)
    with pytest.raises(BadParameter, match="orders"):
        customer_keys(2, 0)


def test_placement_counts_partitions_offsets_and_split_keys():
    sent = [Delivery("t", 0, 0, 1), Delivery("t", 1, 0, 1), Delivery("t", 0, 1, 1),
            Delivery("t", 1, 2, 1)]
    placement = Placement(["a", "b", "a", "a"], sent)
    assert placement.per_partition(2) == [2, 2]
    assert placement.partitions_of() == {"a": {0, 1}, "b": {1}}
    assert placement.keys_split() == 1
    assert placement.gaps(2) == 1 and placement.offsets(0) == [0, 1]
    assert "a: partition 0, 1" in placement.table()
    draws(lambda ax: placement.draw(ax, 2))


def test_poisson_times_are_seeded_and_in_range():
    times = poisson_times(10, 3, seed=1)
    assert times == poisson_times(10, 3, seed=1)
    assert all(0 < t < 3 for t in times) and 15 < len(times) < 50
    with pytest.raises(BadParameter):
        poisson_times(0, 3, seed=1)


def test_lag_series_records_points():
    values = iter([3, 1, 0])
    series = LagSeries(lambda: next(values))
    for _ in range(3):
        series.sample()
    assert series.peak == 3 and series.last == 0
    draws(series.draw)



# ----- on the broker ---------------------------------------------------------------------------------
def test_keys_land_in_one_partition_each_and_end_offsets_count_them(lab_at):
    lab = lab_at(0.2)
    keys = KeysExperiment(lab, partitions=3)
    placement = keys.run(customers=4, orders=20)
    assert placement.keys_split() == 0 and placement.gaps(3) == 0
    assert lab.bus.end_offsets(keys.topic) == placement.per_partition(3)
    with pytest.raises(BadParameter, match="partitions"):
        KeysExperiment(lab, partitions=0)


def test_groups_share_partitions_inside_and_each_read_everything(lab_at):
    lab = lab_at(0.2)
    groups = GroupsDemo(lab, partitions=3)
    groups.wait_assigned()
    groups.publish(customer_keys(5, 15))
    assert sorted(groups.owned("billing-1") + groups.owned("billing-2")) == [0, 1, 2]
    assert groups.processed("billing") == 15 and groups.processed("analytics") == 15
    assert groups.lag("billing") == 0
    groups.stop()


def test_three_designs_order_as_the_lesson_claims(system):
    result = ThreeWays(system).run(rate=5, seconds=2)
    sync_p50 = result.p("sync", 50)
    assert result.p("async", 50) < sync_p50 / 2   # ten answers: their p99 is one pause
    assert result.p("rr", 50) > sync_p50
    assert len(result.rows) == len(result.recorders["async"])
    # request-reply's path (its wait minus its own work) is longer than the direct call's
    assert difference(result.beyond_work("rr"), result.beyond_work("sync"), paired=True).low > 0
    assert result.compare("async", "sync").high < 0.25
    assert "request-reply" in result.table()


def test_the_end_to_end_is_predicted_from_the_queue_and_the_services_own_work(system):
    three = ThreeWays(system)
    result = three.run(rate=6, seconds=3)
    assert [r.id for r in result.rows] == [b["order_id"] for b in result.bodies["async"]]
    assert set(result.service_ms) == {r.id for r in result.rows}
    assert all(ms > 0 for ms in result.service_ms.values())   # the services' own records
    pickup, calls = fetch_wait_ms() / 2, result.calls_ms()
    with_queue = result.predicted_end_to_end(pickup, calls)
    alone = result.predicted_end_to_end(pickup, calls, queue=False)
    assert all(q >= a - 1e-9 for q, a in zip(with_queue, alone, strict=True))
    error = result.prediction_error(pickup, calls)
    assert abs(error.value) < 0.15 * result.mean(with_queue) + pickup + 20, error.describe()
    bigger = three.more()   # more samples: the same load again, pooled, pairs kept per run
    n = len(result.rows)
    assert len(bigger.rows) == 2 * n and bigger.compare("async", "sync").n == 2 * n
    assert bigger.mean_ratio("end to end", "sync").n == 2 * n


def test_a_redelivery_is_charged_once_and_twice_without_the_check(system):
    oid = system.call("async").body["order_id"]
    assert system.wait_done([oid], 10)
    assert system.charged([oid]) == [1]
    assert system.redeliver(oid) == 1 and system.deliveries[oid] == 2
    assert system.redeliver(oid, idempotent=False) == 2 and system.deliveries[oid] == 3
    assert system.idempotent   # switched back on after the control
    draws(ThreeWays(system).draw)


def test_status_reads_say_what_the_table_says_and_touch_no_dependency(system):
    oid = system.call("async").body["order_id"]
    assert system.wait_done([oid], 10)
    before = sum(len(c) for c in system.charges.values())
    reads = status_reads(system, [oid, "nope"], rounds=3, users=2)
    assert reads.recorder.errors == 3   # "nope" answers 404
    assert reads.saying("done") == 3 and reads.saying("unknown") == 3
    assert reads.orders_read() == 2
    assert sum(len(c) for c in system.charges.values()) == before
    assert status_right_after_202(system) == "accepted"
    assert system.lab.call(system.orders, "status?id=nope").status == 404


def test_a_burst_drains_at_the_consumers_pace(system):
    result = Burst(system).run(orders=20, pilot=10)
    assert result.lag.peak >= 15 and result.lag.last == 0
    assert result.charged == [1] * 20 and len(result.rows) == 20
    assert sum(result.per_partition().values()) == 20
    assert result.pilot is not None and len(result.pilot.rows) == 10
    assert not set(result.placed) & set(result.pilot.placed)   # other orders
    pace = result.pilot.pace_ms()
    # (a busy neighbour during one of the two moves this by up to a third: seen 31% once)
    assert result.drain_ms == pytest.approx(result.predicted_drain_ms(pace), rel=0.4)
    # the control: orders side by side would drain in about one order's time
    assert result.drain_ms > 3 * pace
    with pytest.raises(BadParameter, match="orders"):
        Burst(system).run(orders=0)
    with pytest.raises(BadParameter, match="pilot"):
        Burst(system).run(orders=5, pilot=-1)


def test_an_outage_loses_nothing_and_counts_lag_both_ways(system):
    outage = Outage(system, rate=10)
    result = outage.run(up_s=0.5, down_s=1.0)
    assert result.lag_at_restart_broker == result.lag_counted > 0
    assert result.lost == 0 and result.twice == 0
    assert result.processed_once == len(result.accepted_ids)
    assert result.redelivered["deliveries"] == 2 and result.redelivered["charges"] == 1
    assert result.control["deliveries"] == 2 and result.control["charges"] == 2
    assert "0 never" in outage.summary()
    draws(outage.draw)


def test_webhook_is_one_request_and_polling_is_late(system):
    race = CallbackRace(system)
    race.run(orders=12, rate=10, interval_ms=200)
    assert race.hooks_per_order() == 1
    assert race.hook_delay() < race.poll_delay()
    assert 0 < race.poll_delay() < 200 + 50
    assert race.poll_delay_mean().n == 12 and race.hook_delay_estimate().high < 200
    assert race.polls_estimate().value >= 1
    assert race.more_poll_delays().n == 24 and len(race.results) == 24
    with pytest.raises(BadParameter, match="interval_ms"):
        race.run(interval_ms=5)


def test_request_reply_round_trip(system):
    answer = system.lab.run(system.rr.request({"order_id": "x"}, key="x"), timeout=10)
    assert answer > 0 and not system.rr.pending


def test_bad_parameters_name_the_fix(system):
    with pytest.raises(BadParameter, match="consumers"):
        OrderSystem(system.lab, partitions=2, consumers=3)
    with pytest.raises(BadParameter, match="design"):
        system.call("carrier-pigeon")
    with pytest.raises(BadParameter, match="rate"):
        ThreeWays(system).run(rate=100)
    with pytest.raises(LabError):
        system.start_consumers(0)


# ----- the hybrid: answer now, publish the follow-up ---------------------------------------------
def test_the_hybrid_counts_what_each_design_does_when_the_broker_is_down(system):
    from labsupport.lessons.m05_async_messaging.hybrid import HybridExperiment

    hybrid = HybridExperiment(system.lab, sync_ms=20, buffer=4)
    try:
        up, down = hybrid.run("up", rate=20, orders=10), hybrid.run("down", rate=40, orders=12)
        assert up.counts["forget"].on_broker == up.counts["ack"].on_broker == 10
        assert up.counts["forget"].dropped == 0 and up.counts["sync"].produced == 0
        # librdkafka's bound: the first 4 wait in the queue, every later one is refused at once
        assert down.counts["forget"].dropped == hybrid.dropped_predicted(12) == 8
        assert down.counts["forget"].failed == 4 and down.counts["ack"].failed == 12
        assert down.counts["ack"].on_broker == down.counts["forget"].on_broker == 0
        assert min(down.ms["ack"]) >= down.timeout_ms          # every ack user waited it out
        assert max(down.ms["forget"]) < down.timeout_ms / 4    # nobody waited for the broker
        assert "down" in hybrid.table() and "forget" in hybrid.table()
        draws(hybrid.draw)
    finally:
        hybrid.close()
    assert "checkout" not in system.lab.services


def test_the_hybrid_rejects_unknown_conditions(system):
    from labsupport.lessons.m05_async_messaging.hybrid import HybridExperiment

    hybrid = HybridExperiment(system.lab)
    try:
        with pytest.raises(BadParameter, match="condition"):
            hybrid.run("flaky")
    finally:
        hybrid.close()
