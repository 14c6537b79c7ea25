"""Module 08 · Sagas: the shop both saga styles share.

Three services, each with its own SQLite store (``lab.store``), no shared database:

* **order**: ``orders`` (PENDING, then CONFIRMED or CANCELLED);
* **payment**: ``accounts`` (balances) and ``payments`` (HELD, CAPTURED, REFUNDED, DECLINED);
* **inventory**: ``stock`` (available, reserved) and ``reservations``.

Every change a service makes and every message it owes go into its store in **one**
transaction (an outbox table); a relay then publishes the outbox. A crash between the
two loses nothing: the restarted service publishes what is left. Every operation is
idempotent by order id, so a duplicated message repeats the first answer and changes
nothing. :mod:`labsupport.lessons.m08_sagas.choreography` and :mod:`labsupport.lessons.m08_sagas.orchestration` wire these
operations to the broker in the two styles; :func:`check_invariants` says whether the
data is still consistent, in plain words.
"""
from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labsupport.kit.claims import Claim, expect, sanity
from labsupport.kit.dashboard import PALETTE
from labsupport.runtime.errors import LabError, require
from labsupport.runtime.settings import to_wall

if TYPE_CHECKING:
    from labsupport.runtime.lab import Lab
    from labsupport.runtime.messaging import Publisher
    from labsupport.runtime.stores import Store

LANES = ("order", "payment", "inventory", "orchestrator")
FAIL_POINTS = ("none", "payment", "stock", "capture")
"""Where a saga can be made to fail: nowhere, the payment is declined, the stock is
unavailable (the pivot fails), or capturing the payment fails for a while (after the pivot)."""
CRASHABLE = ("none", "payment", "inventory", "order", "orchestrator")
FINAL = ("CONFIRMED", "CANCELLED")

_SCHEMA = {
    "order": """
        CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer TEXT, item TEXT,
            qty INTEGER, amount INTEGER, state TEXT, reason TEXT DEFAULT '');""",
    "payment": """
        CREATE TABLE IF NOT EXISTS accounts (customer TEXT PRIMARY KEY, balance INTEGER,
            initial INTEGER);
        CREATE TABLE IF NOT EXISTS payments (order_id TEXT PRIMARY KEY, customer TEXT,
            amount INTEGER, state TEXT, holds_seen TEXT DEFAULT '[]');
        CREATE TABLE IF NOT EXISTS capture_attempts (order_id TEXT PRIMARY KEY, n INTEGER);""",
    "inventory": """
        CREATE TABLE IF NOT EXISTS stock (item TEXT PRIMARY KEY, available INTEGER,
            reserved INTEGER, initial INTEGER);
        CREATE TABLE IF NOT EXISTS reservations (order_id TEXT PRIMARY KEY, item TEXT,
            qty INTEGER, state TEXT);""",
    "orchestrator": """
        CREATE TABLE IF NOT EXISTS sagas (order_id TEXT PRIMARY KEY, state TEXT);""",
}
_OUTBOX = """CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT, key TEXT, value TEXT, sent INTEGER DEFAULT 0);"""


class SimulatedCrash(Exception):
    """Raised inside a handler to kill its service between its write and its publish."""


