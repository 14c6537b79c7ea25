"""The lab's bus on a real broker: run-scoped topics, publisher acks, workers, lag."""
from __future__ import annotations

import threading
import time

import pytest

from labsupport import LabError
from labsupport.runtime.messaging import Event, decode, encode

pytestmark = pytest.mark.usefixtures("lab_broker")


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("value", [b"\x00\xff", "text", {"id": 1, "items": [1, 2]}, None, 7])
def test_encode_decode_round_trip(value):
    assert decode(encode(value)) == value


def test_topics_are_new_each_run_and_deleted_on_close(lab_at):
    first = lab_at(1.0)
    name = first.bus.topic("orders", partitions=3)
    assert name.endswith(f".orders.{first.bus.run_id}")
    assert first.bus.end_offsets(name) == [0, 0, 0]
    first.close()
    second = lab_at(1.0)
    assert second.bus.topic("orders") != name


def test_asking_again_for_a_topic_gives_a_new_empty_one(lab_at):
    lab = lab_at(1.0)
    first = lab.bus.topic("orders")
    lab.bus.publisher().send(first, {"n": 1}).result(10)
    again = lab.bus.topic("orders")
    third = lab.bus.topic("orders")
    assert len({first, again, third}) == 3 and again.startswith(first)
    assert lab.bus.end_offsets(first) == [1] and lab.bus.end_offsets(again) == [0]
    assert lab.bus.topic("orders-dlq").endswith(f"orders-dlq.{lab.bus.run_id}")


def test_publisher_acks_with_offsets_and_end_offsets_are_exact(lab_at):
    lab = lab_at(1.0)
    name = lab.bus.topic("acks")
    pub = lab.bus.publisher()
    deliveries = [pub.send(name, {"n": n}, key="k").result(10) for n in range(10)]
    assert [d.offset for d in deliveries] == list(range(10))
    assert all(d.ack_ms >= 0 for d in deliveries)
    assert lab.bus.end_offsets(name) == [10]


def test_publish_is_awaitable_from_the_labs_loop(lab_at):
    lab = lab_at(1.0)
    name = lab.bus.topic("async")
    pub = lab.bus.publisher()
    delivery = lab.run(pub.publish(name, "hello", key="a"))
    assert (delivery.topic, delivery.offset) == (name, 0)


def test_worker_processes_every_message_and_commits_after_each(lab_at):
    lab = lab_at(1.0)
    name = lab.bus.topic("work", partitions=2)
    seen: list[Event] = []
    worker = lab.bus.worker(name, "workers", seen.append).wait_assigned()
    pub = lab.bus.publisher()
    for n in range(20):
        pub.send(name, {"n": n}, key=f"k{n % 4}")
    pub.flush()
    assert wait_for(lambda: worker.processed == 20), worker
    assert sorted(e.value["n"] for e in seen) == list(range(20))
    assert lab.bus.lag(name, "workers") == 0
    worker.stop()
    assert not worker.running


def test_lag_grows_while_paused_and_drains_after_resume(lab_at):
    lab = lab_at(1.0)
    name = lab.bus.topic("paused")
    worker = lab.bus.worker(name, "slow", lambda e: None).wait_assigned()
    pub = lab.bus.publisher()
    worker.pause()
    time.sleep(0.2)
    for n in range(15):
        pub.send(name, n)
    pub.flush()
    time.sleep(0.3)
    assert lab.bus.lag(name, "slow") == 15
    worker.resume()
    assert wait_for(lambda: lab.bus.lag(name, "slow") == 0)


def test_async_handler_runs_on_the_labs_loop(lab_at):
    lab = lab_at(1.0)
    name = lab.bus.topic("asynchandler")
    loops: list[str] = []

    async def handle(event: Event) -> None:
        loops.append(threading.current_thread().name)

    worker = lab.bus.worker(name, "g", handle).wait_assigned()
    lab.bus.publisher().send(name, 1).result(10)
    assert wait_for(lambda: worker.processed == 1)
    assert loops == ["labsupport-loop"]


