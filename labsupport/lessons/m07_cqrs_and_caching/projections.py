"""Projections: read models built from the order events, in their own SQLite store.

A projection is a consumer that turns the event log into tables shaped for reading.
:class:`OrderProjection` keeps two read models in one store::

    order_summary   (id, customer, amount, state, version)   -- one row per order
    customer_totals (customer, orders, amount)                -- open orders per customer

Every order event carries the whole order as it is after the change (its state, amount,
customer) and a per-order ``version`` (1, 2, 3, ...). The rule that makes the projection
safe under duplicates and reordering: **apply an event only if its version is newer than
the stored one**; otherwise skip it. Customer totals move by the *difference* between the
order's old and new contribution, so a skipped event moves nothing. A cancelled order
stays as a row (a tombstone with its version), so a late older event cannot bring it back.

The projection records how far it has read each partition (``positions``) in the same
transaction as the change, so "the read model has reached offset N" is exact.
"""
from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labsupport.runtime.errors import LabError
from labsupport.runtime.messaging import Event
from labsupport.runtime.settings import model_clock
from labsupport.runtime.stores import Store
from labsupport.runtime.waiting import wait_until

if TYPE_CHECKING:
    from labsupport.runtime.lab import Lab

CANCELLED = "CANCELLED"
_replays = itertools.count(1)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS order_summary (id TEXT PRIMARY KEY, customer TEXT NOT NULL, "
    "amount REAL NOT NULL, state TEXT NOT NULL, version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS customer_totals (customer TEXT PRIMARY KEY, "
    "orders INTEGER NOT NULL, amount REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS positions (part INTEGER PRIMARY KEY, next_offset INTEGER)",
)
TABLES = ("order_summary", "customer_totals", "positions")


def contribution(state: str | None, amount: float) -> tuple[int, float]:
    """What one order adds to its customer's totals: (1, amount) unless cancelled or absent."""
    if state is None or state == CANCELLED:
        return 0, 0.0
    return 1, float(amount)