# ----- what can go wrong, chosen by the learner ------------------------------------------------
@dataclass
class SagaFaults:
    """Which orders fail where, which messages are duplicated, which service crashes.

    ``fail`` is one of :data:`FAIL_POINTS`; it hits every ``every``-th order of a run
    (order 1, 2, ... in the order placed). ``capture_failures``: how many times capturing
    fails before it works (after the pivot, the saga retries). ``duplicates``: the share of
    published messages sent twice (seeded). ``crash``: the service (or the orchestrator)
    that dies after its write and before its publish, on the ``crash_at``-th message it
    handles; it is restarted after ``downtime_s`` model seconds. ``idempotent=False`` is a
    control arm: the payment service forgets to look for an earlier hold of the same order,
    so a duplicated request holds the money again.
    """

    fail: str = "none"
    every: int = 2
    capture_failures: int = 2
    duplicates: float = 0.0
    crash: str = "none"
    crash_at: int = 3
    downtime_s: float = 0.5
    seed: int = 8
    duplicate_orders: tuple[str, ...] = ()
    idempotent: bool = True

    def __post_init__(self) -> None:
        require(self.fail in FAIL_POINTS, f"fail must be one of {FAIL_POINTS}, got {self.fail!r}.",
                "e.g. fail='stock'")
        require(isinstance(self.every, int) and self.every >= 1,
                f"every must be a whole number of 1 or more, got {self.every!r}.",
                "every=1 fails every order, every=3 every third")
        require(isinstance(self.capture_failures, int) and 0 <= self.capture_failures <= 5,
                f"capture_failures must be 0 to 5, got {self.capture_failures!r}.")
        require(isinstance(self.duplicates, (int, float)) and 0 <= self.duplicates <= 1,
                f"duplicates is a share from 0 to 1, got {self.duplicates!r}.",
                "e.g. duplicates=0.3 sends 30% of messages twice")
        require(self.crash in CRASHABLE, f"crash must be one of {CRASHABLE}, got {self.crash!r}.")
        require(isinstance(self.crash_at, int) and self.crash_at >= 1,
                f"crash_at must be 1 or more, got {self.crash_at!r}.")
        require(isinstance(self.downtime_s, (int, float)) and 0 <= self.downtime_s <= 5,
                f"downtime_s must be 0 to 5 model seconds, got {self.downtime_s!r}.")
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._handled: dict[str, int] = {}
        self.crashed: list[str] = []

    def should_crash(self, service: str) -> bool:
        """Count one message handled by ``service``; True once, at the ``crash_at``-th."""
        with self._lock:
            self._handled[service] = self._handled.get(service, 0) + 1
            due = (self.crash == service and self._handled[service] == self.crash_at
                   and service not in self.crashed)
            if due:
                self.crashed.append(service)
            return due

    def fails(self, order: dict[str, Any], point: str) -> bool:
        """True when ``order`` is planned to fail at ``point``."""
        forced = order.get("fail")
        if forced is not None:
            return forced == point
        return self.fail == point and order.get("n", 0) % self.every == 0

    def duplicate(self, key: str | None = None) -> bool:
        """Should the next published message (for order ``key``) go out twice? Always for
        the orders in ``duplicate_orders``; else a seeded draw with chance ``duplicates``."""
        if key is not None and key in self.duplicate_orders:
            return True
        with self._lock:
            return self._rng.random() < self.duplicates


# ----- the swimlane record ----------------------------------------------------------------------
@dataclass(frozen=True)
class Mark:
    """One thing that happened to one order: ``kind`` is step, compensation, retry,
    duplicate, wait, crash or end; ``t_ms`` is wall ms since the shop started."""

    t_ms: float
    order: str
    lane: str
    kind: str
    label: str


class SagaTrace:
    """Every mark of every order, in the order they happened (thread-safe)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.marks: list[Mark] = []
        self._lock = threading.Lock()

    def add(self, order: str, lane: str, kind: str, label: str) -> None:
        with self._lock:
            self.marks.append(Mark((time.perf_counter() - self.start) * 1000, order, lane,
                                   kind, label))

    def of(self, order: str) -> list[Mark]:
        """The marks of one order."""
        with self._lock:
            return [m for m in self.marks if m.order == order]

    def count(self, kind: str, orders: Iterable[str] | None = None) -> int:
        """How many marks of ``kind`` (optionally only for ``orders``)."""
        chosen = None if orders is None else set(orders)
        with self._lock:
            return sum(m.kind == kind and (chosen is None or m.order in chosen)
                       for m in self.marks)

    @property
    def last_ms(self) -> float:
        with self._lock:
            return self.marks[-1].t_ms if self.marks else 0.0


KIND_STYLE = {  # marker, colour, label in the legend
    "step": ("o", PALETTE[0], "step done"),
    "failed": ("s", PALETTE[1], "step failed"),
    "compensation": ("X", PALETTE[3], "compensation"),
    "retry": ("^", PALETTE[4], "retry (after the pivot)"),
    "duplicate": ("o", "#999999", "duplicate, ignored"),
    "wait": ("v", PALETTE[5], "waited (semantic lock)"),
    "crash": ("*", "#000000", "crash / restart"),
    "end": ("D", PALETTE[2], "saga ended"),
}


def draw_swimlanes(ax: Any, marks: Sequence[Mark], title: str = "") -> None:
    """One order's saga: services as lanes, each mark at its time, lines for the messages."""
    lanes = [lane for lane in LANES if any(m.lane == lane for m in marks)] or list(LANES[:3])
    rows = {lane: len(lanes) - 1 - i for i, lane in enumerate(lanes)}
    t0 = marks[0].t_ms if marks else 0.0
    xs = [m.t_ms - t0 for m in marks]
    ys = [rows[m.lane] for m in marks]
    ax.plot(xs, ys, color="#888888", linewidth=0.8, zorder=1)
    seen: set[str] = set()
    for x, y, mark in zip(xs, ys, marks, strict=True):
        marker, colour, legend = KIND_STYLE.get(mark.kind, ("o", "#333333", mark.kind))
        hollow = mark.kind == "duplicate"
        ax.scatter([x], [y], marker=marker, s=70, zorder=3, label=None if legend in seen
                   else legend, facecolors="none" if hollow else colour, edgecolors=colour)
        seen.add(legend)
        if mark.kind in ("compensation", "failed", "crash", "wait") or mark.label in (
                "CONFIRMED", "CANCELLED"):
            ax.annotate(mark.label, (x, y), textcoords="offset points", xytext=(3, 7),
                        fontsize=7, rotation=20)
    ax.set_yticks(list(rows.values()), list(rows))
    ax.set_ylim(-0.6, len(lanes) - 0.2)
    ax.set_xlim(left=-5)
    ax.set_xlabel("wall ms since the order was placed")
    ax.grid(axis="y", color="#dddddd")
    if title:
        ax.set_title(title, fontsize=9)
    if marks:
        ax.legend(loc="lower right", fontsize=7, ncol=2, framealpha=0.7)