def test_a_failing_handler_stops_the_worker_and_leaves_the_message_uncommitted(lab_at):
    lab = lab_at(1.0)
    name = lab.bus.topic("fails")

    def handle(event: Event) -> None:
        if event.value == "poison":
            raise ValueError("cannot parse")

    worker = lab.bus.worker(name, "g", handle).wait_assigned()
    pub = lab.bus.publisher()
    for value in ("ok", "poison", "ok"):
        pub.send(name, value)
    pub.flush()
    assert wait_for(lambda: not worker.running)
    with pytest.raises(LabError, match=r"offset 1: ValueError\('cannot parse'\)"):
        worker.stop()
    assert worker.processed == 1
    assert lab.bus.lag(name, "g") == 2


def test_closing_the_lab_stops_workers_and_publisher_threads(lab_at):
    lab = lab_at(1.0)
    name = lab.bus.topic("closing")
    lab.bus.worker(name, "g", lambda e: None).wait_assigned()
    lab.bus.publisher()
    lab.close()
    names = [t.name for t in threading.enumerate()]
    assert not [n for n in names if n.startswith(("labsupport-worker", "labsupport-publisher"))]


def test_bad_parameters_are_explained(lab_at):
    lab = lab_at(1.0)
    with pytest.raises(LabError, match="partitions must be"):
        lab.bus.topic("x", partitions=0)
    with pytest.raises(LabError, match="letters, digits"):
        lab.bus.topic("no spaces")
    with pytest.raises(LabError, match="handler must be a function"):
        lab.bus.worker(lab.bus.topic("h"), "g", handler="oops")


def test_stores_are_files_shared_across_threads_and_removed_on_close(lab_at):
    lab = lab_at(1.0)
    orders = lab.store("orders")
    orders.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, state TEXT)")
    with orders.transaction() as tx:
        tx.execute("INSERT INTO orders VALUES ('o-1', 'PENDING')")
    with pytest.raises(ZeroDivisionError), orders.transaction() as tx:
        tx.execute("INSERT INTO orders VALUES ('o-2', 'PENDING')")
        raise ZeroDivisionError
    seen = []
    thread = threading.Thread(target=lambda: seen.extend(orders.query("SELECT id FROM orders")))
    thread.start()
    thread.join()
    assert seen == [("o-1",)]
    assert orders.scalar("SELECT count(*) FROM orders") == 1
    assert lab.store("orders") is orders
    path = orders.path
    assert path.exists()
    lab.close()
    assert not path.parent.exists()
    with pytest.raises(LabError, match="store name"):
        lab_at(1.0).store("no spaces")


def test_store_folders_of_dead_kernels_are_removed(lab_at):
    import subprocess
    import sys

    from labsupport.runtime.stores import remove_orphans, stores_dir

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    orphan = stores_dir(f"{child.stdout.strip()}-dead")
    orphan.mkdir(parents=True)
    (orphan / "orders.sqlite").write_bytes(b"")
    mine = lab_at(1.0).store("orders").path.parent
    assert orphan in remove_orphans() or not orphan.exists()
    assert not orphan.exists()
    assert mine.exists()


def test_store_create_runs_every_schema_statement_once(lab_at):
    store = lab_at(1.0).store("schema").create(
        "CREATE TABLE a (x INTEGER); CREATE TABLE b (y TEXT);", "CREATE TABLE c (z REAL)")
    tables = {row[0] for row in store.query("SELECT name FROM sqlite_master")}
    assert tables == {"a", "b", "c"}
    with pytest.raises(Exception, match="already exists"):
        store.create("CREATE TABLE d (x INTEGER)", "CREATE TABLE a (x INTEGER)")
    assert store.scalar("SELECT count(*) FROM sqlite_master WHERE name = 'd'") == 0


def test_a_fresh_store_starts_empty_and_the_old_connection_is_closed(lab_at):
    lab = lab_at(1.0)
    old = lab.store("ledger").create("CREATE TABLE t (id TEXT PRIMARY KEY)")
    old.execute("INSERT INTO t VALUES ('a')")
    assert lab.store("ledger") is old
    new = lab.store("ledger", fresh=True).create("CREATE TABLE t (id TEXT PRIMARY KEY)")
    new.execute("INSERT INTO t VALUES ('a')")  # no UNIQUE clash: the old rows are gone
    assert new.scalar("SELECT COUNT(*) FROM t") == 1
    with pytest.raises(LabError, match="closed"):
        old.query("SELECT 1")
