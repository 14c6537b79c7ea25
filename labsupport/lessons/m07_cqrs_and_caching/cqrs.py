"""CQRS on real services: a command side that writes and publishes, a query side that reads.

:class:`OrderShop` starts everything module 07 measures::

    shop = OrderShop(lab, payment_ms=20)
    shop.place("c1", 30)            # POST /orders on the command side (orders service)
    shop.read_order("o-1")          # GET /orders/o-1 on the query side (queries service)

* **Command side** (service ``orders``): ``POST /orders`` places an order,
  ``POST /orders/{id}/pay|ship|cancel|add`` changes one, and ``POST /commands`` takes
  either as a JSON body (``{"command": "place", "customer", "amount"}`` or
  ``{"command": "pay", "order"}``): the load generator's single address. Each command first does the
  service's own work (its latency knob: the payment check, the slow part), then writes
  the order to its own SQLite store with the next per-order ``version``, then publishes
  the event (OrderPlaced, OrderPaid, ...) keyed by order id and answers with the
  broker's acknowledgement: partition and offset.
* **Events**: topic ``order-events``; each event carries the whole order after the change.
* **Projection**: a bus worker feeds :class:`~labsupport.lessons.m07_cqrs_and_caching.projections.OrderProjection`,
  which keeps the read models in a separate store.
* **Query side** (service ``queries``): ``GET /orders/{id}`` and ``GET /customers/{id}``
  read only the read models. ``GET /orders/{id}?after=P:O`` first waits (up to
  ``wait_ms``) until the projection has reached offset ``O`` of partition ``P``:
  read-your-writes.

The experiments (mixed load, staleness, read-your-writes, rebuild) are methods of the
shop and small result classes below; the notebook only calls them. Two of them run a
control arm beside the real design, so that their claims can fail: every read of the mixed
load also goes to the command side (``GET /customers/{id}`` on ``orders``, sharing its
workers with the payment checks), and the staleness run also feeds a
:class:`CommitFirstProjection`, which commits offsets before it applies the events.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import math
import queue
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from labsupport import broker
from labsupport.kit.dashboard import PALETTE, Dashboard, LiveView
from labsupport.kit.evidence import Estimate, difference, quantile
from labsupport.kit.experiment import Experiment
from labsupport.lessons.m07_cqrs_and_caching.projections import OrderProjection, differences
from labsupport.runtime.errors import LabError, require
from labsupport.runtime.latency import Normal
from labsupport.runtime.load import Shot, arrival_times, fire
from labsupport.runtime.metrics import Recorder, percentile
from labsupport.runtime.services import fetch, json_body
from labsupport.runtime.settings import model_clock, scale_at_least, to_wall
from labsupport.runtime.waiting import wait_until

if TYPE_CHECKING:
    from labsupport.runtime.lab import Lab

T = TypeVar("T")

#: What each change command does to an order: the event type and the new state.
ACTIONS = {"pay": ("OrderPaid", "PAID"), "ship": ("OrderShipped", "SHIPPED"),
           "cancel": ("OrderCancelled", "CANCELLED"), "add": ("ItemAdded", None)}
AMOUNTS = (10, 20, 25, 40, 50, 75)
WRITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL, "
    "amount REAL NOT NULL, state TEXT NOT NULL, version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS customers (id TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
)


def customer_summary(store: Any, customer: str) -> dict[str, Any]:
    """A customer's open (not cancelled) orders and their amount, read from the command
    side's own ``orders`` table: the truth the read model and the caches approximate."""
    count, amount = store.query(
        "SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM orders WHERE customer = ? "
        "AND state != 'CANCELLED'", (customer,))[0]
    return {"customer": customer, "orders": count, "amount": round(amount, 2)}


MIN_SCALE = 0.5
"""The smallest time scale of this module's loaded runs (reads and writes together, caches,
the stampede). At 0.2 their 300 to 600 requests per wall second, with the cache server's round
trips, filled a core that a second program shared, and the readers measured the machine."""