# ----- one service: its store, its outbox, its relay --------------------------------------------
class Node:
    """A service's store with an outbox: ``change(fn)`` runs ``fn(tx)`` and queues the
    messages it returns in the same transaction; ``relay()`` publishes what is queued."""

    def __init__(self, name: str, store: Store, publisher: Publisher, faults_of: Callable[[],
                 SagaFaults], trace: SagaTrace) -> None:
        self.name, self.store, self.publisher = name, store, publisher
        self._faults_of, self.trace = faults_of, trace
        self.handled = 0
        self.crashed = 0
        self._relay_lock = threading.Lock()
        store.create(_SCHEMA[name], _OUTBOX)

    def change(self, fn: Callable[[Any], list[tuple[str, str, dict[str, Any]]]],
               crashable: bool = True) -> None:
        """Run ``fn(tx)``; the ``(topic, key, message)`` list it returns joins the outbox in
        the same transaction, then is published (unless this service is planned to crash)."""
        self.handled += 1
        with self.store.transaction() as tx:
            for topic, key, message in fn(tx):
                tx.execute("INSERT INTO outbox (topic, key, value) VALUES (?, ?, ?)",
                           (topic, key, json.dumps(message)))
        if crashable and self._faults_of().should_crash(self.name):
            self.crashed += 1
            raise SimulatedCrash(f"{self.name} crashed after its write, before its publish")
        self.relay()

    def relay(self) -> int:
        """Publish every queued message in order and mark it sent; returns how many."""
        with self._relay_lock:
            rows = self.store.query("SELECT seq, topic, key, value FROM outbox WHERE sent = 0 "
                                    "ORDER BY seq")
            faults = self._faults_of()
            for seq, topic, key, value in rows:
                message = json.loads(value)
                copies = 2 if faults.duplicate(key) else 1
                for _ in range(copies):
                    self.publisher.send(topic, message, key=key).result(10)
                self.store.execute("UPDATE outbox SET sent = 1 WHERE seq = ?", (seq,))
            return len(rows)

    def unsent(self) -> int:
        """Messages written but not yet published."""
        return int(self.store.scalar("SELECT COUNT(*) FROM outbox WHERE sent = 0") or 0)


# ----- the three services' operations (each idempotent by order id) -------------------------------
@dataclass(frozen=True)
class Outcome:
    """What one operation did: ``ok``; ``fresh`` False when it only repeated an earlier answer;
    ``busy`` when a semantic lock made it wait; ``reason`` in words."""

    ok: bool
    fresh: bool = True
    reason: str = ""
    busy: bool = False


def create_order(tx: Any, order: dict[str, Any]) -> Outcome:
    """Insert the order as PENDING (a repeat changes nothing)."""
    cur = tx.execute("INSERT OR IGNORE INTO orders (id, customer, item, qty, amount, state) "
                     "VALUES (?, ?, ?, ?, ?, 'PENDING')", (order["id"], order["customer"],
                                                           order["item"], order["qty"],
                                                           order["amount"]))
    return Outcome(True, fresh=cur.rowcount == 1)


def end_order(tx: Any, order_id: str, state: str, reason: str = "") -> Outcome:
    """PENDING -> ``state`` (CONFIRMED or CANCELLED); a repeat changes nothing."""
    cur = tx.execute("UPDATE orders SET state = ?, reason = ? WHERE id = ? AND state = 'PENDING'",
                     (state, reason, order_id))
    if cur.rowcount:
        return Outcome(True)
    now = tx.execute("SELECT state FROM orders WHERE id = ?", (order_id,)).fetchone()
    return Outcome(now is not None and now[0] == state, fresh=False,
                   reason="" if now is None else f"already {now[0]}")


