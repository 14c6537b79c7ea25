"""Module 06 on a real broker: crashed consumer processes counted exactly, librdkafka's
defaults, the idempotent consumer, dead letters, per-key order across a rebalance, the
outbox; bad parameters and hung children fail fast with the fix named."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from labsupport import BadParameter, LabError
from labsupport.lessons.m06_delivery_semantics.crash_consumer import consumer_settings
from labsupport.lessons.m06_delivery_semantics.dead_letters import (
    HEADERS,
    PoisonExperiment,
    RetryThenDeadLetter,
    dead_letter_headers,
    missing_headers,
)
from labsupport.lessons.m06_delivery_semantics.dedup import applied_count, apply_once, ensure_table
from labsupport.lessons.m06_delivery_semantics.delivery import (
    CrashMatrix,
    child_command,
    container_note,
    defaults_table,
    delivery_reports,
    producer_exit,
    reap,
    start_child,
)
from labsupport.lessons.m06_delivery_semantics.ordering import (
    Handled,
    RebalanceExperiment,
    RebalanceRecord,
)
from labsupport.lessons.m06_delivery_semantics.outbox import (
    Crash,
    OutboxExperiment,
    Relay,
    create_tables,
    place_with_outbox,
)
from labsupport.runtime.messaging import Event
from labsupport.runtime.stores import Store


def children_of_this_process() -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is this one (zombies show state Z)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            found.append((int(entry.name), fields[0]))
    return found


# ----- no broker needed ----------------------------------------------------------------------
def test_strategy_settings_say_what_the_lesson_says():
    assert consumer_settings("auto", 200) == {"enable_auto_commit": True,
                                              "auto_commit_interval_ms": 200,
                                              "enable_auto_offset_store": True}
    assert consumer_settings("store-after", 200)["enable_auto_offset_store"] is False
    assert consumer_settings("after", 200) == {"enable_auto_commit": False}
    with pytest.raises(ValueError):
        consumer_settings("sometimes", 200)


def test_child_command_flags():
    argv = child_command("consume", topic="t", crash_at=6, idempotent=True, crash_when=None)
    assert argv[1:4] == ["-m", "labsupport.lessons.m06_delivery_semantics.crash_consumer", "consume"]
    assert argv[4:] == ["--topic", "t", "--crash-at", "6", "--idempotent"]


def test_a_hung_child_is_killed_reaped_and_named():
    fine = start_child([sys.executable, "-c", "pass"])
    hung = start_child([sys.executable, "-c", "import time; time.sleep(60)"])
    start = time.monotonic()
    with pytest.raises(LabError, match="did not finish within 0.5 s and were killed"):
        reap([fine, hung], timeout_s=0.5)
    assert time.monotonic() - start < 5
    assert fine.returncode == 0 and hung.returncode is not None
    assert not [c for c in children_of_this_process() if c[0] in (fine.pid, hung.pid)]


def test_apply_once_keeps_effect_and_id_together(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    ensure_table(store)
    store.execute("CREATE TABLE effects (id TEXT)")

    def fails(tx):
        tx.execute("INSERT INTO effects VALUES ('m-1')")
        raise RuntimeError("mid-effect")

    with pytest.raises(RuntimeError):
        apply_once(store, "m-1", fails)
    assert applied_count(store) == 0 and store.scalar("SELECT COUNT(*) FROM effects") == 0
    write = lambda tx: tx.execute("INSERT INTO effects VALUES ('m-1')")  # noqa: E731
    assert apply_once(store, "m-1", write) is True
    assert apply_once(store, "m-1", write) is False
    assert store.scalar("SELECT COUNT(*) FROM effects") == 1
    with pytest.raises(BadParameter, match="message_id"):
        apply_once(store, "", write)
    store.close()


def test_retry_then_dead_letter_retries_then_parks_with_headers():
    letters, calls = [], {"n": 0}

    def flaky(event):
        calls["n"] += 1
        if event.value == "poison" or calls["n"] == 1:
            raise ValueError("bad")

    wrap = RetryThenDeadLetter(flaky, lambda v, key=None, headers=None: letters.append(headers),
                               attempts=3, backoff_ms=0)
    wrap(Event("t", 0, 0, None, "fine"))          # fails once, then works
    assert letters == [] and wrap.tries[(0, 0)] == 2
    wrap(Event("t", 0, 1, None, "poison"))
    assert wrap.tries[(0, 1)] == 3 and len(letters) == 1
    assert missing_headers(letters[0]) == [] and letters[0]["original-offset"] == "1"
    assert set(dead_letter_headers(Event("t", 2, 9, None, 1), KeyError(), 3)) == set(HEADERS)
    with pytest.raises(BadParameter, match="attempts"):
        RetryThenDeadLetter(flaky, print, attempts=0)


def test_rebalance_record_counts():
    rec = RebalanceRecord(sent=4)
    for seq, who in ((1, "A"), (2, "A"), (2, "B"), (3, "B")):
        rec.handled.append(Handled(0.0, who, 0, seq, "k", seq))
    rec.handled.append(Handled(0.0, "B", 1, 0, "j", 2))   # j's seq 1 never came first
    assert rec.distinct == 4 and rec.duplicates == 1 and rec.lost == 0
    assert rec.order_breaks() == 1
    rec.samples = [(0, {"A": [0, 1]}), (1, {"A": [0], "B": [1]}), (2, {"B": [0, 1]})]
    assert rec.moves() == 2


def test_the_notes_name_the_broker():
    assert "read_committed" in container_note("embedded")
    assert "skipped here" in container_note("embedded")
    assert "restart the broker" in container_note("container")
    assert "Apache Kafka container" in container_note("container")
    assert "enable.auto.offset.store" in defaults_table()


# ----- on the broker -------------------------------------------------------------------------
pytestmark_broker = pytest.mark.usefixtures("lab_broker")


@pytestmark_broker
def test_crash_matrix_counts_loss_and_duplicates_exactly(lab_at):
    lab = lab_at(1.0)
    matrix = CrashMatrix(lab, messages=8, crash_at=3)
    matrix.run(["before", "after", "auto"], ["read", "processed"])
    assert matrix.outcome("before", "read").lost == 1
    assert matrix.outcome("auto", "read").lost == 1
    assert matrix.outcome("auto", "read").committed_at_crash == 4
    after = matrix.outcome("after", "processed")
    assert (after.lost, after.duplicated, after.delivered, after.applied) == (0, 1, 9, 9)
    assert matrix.outcome("after", "read").lost == 0
    dedup = matrix.run(["after"], ["processed"], [True])[0]
    assert (dedup.lost, dedup.duplicated, dedup.delivered, dedup.applied) == (0, 0, 9, 8)
    assert "process, then commit + dedup" in matrix.table()
    assert not [c for c in children_of_this_process() if c[1] == "Z"]


@pytestmark_broker
def test_a_crash_on_the_last_message_restarts_quickly(lab_at):
    lab = lab_at(1.0)
    matrix = CrashMatrix(lab, messages=4, crash_at=3)
    start = time.monotonic()
    lost = matrix.run(["before"], ["read"])[0]
    assert lost.lost == 1 and lost.committed_at_crash == 4
    assert time.monotonic() - start < 10


@pytestmark_broker
@pytest.mark.parametrize("kwargs, words", [
    ({"crash_at": 0}, "crash_at must be an offset from 1"),
    ({"messages": 2}, "messages must be a whole number from 3"),
    ({"interval_ms": 5}, "interval_ms must be 20 to 5000"),
])
def test_crash_matrix_bad_parameters(lab_at, kwargs, words):
    lab = lab_at(1.0)
    with pytest.raises(BadParameter, match=words):
        CrashMatrix(lab, **kwargs)


@pytestmark_broker
def test_crash_matrix_unknown_strategy_or_point(lab_at):
    matrix = CrashMatrix(lab_at(1.0))
    with pytest.raises(BadParameter, match="Unknown strategy"):
        matrix.run(["sometimes"])
    with pytest.raises(BadParameter, match="Unknown crash point"):
        matrix.run(["after"], ["lunch"])
    with pytest.raises(LabError, match="No run"):
        matrix.outcome("after", "read")


@pytestmark_broker
def test_delivery_reports_and_producer_exit(lab_at):
    lab = lab_at(1.0)
    reports = delivery_reports(lab, count=5, wait_s=0.3)
    assert (reports.reports_before_poll, reports.on_broker_before_poll,
            reports.reports_after_flush) == (0, 5, 5)
    exits = producer_exit(lab, count=10, linger_ms=500)
    assert (exits.delivered_without_flush, exits.delivered_with_flush) == (0, 10)
    with pytest.raises(BadParameter, match="linger_ms"):
        producer_exit(lab, linger_ms=-1)


@pytestmark_broker
def test_poison_goes_to_the_dead_letter_topic_and_the_partition_moves_on(lab_at):
    lab = lab_at(0.2)
    poison = PoisonExperiment(lab, messages=10, poison_at=2)
    results = poison.run()
    plain, dlq = results["plain"], results["dead-letter"]
    assert (plain.applied, plain.lag) == (2, 8)
    assert (dlq.applied, dlq.lag, dlq.tries_on_poison) == (9, 0, 3)
    assert len(dlq.dead_letters) == 1 and not missing_headers(dlq.dead_letters[0].headers)
    assert dlq.dead_letters[0].value["amount"] == "lots"
    with pytest.raises(BadParameter, match="poison_at"):
        PoisonExperiment(lab, messages=5, poison_at=5)


@pytestmark_broker
def test_outbox_loses_nothing_where_a_dual_write_loses(lab_at):
    lab = lab_at(1.0)
    outbox = OutboxExperiment(lab, orders=10, crash_at=(2, 7))
    dual, relayed = outbox.run_dual_write(), outbox.run_outbox()
    assert (dual.orders, dual.events_on_topic, dual.lost, dual.applied_downstream) == (10, 8, 2, 8)
    assert (relayed.lost, relayed.duplicates_on_topic, relayed.applied_downstream) == (0, 2, 10)
    assert (relayed.shipped_orders, relayed.shipped_without_dedup) == (10, 12)
    with pytest.raises(BadParameter, match="crash_at"):
        OutboxExperiment(lab, orders=3, crash_at=(5,))


@pytestmark_broker
def test_a_relay_crash_leaves_the_row_unsent(lab_at):
    lab = lab_at(1.0)
    store = create_tables(lab.store("orders"))
    topic = lab.bus.topic("orders")
    place_with_outbox(store, topic, "o-1")
    relay = Relay(store, lab.bus.publisher(), crash_after_publish={"evt-o-1"})
    with pytest.raises(Crash):
        relay.relay_once()
    assert relay.pending() == 1 and relay.died_at == "evt-o-1"
    assert Relay(store, lab.bus.publisher()).relay_once() == 1


@pytestmark_broker
def test_rebalance_keeps_per_key_order_and_loses_nothing(lab_at):
    lab = lab_at(0.2)
    experiment = RebalanceExperiment(lab, partitions=3, keys=6, rate=150, settle_s=0.1)
    record = experiment.run()
    assert record.sent > 100 and record.lost == 0
    assert record.order_breaks() == 0
    assert record.keys_on_one_partition() == 6
    assert record.moves() >= 2
    assert record.duplicates <= 6
    assert [what for _, what in record.marks] == ["A starts", "B joins", "A leaves",
                                                  "all processed"]
    assert "lost 0" in experiment.summary()
    with pytest.raises(BadParameter, match="partitions"):
        RebalanceExperiment(lab, partitions=0)