def submit_loaded(lab: Lab, run: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Start ``run`` (a loaded run) on the lab's loop at a time scale of at least
    :data:`MIN_SCALE`, held until it ends (the model clock stays continuous)."""
    floor = scale_at_least(MIN_SCALE)
    try:
        return floor.until_done(lab.submit(run))
    except BaseException:
        floor.release()
        raise


def model_now() -> float:
    """Model seconds on a monotonic clock, continuous when the time scale changes."""
    return model_clock()


@dataclass(frozen=True)
class Write:
    """One command the command side accepted: the event it published and where it landed."""

    order: str
    customer: str
    version: int
    state: str
    partition: int
    offset: int
    customer_seq: int
    committed_at: float   # model s: the write store changed (the truth moved)
    acked_at: float       # model s: the broker acknowledged the event (the user gets 200)


class OrderShop(Experiment):
    """Command side, event topic, projection and query side of one order system.

    Its dashboard is experiment 1, reads and writes under the same load: ``dashboard()``
    shows it, ``press_run(payment_ms=..., write_rate=..., read_rate=...)`` is its Run button.
    """

    TITLE = "Reads and writes under the same load"
    BUTTON = "Run 4 s of traffic"

    def __init__(self, lab: Lab, payment_ms: float = 20.0, partitions: int = 3,
                 customers: int = 8, query_ms: float = 1.0, prefix: str = "",
                 command_workers: int = 5) -> None:
        require(isinstance(payment_ms, (int, float)) and payment_ms >= 0,
                f"payment_ms must be a number of ms of 0 or more, got {payment_ms!r}.",
                "e.g. OrderShop(lab, payment_ms=400) for a slow payment check")
        require(isinstance(customers, int) and 1 <= customers <= 1000,
                f"customers must be a whole number from 1 to 1000, got {customers!r}.")
        self.lab, self.prefix = lab, prefix
        self.customers = [f"c{i}" for i in range(1, customers + 1)]
        self.rng = random.Random(f"{lab.seed}:{prefix}shop")
        self.topic = lab.bus.topic(f"{prefix}order-events", partitions)
        self.publisher = lab.bus.publisher()
        self.write_store = lab.store(f"{prefix}orders", fresh=True)   # a new shop starts empty
        self.write_store.query("PRAGMA synchronous=NORMAL")
        self.write_store.create(*WRITE_SCHEMA)
        self.writes: list[Write] = []
        self.acked_at: dict[tuple[int, int], float] = {}
        #: customer -> [(seq, model s when that seq was committed)], seq 0 at start
        self.history: dict[str, list[tuple[int, float]]] = {c: [(0, 0.0)] for c in self.customers}
        #: customer -> [(model s committed, (open orders, amount) right after that write)]
        self.values: dict[str, list[tuple[float, tuple[int, float]]]] = {
            c: [(0.0, (0, 0.0))] for c in self.customers}
        self._ids = itertools.count(1)
        self._rebuilds = itertools.count(1)
        self.commands = lab.service(f"{prefix}orders", _payment(payment_ms),
                                    workers=command_workers, routes={
            "/orders": self._place, "/orders/{order}/{action}": self._change,
            "/commands": self._command,
            "/customers/{customer}": self._get_customer_from_writes})
        self.read_store = lab.store(f"{prefix}order_views", fresh=True)
        self.projection = OrderProjection(self.read_store, clock=model_now)
        self.group = f"{prefix}order-summary"
        #: cleared while the projection is stalled (experiment 2); set = running
        self.running = threading.Event()
        self.running.set()
        self.worker = lab.bus.worker(self.topic, self.group, self._project,
                                     name=f"{prefix}order-summary")
        self.queries = lab.service(f"{prefix}queries", query_ms, routes={
            "/orders/{order}": self._get_order, "/customers/{customer}": self._get_customer})
        self.worker.wait_assigned()
        self.last_mixed: MixedRun | None = None

    def _project(self, event: Any) -> None:
        """The projection worker's handler: wait while stalled, then apply the event."""
        while not self.running.wait(0.05):
            if self.lab.closed:
                return
        self.projection.handle(event)

    # ----- the command side ---------------------------------------------------------------
    async def _place(self, request: web.Request) -> web.Response:
        return await self._do_place(await json_body(request))

    async def _change(self, request: web.Request) -> web.Response:
        return await self._do_change(request.match_info["order"],
                                     request.match_info["action"], await json_body(request))

    async def _command(self, request: web.Request) -> web.Response:
        """POST /commands: the command named in the body (place, or an action on an order)."""
        body = await json_body(request)
        if body.get("command") == "place":
            return await self._do_place(body)
        return await self._do_change(str(body.get("order")), str(body.get("command")), body)

    async def _do_place(self, body: dict[str, Any]) -> web.Response:
        customer, amount = body.get("customer"), body.get("amount")
        if customer not in self.history or not isinstance(amount, (int, float)) or amount <= 0:
            return web.json_response({"error": "send {customer: one of the shop's customers, "
                                               "amount: a positive number}"}, status=400)
        await self.commands.work()      # the payment check: the slow part of the write path
        order = f"{self.prefix}o-{next(self._ids)}"
        return await self._commit(order, customer, float(amount), "PLACED", "OrderPlaced", None)

    async def _do_change(self, order: str, action: str, body: dict[str, Any]) -> web.Response:
        if action not in ACTIONS:
            return web.json_response({"error": f"unknown action {action!r}",
                                      "actions": sorted(ACTIONS)}, status=404)
        await self.commands.work()
        rows = self.write_store.query("SELECT customer, amount, state FROM orders WHERE id = ?",
                                      (order,))
        if not rows:
            return web.json_response({"error": f"no order {order}"}, status=404)
        customer, amount, state = rows[0]
        kind, new_state = ACTIONS[action]
        if action == "add":
            amount += float(body.get("amount", 10))
        return await self._commit(order, customer, amount, new_state or state, kind, rows[0])

    async def _commit(self, order: str, customer: str, amount: float, state: str, kind: str,
                      old: Any) -> web.Response:
        with self.write_store.transaction() as tx:
            version = 1 + (tx.execute("SELECT version FROM orders WHERE id = ?",
                                      (order,)).fetchone() or (0,))[0]
            tx.execute("INSERT INTO orders VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                       "amount = excluded.amount, state = excluded.state, "
                       "version = excluded.version", (order, customer, amount, state, version))
            tx.execute("INSERT INTO customers VALUES (?, 1) ON CONFLICT(id) DO UPDATE SET "
                       "seq = seq + 1", (customer,))
            seq = tx.execute("SELECT seq FROM customers WHERE id = ?", (customer,)).fetchone()[0]
            value = tx.execute("SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM orders WHERE "
                               "customer = ? AND state != 'CANCELLED'", (customer,)).fetchone()
        committed_at = model_now()
        self.history[customer].append((seq, committed_at))
        self.values[customer].append((committed_at, (value[0], round(value[1], 2))))
        event = {"type": kind, "order": order, "version": version, "customer": customer,
                 "amount": amount, "state": state, "customer_seq": seq}
        delivery = await self.publisher.publish(self.topic, event, key=order)
        acked_at = model_now()
        self.acked_at[(delivery.partition, delivery.offset)] = acked_at
        self.writes.append(Write(order, customer, version, state, delivery.partition,
                                 delivery.offset, seq, committed_at, acked_at))
        return web.json_response({**event, "partition": delivery.partition,
                                  "offset": delivery.offset})

    # ----- the query side ---------------------------------------------------------------------
    async def _get_order(self, request: web.Request) -> web.Response:
        await self.queries.work()
        waited_ms, reached = 0.0, True
        after = request.query.get("after")
        if after:
            try:
                partition, offset = (int(x) for x in after.split(":"))
                wait_ms = float(request.query.get("wait_ms", 2000))
            except ValueError:
                return web.json_response({"error": "after=PARTITION:OFFSET, wait_ms=number"},
                                         status=400)
            waited_ms, reached = await self.wait_until(partition, offset, wait_ms)
        row = self.projection.order(request.match_info["order"])
        status = 504 if not reached else (200 if row else 404)
        return web.json_response({"order": row, "waited_ms": round(waited_ms, 3),
                                  "reached": reached}, status=status)

    async def wait_until(self, partition: int, offset: int, wait_ms: float) -> tuple[float, bool]:
        """Wait (on the lab's loop) until the projection includes ``offset`` of ``partition``;
        returns (model ms waited, whether it got there before ``wait_ms``)."""
        start = model_now()
        while not self.projection.reached(partition, offset):
            if (model_now() - start) * 1000 >= wait_ms:
                return (model_now() - start) * 1000, False
            await asyncio.sleep(0.001)   # wall time: the projection runs on Kafka's clock
        return (model_now() - start) * 1000, True

    async def _get_customer(self, request: web.Request) -> web.Response:
        await self.queries.work()
        return web.json_response(self.projection.customer(request.match_info["customer"]))

    async def _get_customer_from_writes(self, request: web.Request) -> web.Response:
        """The design CQRS replaces (the control arm): the command side answers the read
        from its own store, with one of its own workers, the ones the payment checks hold."""
        async with self.commands.pool.slot(self.commands.queue_limit):
            await asyncio.sleep(to_wall(self.queries.latency.sample(self.rng) / 1000))
            return web.json_response(customer_summary(self.write_store,
                                                      request.match_info["customer"]))

    # ----- calling it ---------------------------------------------------------------------------
    def place(self, customer: str, amount: float) -> dict[str, Any]:
        """POST /orders: place an order; returns the command side's answer (with its offset)."""
        require(customer in self.history, f"{customer!r} is not one of this shop's customers.",
                f"use one of {', '.join(self.customers[:4])}, ...")
        return _answer(self.lab.run(self._post("orders", {"customer": customer,
                                                          "amount": amount})))

    def change(self, order: str, action: str, amount: float = 10) -> dict[str, Any]:
        """POST /orders/{order}/{action}: pay, ship, cancel, or add ``amount``."""
        require(action in ACTIONS, f"No action {action!r}.", f"use one of {', '.join(ACTIONS)}")
        return _answer(self.lab.run(self._post(f"orders/{order}/{action}", {"amount": amount})))

    def read_order(self, order: str) -> dict[str, Any] | None:
        """GET /orders/{order} on the query side: the read model's row (``None`` if absent)."""
        result = self.lab.run(fetch(self.lab.session, f"{self.queries.url}orders/{order}", None))
        return (result["body"] or {}).get("order")

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await fetch(self.lab.session, self.commands.url + path, None, self.commands.name,
                           "POST", body)

    def random_command(self, index: int = 0, t: float = 0.0) -> dict[str, Any]:
        """The body of one write of the load (``POST /commands``), decided when it is sent:
        mostly new orders, some changes (pay, add, ship, cancel) to recent open ones."""
        open_orders = [w.order for w in self.writes[-40:] if w.state in ("PLACED", "PAID")]
        if open_orders and self.rng.random() < 0.5:
            return {"command": self.rng.choice(("pay", "add", "ship", "cancel")),
                    "order": self.rng.choice(open_orders), "amount": 10}
        return {"command": "place", "customer": self.rng.choice(self.customers),
                "amount": self.rng.choice(AMOUNTS)}

    async def write_load(self, rate: float, duration: float, recorder: Recorder,
                         stop: threading.Event | None = None) -> list[Shot]:
        """Writes at ``rate``/s for ``duration`` model s (open loop, :func:`load.fire`), each
        answer recorded in ``recorder`` as it arrives."""
        return await fire(self.lab.session, f"{self.commands.url}commands",
                          arrival_times(rate, duration), method="POST",
                          body=self.random_command, stop=stop,
                          on_shot=lambda s: recorder.record(s.t, s.ms, s.status))

    def read_schedule(self, rate: float, duration: float) -> list[tuple[float, str]]:
        """(model s, path) of each read of a customer's totals: a fixed schedule, each read
        for a customer drawn at random (seeded)."""
        return [(t, f"customers/{self.rng.choice(self.customers)}")
                for t in arrival_times(rate, duration)]

    # ----- Experiment 1: reads and writes under the same load -----------------------------
    def start_mixed(self, payment_ms: float, write_rate: float = 10.0,
                    read_rate: float = 50.0, duration: float = 4.0) -> MixedRun:
        """Writes and reads at the same time (open loop, model time); returns at once."""
        require_positive(write_rate=write_rate, read_rate=read_rate, duration=duration)
        require(isinstance(payment_ms, (int, float)) and payment_ms >= 0,
                f"payment_ms must be a number of ms of 0 or more, got {payment_ms!r}.")
        self.commands.set(latency=_payment(payment_ms))
        run = MixedRun(payment_ms, Recorder(f"writes (payment {payment_ms:g} ms)"),
                       Recorder("reads (query side)"), Recorder("reads (command side)"),
                       rates=(write_rate, read_rate, duration))
        live = {0: run.reads, 1: run.command_reads}   # the dashboard draws them as they come

        async def both() -> None:
            _, (query, command) = await asyncio.gather(
                self.write_load(write_rate, duration, run.writes),
                fire_paths(self.lab.session, [self.queries.url, self.commands.url],
                           self.read_schedule(read_rate, duration),
                           on_shot=lambda side, s: live[side].record(s.t, s.ms, s.status)))
            run.pairs = list(zip(command, query, strict=True))

        run.future = submit_loaded(self.lab, both())
        self.last_mixed = run
        return run

    def mixed(self, payment_ms: float, write_rate: float = 10.0, read_rate: float = 50.0,
              duration: float = 4.0) -> MixedRun:
        """:meth:`start_mixed` and wait for it."""
        run = self.start_mixed(payment_ms, write_rate, read_rate, duration)
        run.future.result()
        return run

    def more_reads(self, run: MixedRun, q: float = 90) -> Estimate:
        """Run ``run``'s load once more (same payment check, same rates) and pool the new
        read pairs into ``run``; returns :meth:`MixedRun.read_penalty` over all of them.
        For a claim's ``more=``: a bigger sample when the interval was too wide to decide."""
        again = self.mixed(run.payment_ms, *run.rates)
        run.pairs.extend(again.pairs)
        return run.read_penalty(q)

    def make_controls(self) -> dict[str, Any]:
        """Sliders for the payment check's latency and the two rates; Run starts the load."""
        import ipywidgets as w

        return {
            "payment_ms": w.IntSlider(400, 0, 1000, step=20, description="payment ms"),
            "write_rate": w.IntSlider(10, 2, 30, description="writes/s"),
            "read_rate": w.IntSlider(50, 10, 150, step=10, description="reads/s"),
        }

    def make_board(self, widgets: list[Any]) -> Dashboard:
        return Dashboard(self.TITLE, widgets, self._draw_mixed)

    def run_controls(self, payment_ms: int, write_rate: int, read_rate: int) -> LiveView:
        """What Run does: ``press_run(payment_ms=400, write_rate=10, read_rate=50)`` moves
        the sliders, then starts 4 s of writes and reads (:meth:`start_mixed`); the plot
        follows them live."""
        run = self.start_mixed(payment_ms, write_rate, read_rate)
        return self.board.watch(run.future.done, run.summary, hz=4)

    def _draw_mixed(self, ax: Any) -> None:
        run = self.last_mixed
        ax.set_xlabel("model seconds since the run started")
        ax.set_ylabel("latency (model ms, log scale)")
        if run is None:
            return
        for recorder, colour, label in ((run.writes, PALETTE[1], "writes (command side)"),
                                        (run.command_reads, PALETTE[3],
                                         "same reads on the command side"),
                                        (run.reads, PALETTE[0], "reads (query side)")):
            samples = recorder.samples
            if samples:
                ax.plot([s.t for s in samples], [max(s.ms, 0.1) for s in samples], ".",
                        color=colour, markersize=4, label=f"{label}: {len(samples)}")
        ax.set_yscale("log")
        top = max((s.ms for s in run.writes.samples), default=100.0)
        ax.set_ylim(top=max(top, 100.0) * 6)   # room for the legend above the dots
        ax.legend(loc="upper left", fontsize=8, ncol=2)

    # ----- Experiment 2: staleness and lag ------------------------------------------------
    def staleness_run(self, write_rate: float = 20.0, duration: float = 6.0,
                      pause: tuple[float, float] = (2.0, 3.5),
                      control: bool = True) -> StalenessWatch:
        """Writes for ``duration`` model s; the projection stalls during ``pause`` (model s).

        With ``control`` a :class:`CommitFirstProjection` (commits on receipt, applies
        later) reads the same events and stalls at the same time: the control arm.

        A :class:`StalenessWatch` samples staleness and lag throughout; it is returned at
        once, running: ``watch.join()`` waits for the traffic and the catch-up.
        """
        require_positive(write_rate=write_rate, duration=duration)
        require(isinstance(pause, tuple) and len(pause) == 2
                and 0 <= pause[0] < pause[1] <= duration,
                f"pause must be (start, end) inside 0..{duration:g} s, got {pause!r}.",
                "e.g. pause=(2.0, 3.5)")
        self.commands.set(latency=_payment(5))
        watch = StalenessWatch(self, pause, CommitFirstProjection(self) if control else None)
        traffic = self.lab.submit(self._paused_traffic(write_rate, duration, pause, watch))
        watch.start(traffic)
        return watch

    async def _paused_traffic(self, rate: float, duration: float, pause: tuple[float, float],
                              watch: StalenessWatch) -> None:
        async def pauser() -> None:
            try:
                await asyncio.sleep(to_wall(pause[0]))
                self.running.clear()    # the projection stalls: a slow database, a deploy
                await asyncio.sleep(to_wall(pause[1] - pause[0]))
            finally:
                self.running.set()

        await asyncio.gather(self.write_load(rate, duration, watch.writes), pauser())

    def caught_up(self) -> bool:
        """True when the projection has read every event on the topic."""
        ends = self.lab.bus.end_offsets(self.topic)
        return all(self.projection.positions.get(p, 0) >= end for p, end in enumerate(ends))

    def wait_caught_up(self, timeout: float = 10.0) -> None:
        """Block until the projection has read every event (wall ``timeout`` seconds)."""
        if not wait_until(self.caught_up, timeout, interval=0.01):
            raise LabError(f"The projection did not catch up within {timeout:g} s "
                           f"({self.projection.events_read()} of "
                           f"{sum(self.lab.bus.end_offsets(self.topic))} events read).",
                           "check the broker (python -m labsupport broker status) and "
                           "that the worker is running: shop.worker")

    def stale_since_ms(self, customer: str, answer: tuple[int, float], now: float) -> float:
        """How long (model ms, at model time ``now``) the truth has differed from ``answer``
        ((open orders, amount)): 0 if it is the current value, ``inf`` if it never was."""
        history = self.values[customer]
        if history[-1][1] == answer:
            return 0.0
        for i in range(len(history) - 2, -1, -1):
            if history[i][1] == answer:
                return max(0.0, (now - history[i + 1][0]) * 1000)
        return math.inf

    def value_changes(self, since: float) -> int:
        """Writes after model time ``since`` that changed some customer's (orders, amount)."""
        return sum(before[1] != after[1] for history in self.values.values()
                   for before, after in zip(history[:-1], history[1:], strict=True)
                   if after[0] > since)

    def write_rows(self) -> list[tuple[Any, ...]]:
        """The command side's orders, sorted: what the read model must converge to."""
        return self.write_store.query("SELECT id, customer, amount, state, version FROM "
                                      "orders ORDER BY id")

    def read_model_differences(self) -> list[str]:
        """Orders whose read-model row differs from the command side's row (empty: equal)."""
        return differences({"orders": self.write_rows()},
                           {"orders": self.projection.rows()["order_summary"]})

    def visibility_ms(self) -> list[float]:
        """Per event: model ms from the user's acknowledgement to the read model showing it."""
        seen = self.projection.visible_at
        return [max(0.0, (seen[key] - acked) * 1000) for key, acked in self.acked_at.items()
                if key in seen]

    def visibility_summary(self) -> str:
        """One line: p50 and p99 of :meth:`visibility_ms` and the broker they came from."""
        seen = self.visibility_ms()
        return (f"from a write's acknowledgement to the read model showing it: "
                f"p50 {percentile(seen, 50):.1f} ms, p99 {percentile(seen, 99):.1f} ms over "
                f"{len(seen)} events (model ms; {broker.identity().label})")

    # ----- Experiment 3: read-your-writes ---------------------------------------------------
    def read_your_writes(self, writes: int = 30, wait: bool = False,
                         wait_ms: float = 2000.0) -> RywResult:
        """``writes`` times: a command, then at once a read of the same order; counts how many
        reads showed the write (fresh), an older version (stale), or gave up (timeout).

        With ``wait=True`` the read carries the command's partition and offset and the
        query side waits until the projection has reached it.
        """
        require(isinstance(writes, int) and writes >= 1,
                f"writes must be a whole number of 1 or more, got {writes!r}.")
        require(wait_ms > 0, f"wait_ms must be above 0, got {wait_ms!r}.")
        self.commands.set(latency=_payment(5))
        return self.lab.run(self._ryw(writes, wait, wait_ms))

    async def _ryw(self, writes: int, wait: bool, wait_ms: float) -> RywResult:
        result = RywResult(wait)
        order = None
        for i in range(writes):
            if order is None or i % 3 == 0:
                answer = await self._post("orders", {"customer": self.rng.choice(self.customers),
                                                     "amount": self.rng.choice(AMOUNTS)})
            else:
                answer = await self._post(f"orders/{order}/add", {"amount": 5})
            written = _answer(answer)
            order = written["order"]
            query = (f"?after={written['partition']}:{written['offset']}&wait_ms={wait_ms}"
                     if wait else "")
            read = await fetch(self.lab.session, f"{self.queries.url}orders/{order}{query}", None)
            row = (read["body"] or {}).get("order")
            result.add(written["version"], row["version"] if row else 0, read["status"],
                       read["ms"])
        return result

    # ----- Experiment 4: rebuild --------------------------------------------------------------
    def rebuild(self, timeout: float = 20.0) -> RebuildResult:
        """Drop the read models and replay the topic from offset 0 in a new consumer group;
        compares the rebuilt view with the one before, row by row."""
        self.wait_caught_up()
        before = self.projection.rows()
        self.worker.stop()
        self.projection.drop()
        self.projection = OrderProjection(self.read_store, clock=model_now)
        start = time.monotonic()
        self.group = f"{self.prefix}order-summary-rebuilt-{next(self._rebuilds)}"  # a new group
        self.worker = self.lab.bus.worker(self.topic, self.group, self._project,
                                          name=f"{self.prefix}order-summary-rebuilt")
        self.wait_caught_up(timeout)
        after = self.projection.rows()
        return RebuildResult(before, after, differences(before, after),
                             self.projection.events_read(), time.monotonic() - start)


def require_positive(**values: Any) -> None:
    """Raise :class:`~labsupport.runtime.errors.BadParameter` naming the first value that is not > 0."""
    for name, value in values.items():
        require(isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
                f"{name} must be a number above 0, got {value!r}.",
                f"e.g. {name}=10 (rates per model second, durations in model seconds)")


def _payment(ms: float) -> Any:
    """The payment check's latency model: about ``ms``, varying by a quarter either way."""
    return Normal(ms, ms / 4) if ms else 0


def _answer(result: dict[str, Any]) -> dict[str, Any]:
    if result["status"] != 200:
        raise LabError(f"The command side answered {result['status']}: {result['body']}.",
                       "check the order id and the action (pay, ship, cancel, add)")
    return result["body"]


async def fire_paths(session: Any, bases: Sequence[str], schedule: Sequence[tuple[float, str]],
                     on_shot: Callable[[int, Shot], None] | None = None,
                     stop: threading.Event | None = None) -> list[list[Shot]]:
    """Each read of ``schedule`` ((model s, path)) sent at its time to every URL of ``bases``
    at once: open loop, one :func:`load.fire` per (base, path), all on one clock.

    Returns, per base, the shots in schedule order (``shot.index`` is the place in
    ``schedule``), so that ``result[0][i]`` and ``result[1][i]`` are the same read sent to
    two designs at the same moment. ``on_shot(base_index, shot)`` sees each as it arrives.
    """
    by_path: dict[str, list[int]] = defaultdict(list)
    for index, (_, path) in enumerate(schedule):
        by_path[path].append(index)
    start = asyncio.get_running_loop().time()

    async def one(side: int, path: str, indexes: list[int]) -> list[Shot]:
        def renumbered(shot: Shot) -> Shot:
            return replace(shot, index=indexes[shot.index], t=schedule[indexes[shot.index]][0])

        def seen(shot: Shot) -> None:
            if on_shot is not None:
                on_shot(side, renumbered(shot))

        shots = await fire(session, bases[side] + path, [schedule[i][0] for i in indexes],
                           start=start, stop=stop, on_shot=seen)
        return [renumbered(s) for s in shots]

    jobs = [(side, path, indexes) for side in range(len(bases))
            for path, indexes in by_path.items()]
    results = await asyncio.gather(*(one(*job) for job in jobs))
    ordered: list[dict[int, Shot]] = [{} for _ in bases]
    for (side, _, _), shots in zip(jobs, results, strict=True):
        ordered[side].update((s.index, s) for s in shots)
    return [[side[i] for i in sorted(side)] for side in ordered]


# ----- results -----------------------------------------------------------------------------------
@dataclass
class MixedRun:
    """One run of :meth:`OrderShop.start_mixed`: the writes' and the reads' records.

    Every read went at the same moment to the query side (``reads``) and to the command
    side (``command_reads``, the control arm); ``pairs`` holds them as (command side,
    query side) shots of the same read once the run has ended."""

    payment_ms: float
    writes: Recorder
    reads: Recorder
    command_reads: Recorder
    future: concurrent.futures.Future | None = None
    pairs: list[tuple[Shot, Shot]] = field(default_factory=list)
    rates: tuple[float, float, float] = (10.0, 50.0, 4.0)  # writes/s, reads/s, model s

    def p(self, which: str, q: float) -> float:
        """Percentile ``q`` of ``"writes"``, ``"reads"`` or ``"command_reads"`` (model ms,
        successful requests)."""
        return getattr(self, which).percentile(q)

    def estimate(self, which: str, q: float) -> Estimate:
        """Percentile ``q`` (0-100) of ``which`` with its order-statistics interval."""
        return quantile(getattr(self, which).latencies(), q / 100)

    def paired(self) -> tuple[list[float], list[float]]:
        """(command-side ms, query-side ms) of the reads both sides answered, pair by pair."""
        ok = [(c.ms, q.ms) for c, q in self.pairs if c.ok and q.ok]
        return [c for c, _ in ok], [q for _, q in ok]

    def read_penalty(self, q: float = 90) -> Estimate:
        """How much slower the command side answered the same reads: the paired difference
        of percentile ``q`` (model ms), with a bootstrap interval."""
        command, query = self.paired()
        return difference(command, query, q=q / 100, paired=True)

    def summary(self) -> str:
        """One line: each side's p50 and p99 and failures."""
        parts = []
        for which in ("writes", "reads", "command_reads"):
            rec = getattr(self, which)
            if len(rec):
                parts.append(f"{which.replace('_', ' ')} p50 {rec.percentile(50):.1f} ms, p99 "
                             f"{rec.percentile(99):.1f} ms ({len(rec)}, {rec.errors} failed)")
        return f"payment {self.payment_ms:g} ms: " + ("; ".join(parts) or "starting")


@dataclass(frozen=True)
class StalenessSample:
    """One look at one projection: how far its view is behind the acknowledged writes
    (*staleness*: writes whose version a reader does not see yet, and the age of the
    oldest of them) and the group's *lag* on the broker (end minus committed offsets)."""

    t: float
    stale_events: int
    lag_events: int
    stale_ms: float
    lag_ms: float


_controls = itertools.count(1)


class CommitFirstProjection:
    """The control arm of experiment 2, a classic mistake: the consumer commits each event's
    offset as soon as it receives it and applies it later, on another thread (auto-commit
    with the work handed to a queue). Its lag says "done" while its view is still behind.

    It reads the same topic into its own store; it stalls when the shop's projection does.
    """

    def __init__(self, shop: OrderShop) -> None:
        self.shop, n = shop, next(_controls)   # each control arm: its own group and store
        self.projection = OrderProjection(shop.lab.store(f"{shop.prefix}order_views_"
                                                         f"commit_first_{n}"), clock=model_now)
        self.group = f"{shop.prefix}order-summary-commit-first-{n}"
        self.received: queue.Queue[Any] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._apply, name="labsupport-commit-first",
                                        daemon=True)
        self._thread.start()
        self.worker = shop.lab.bus.worker(shop.topic, self.group, self.received.put,
                                          name=self.group)   # returns at once: committed
        self.worker.wait_assigned()

    def _apply(self) -> None:
        while not self._stop.is_set():
            try:
                event = self.received.get(timeout=0.05)
            except queue.Empty:
                continue
            while not self.shop.running.wait(0.05):   # stalls with the real projection
                if self._stop.is_set():
                    return
            self.projection.handle(event)

    def stop(self) -> None:
        """Stop consuming and applying (a second call does nothing)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self.worker.stop(raise_error=False)
        self._thread.join(5)


class StalenessWatch:
    """Samples, many times a second, for the shop's projection and (if given) the
    commit-first control arm: the *staleness* a reader sees and the group's *lag*.

    Staleness is measured from the read model itself: the acknowledged writes whose version
    its ``order_summary`` table does not show yet. Lag comes from the broker: end offsets
    minus the group's committed offsets. Order of each look: committed offsets first, then
    the views, then the end offsets and the acknowledged writes, so that for a projection
    that applies before it commits, every stale write is also counted in the lag.
    """

    def __init__(self, shop: OrderShop, pause: tuple[float, float],
                 control: CommitFirstProjection | None = None) -> None:
        self.shop, self.pause, self.control = shop, pause, control
        self.samples: list[StalenessSample] = []
        self.control_samples: list[StalenessSample] = []
        self.writes = Recorder("writes")
        self.start_t = model_now()
        self.traffic: concurrent.futures.Future | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labsupport-staleness",
                                        daemon=True)
        self.error: BaseException | None = None

    def start(self, traffic: concurrent.futures.Future) -> None:
        self.traffic = traffic
        self._thread.start()

    def _arms(self) -> list[tuple[str, OrderProjection, list[StalenessSample]]]:
        arms = [(self.shop.group, self.shop.projection, self.samples)]
        if self.control is not None:
            arms.append((self.control.group, self.control.projection, self.control_samples))
        return arms

    def _run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        shop = self.shop
        arms = self._arms()
        consumers = [Consumer(broker.consumer_config(f"{group}.{shop.lab.bus.run_id}",
                                                     enable_auto_commit=False))
                     for group, _, _ in arms]
        parts = [TopicPartition(shop.topic, p)
                 for p in range(len(shop.lab.bus.end_offsets(shop.topic)))]
        try:
            while not self._stop.is_set():
                finished = self.traffic is not None and self.traffic.done() and shop.caught_up()
                committed = [[max(tp.offset, 0) for tp in c.committed(parts, timeout=5)]
                             for c in consumers]
                views = [dict(projection.store.query("SELECT id, version FROM order_summary"))
                         for _, projection, _ in arms]
                ends = shop.lab.bus.end_offsets(shop.topic)
                acked = [w for w in list(shop.writes) if w.offset < ends[w.partition]]
                now = model_now()
                for (_, _, samples), done, view in zip(arms, committed, views, strict=True):
                    samples.append(self._sample(now, done, view, ends, acked))
                if finished:
                    break   # that last look came after the projection had caught up
                time.sleep(0.02)
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            for consumer in consumers:
                consumer.close()
            if self.control is not None:
                self.control.stop()   # the control arm lives as long as the sampling

    def _sample(self, now: float, committed: list[int], view: dict[str, int],
                ends: list[int], acked: list[Write]) -> StalenessSample:
        stale = [w.acked_at for w in acked if view.get(w.order, 0) < w.version]
        lagging = [w.acked_at for w in acked if w.offset >= committed[w.partition]]
        lag = sum(max(end - done, 0) for end, done in zip(ends, committed, strict=True))
        return StalenessSample(now - self.start_t, len(stale), lag,
                               (now - min(stale, default=now)) * 1000,
                               (now - min(lagging, default=now)) * 1000)

    def done(self) -> bool:
        """True when the traffic has ended and the read model has caught up."""
        return not self._thread.is_alive()

    def join(self, timeout: float = 30.0) -> StalenessWatch:
        """Wait for the traffic, the catch-up and the last sample; stops the control arm."""
        if self.traffic is not None:
            self.traffic.result(timeout)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(5)
            raise LabError(f"The read model did not catch up within {timeout:g} s.",
                           "check the broker (python -m labsupport broker status)")
        if self.error is not None:
            raise LabError(f"Sampling staleness failed: {self.error!r}.",
                           "check the broker (python -m labsupport broker status)")
        return self

    def _of(self, arm: str) -> list[StalenessSample]:
        require(arm in ("projection", "control"), f"arm is 'projection' or 'control', not "
                f"{arm!r}.")
        return self.samples if arm == "projection" else self.control_samples

    def violations(self, arm: str = "projection") -> int:
        """Looks where the view was further behind than the group's lag said (events or ms)."""
        return sum(s.stale_events > s.lag_events or s.stale_ms > s.lag_ms + 1e-6
                   for s in self._of(arm))

    def worst_hidden(self, arm: str = "control") -> StalenessSample | None:
        """The look where the lag hid the most staleness (stale minus lag, in events)."""
        return max(self._of(arm), key=lambda s: s.stale_events - s.lag_events, default=None)

    def max_stale_ms(self, arm: str = "projection") -> float:
        return max((s.stale_ms for s in self._of(arm)), default=math.nan)

    def max_stale_events(self, arm: str = "projection") -> int:
        return max((s.stale_events for s in self._of(arm)), default=0)

    def summary(self) -> str:
        if not self.samples:
            return "starting"
        last = self.samples[-1]
        line = (f"{len(self.samples)} looks; now {last.stale_events} events / "
                f"{last.stale_ms:.0f} ms stale, lag {last.lag_events} events; worst "
                f"{self.max_stale_events()} events / {self.max_stale_ms():.0f} ms stale")
        hidden = self.worst_hidden()
        if hidden is not None:
            line += (f" | commit-first control: {self.violations('control')} looks with "
                     f"staleness above the lag, worst {hidden.stale_events} events stale "
                     f"while the lag said {hidden.lag_events}")
        return line

    def draw(self, ax: Any) -> None:
        """Lag and staleness (events) over time, the pause shaded."""
        ax.axvspan(*self.pause, color="#bbbbbb", alpha=0.35, lw=0)
        ax.set_xlabel("model seconds (grey: projection paused)")
        ax.set_ylabel("events behind the write side")
        for samples, style, name in ((list(self.samples), "-", "projection"),
                                     (list(self.control_samples), ":", "commit-first")):
            if samples:
                t = [s.t for s in samples]
                ax.plot(t, [s.lag_events for s in samples], style, color=PALETTE[1], lw=3,
                        label=f"{name}: consumer lag (broker)")
                ax.plot(t, [s.stale_events for s in samples], style, color=PALETTE[0], lw=1.5,
                        label=f"{name}: staleness of its view")
        if self.samples:
            ax.legend(loc="upper right", fontsize=8)
        ax.set_ylim(bottom=0)

    def dashboard(self) -> LiveView:
        """A live chart of lag and staleness, redrawn until the run ends."""
        board = Dashboard("Staleness of the read model and consumer lag", [], self.draw)
        from IPython.display import display

        display(board)
        return board.watch(self.done, self.summary, hz=4)