def authorize(tx: Any, order: dict[str, Any], faults: SagaFaults, lock: bool = False) -> Outcome:
    """Hold the order's amount on the customer's account (a compensatable step).

    With ``lock`` a HELD payment of another order for the same customer is a
    *semantic lock*: this saga waits (``busy``) instead of reading a balance that may
    still change. Without it, the decision reads the balance as it is right now.
    """
    row = tx.execute("SELECT state FROM payments WHERE order_id = ?", (order["id"],)).fetchone()
    if row is not None and row[0] == "HELD" and not faults.idempotent:
        return _hold_again(tx, order)   # the control arm's bug: a repeat holds money again
    if row is not None:
        return Outcome(row[0] in ("HELD", "CAPTURED"), fresh=False, reason=row[0].lower())
    holds = [h for (h,) in tx.execute("SELECT order_id FROM payments WHERE customer = ? AND "
                                      "state = 'HELD'", (order["customer"],))]
    if lock and holds:
        return Outcome(False, reason=f"account locked by {holds[0]}", busy=True)
    balance = tx.execute("SELECT balance FROM accounts WHERE customer = ?",
                         (order["customer"],)).fetchone()
    if faults.fails(order, "payment") or balance is None or balance[0] < order["amount"]:
        reason = ("card declined" if faults.fails(order, "payment") else
                  "no such account" if balance is None else "insufficient funds")
        tx.execute("INSERT INTO payments VALUES (?, ?, ?, 'DECLINED', ?)",
                   (order["id"], order["customer"], order["amount"], json.dumps(holds)))
        return Outcome(False, reason=reason)
    tx.execute("UPDATE accounts SET balance = balance - ? WHERE customer = ?",
               (order["amount"], order["customer"]))
    tx.execute("INSERT INTO payments VALUES (?, ?, ?, 'HELD', '[]')",
               (order["id"], order["customer"], order["amount"]))
    return Outcome(True)


def _hold_again(tx: Any, order: dict[str, Any]) -> Outcome:
    """What a payment service without an idempotency check does with a repeated request."""
    tx.execute("UPDATE accounts SET balance = balance - ? WHERE customer = ?",
               (order["amount"], order["customer"]))
    tx.execute("UPDATE payments SET amount = amount + ? WHERE order_id = ?",
               (order["amount"], order["id"]))
    return Outcome(True)


def refund(tx: Any, order_id: str) -> Outcome:
    """Compensate :func:`authorize`: give a HELD amount back. Idempotent; for a payment
    that never happened it writes VOID, so a late authorize cannot take money after all."""
    row = tx.execute("SELECT state, customer, amount FROM payments WHERE order_id = ?",
                     (order_id,)).fetchone()
    if row is None:
        tx.execute("INSERT INTO payments VALUES (?, '', 0, 'VOID', '[]')", (order_id,))
        return Outcome(True, reason="nothing to refund")
    if row[0] != "HELD":
        return Outcome(row[0] != "CAPTURED", fresh=False, reason=row[0].lower())
    tx.execute("UPDATE accounts SET balance = balance + ? WHERE customer = ?", (row[2], row[1]))
    tx.execute("UPDATE payments SET state = 'REFUNDED' WHERE order_id = ?", (order_id,))
    return Outcome(True)


def capture(tx: Any, order: dict[str, Any], faults: SagaFaults) -> Outcome:
    """Turn the hold into a charge (after the pivot: it may fail for a while, never for good)."""
    row = tx.execute("SELECT state FROM payments WHERE order_id = ?", (order["id"],)).fetchone()
    if row is not None and row[0] == "CAPTURED":
        return Outcome(True, fresh=False, reason="captured")
    if row is None or row[0] != "HELD":
        raise LabError(f"capture for order {order['id']} found its payment "
                       f"{'missing' if row is None else row[0]}.",
                       "capture only after a successful authorize and reserve")
    tx.execute("INSERT INTO capture_attempts VALUES (?, 1) ON CONFLICT(order_id) "
               "DO UPDATE SET n = n + 1", (order["id"],))
    n = tx.execute("SELECT n FROM capture_attempts WHERE order_id = ?", (order["id"],)).fetchone()
    if faults.fails(order, "capture") and n[0] <= faults.capture_failures:
        return Outcome(False, reason=f"payment gateway timeout (attempt {n[0]})")
    tx.execute("UPDATE payments SET state = 'CAPTURED' WHERE order_id = ?", (order["id"],))
    return Outcome(True)


