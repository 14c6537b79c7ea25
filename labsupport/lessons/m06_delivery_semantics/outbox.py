"""The transactional outbox: never lose the event that goes with a state change.

An order service must do two things when an order is placed: save the order in its
database and publish ``OrderPlaced``. Two systems, no transaction across both (a
*dual write*): if the process dies between them, one happened and the other did not.

* **Dual write** (:func:`place_dual_write`): commit the order, then publish. A crash
  between the two leaves an order nobody downstream ever hears about.
* **Outbox** (:func:`place_with_outbox`): write the order *and* the event, as a row
  in an ``outbox`` table, in one SQLite transaction. A separate :class:`Relay`
  publishes unsent rows, waits for the broker's ack, then marks them sent. A crash
  after the publish and before the mark publishes that event again on restart: a
  duplicate, which the downstream idempotent consumer (:mod:`labsupport.lessons.m06_delivery_semantics.dedup`)
  ignores. Nothing is lost.

Crashes here are injected as :class:`Crash` exceptions at the exact point; what the
"dead" process wrote to SQLite or the broker stays, its memory does not (a restart
builds a new :class:`Relay`).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labsupport.lessons.m06_delivery_semantics import dedup
from labsupport.lessons.m06_delivery_semantics.delivery import read_topic
from labsupport.runtime.errors import require

if TYPE_CHECKING:
    from labsupport.runtime.lab import Lab
    from labsupport.runtime.messaging import Publisher
    from labsupport.runtime.stores import Store

ORDERS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, item TEXT, state TEXT)",
    "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "event_id TEXT UNIQUE, topic TEXT, key TEXT, payload TEXT, sent INTEGER DEFAULT 0)",
)


class Crash(BaseException):
    """The process died here (a BaseException, so no ``except Exception`` can hide it)."""


def create_tables(store: Store) -> Store:
    """The order service's tables: ``orders`` and ``outbox``."""
    return store.create(*ORDERS_SCHEMA)


def place_dual_write(store: Store, publisher: Publisher, topic: str, order_id: str,
                     crash_before_publish: bool = False) -> None:
    """Save the order, then publish ``OrderPlaced`` (two writes, no shared transaction)."""
    store.execute("INSERT INTO orders VALUES (?, ?, 'PLACED')", (order_id, "book"))
    if crash_before_publish:
        raise Crash(f"died after saving {order_id}, before publishing")
    publisher.send(topic, {"id": f"evt-{order_id}", "type": "OrderPlaced", "order": order_id},
                   key=order_id).result(10)


def place_with_outbox(store: Store, topic: str, order_id: str) -> None:
    """Save the order and its ``OrderPlaced`` event in one transaction (the outbox row)."""
    event = {"id": f"evt-{order_id}", "type": "OrderPlaced", "order": order_id}
    with store.transaction() as tx:
        tx.execute("INSERT INTO orders VALUES (?, ?, 'PLACED')", (order_id, "book"))
        tx.execute("INSERT INTO outbox (event_id, topic, key, payload) VALUES (?, ?, ?, ?)",
                   (event["id"], topic, order_id, json.dumps(event)))


class Relay:
    """Publishes the outbox's unsent rows in order: publish, wait for the ack, mark sent.

    ``crash_after_publish`` holds event ids at which the relay dies after the broker
    acknowledged and before the row is marked sent.
    """

    def __init__(self, store: Store, publisher: Publisher,
                 crash_after_publish: Iterable[str] = ()) -> None:
        self.store, self.publisher = store, publisher
        self.crash_after_publish = set(crash_after_publish)
        self.published = 0
        self.died_at: str | None = None

    def pending(self) -> int:
        """Outbox rows not yet marked sent."""
        return int(self.store.scalar("SELECT COUNT(*) FROM outbox WHERE sent = 0") or 0)

    def relay_once(self, batch: int = 100) -> int:
        """Publish up to ``batch`` unsent rows; returns how many were marked sent."""
        rows = self.store.query("SELECT seq, event_id, topic, key, payload FROM outbox "
                                "WHERE sent = 0 ORDER BY seq LIMIT ?", (batch,))
        for seq, event_id, topic, key, payload in rows:
            self.publisher.send(topic, json.loads(payload), key=key).result(10)
            self.published += 1
            if event_id in self.crash_after_publish:
                self.died_at = event_id
                raise Crash(f"died after publishing {event_id}, before marking it sent")
            self.store.execute("UPDATE outbox SET sent = 1 WHERE seq = ?", (seq,))
        return len(rows)


@dataclass(frozen=True)
class OutboxCount:
    """One way of publishing, counted: orders saved, events on the topic, after dedup."""

    name: str
    orders: int
    events_on_topic: int
    lost: int
    duplicates_on_topic: int
    applied_downstream: int     # shipment rows the idempotent consumer wrote
    crashes: int
    shipped_orders: int = 0     # distinct orders among those rows
    shipped_without_dedup: int = 0   # the control: rows a consumer without dedup wrote


