"""A real Kafka consumer (and producer) process that dies on purpose: ``python -m
labsupport.lessons.m06_delivery_semantics.crash_consumer``.

Module 06 starts this file as a separate process, so a crash is a real crash: the
process ends with ``os._exit`` (no ``finally``, no ``close()``, no last commit), exactly
as if it had been killed. Everything it did before that is either on the broker
(committed offsets, produced messages) or in its SQLite file (effects); nothing else
survives. ::

    python -m labsupport.lessons.m06_delivery_semantics.crash_consumer consume --topic T --group G --db effects.sqlite \\
        --strategy after --crash-at 6 --crash-when processed
    python -m labsupport.lessons.m06_delivery_semantics.crash_consumer produce --topic T --count 20 --linger-ms 500 --no-flush

The same :func:`consume` runs in the lesson's own process for the restart (a new
consumer in the same group, no crash), so both halves run identical code.

Commit strategies (``--strategy``):

* ``auto``: librdkafka's defaults: ``enable.auto.commit=true`` and
  ``enable.auto.offset.store=true``: the offset is *stored* when ``poll()`` hands over
  the message, before any processing, and a timer commits what is stored.
* ``before``: commit the message's offset synchronously, then process (at most once).
* ``after``: process, then commit synchronously (at least once).
* ``store-after``: auto commit, but ``enable.auto.offset.store=false`` and
  ``store_offsets()`` after processing (at least once, with the timer doing the commits).

Crash points (``--crash-when``): ``read`` (``poll()`` returned message ``--crash-at``,
processing has not started) and ``processed`` (its effect is in the database, nothing
after that has happened). With a timer strategy the process lets the timer commit
once before it dies, so the outcome does not depend on luck.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labsupport.lessons.m06_delivery_semantics import dedup
from labsupport.runtime.stores import Store

STRATEGIES = ("auto", "before", "after", "store-after")
CRASH_POINTS = ("read", "processed")
TIMER_STRATEGIES = ("auto", "store-after")
CRASH_EXIT_CODE = 17       # what a deliberately crashed child exits with
GAVE_UP_EXIT_CODE = 3      # the child's own deadline passed (broker gone, say)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS deliveries (offset INTEGER, msg_id TEXT, pid INTEGER)",
    "CREATE TABLE IF NOT EXISTS effects (msg_id TEXT, offset INTEGER, pid INTEGER)",
)


def create_tables(store: Store) -> Store:
    """Create the effects tables (and the dedup table) in ``store``; returns it."""
    store.create(*SCHEMA)
    dedup.ensure_table(store)
    return store


def open_db(path: str | Path) -> Store:
    """The effects database at ``path`` as a :class:`~labsupport.runtime.stores.Store`, with its tables."""
    return create_tables(Store(Path(path)))


def apply_effect(store: Store, msg_id: str, offset: int, idempotent: bool) -> bool:
    """Write one message's effect (one row in ``effects``); returns False if skipped.

    ``idempotent=True`` goes through :func:`labsupport.lessons.m06_delivery_semantics.dedup.apply_once`: the message id
    is recorded in the same transaction, and an id seen before is skipped.
    """
    row = (msg_id, offset, os.getpid())
    if idempotent:
        return dedup.apply_once(store, msg_id,
                                lambda tx: tx.execute("INSERT INTO effects VALUES (?, ?, ?)", row))
    store.execute("INSERT INTO effects VALUES (?, ?, ?)", row)
    return True


def consumer_settings(strategy: str, interval_ms: int) -> dict[str, Any]:
    """The consumer settings (Python keywords) of one commit ``strategy``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy in ("before", "after"):
        return {"enable_auto_commit": False}
    return {"enable_auto_commit": True, "auto_commit_interval_ms": interval_ms,
            "enable_auto_offset_store": strategy == "auto"}


class _Timer:
    """Collects the offsets the auto-commit timer reports through ``on_commit``."""

    def __init__(self) -> None:
        self.committed = -1

    def __call__(self, err: Any, parts: list[Any]) -> None:
        if err is None:
            self.committed = max([self.committed, *(tp.offset for tp in parts)])

    def wait_past(self, consumer: Any, offset: int, deadline: float) -> None:
        """Serve callbacks (partitions paused) until the timer committed ``offset`` or more."""
        consumer.pause(consumer.assignment())
        while self.committed < offset and time.monotonic() < deadline:
            consumer.poll(0.02)