def reserve(tx: Any, order: dict[str, Any], faults: SagaFaults) -> Outcome:
    """Take stock for the order: the pivot. Once it succeeds the saga only goes forward."""
    row = tx.execute("SELECT state FROM reservations WHERE order_id = ?",
                     (order["id"],)).fetchone()
    if row is not None:
        return Outcome(row[0] == "RESERVED", fresh=False, reason=row[0].lower())
    have = tx.execute("SELECT available FROM stock WHERE item = ?", (order["item"],)).fetchone()
    if faults.fails(order, "stock") or have is None or have[0] < order["qty"]:
        tx.execute("INSERT INTO reservations VALUES (?, ?, ?, 'REJECTED')",
                   (order["id"], order["item"], order["qty"]))
        return Outcome(False, reason="out of stock")
    tx.execute("UPDATE stock SET available = available - ?, reserved = reserved + ? "
               "WHERE item = ?", (order["qty"], order["qty"], order["item"]))
    tx.execute("INSERT INTO reservations VALUES (?, ?, ?, 'RESERVED')",
               (order["id"], order["item"], order["qty"]))
    return Outcome(True)


# ----- the shop: three services and their data ---------------------------------------------------
class SagaShop:
    """The order, payment and inventory services' stores (``prefix`` keeps two shops apart)."""

    def __init__(self, lab: Lab, prefix: str = "", faults: SagaFaults | None = None) -> None:
        self.lab, self.prefix = lab, prefix
        self.faults = faults or SagaFaults()
        self.trace = SagaTrace()
        self.publisher = lab.bus.publisher()
        self.nodes = {name: Node(name, lab.store(f"{prefix}{name}"), self.publisher,
                                 lambda: self.faults, self.trace)
                      for name in ("order", "payment", "inventory", "orchestrator")}
        self.placed: list[dict[str, Any]] = []

    def store(self, name: str) -> Store:
        return self.nodes[name].store

    def open_accounts(self, customers: dict[str, int]) -> None:
        """Give each customer an account with a starting balance."""
        for customer, balance in customers.items():
            require(isinstance(balance, int) and balance >= 0,
                    f"a balance is a whole amount of 0 or more, got {balance!r}.")
            self.store("payment").execute("INSERT INTO accounts VALUES (?, ?, ?)",
                                          (customer, balance, balance))

    def stock_items(self, items: dict[str, int]) -> None:
        """Put ``items`` ({item: units}) on the shelves."""
        for item, units in items.items():
            require(isinstance(units, int) and units >= 0,
                    f"stock is a whole number of units, got {units!r}.")
            self.store("inventory").execute("INSERT INTO stock VALUES (?, ?, 0, ?)",
                                            (item, units, units))

    def new_order(self, customer: str, item: str, amount: int, qty: int = 1,
                  fail: str | None = None) -> dict[str, Any]:
        """An order (not placed yet); ``fail`` forces its failure point, else the faults decide."""
        require(fail is None or fail in FAIL_POINTS, f"fail must be one of {FAIL_POINTS}.")
        n = len(self.placed) + 1
        order = {"id": f"{self.prefix}o{n}", "n": n, "customer": customer, "item": item,
                 "qty": qty, "amount": amount, "fail": fail}
        self.placed.append(order)
        return order

    def order_states(self, orders: Iterable[dict[str, Any]] | None = None) -> dict[str, str]:
        """{order id: state} for ``orders`` (every placed order by default)."""
        ids = [o["id"] for o in (self.placed if orders is None else orders)]
        rows = dict(self.store("order").query("SELECT id, state FROM orders"))
        return {i: rows.get(i, "NOT CREATED") for i in ids}

    def unsent(self) -> int:
        """Messages written to some outbox and not yet published."""
        return sum(node.unsent() for node in self.nodes.values())

    def snapshot(self) -> dict[str, Any]:
        """The numbers the invariants compare."""
        pay, inv = self.store("payment"), self.store("inventory")
        return {
            "balances": pay.scalar("SELECT COALESCE(SUM(balance), 0) FROM accounts"),
            "initial_money": pay.scalar("SELECT COALESCE(SUM(initial), 0) FROM accounts"),
            "held": pay.scalar("SELECT COALESCE(SUM(amount), 0) FROM payments WHERE "
                               "state = 'HELD'"),
            "captured": pay.scalar("SELECT COALESCE(SUM(amount), 0) FROM payments WHERE "
                                   "state = 'CAPTURED'"),
            "available": inv.scalar("SELECT COALESCE(SUM(available), 0) FROM stock"),
            "reserved": inv.scalar("SELECT COALESCE(SUM(reserved), 0) FROM stock"),
            "initial_stock": inv.scalar("SELECT COALESCE(SUM(initial), 0) FROM stock"),
        }


