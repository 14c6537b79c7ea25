"""Module 06: what a consumer crash does under each commit strategy, counted exactly.

:class:`CrashMatrix` publishes ``messages`` orders to one partition, then for every
(commit strategy, crash point) starts a real consumer process
(:mod:`labsupport.lessons.m06_delivery_semantics.crash_consumer`) in its own consumer group. The process writes one
row per processed message into its own SQLite file and dies with ``os._exit`` at
message ``crash_at``. A new consumer in the same group (the restart) resumes from
the committed offset and processes the rest. Then the effects are counted:

* **lost**: orders with no effect row at all;
* **duplicated**: effect rows beyond the first for an order.

The librdkafka experiments live here too: :func:`delivery_reports` (reports arrive
only from ``poll()``/``flush()``) and :func:`producer_exit` (a producer that ends
without ``flush()`` loses what is still in its queue).
"""
from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labsupport.broker.kind import LABELS, identity
from labsupport.lessons.m06_delivery_semantics.crash_consumer import (
    CRASH_EXIT_CODE,
    CRASH_POINTS,
    STRATEGIES,
    consume,
    create_tables,
)
from labsupport.runtime.errors import LabError, require
from labsupport.runtime.messaging import Event, to_event
from labsupport.runtime.settings import course_root

if TYPE_CHECKING:
    from labsupport.runtime.lab import Lab
    from labsupport.runtime.messaging import Bus

#: A child process that has not finished after this many wall seconds is killed.
CHILD_TIMEOUT_S = 30.0

STRATEGY_WORDS = {
    "auto": "auto commit (librdkafka defaults)",
    "before": "commit, then process",
    "after": "process, then commit",
    "store-after": "auto commit, offset stored after processing",
}
POINT_WORDS = {"read": "after poll(), before processing",
               "processed": "after processing, before the commit"}


# ----- child processes -------------------------------------------------------------------
def child_command(role: str, **options: Any) -> list[str]:
    """The command line that runs :mod:`labsupport.lessons.m06_delivery_semantics.crash_consumer` as ``role``."""
    argv = [sys.executable, "-m", "labsupport.lessons.m06_delivery_semantics.crash_consumer", role]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not None and value is not False:
            argv += [flag, str(value)]
    return argv