class OrderProjection:
    """The order-summary and customer-totals read models, fed one :class:`Event` at a time.

    Use ``handle`` as a bus worker's handler. ``positions`` maps partition to the next
    offset to read (everything before it is applied); ``applied`` and ``skipped`` count
    events that changed the view and duplicates/older versions that did not.
    """

    def __init__(self, store: Store, clock: Any = None) -> None:
        self.store = store
        self.positions: dict[int, int] = {}
        self.applied = 0
        self.skipped = 0
        #: (partition, offset) -> model seconds (perf_counter based) when it became visible
        self.visible_at: dict[tuple[int, int], float] = {}
        self._lock = threading.Lock()
        self._clock = clock
        store.query("PRAGMA synchronous=NORMAL")   # a read model can be rebuilt: no fsync
        store.create(*SCHEMA)

    # ----- writing the view ----------------------------------------------------------------
    def handle(self, event: Event) -> None:
        """Apply ``event`` (if newer than what the view holds) and record the position."""
        order = event.value
        with self.store.transaction() as tx:
            changed = apply_to_tables(tx, order)
            tx.execute("INSERT INTO positions VALUES (?, ?) ON CONFLICT(part) DO UPDATE "
                       "SET next_offset = excluded.next_offset",
                       (event.partition, event.offset + 1))
        with self._lock:
            self.positions[event.partition] = event.offset + 1
            self.visible_at[(event.partition, event.offset)] = self._now()
            if changed:
                self.applied += 1
            else:
                self.skipped += 1

    def _now(self) -> float:
        return self._clock() if self._clock else model_clock()

    # ----- reading it --------------------------------------------------------------------------
    def reached(self, partition: int, offset: int) -> bool:
        """True when the view includes the event at ``offset`` of ``partition``."""
        return self.positions.get(partition, 0) > offset

    def events_read(self) -> int:
        """Events read so far, all partitions (offsets start at 0, so it is the sum)."""
        return sum(self.positions.values())

    def order(self, order_id: str) -> dict[str, Any] | None:
        """One order's row, or ``None`` when the view does not have it (yet)."""
        rows = self.store.query("SELECT id, customer, amount, state, version FROM "
                                "order_summary WHERE id = ?", (order_id,))
        if not rows:
            return None
        return dict(zip(("id", "customer", "amount", "state", "version"), rows[0],
                        strict=True))

    def customer(self, customer: str) -> dict[str, Any]:
        """A customer's open orders and their amount (zeros when unknown)."""
        rows = self.store.query("SELECT orders, amount FROM customer_totals WHERE customer = ?",
                                (customer,))
        orders, amount = rows[0] if rows else (0, 0.0)
        return {"customer": customer, "orders": orders, "amount": round(amount, 2)}

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Both read models, every row, sorted: what a rebuild must reproduce exactly."""
        return {
            "order_summary": self.store.query(
                "SELECT id, customer, amount, state, version FROM order_summary ORDER BY id"),
            "customer_totals": self.store.query(
                "SELECT customer, orders, ROUND(amount, 2) FROM customer_totals "
                "WHERE orders != 0 OR ROUND(amount, 2) != 0 ORDER BY customer"),
        }

    def drop(self) -> None:
        """Throw the read models away (tables and positions): a rebuild starts from nothing."""
        for table in TABLES:
            self.store.execute(f"DROP TABLE IF EXISTS {table}")
        with self._lock:
            self.positions.clear()
            self.visible_at.clear()
            self.applied = self.skipped = 0

    def __repr__(self) -> str:
        return (f"<OrderProjection read {self.events_read()} events: {self.applied} applied, "
                f"{self.skipped} skipped as duplicates or older>")


def apply_to_tables(tx: Any, order: dict[str, Any]) -> bool:
    """Apply one order event inside transaction ``tx``; returns True if the view changed."""
    old = tx.execute("SELECT customer, amount, state, version FROM order_summary WHERE id = ?",
                     (order["order"],)).fetchone()
    if old is not None and order["version"] <= old[3]:
        return False   # a duplicate, or older than what we have: nothing to do
    tx.execute("INSERT INTO order_summary VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
               "customer = excluded.customer, amount = excluded.amount, "
               "state = excluded.state, version = excluded.version",
               (order["order"], order["customer"], order["amount"], order["state"],
                order["version"]))
    before = contribution(old[2], old[1]) if old else (0, 0.0)
    after = contribution(order["state"], order["amount"])
    tx.execute("INSERT INTO customer_totals VALUES (?, ?, ?) ON CONFLICT(customer) DO UPDATE "
               "SET orders = orders + excluded.orders, amount = amount + excluded.amount",
               (order["customer"], after[0] - before[0], after[1] - before[1]))
    return True


def differences(before: dict[str, list[tuple[Any, ...]]],
                after: dict[str, list[tuple[Any, ...]]]) -> list[str]:
    """Row-by-row comparison of two :meth:`OrderProjection.rows` snapshots (empty: equal)."""
    found: list[str] = []
    for table in sorted(set(before) | set(after)):
        old = {row[0]: row for row in before.get(table, [])}
        new = {row[0]: row for row in after.get(table, [])}
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                found.append(f"{table}[{key}]: {old.get(key)} -> {new.get(key)}")
    return found


def view_rows(view: dict[str, dict[str, Any]]) -> dict[str, list[tuple[Any, ...]]]:
    """A dict read model (``{"orders": {...}, "customers": {...}}``, the exercise's shape)
    in the shape of :meth:`OrderProjection.rows`, so the two can be compared row by row."""
    orders = sorted((order, row["customer"], float(row["amount"]), row["state"], row["version"])
                    for order, row in view["orders"].items())
    totals = sorted((customer, t["orders"], round(float(t["amount"]), 2))
                    for customer, t in view["customers"].items()
                    if t["orders"] or round(float(t["amount"]), 2))
    return {"order_summary": orders, "customer_totals": totals}


@dataclass
class Replay:
    """Two projections fed the same events over Kafka: yours (a dict) and the lesson's."""

    published: int
    yours_read: int
    reference_read: int
    yours: dict[str, list[tuple[Any, ...]]]
    reference: dict[str, list[tuple[Any, ...]]]


def replay_through_kafka(lab: Lab, events: list[dict[str, Any]],
                         apply: Callable[[dict[str, Any], dict[str, Any]], Any],
                         partitions: int = 3, timeout: float = 15.0) -> Replay:
    """Publish ``events`` (keyed by order, in this order) to a new topic; one worker feeds
    ``apply(view, event)`` on a dict view, another the lesson's SQLite projection."""
    n = next(_replays)   # each replay gets its own topic, store and groups
    topic = lab.bus.topic(f"replayed-orders-{n}", partitions)
    view: dict[str, dict[str, Any]] = {"orders": {}, "customers": {}}
    reference = OrderProjection(lab.store(f"reference_view_{n}"))
    yours = lab.bus.worker(topic, f"your-projection-{n}", lambda e: apply(view, e.value),
                           name="your-projection")
    theirs = lab.bus.worker(topic, f"reference-projection-{n}", reference.handle,
                            name="reference-projection")
    publisher = lab.bus.publisher()
    for event in events:
        publisher.send(topic, event, key=event["order"])
    publisher.flush()
    done = wait_until(lambda: not yours.running or min(yours.processed, theirs.processed)
                      >= len(events), timeout, interval=0.01)
    if not yours.running:
        theirs.stop()
        yours.stop()   # re-raises your apply's error, with the offset
    if not done:
        theirs.stop()
        yours.stop()
        raise LabError(f"After {timeout:g} s your projection had read {yours.processed} and "
                       f"the lesson's {theirs.processed} of {len(events)} events.",
                       "check the broker: python -m labsupport broker status")
    yours.stop()
    theirs.stop()
    return Replay(len(events), yours.processed, theirs.processed, view_rows(view),
                  reference.rows())