def consume(topic: str, group: str, db: str | Path, strategy: str, stop_at: int,
            crash_at: int | None = None, crash_when: str = "read", idempotent: bool = False,
            interval_ms: int = 200, deadline_s: float = 20.0,
            crash: Callable[[], None] | None = None) -> int:
    """Consume partition 0 of ``topic`` in ``group`` from its committed offset until offset
    ``stop_at`` is processed; returns how many messages it processed.

    At ``crash_at`` it calls ``crash()`` (``os._exit`` in the child process) at the point
    ``crash_when``. Messages carry their id in the value (``{"id": ...}``).
    """
    from confluent_kafka import Consumer, TopicPartition

    from labsupport import broker
    from labsupport.runtime.messaging import decode

    timer = _Timer()
    consumer = Consumer(broker.consumer_config(group, on_commit=timer,
                                               **consumer_settings(strategy, interval_ms)))
    store = open_db(db)
    deadline = time.monotonic() + deadline_s
    done = 0
    try:
        part = TopicPartition(topic, 0)
        if consumer.committed([part], timeout=10)[0].offset >= stop_at:
            return 0   # the group is already done (it committed past the last message)
        consumer.assign([part])
        while time.monotonic() < deadline:
            msg = consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            offset, msg_id = msg.offset(), str(decode(msg.value())["id"])
            store.execute("INSERT INTO deliveries VALUES (?, ?, ?)",
                          (offset, msg_id, os.getpid()))
            if strategy == "before":
                consumer.commit(message=msg, asynchronous=False)
            dying = crash is not None and offset == crash_at
            if dying and crash_when == "read":
                _die(consumer, timer, strategy, offset, deadline, crash)
            apply_effect(store, msg_id, offset, idempotent)
            done += 1
            if dying:
                _die(consumer, timer, strategy, offset, deadline, crash)
            if strategy == "after":
                consumer.commit(message=msg, asynchronous=False)
            elif strategy == "store-after":
                consumer.store_offsets(message=msg)
            if offset + 1 >= stop_at:
                return done
        raise TimeoutError(f"offset {stop_at - 1} of {topic} not processed within "
                           f"{deadline_s:g} s")
    finally:
        store.close()
        consumer.close()   # a timer strategy commits what is stored here


def _die(consumer: Any, timer: _Timer, strategy: str, offset: int, deadline: float,
         crash: Callable[[], None] | None) -> None:
    """Crash while handling message ``offset``; a timer strategy first lets the timer
    commit what is stored: ``offset + 1`` with ``auto`` (stored when poll() returned the
    message), ``offset`` with ``store-after`` (stored after the previous one was processed).
    """
    if strategy in TIMER_STRATEGIES:
        timer.wait_past(consumer, offset + 1 if strategy == "auto" else offset, deadline)
    assert crash is not None
    crash()


def produce(topic: str, count: int, linger_ms: int, flush: bool) -> None:
    """Produce ``count`` messages ``{"id": "m-i"}``; then flush, or just end the process."""
    from confluent_kafka import Producer

    from labsupport import broker
    from labsupport.runtime.messaging import encode

    producer = Producer(broker.producer_config(linger_ms=linger_ms))
    for i in range(count):
        producer.produce(topic, encode({"id": f"m-{i}"}))
    if flush:
        producer.flush(10)


def _crash_now() -> None:
    sys.stdout.flush()
    os._exit(CRASH_EXIT_CODE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labsupport.lessons.m06_delivery_semantics.crash_consumer")
    sub = parser.add_subparsers(dest="role", required=True)
    c = sub.add_parser("consume")
    c.add_argument("--topic", required=True)
    c.add_argument("--group", required=True)
    c.add_argument("--db", required=True)
    c.add_argument("--strategy", choices=STRATEGIES, required=True)
    c.add_argument("--stop-at", type=int, required=True)
    c.add_argument("--crash-at", type=int)
    c.add_argument("--crash-when", choices=CRASH_POINTS, default="read")
    c.add_argument("--idempotent", action="store_true")
    c.add_argument("--interval-ms", type=int, default=200)
    c.add_argument("--deadline-s", type=float, default=20.0)
    p = sub.add_parser("produce")
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--linger-ms", type=int, default=5)
    p.add_argument("--no-flush", action="store_true")
    args = parser.parse_args(argv)
    if args.role == "produce":
        produce(args.topic, args.count, args.linger_ms, not args.no_flush)
        return 0
    try:
        consume(args.topic, args.group, args.db, args.strategy, args.stop_at, args.crash_at,
                args.crash_when, args.idempotent, args.interval_ms, args.deadline_s,
                crash=_crash_now if args.crash_at is not None else None)
    except TimeoutError as exc:
        print(f"crash_consumer gave up: {exc}", file=sys.stderr)
        return GAVE_UP_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main())