def consume_idempotently(store: Store, events: Iterable[Any], dedup_ids: bool = True
                         ) -> tuple[int, int]:
    """The downstream service: ship each event's order, once per event id (``dedup_ids``;
    ``False`` is the control, a consumer without dedup). Returns what its ``shipments``
    table holds afterwards: (rows, distinct orders)."""
    dedup.ensure_table(store)
    store.execute("CREATE TABLE IF NOT EXISTS shipments (order_id TEXT)")
    for event in events:
        order = event.value["order"]

        def ship(tx: Any, o: str = order) -> None:
            tx.execute("INSERT INTO shipments VALUES (?)", (o,))
        if dedup_ids:
            dedup.apply_once(store, event.value["id"], ship)
        else:
            with store.transaction() as tx:
                ship(tx)
    return (int(store.scalar("SELECT COUNT(*) FROM shipments") or 0),
            int(store.scalar("SELECT COUNT(DISTINCT order_id) FROM shipments") or 0))


class OutboxExperiment:
    """Place ``orders`` orders twice: with a dual write and with an outbox; crash at the
    orders in ``crash_at`` (indexes) each time; count what reaches the downstream."""

    def __init__(self, lab: Lab, orders: int = 20, crash_at: Iterable[int] = (4, 13)) -> None:
        crash_at = sorted(set(crash_at))
        require(isinstance(orders, int) and 1 <= orders <= 1000,
                f"orders must be 1 to 1000, got {orders!r}.")
        require(all(isinstance(i, int) and 0 <= i < orders for i in crash_at),
                f"crash_at must hold order indexes from 0 to {orders - 1}, got {crash_at!r}.")
        self.lab, self.orders, self.crash_at = lab, orders, crash_at
        self.results: dict[str, OutboxCount] = {}

    def _ids(self) -> list[str]:
        return [f"o-{i:03d}" for i in range(self.orders)]

    def run_dual_write(self) -> OutboxCount:
        """Every order: save, then publish; at a crash index the process dies in between
        (and the next order is served by the restarted service)."""
        bus = self.lab.bus
        topic = bus.topic("orders-dual")
        store = create_tables(self.lab.store("orders_dual", fresh=True))
        pub = bus.publisher()
        crashes = 0
        for i, order_id in enumerate(self._ids()):
            try:
                place_dual_write(store, pub, topic, order_id, crash_before_publish=i in
                                 self.crash_at)
            except Crash:
                crashes += 1
        return self._count("dual write", store, topic, crashes, "shipping_dual")

    def run_outbox(self) -> OutboxCount:
        """Every order through the outbox; the relay dies after publishing the events of
        the crash indexes (before marking them), and a new relay takes over each time."""
        bus = self.lab.bus
        topic = bus.topic("orders-outbox")
        store = create_tables(self.lab.store("orders_outbox", fresh=True))
        pub = bus.publisher()
        ids = self._ids()
        for order_id in ids:
            place_with_outbox(store, topic, order_id)
        doomed = {f"evt-{ids[i]}" for i in self.crash_at}
        crashes = 0
        while True:
            relay = Relay(store, pub, crash_after_publish=doomed)   # a (re)started relay
            try:
                relay.relay_once()
            except Crash:
                crashes += 1
                doomed.discard(relay.died_at or "")   # it dies there once, not forever
                continue
            if relay.pending() == 0:
                break
        return self._count("outbox + relay", store, topic, crashes, "shipping_outbox")

    def _count(self, name: str, store: Store, topic: str, crashes: int,
               downstream_name: str) -> OutboxCount:
        saved = int(store.scalar("SELECT COUNT(*) FROM orders") or 0)
        events = read_topic(topic, expected=self.orders + len(self.crash_at))
        ids = [e.value["id"] for e in events]
        rows, orders = consume_idempotently(self.lab.store(downstream_name, fresh=True), events)
        plain, _ = consume_idempotently(self.lab.store(downstream_name + "_plain", fresh=True),
                                        events, dedup_ids=False)
        result = OutboxCount(name, saved, len(events), saved - len(set(ids)),
                             len(ids) - len(set(ids)), rows, crashes, orders, plain)
        self.results[name] = result
        return result

    def table(self) -> str:
        """The two runs side by side."""
        head = (f"{'':<16} {'orders saved':>12} {'events on topic':>15} {'lost':>5} "
                f"{'duplicates':>10} {'shipped once':>12}")
        lines = [head, "-" * len(head)]
        for r in self.results.values():
            lines.append(f"{r.name:<16} {r.orders:>12} {r.events_on_topic:>15} {r.lost:>5} "
                         f"{r.duplicates_on_topic:>10} {r.applied_downstream:>12}")
        return "\n".join(lines)