@dataclass
class RywResult:
    """Reads made right after writes: fresh, stale or timed out, and what reading cost."""

    waited: bool
    fresh: int = 0
    stale: int = 0
    timeouts: int = 0
    read_ms: list[float] = field(default_factory=list)

    def add(self, written_version: int, seen_version: int, status: int, ms: float) -> None:
        if status == 504 or status <= 0:
            self.timeouts += 1
        elif seen_version >= written_version:
            self.fresh += 1
        else:
            self.stale += 1
        self.read_ms.append(ms)

    @property
    def reads(self) -> int:
        return self.fresh + self.stale + self.timeouts

    def summary(self) -> str:
        how = "waiting for the offset" if self.waited else "reading at once"
        return (f"{how}: {self.fresh} fresh, {self.stale} stale, {self.timeouts} timed out of "
                f"{self.reads}; read p50 {percentile(self.read_ms, 50):.1f} ms, "
                f"p99 {percentile(self.read_ms, 99):.1f} ms")


def draw_ryw(ax: Any, results: list[RywResult]) -> None:
    """Stacked bars: fresh, stale and timed-out reads for each way of reading."""
    labels = ["read at once" if not r.waited else "wait for offset" for r in results]
    bottom = [0] * len(results)
    for attr, colour in (("fresh", PALETTE[2]), ("stale", PALETTE[3]),
                         ("timeouts", PALETTE[5])):
        values = [getattr(r, attr) for r in results]
        ax.bar(labels, values, bottom=bottom, color=colour, label=attr)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("reads right after a write")
    ax.legend(loc="upper right", fontsize=8)