# ----- waiting for a run to finish ----------------------------------------------------------------
def wait_settled(shop: SagaShop, orders: Sequence[dict[str, Any]], timeout_s: float = 20.0,
                 quiet_s: float = 3.0, tick: Callable[[], None] | None = None) -> bool:
    """Wait until every order in ``orders`` is CONFIRMED or CANCELLED (True), or nothing
    has happened for ``quiet_s`` wall seconds while some are still open (False: stuck).
    A consumer group's rebalance after a restart takes a second or more on a busy machine,
    so "quiet" must last longer than one before the run is called stuck.

    ``tick()`` runs on every poll (it restarts crashed services).
    """
    deadline = time.monotonic() + timeout_s
    last_count, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        if tick is not None:
            tick()
        states = shop.order_states(orders)
        if all(s in FINAL for s in states.values()) and not shop.unsent():
            time.sleep(0.05)
            return True
        count = len(shop.trace.marks)
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > quiet_s:
            return False
        time.sleep(0.02)
    return False


# ----- the invariants -------------------------------------------------------------------------------
@dataclass
class Invariants:
    """The consistency checks after a run; ``problems`` lists each broken rule in words."""

    orders: int
    confirmed: int
    cancelled: int
    pending: list[str]
    half_done: list[str]
    money_in: int
    money_now: int
    stock_in: int
    stock_now: int
    held: int
    problems: list[str] = field(default_factory=list)
    #: customers whose balance is not their start minus the prices of their CONFIRMED orders
    mischarged: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        """The invariants in plain words, one line each."""
        lines = [
            f"orders: {self.orders} placed, {self.confirmed} confirmed, {self.cancelled} "
            f"cancelled, {len(self.pending)} still pending",
            f"money: balances + captured + held = {self.money_now:,} (started with "
            f"{self.money_in:,}); still held: {self.held:,}",
            f"stock: available + reserved = {self.stock_now:,} (started with {self.stock_in:,})",
        ]
        lines += [f"PROBLEM: {p}" for p in self.problems] or ["all invariants hold"]
        return "\n".join(lines)

    def claims(self) -> list[Claim]:
        """The saga's properties as claims (raise under LAB_STRICT when broken), then the
        conservation totals as sanity checks: every local transaction keeps those, whatever
        the saga does, so they can only catch a broken lab, never a broken saga."""
        return [
            expect("orders neither confirmed nor fully compensated", len(self.pending) +
                   len(self.half_done), 0, tolerance=0,
                   meaning="every order ends confirmed, or cancelled with every step undone"),
            expect("money still held after the run drained", self.held, 0, tolerance=0,
                   meaning="no payment is left half-way"),
            expect("customers charged other than the price of their confirmed orders",
                   len(self.mischarged), 0, tolerance=0,
                   meaning="each customer paid exactly for the orders confirmed, once"),
            sanity("money created or lost (balances + captured + held - initial)",
                   self.money_now - self.money_in, 0,
                   meaning="every local transaction moves money, never makes or loses it"),
            sanity("stock created or lost (available + reserved - initial)",
                   self.stock_now - self.stock_in, 0,
                   meaning="every local transaction moves stock, never makes or loses it"),
        ]


def check_invariants(shop: SagaShop, orders: Sequence[dict[str, Any]] | None = None) -> Invariants:
    """Read the three services' stores and check every invariant of the saga."""
    orders = list(shop.placed if orders is None else orders)
    states = shop.order_states(orders)
    pay = dict(shop.store("payment").query("SELECT order_id, state FROM payments"))
    res = dict(shop.store("inventory").query("SELECT order_id, state FROM reservations"))
    pending = [o for o, s in states.items() if s not in FINAL]
    half_done, problems = [], []
    for order_id, state in states.items():
        paid, reserved = pay.get(order_id), res.get(order_id)
        if state == "CONFIRMED" and (paid != "CAPTURED" or reserved != "RESERVED"):
            half_done.append(order_id)
            problems.append(f"order {order_id} is CONFIRMED but its payment is "
                            f"{paid or 'missing'} and its stock {reserved or 'not reserved'}")
        if state == "CANCELLED" and (paid in ("HELD", "CAPTURED") or reserved == "RESERVED"):
            half_done.append(order_id)
            problems.append(f"order {order_id} is CANCELLED but not fully compensated: payment "
                            f"{paid}, stock {reserved or 'not reserved'}")
    if pending:
        problems.append(f"{len(pending)} orders still PENDING after the run drained: "
                        f"{', '.join(pending[:5])}")
    snap = shop.snapshot()
    money_now = snap["balances"] + snap["captured"] + snap["held"]
    stock_now = snap["available"] + snap["reserved"]
    if money_now != snap["initial_money"]:
        problems.append(f"money is not conserved: {money_now:,} now, {snap['initial_money']:,} "
                        "at the start")
    if snap["held"]:
        problems.append(f"{snap['held']:,} is still held on accounts")
    if stock_now != snap["initial_stock"]:
        problems.append(f"stock is not conserved: {stock_now} now, {snap['initial_stock']} "
                        "at the start")
    mischarged = _mischarged(shop, orders)
    problems += [f"customer {m}" for m in mischarged]
    return Invariants(len(orders), sum(s == "CONFIRMED" for s in states.values()),
                      sum(s == "CANCELLED" for s in states.values()), pending, half_done,
                      snap["initial_money"], money_now, snap["initial_stock"], stock_now,
                      snap["held"], problems, mischarged)