def start_child(argv: Sequence[str]) -> subprocess.Popen:
    """Start a child process that can import labsupport, with the lab's environment."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(course_root()), os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.Popen(list(argv), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def reap(children: Sequence[subprocess.Popen], timeout_s: float = CHILD_TIMEOUT_S
         ) -> list[tuple[int, str]]:
    """Wait for every child (all of them, always); returns ``(exit code, stderr)`` each.

    A child still running after ``timeout_s`` wall seconds is killed, every child is
    reaped (no zombies), and then a :class:`LabError` says which one hung.
    """
    deadline = time.monotonic() + timeout_s
    results: list[tuple[int, str]] = []
    hung: list[str] = []
    for child in children:
        try:
            _, err = child.communicate(timeout=max(0.01, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            _, err = child.communicate()
            hung.append(" ".join(str(a) for a in child.args[2:5]))
        results.append((child.returncode, err or ""))
    if hung:
        raise LabError(f"{len(hung)} child process(es) did not finish within {timeout_s:g} s "
                       f"and were killed: {'; '.join(hung)}.",
                       "check the broker (python -m labsupport broker status) and run the "
                       "cell again; the machine may also be very busy")
    return results


# ----- reading a whole topic ---------------------------------------------------------------
def read_topic(topic: str, partitions: int = 1, expected: int | None = None,
               idle_s: float = 0.4, timeout_s: float = 10.0) -> list[Event]:
    """Every message on ``topic`` from the beginning (no group, ``assign()``), in order.

    Stops when ``expected`` messages have arrived, or after ``idle_s`` wall seconds
    with nothing new (so it also counts what never arrived). Counting by reading,
    not by end offsets, is exact on both brokers.
    """
    from confluent_kafka import Consumer, TopicPartition

    from labsupport import broker

    consumer = Consumer(broker.consumer_config("reader", enable_auto_commit=False))
    seen: dict[tuple[int, int], Event] = {}
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        start = last = time.monotonic()
        while time.monotonic() - last < idle_s and time.monotonic() - start < timeout_s:
            if expected is not None and len(seen) >= expected:
                break
            msg = consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            seen.setdefault((msg.partition(), msg.offset()), to_event(msg))
            last = time.monotonic()
    finally:
        consumer.close()
    return [seen[k] for k in sorted(seen)]


# ----- the crash matrix ------------------------------------------------------------------
@dataclass(frozen=True)
class CrashOutcome:
    """One cell of the matrix: what a crash at ``point`` did under ``strategy``."""

    strategy: str
    point: str
    idempotent: bool
    sent: int
    crash_at: int
    committed_at_crash: int
    delivered: int
    applied: int
    lost: int
    duplicated: int

    @property
    def label(self) -> str:
        return self.strategy + (" + dedup" if self.idempotent else "")


def count_effects(db: Any, sent_ids: Iterable[str]) -> tuple[int, int, int, int]:
    """``(delivered, applied, lost, duplicated)`` from one effects store."""
    delivered = db.scalar("SELECT COUNT(*) FROM deliveries")
    rows = dict(db.query("SELECT msg_id, COUNT(*) FROM effects GROUP BY msg_id"))
    ids = list(sent_ids)
    lost = sum(1 for i in ids if i not in rows)
    duplicated = sum(n - 1 for n in rows.values())
    return delivered, sum(rows.values()), lost, duplicated


class CrashMatrix:
    """Crash a real consumer process at each (strategy, crash point); count the damage.

    ``messages`` orders ``order-0 ..`` go to one partition; every cell reads them
    with its own consumer group and its own SQLite file. ``interval_ms`` is the
    auto-commit timer (librdkafka's default is 5000 ms; shorter here so nobody waits).
    """

    def __init__(self, lab: Lab, messages: int = 12, crash_at: int = 6,
                 interval_ms: int = 200) -> None:
        require(isinstance(messages, int) and 3 <= messages <= 1000,
                f"messages must be a whole number from 3 to 1000, got {messages!r}.")
        require(isinstance(crash_at, int) and 1 <= crash_at < messages,
                f"crash_at must be an offset from 1 to messages - 1 ({messages - 1}), got "
                f"{crash_at!r}.", "e.g. crash_at=6: the consumer dies on the 7th message")
        require(isinstance(interval_ms, int) and 20 <= interval_ms <= 5000,
                f"interval_ms must be 20 to 5000, got {interval_ms!r}.")
        self.lab, self.messages, self.crash_at, self.interval_ms = (
            lab, messages, crash_at, interval_ms)
        self.ids = [f"order-{i}" for i in range(messages)]
        self.topic = ""
        self.outcomes: list[CrashOutcome] = []
        self._cells = 0

    def _publish(self) -> str:
        bus = self.lab.bus
        topic = bus.topic(f"crash{self._cells}")
        pub = bus.publisher()
        for order_id in self.ids:
            pub.send(topic, {"id": order_id, "item": "book"}, key=order_id)
        pub.flush()
        return topic

    def run(self, strategies: Sequence[str] = STRATEGIES,
            points: Sequence[str] = CRASH_POINTS,
            idempotent: Sequence[bool] = (False,)) -> list[CrashOutcome]:
        """Run every combination at once (one process each); returns the outcomes."""
        for strategy in strategies:
            require(strategy in STRATEGIES, f"Unknown strategy {strategy!r}.",
                    f"use one of {', '.join(STRATEGIES)}")
        for point in points:
            require(point in CRASH_POINTS, f"Unknown crash point {point!r}.",
                    f"use one of {', '.join(CRASH_POINTS)}")
        self.topic = self._publish()
        cells = [(s, p, i) for i in idempotent for s in strategies for p in points]
        groups, stores = [], []
        for _ in cells:
            self._cells += 1
            groups.append(f"crash{self._cells}")
            stores.append(create_tables(self.lab.store(f"crash_{self._cells}")))
        children = [start_child(self._command(cell, group, store.path))
                    for cell, group, store in zip(cells, groups, stores, strict=True)]
        for (code, err), cell in zip(reap(children), cells, strict=True):
            if code != CRASH_EXIT_CODE:
                raise LabError(f"The consumer process for {cell[0]} / {cell[1]} ended with "
                               f"code {code} instead of crashing: {err.strip()[-300:]}",
                               "check the broker: python -m labsupport broker status")
        committed = [self.lab.bus.committed(self.topic, g)[0] for g in groups]
        self._restart(cells, groups, stores)
        new = [CrashOutcome(s, p, i, self.messages, self.crash_at, mark,
                            *count_effects(store, self.ids))
               for (s, p, i), mark, store in zip(cells, committed, stores, strict=True)]
        self.outcomes += new
        return new

    def _command(self, cell: tuple[str, str, bool], group: str, db: Path) -> list[str]:
        strategy, point, dedup = cell
        return child_command("consume", topic=self.topic, group=self._scoped(group), db=db,
                             strategy=strategy, stop_at=self.messages, crash_at=self.crash_at,
                             crash_when=point, idempotent=dedup, interval_ms=self.interval_ms)

    def _scoped(self, group: str) -> str:
        return f"{group}.{self.lab.bus.run_id}"

    def _restart(self, cells: list[tuple[str, str, bool]], groups: list[str],
                 stores: list[Any]) -> None:
        """The restart: a new consumer per group (same code, no crash), all at once."""
        with concurrent.futures.ThreadPoolExecutor(
                max_workers=len(cells), thread_name_prefix="labsupport-restart") as pool:
            futures = [pool.submit(consume, self.topic, self._scoped(group), store.path,
                                   strategy, self.messages, idempotent=dedup,
                                   interval_ms=self.interval_ms)
                       for (strategy, _, dedup), group, store in zip(cells, groups, stores,
                                                                     strict=True)]
            for future in futures:
                future.result()

    def outcome(self, strategy: str, point: str, idempotent: bool = False) -> CrashOutcome:
        """The latest outcome of one cell."""
        for found in reversed(self.outcomes):
            if (found.strategy, found.point, found.idempotent) == (strategy, point, idempotent):
                return found
        raise LabError(f"No run of {strategy!r} with a crash at {point!r} yet.",
                       "run it first: matrix.run()")

    def table(self, outcomes: Sequence[CrashOutcome] | None = None) -> str:
        """The results as a plain-text table, one row per cell."""
        rows = outcomes if outcomes is not None else self.outcomes
        names = [STRATEGY_WORDS[o.strategy] + (" + dedup" if o.idempotent else "")
                 for o in rows]
        width = max([len("strategy"), *map(len, names)])
        head = (f"{'strategy':<{width}}  {'crash':<36} {'committed':>9} {'delivered':>9} "
                f"{'applied':>7} {'lost':>4} {'dup':>4}")
        lines = [f"{len(self.ids)} orders (offsets 0-{len(self.ids) - 1}); each consumer "
                 f"process dies on offset {self.crash_at}", head, "-" * len(head)]
        for name, o in zip(names, rows, strict=True):
            lines.append(f"{name:<{width}}  {POINT_WORDS[o.point]:<36} "
                         f"{o.committed_at_crash:>9} {o.delivered:>9} {o.applied:>7} "
                         f"{o.lost:>4} {o.duplicated:>4}")
        return "\n".join(lines)

    def draw(self, ax: Any, outcomes: Sequence[CrashOutcome] | None = None) -> None:
        """Lost and duplicated per cell as bars (a picture of :meth:`table`)."""
        from labsupport.kit.dashboard import PALETTE

        rows = list(outcomes if outcomes is not None else self.outcomes)
        labels = [f"{o.label}\n{o.point}" for o in rows]
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [o.lost for o in rows], 0.4, color=PALETTE[3],
               label="lost")
        ax.bar([x + 0.2 for x in xs], [o.duplicated for o in rows], 0.4, color=PALETTE[0],
               label="duplicated")
        ax.set_xticks(list(xs), labels, fontsize=7)
        ax.set_ylabel("orders")
        ax.set_ylim(0, max([2, *(max(o.lost, o.duplicated) + 1 for o in rows)]))
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(loc="upper center", fontsize=8, ncol=2, frameon=False)


def matrix_dashboard(matrix: CrashMatrix) -> Any:
    """Pick strategies and a crash point, press Run: the processes crash, the bars count."""
    import ipywidgets as w

    from labsupport.kit.dashboard import Dashboard

    picks = w.SelectMultiple(options=list(STRATEGIES), value=list(STRATEGIES),
                             description="strategies")
    point = w.ToggleButtons(options=list(CRASH_POINTS), description="crash at")
    dedup = w.Checkbox(value=False, description="idempotent consumer (dedup)")
    button = w.Button(description="Run", button_style="primary")
    shown: list[CrashOutcome] = []
    board = Dashboard("Crash a consumer: what is lost, what is repeated",
                      [picks, point, dedup, button],
                      lambda ax: matrix.draw(ax, shown))

    def press(_: Any = None) -> None:
        shown[:] = matrix.run(list(picks.value), [point.value], [dedup.value])
        board.refresh("; ".join(f"{o.label} crash {o.point}: lost {o.lost}, duplicated "
                                f"{o.duplicated}" for o in shown))

    button.on_click(press)
    return board


# ----- librdkafka's producer defaults, by experiment ----------------------------------------
@dataclass(frozen=True)
class ReportCount:
    """Delivery reports seen before and after ``poll()``/``flush()``, and what the broker has."""

    sent: int
    reports_before_poll: int
    on_broker_before_poll: int
    reports_after_flush: int


def delivery_reports(lab: Lab, count: int = 10, wait_s: float = 0.5) -> ReportCount:
    """Produce ``count`` messages with a callback, wait ``wait_s`` wall seconds without
    calling ``poll()``, count reports and messages on the broker; then ``flush()``."""
    from confluent_kafka import Producer

    from labsupport import broker

    require(isinstance(count, int) and 1 <= count <= 1000, f"count must be 1 to 1000, got "
            f"{count!r}.")
    topic = lab.bus.topic("reports")
    reports: list[Any] = []
    producer = Producer(broker.producer_config(linger_ms=0))
    for i in range(count):
        producer.produce(topic, f"m-{i}".encode(), on_delivery=lambda e, m: reports.append(e))
    time.sleep(wait_s)
    before = len(reports)
    on_broker = len(read_topic(topic, expected=count))
    producer.flush(10)
    return ReportCount(count, before, on_broker, len(reports))


@dataclass(frozen=True)
class ExitCount:
    """Messages a producer process sent, and how many reached the broker."""

    sent: int
    linger_ms: int
    delivered_without_flush: int
    delivered_with_flush: int


def producer_exit(lab: Lab, count: int = 20, linger_ms: int = 500) -> ExitCount:
    """Two producer processes send ``count`` messages each with ``linger.ms=linger_ms``;
    one ends without ``flush()``, one flushes. Count what each topic holds."""
    require(isinstance(linger_ms, int) and 0 <= linger_ms <= 5000,
            f"linger_ms must be 0 to 5000, got {linger_ms!r}.")
    bus: Bus = lab.bus
    no_flush, flush = bus.topic("exit-no-flush"), bus.topic("exit-flush")
    children = [start_child(child_command("produce", topic=no_flush, count=count,
                                          linger_ms=linger_ms, no_flush=True)),
                start_child(child_command("produce", topic=flush, count=count,
                                          linger_ms=linger_ms))]
    for code, err in reap(children):
        if code != 0:
            raise LabError(f"A producer process failed: {err.strip()[-300:]}",
                           "check the broker: python -m labsupport broker status")
    return ExitCount(count, linger_ms, len(read_topic(no_flush, expected=count)),
                     len(read_topic(flush, expected=count)))


# ----- which broker, and what only the Kafka container shows -------------------------------
#: librdkafka's defaults that decide what a crash does (confluent-kafka uses librdkafka).
LIBRDKAFKA_DEFAULTS = (
    ("enable.auto.commit", "true", "a background timer commits the stored offsets"),
    ("auto.commit.interval.ms", "5000", "how often that timer commits"),
    ("enable.auto.offset.store", "true", "the offset is stored when poll() returns the "
     "message, before you process it"),
    ("session.timeout.ms", "45000", "a member that stops heartbeating is evicted after this"),
    ("acks", "all", "the producer's ack waits for all in-sync replicas"),
    ("linger.ms", "5", "the producer holds messages this long to batch them"),
    ("enable.idempotence", "false", "a producer retry can write a message twice"),
)


def defaults_table() -> str:
    """The librdkafka defaults this module measures, as a plain-text table."""
    width = max(len(name) for name, _, _ in LIBRDKAFKA_DEFAULTS)
    return "\n".join(f"{name:<{width}}  {value:>6}  {meaning}"
                     for name, value, meaning in LIBRDKAFKA_DEFAULTS)


CONTAINER_ONLY = (
    "durability: a Kafka broker keeps topics, messages and committed offsets across a "
    "restart (the embedded broker forgets them all)",
    "transactions with isolation.level=read_committed: aborted records are hidden from "
    "consumers (the embedded broker shows them)",
    "log compaction and retention (the embedded broker keeps every record)",
)


def container_note(kind: str | None = None) -> str:
    """What this broker (``kind``, by default ``identity().kind``) can and cannot show of
    this module, as a visible note."""
    kind = kind or identity().kind
    if kind == "embedded":
        return ("You are on the embedded broker. Everything measured above runs the same on "
                "Apache Kafka. Only the Kafka container shows faithfully:\n  - "
                + "\n  - ".join(CONTAINER_ONLY)
                + "\nThose steps are skipped here: start the container (make lab with Docker, "
                "see infra/docker-compose.yml) to try them.")
    return (f"You are on {LABELS.get(kind, kind)}: durability across broker restarts, "
            "read_committed and compaction behave as in production. Try it: restart the "
            "broker between the crash and the restart cells, and the committed offsets "
            "are still there.")