@dataclass
class RebuildResult:
    """A rebuild: the view before and after, the rows that differ, events replayed, seconds."""

    before: dict[str, list[tuple[Any, ...]]]
    after: dict[str, list[tuple[Any, ...]]]
    mismatches: list[str]
    replayed: int
    seconds: float

    def rows(self, snapshot: str = "before") -> int:
        return sum(len(rows) for rows in getattr(self, snapshot).values())

    def summary(self) -> str:
        return (f"replayed {self.replayed} events in {self.seconds:.1f} s (wall, including "
                f"the group join): {self.rows('before')} rows before, {self.rows('after')} "
                f"after, {len(self.mismatches)} differ")


def retention_note(topic: str) -> str:
    """How far back a replay can reach on this broker: the topic's retention settings on a
    real Kafka; on the embedded broker, a note (it keeps everything in memory)."""
    kind = broker.identity().kind
    if kind == "embedded":
        return ("Embedded broker: it keeps every record in memory and has no retention or "
                "compaction, so a replay always reaches offset 0 here. On Apache Kafka (the "
                "lab's container: LAB_BROKER=container python -m labsupport broker up), the "
                "topic's retention.ms and cleanup.policy decide that: run this cell there "
                "to see them.")
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient(broker.admin_config())
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        configs = admin.describe_configs([resource])[resource].result(timeout=10)
    except Exception as exc:  # a cluster may refuse DescribeConfigs: say so, do not fail
        return f"{kind} broker: could not read the topic's settings ({exc})."
    retention = configs["retention.ms"].value
    policy = configs["cleanup.policy"].value
    days = int(retention) / 86_400_000 if retention not in (None, "-1") else math.inf
    reach = "forever" if math.isinf(days) else f"{days:g} days"
    return (f"{kind} broker: {topic} has retention.ms={retention} (a replay reaches back "
            f"{reach}) and cleanup.policy={policy}.")