def _mischarged(shop: SagaShop, orders: Sequence[dict[str, Any]]) -> list[str]:
    """Customers of ``orders`` (with nothing pending) whose balance in the payment service is
    not their opening balance minus the prices of their CONFIRMED orders in the order
    service: charged twice, or refunded what they never paid. Two services' own records."""
    customers = sorted({o["customer"] for o in orders})
    owed = dict(shop.store("order").query(
        "SELECT customer, COALESCE(SUM(CASE WHEN state = 'CONFIRMED' THEN amount END), 0) "
        "FROM orders GROUP BY customer HAVING SUM(state = 'PENDING') = 0"))
    found = []
    for customer, balance, initial in shop.store("payment").query(
            "SELECT customer, balance, initial FROM accounts"):
        if customer in customers and customer in owed and balance != initial - owed[customer]:
            found.append(f"{customer} has {balance:,}, should have {initial - owed[customer]:,} "
                         f"({initial:,} minus {owed[customer]:,} of confirmed orders)")
    return found


def dirty_declines(shop: SagaShop, order_ids: Iterable[str]) -> int:
    """Orders declined for lack of funds while another saga's hold was on the account, a
    hold that was later refunded: they were refused on money that came back (a dirty read)."""
    rows = shop.store("payment").query("SELECT order_id, state, holds_seen FROM payments")
    state = {order: st for order, st, _ in rows}
    seen = {order: json.loads(holds) for order, _, holds in rows}
    return sum(state.get(o) == "DECLINED" and any(state.get(h) == "REFUNDED"
                                                 for h in seen.get(o, []))
               for o in order_ids)


def reverse_compensated(shop: SagaShop, orders: Iterable[dict[str, Any]]) -> tuple[int, int]:
    """(orders undone last-step-first, orders whose money had to be refunded): for each, the
    refund must come before the cancellation on the swimlane."""
    states = dict(shop.store("payment").query("SELECT order_id, state FROM payments"))
    refunded = [o["id"] for o in orders if states.get(o["id"]) == "REFUNDED"]
    good = 0
    for order_id in refunded:
        lanes = [m.lane for m in shop.trace.of(order_id)
                 if m.kind == "compensation" and m.lane != "orchestrator"]
        good += lanes == ["payment", "order"]
    return good, len(refunded)


def durations_ms(shop: SagaShop, orders: Iterable[dict[str, Any]]) -> list[float]:
    """Wall ms from each order's first mark to its last, sorted."""
    out = []
    for order in orders:
        marks = shop.trace.of(order["id"])
        if marks:
            out.append(marks[-1].t_ms - marks[0].t_ms)
    return sorted(out)


def sleep_model(seconds: float) -> None:
    """Sleep ``seconds`` of model time."""
    time.sleep(to_wall(seconds))


# ----- a running saga system: workers, an HTTP entry point, crash and restart ----------------------
class SagaSystem:
    """What both styles share: the shop, one consumer worker per service, an HTTP entry,
    restarts after a crash, and :meth:`run` (place orders, wait, check the invariants)."""

    style = "saga"
    entry_path = "/orders"

    def __init__(self, lab: Lab, prefix: str, faults: SagaFaults | None = None) -> None:
        self.lab, self.prefix = lab, prefix
        self.shop = SagaShop(lab, prefix, faults)
        self.workers: dict[str, Any] = {}
        self._routes: dict[str, tuple[list[str], Callable[[Any], None]]] = {}
        self._down_since: dict[str, float] = {}
        self.restarts: list[tuple[str, float]] = []
        self._order_at: dict[tuple[str, int, int], str] = {}
        self.entry = lab.service(f"{prefix}api", routes={self.entry_path: self._http_place})

    @property
    def faults(self) -> SagaFaults:
        return self.shop.faults

    @faults.setter
    def faults(self, value: SagaFaults) -> None:
        self.shop.faults = value

    def add_worker(self, name: str, topics: list[str], handler: Callable[[Any], None]) -> None:
        """Start ``name``'s consumer (group ``<prefix><name>``) on ``topics``."""
        self._routes[name] = (topics, handler)
        self.workers[name] = self.lab.bus.worker(topics, f"{self.prefix}{name}", handler,
                                                 name=f"{self.prefix}{name}")

    def ready(self, timeout: float = 15.0) -> SagaSystem:
        """Wait until every worker has joined its group (about 1 s on the course's settings)."""
        for worker in self.workers.values():
            worker.wait_assigned(timeout)
        return self

    # ----- placing orders ------------------------------------------------------------------
    async def _http_place(self, request: Any) -> Any:
        import asyncio

        from aiohttp import web

        order = await request.json()
        await asyncio.to_thread(self.place_now, order)
        return web.json_response({"order": order["id"], "state": "accepted"}, status=202)

    def place_now(self, order: dict[str, Any]) -> None:  # pragma: no cover - per style
        raise NotImplementedError

    def place(self, orders: Sequence[dict[str, Any]]) -> list[int]:
        """POST each order to the entry service, one after another; returns the statuses."""
        statuses = []
        for order in orders:
            answer = self.lab.call(self.entry, self.entry_path.lstrip("/"), method="POST",
                                  json=order)
            require(answer.status == 202, f"placing order {order['id']} answered "
                    f"{answer.status}: {answer.body}", "look at the entry service's handler")
            statuses.append(answer.status)
        return statuses

    # ----- crashes ---------------------------------------------------------------------------
    def tick(self) -> None:
        """Restart a worker that crashed (a :class:`SimulatedCrash`) after the downtime;
        any other handler error is raised here, with the offset."""
        for name, worker in list(self.workers.items()):
            if worker.running:
                continue
            if not isinstance(worker.error, SimulatedCrash):
                worker.stop()  # raises the handler's error as a LabError
                continue
            now = time.monotonic()
            since = self._down_since.setdefault(name, now)
            if since == now:
                self.shop.trace.add(self._crashed_order(name), name, "crash", "crashed")
            if now - since >= to_wall(self.faults.downtime_s):
                self._restart(name)

    def _crashed_order(self, name: str) -> str:
        where = self.workers[name].error_at
        return self._order_at.get(where, "?") if where else "?"

    def _restart(self, name: str) -> None:
        self.workers[name].stop(raise_error=False)
        self._down_since.pop(name, None)
        node = self.shop.nodes[name]
        node.relay()  # recovery: publish what the crash left in the outbox
        topics, handler = self._routes[name]
        self.workers[name] = self.lab.bus.worker(topics, f"{self.prefix}{name}", handler,
                                                 name=f"{self.prefix}{name}")
        self.restarts.append((name, self.shop.trace.last_ms))

    def _remember(self, event: Any, order_id: str) -> None:
        self._order_at[(event.topic, event.partition, event.offset)] = order_id

    # ----- one run -----------------------------------------------------------------------------
    def run(self, orders: Sequence[dict[str, Any]], timeout_s: float = 30.0) -> Invariants:
        """Place ``orders``, wait until every one has ended (or the system is stuck),
        restarting crashed services on the way; return the invariants."""
        self._order_at = {}
        self.place(orders)
        settled = wait_settled(self.shop, orders, timeout_s, tick=self.tick,
                               quiet_s=3.0 + to_wall(self.faults.downtime_s) * 2)
        if not settled:
            self.tick()
        for name in list(self.workers):
            if not self.workers[name].running:
                self._restart(name)
        return check_invariants(self.shop, orders)

    def stop(self) -> None:
        """Stop every worker (they leave their groups)."""
        for worker in self.workers.values():
            worker.stop(raise_error=False)


def duplicate_run(system: SagaSystem, orders: int = 6, idempotent: bool = True) -> Invariants:
    """Every message published twice, ``orders`` orders for new customers (so that earlier runs
    do not mix in); ``idempotent=False`` runs the control arm, a payment service that holds
    money again for a repeated request. Returns the invariants of these orders."""
    require(isinstance(orders, int) and 1 <= orders <= 20, f"orders must be 1 to 20, got "
            f"{orders!r}.")
    shop = system.shop
    tag = f"dup{len(shop.placed)}"
    shop.open_accounts({f"{tag}c{k}": 1_000 for k in range(orders)})
    shop.stock_items({f"{tag}book": orders})
    system.faults = SagaFaults(duplicates=1.0, idempotent=idempotent)
    placed = [shop.new_order(f"{tag}c{k}", f"{tag}book", ORDER_AMOUNT) for k in range(orders)]
    return system.run(placed)


# ----- the shop the dashboard starts with ----------------------------------------------------
CUSTOMERS = {f"c{k}": 1_000 for k in range(6)}
SHELVES = {"book": 200}
ORDER_AMOUNT = 30
