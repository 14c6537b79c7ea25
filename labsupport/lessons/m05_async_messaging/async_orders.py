"""Module 05 · The same order endpoint three ways, on real services and the lab's broker.

:class:`OrderSystem` starts ``payment`` and ``inventory`` (HTTP services with variable
latency) and an ``orders`` service with four endpoints:

* ``/sync``: calls payment, then inventory, then answers 200 (the user waits for all of it);
* ``/async``: publishes the order to the ``orders`` topic, waits for the broker's
  acknowledgement only, answers **202 Accepted** with the order id; consumers in the
  ``fulfilment`` group do the work (the same payment and inventory calls) and record it;
* ``/rr``: publishes the order as a request and waits for the reply over Kafka
  (:mod:`labsupport.lessons.m05_async_messaging.request_reply`);
* ``/status?id=...``: answered at once from the status table the consumers keep (the
  hybrid: reads synchronous from a precomputed result, commands asynchronous).

The experiments on top of it: :class:`ThreeWays` (same load on all three), :class:`Burst`
(a command queue absorbs a burst at the consumers' pace) and :class:`Outage` (consumers
down: the producer keeps answering, lag grows, then drains, nothing lost).
All times are model milliseconds (wall time divided by ``LAB_TIME_SCALE``).
"""
from __future__ import annotations

import asyncio
import gc
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from aiohttp import web

from labsupport.broker.clients import CONSUMER_DEFAULTS
from labsupport.kit import evidence
from labsupport.kit.dashboard import PALETTE, LiveView
from labsupport.kit.evidence import Estimate, bootstrap
from labsupport.kit.experiment import Experiment
from labsupport.lessons.m05_async_messaging.kafka_basics import LagSeries
from labsupport.lessons.m05_async_messaging.request_reply import RequestReply
from labsupport.runtime import load
from labsupport.runtime.errors import LabError, require
from labsupport.runtime.lab import Lab, Response
from labsupport.runtime.latency import LatencyModel, Normal
from labsupport.runtime.messaging import Event, Worker
from labsupport.runtime.metrics import Recorder, percentile
from labsupport.runtime.services import fetch
from labsupport.runtime.settings import model_clock, to_model, to_wall
from labsupport.runtime.waiting import wait_until

DESIGNS = ("sync", "async", "rr")
LABELS = {"sync": "synchronous chain", "async": "publish + 202", "rr": "request-reply over Kafka"}
PAYMENT, INVENTORY = Normal(150, 50), Normal(100, 30)
"""The services' latency by default: about 250 ms of work per order, and it varies."""
SCHEMA = """CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    accepted_ms REAL, picked_ms REAL, done_ms REAL, work_ms REAL, partition INTEGER)"""


_OPEN: dict[int, OrderSystem] = {}   # the open system of each lab (by id)
_MADE: dict[int, int] = {}           # systems made so far per lab: each gets its own groups


def now_ms() -> float:
    """Model milliseconds on a monotonic clock (for time stamps within one run)."""
    return model_clock() * 1000


@dataclass(frozen=True)
class OrderRow:
    """One order in the status table (times in model ms on :func:`now_ms`'s clock)."""

    id: str
    status: str
    attempts: int
    accepted_ms: float | None
    picked_ms: float | None
    done_ms: float | None
    work_ms: float | None
    partition: int | None

    @property
    def end_to_end_ms(self) -> float:
        """Accepted (202 sent) to work done."""
        return (self.done_ms or 0.0) - (self.accepted_ms or 0.0)

    @property
    def queued_ms(self) -> float:
        """Accepted to picked up by a consumer: the time it spent as lag."""
        return (self.picked_ms or 0.0) - (self.accepted_ms or 0.0)


class OrderSystem:
    """payment + inventory + the orders service, the ``orders`` topic and its consumers.

    One per lab: making another (a cell run again) stops the previous one's consumers."""

    def __init__(self, lab: Lab, payment: LatencyModel | float = PAYMENT,
                 inventory: LatencyModel | float = INVENTORY, partitions: int = 2,
                 consumers: int = 2, responders: int = 2, seed: int = 5) -> None:
        require(isinstance(consumers, int) and 1 <= consumers <= partitions,
                f"consumers must be a whole number from 1 to partitions ({partitions}), got "
                f"{consumers!r}.", "a partition is read by one consumer of a group at a time: "
                "more consumers than partitions would sit idle")
        previous = _OPEN.get(id(lab))
        if previous is not None:   # the cell ran again: the old system's consumers stop first
            previous.close()
        _OPEN[id(lab)] = self
        _MADE[id(lab)] = made = _MADE.get(id(lab), 0) + 1
        self.group = "fulfilment" if made == 1 else f"fulfilment-{made}"   # a fresh group
        self.lab = lab
        self.rng = random.Random(seed)
        self.payment = lab.service("payment", payment, routes={"/charge": self._charge})
        self.inventory = lab.service("inventory", inventory, routes={"/reserve": self._reserve})
        self.topic = lab.bus.topic("orders", partitions)
        self.partitions = partitions
        self.publisher = lab.bus.publisher()
        self.store = lab.store("orders", fresh=True)
        self.store.execute(SCHEMA)
        self.accepted: dict[str, float] = {}
        self.placed: dict[str, tuple[int, int]] = {}        # the broker's ack: partition, offset
        self.sent: dict[str, dict[str, Any]] = {}           # each published order, as sent
        self.charges: dict[str, list[float]] = {}           # payment's own record, per order
        self.reservations: dict[str, list[float]] = {}      # inventory's own record
        self.deliveries: dict[str, int] = {}                # fulfil called, per order
        self.finished: dict[str, int] = {}                  # fulfil returned, per order
        self.idempotent = True
        self.skipped = 0
        self.callbacks_sent = 0
        self._ids = 0
        self.rr = RequestReply(lab, self.work, responders=responders,
                               prefix="" if made == 1 else f"rr{made}-")
        self.orders = lab.service("orders", 0, routes={
            "/sync": self._sync, "/async": self._async, "/rr": self._rr,
            "/status": self._status})
        self.consumers: list[Worker] = []
        self.start_consumers(consumers)

    # ----- payment and inventory keep their own records --------------------------------------
    async def _charge(self, request: web.Request) -> web.Response:
        """Payment's ``/charge``: its own work, and a record of every charge per order."""
        oid = str((await request.json()).get("order_id"))
        ms = await self.payment.work()
        self.charges.setdefault(oid, []).append(ms)
        return web.json_response({"order_id": oid, "charged": True, "ms": ms})

    async def _reserve(self, request: web.Request) -> web.Response:
        oid = str((await request.json()).get("order_id"))
        ms = await self.inventory.work()
        self.reservations.setdefault(oid, []).append(ms)
        return web.json_response({"order_id": oid, "reserved": True, "ms": ms})

    def charged(self, ids: list[str]) -> list[int]:
        """How many times payment charged each order in ``ids`` (its own count, not ours)."""
        return [len(self.charges.get(oid, [])) for oid in ids]

    def service_ms(self, oid: str) -> float:
        """Payment's and inventory's own work for ``oid`` (first charge and reservation)."""
        return self.charges.get(oid, [0.0])[0] + self.reservations.get(oid, [0.0])[0]

    # ----- the work: the same two calls whoever makes them ------------------------------------
    async def work(self, order: dict[str, Any]) -> float:
        """Charge (payment) then reserve (inventory) over HTTP; returns the two calls' ms."""
        total = 0.0
        for svc, path in ((self.payment, "charge"), (self.inventory, "reserve")):
            result = await fetch(self.lab.session, svc.url + path, None, svc.name, "POST",
                                 {"order_id": order.get("order_id")})
            if result["status"] != 200:
                raise LabError(f"{svc.name} answered {result['status']} for order "
                               f"{order.get('order_id')}.", f"check {svc.name}.describe()")
            total += result["ms"]
        return total

    def new_order(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A new order: an id, a customer, an amount (plus anything in ``body``)."""
        self._ids += 1
        order = {"order_id": f"o-{self._ids}", "customer": f"c{self.rng.randint(1, 8)}",
                 "amount": self.rng.randint(5, 120)}
        order.update(body or {})
        return order

    # ----- the endpoints --------------------------------------------------------------------------
    async def _body(self, request: web.Request) -> dict[str, Any]:
        if request.can_read_body:
            try:
                body = await request.json()
                return body if isinstance(body, dict) else {}
            except ValueError:
                return {}
        return {}

    async def _sync(self, request: web.Request) -> web.Response:
        order = self.new_order(await self._body(request))
        work_ms = await self.work(order)
        return web.json_response({"order_id": order["order_id"], "status": "done",
                                  "work_ms": work_ms})

    async def _async(self, request: web.Request) -> web.Response:
        order = self.new_order(await self._body(request))
        oid = order["order_id"]
        self.store.execute("INSERT INTO orders (id, status) VALUES (?, 'accepted')", (oid,))
        ack = await self.publisher.publish(self.topic, order, key=oid)   # the broker has it now
        self.accepted[oid] = now_ms()
        self.placed[oid], self.sent[oid] = (ack.partition, ack.offset), order
        return web.json_response({"order_id": oid, "status": "accepted",
                                  "status_url": f"/status?id={oid}"}, status=202)

    async def _rr(self, request: web.Request) -> web.Response:
        order = self.new_order(await self._body(request))
        work_ms = await self.rr.request(order, key=order["order_id"])
        return web.json_response({"order_id": order["order_id"], "status": "done",
                                  "work_ms": work_ms})

    async def _status(self, request: web.Request) -> web.Response:
        oid = request.query.get("id", "")
        status = self.store.scalar("SELECT status FROM orders WHERE id = ?", (oid,))
        if status is None:
            return web.json_response({"order_id": oid, "status": "unknown"}, status=404)
        return web.json_response({"order_id": oid, "status": status})

    # ----- the consumers -------------------------------------------------------------------------
    async def fulfil(self, event: Event) -> None:
        """A consumer's handler: skip an order already done (a re-delivery), else do the work
        and record it as done; then call the order's webhook if it gave one."""
        picked = now_ms()
        oid, order = event.key, event.value
        self.deliveries[oid] = self.deliveries.get(oid, 0) + 1
        try:
            await self._fulfil(event, oid, order, picked)
        finally:
            self.finished[oid] = self.finished.get(oid, 0) + 1

    async def _fulfil(self, event: Event, oid: str, order: dict[str, Any], picked: float) -> None:
        if self.idempotent and self.store.scalar(
                "SELECT status FROM orders WHERE id = ?", (oid,)) == "done":
            self.skipped += 1
            return
        work_ms = await self.work(order)
        self.store.execute(
            "INSERT INTO orders (id, status, attempts, accepted_ms, picked_ms, done_ms, work_ms, "
            "partition) VALUES (?, 'done', 1, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "status='done', attempts=attempts+1, accepted_ms=excluded.accepted_ms, "
            "picked_ms=excluded.picked_ms, done_ms=excluded.done_ms, "
            "work_ms=excluded.work_ms, partition=excluded.partition",
            (oid, self.accepted.get(oid), picked, now_ms(), work_ms, event.partition))
        if order.get("callback"):
            self.callbacks_sent += 1
            await fetch(self.lab.session, order["callback"], None, "webhook", "POST",
                        {"order_id": oid, "status": "done"})

    def redeliver(self, oid: str, idempotent: bool = True, timeout_s: float = 10.0) -> int:
        """Put order ``oid``'s message on the topic again (as a producer retry, or a consumer
        that crashed before its commit, would) and wait until a consumer has handled it.

        ``idempotent=False`` switches fulfil's "already done?" check off for this delivery:
        the control arm. Returns how many times payment has now charged the order."""
        require(oid in self.sent, f"order {oid!r} was not placed through /async.")
        before = self.finished.get(oid, 0)
        self.idempotent = idempotent
        try:
            self.publisher.send(self.topic, self.sent[oid], key=oid).result(10)
            wait_until(lambda: self.finished.get(oid, 0) > before, timeout_s, interval=0.01,
                       what=f"the re-delivered order {oid} to be handled")
        finally:
            self.idempotent = True
        return len(self.charges.get(oid, []))

    def start_consumers(self, count: int) -> list[Worker]:
        """Start ``count`` consumers in the ``fulfilment`` group (they join it: ~1 s)."""
        require(isinstance(count, int) and 1 <= count <= self.partitions,
                f"count must be 1 to {self.partitions}, got {count!r}.")
        self.consumers = [self.lab.bus.worker(self.topic, self.group, self.fulfil,
                                              name=f"fulfilment{i + 1}") for i in range(count)]
        return self.consumers

    def stop_consumers(self, settle_s: float = 10.0) -> None:
        """Every consumer leaves the group (what they committed stays on the broker).

        One at a time, as a rolling deploy does: after each leaves, wait (up to ``settle_s``
        wall seconds) until the others hold every partition again. The embedded broker can
        lose track of a group whose members all leave at the same moment; real Kafka does not.
        """
        for i, worker in enumerate(self.consumers):
            worker.stop()
            rest = self.consumers[i + 1:]
            if rest:
                wait_until(lambda rest=rest: sum(len(w.assignment) for w in rest)
                           >= self.partitions, settle_s)

    def close(self) -> None:
        """Stop every consumer, responder and listener at once (end of the experiment;
        the group is not used again, so they need not leave one at a time)."""
        if _OPEN.get(id(self.lab)) is self:
            del _OPEN[id(self.lab)]
        workers = [*self.consumers, *self.rr.workers]
        for worker in workers:
            worker.stop(timeout=0, raise_error=False)   # ask them all to stop...
        for worker in workers:
            worker.stop(raise_error=False)              # ...then wait for each

    def wait_ready(self, timeout: float = 15.0) -> OrderSystem:
        """Wait until every consumer and responder has its partitions."""
        for worker in [*self.consumers, *self.rr.workers]:
            worker.wait_assigned(timeout)
        wait_until(lambda: sum(len(w.assignment) for w in self.consumers) >= self.partitions,
                   timeout, interval=0.05, what="the fulfilment group to cover every partition")
        return self

    # ----- what the table says ---------------------------------------------------------------
    def rows(self, ids: list[str] | None = None) -> list[OrderRow]:
        """The status table (only ``ids`` if given)."""
        rows = [OrderRow(*r) for r in self.store.query(
            "SELECT id, status, attempts, accepted_ms, picked_ms, done_ms, work_ms, partition "
            "FROM orders")]
        if ids is None:
            return rows
        wanted = set(ids)
        return [r for r in rows if r.id in wanted]

    def done_count(self, ids: list[str]) -> int:
        """How many of ``ids`` the status table says are done."""
        return sum(r.status == "done" for r in self.rows(ids))

    def wait_done(self, ids: list[str], timeout_s: float = 20.0) -> bool:
        """Wait (wall seconds) until every order in ``ids`` is done; True if they all are."""
        return wait_until(lambda: self.done_count(ids) == len(ids), timeout_s, interval=0.01)

    def call(self, design: str, body: dict[str, Any] | None = None) -> Response:
        """One order through ``design`` (``sync``, ``async`` or ``rr``), from a user."""
        require(design in DESIGNS, f"design is one of {DESIGNS}, got {design!r}.")
        return self.lab.call(self.orders, design, method="POST", json=body or {})

    def warm(self) -> None:
        """One order each way, so connections are open before anything is measured."""
        ids = [self.call(d).body["order_id"] for d in DESIGNS]
        self.wait_done(ids[1:2], 10)


def ids_of(recorder_bodies: list[Any]) -> list[str]:
    """Order ids from 202 answers (anything without one is left out)."""
    return [b["order_id"] for b in recorder_bodies if isinstance(b, dict) and "order_id" in b]


# ----- load that keeps the answers --------------------------------------------------------------
async def place_orders(lab: Lab, url: str, times_s: list[float], recorder: Recorder,
                       body: dict[str, Any] | None = None,
                       start: float | None = None) -> list[Any]:
    """POST one order at each model time in ``times_s`` (open loop, :func:`load.fire`);
    records each latency, returns the answers' bodies in schedule order.

    Each latency runs from the moment the order was *due*, not from when the request really
    left: if the client or the machine falls behind, the user still waited from the moment
    they clicked (module 01: coordinated omission). ``start`` (a loop time) lets several
    streams share one schedule."""
    shots = await load.fire(lab.session, url, times_s, method="POST",
                            body=lambda _i, _t: dict(body or {}), start=start,
                            on_shot=lambda shot: recorder.record(shot.t, shot.ms, shot.status))
    return [shot.body for shot in shots]


def poisson_times(rate: float, seconds: float, seed: int) -> list[float]:
    """Arrival times (model s) of a Poisson stream of ``rate`` per second for ``seconds``."""
    require(rate > 0 and seconds > 0, f"rate and seconds must be above 0, got {rate!r}, "
            f"{seconds!r}.")
    rng, t, times = random.Random(seed), 0.0, []
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            return times
        times.append(t)


# ----- experiment: three designs, same load ------------------------------------------------------
def fetch_wait_ms() -> float:
    """How long an idle consumer's fetch may wait before the broker answers (model ms)."""
    return to_model(CONSUMER_DEFAULTS["fetch.wait.max.ms"] / 1000) * 1000


@dataclass
class ThreeWaysResult:
    """User-facing latency per design, the answers' bodies (in send order), the async
    orders' rows (in send order), where the broker put each, and payment's and inventory's
    own work time per order."""

    recorders: dict[str, Recorder]
    rows: list[OrderRow]
    rate: float
    bodies: dict[str, list[Any]] = field(default_factory=dict)
    placed: dict[str, tuple[int, int]] = field(default_factory=dict)
    service_ms: dict[str, float] = field(default_factory=dict)
    waits: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.waits:   # one run: each design's latencies in the order they were due
            self.waits = {d: [s.ms for s in sorted(rec.samples, key=lambda s: s.t)]
                          for d, rec in self.recorders.items()}

    def in_send_order(self, design: str) -> list[float]:
        """``design``'s latencies in the order the orders were due: index ``i`` is the same
        order moment for all three designs (pairs for a paired comparison)."""
        return self.waits[design]

    def pooled(self, other: ThreeWaysResult) -> ThreeWaysResult:
        """This run and ``other`` together: more samples; pairs stay within their run."""
        recorders = {}
        for design, rec in self.recorders.items():
            recorders[design] = Recorder(rec.name)
            for sample in [*rec.samples, *other.recorders[design].samples]:
                recorders[design].record(sample.t, sample.ms, sample.status)
        return ThreeWaysResult(
            recorders, self.rows + other.rows, self.rate,
            {d: self.bodies[d] + other.bodies[d] for d in self.bodies},
            {**self.placed, **other.placed}, {**self.service_ms, **other.service_ms},
            {d: self.waits[d] + other.waits[d] for d in self.waits})

    def calls_ms(self) -> float:
        """The consumer's own cost per order beyond the services' work (its HTTP client and
        the table write), measured in this run: mean of (picked to done) minus the work."""
        return self.mean([(r.done_ms or 0) - (r.picked_ms or 0) - self.service_ms[r.id]
                          for r in self.rows])

    def beyond_work(self, design: str) -> list[float]:
        """Per order: the user's wait minus the work it waited for (``sync`` or ``rr``), in
        send order. What is left is the path: HTTP hops, and for request-reply the two trips
        through the broker."""
        waits = self.in_send_order(design)
        return [w - float(b["work_ms"]) for w, b in zip(waits, self.bodies[design], strict=True)]

    def consumer_ms_per_order(self) -> float:
        """A consumer's time per order when orders wait for it, from this run: the two calls
        (picked up to done) plus, where the next order of the partition was already waiting,
        the gap from one done to the next picked up (the commit and the next poll)."""
        gaps: list[float] = []
        queues: dict[int, list[OrderRow]] = {}
        for row in self.rows:
            queues.setdefault(self.placed[row.id][0], []).append(row)
        for queue in queues.values():
            queue.sort(key=lambda r: self.placed[r.id][1])
            gaps += [(nxt.picked_ms or 0) - (prev.done_ms or 0) for prev, nxt in
                     zip(queue, queue[1:], strict=False)
                     if (nxt.accepted_ms or 0) < (prev.done_ms or 0)]
        gap = sum(gaps) / len(gaps) if gaps else 0.0
        return self.mean([(r.done_ms or 0) - (r.picked_ms or 0) for r in self.rows]) + gap

    def compare(self, a: Sequence[float] | str, b: Sequence[float] | str,
                q: float = 0.5) -> Estimate:
        """quantile(a) / quantile(b), paired by order moment (a design's name stands for its
        latencies in send order, "end to end" for the 202 orders'), with a bootstrap
        interval."""
        return evidence.ratio(self._series(a), self._series(b), q, paired=True)

    def mean_ratio(self, a: Sequence[float] | str, b: Sequence[float] | str) -> Estimate:
        """mean(a) / mean(b), paired by order moment (see :meth:`compare`)."""
        return bootstrap(lambda x, y: float(np.mean(x) / np.mean(y)), self._series(a),
                         self._series(b), paired=True, method="paired bootstrap of the ratio "
                         "of means")

    def _series(self, x: Sequence[float] | str) -> Sequence[float]:
        if x == "end to end":
            return self.end_to_end
        return self.in_send_order(x) if isinstance(x, str) else x

    def predicted_end_to_end(self, pickup_ms: float, per_order_ms: float | None = None,
                             queue: bool = True) -> list[float]:
        """Each 202 order's end to end, predicted without its own time stamps: partition by
        partition in the broker's offset order, an order starts when it arrives (plus
        ``pickup_ms``, an idle consumer's fetch) or when the order ahead of it is done,
        whichever is later, and takes payment's and inventory's own work time plus
        ``per_order_ms`` (the consumer's own cost per order: :meth:`calls_ms` when not
        given). Send order, like :attr:`rows`. ``queue=False`` leaves out the orders ahead
        (each order alone): the control."""
        if per_order_ms is None:
            per_order_ms = self.calls_ms()
        queues: dict[int, list[tuple[int, OrderRow]]] = {}
        for row in self.rows:
            partition, offset = self.placed[row.id]
            queues.setdefault(partition, []).append((offset, row))
        out: dict[str, float] = {}
        for waiting in queues.values():
            free = -float("inf")
            for _offset, row in sorted(waiting, key=lambda item: item[0]):
                arrived = row.accepted_ms or 0.0
                start = max(arrived + pickup_ms, free if queue else -float("inf"))
                free = start + self.service_ms[row.id] + per_order_ms
                out[row.id] = free - arrived
        return [out[row.id] for row in self.rows]

    def prediction_error(self, pickup_ms: float, per_order_ms: float | None = None,
                         queue: bool = True) -> Estimate:
        """Mean of (measured - predicted) end to end, paired per order, with its interval."""
        return bootstrap(lambda a, b: float(np.mean(a - b)), self.end_to_end,
                         self.predicted_end_to_end(pickup_ms, per_order_ms, queue), paired=True,
                         method="paired bootstrap of the mean difference")

    def p(self, design: str, q: float) -> float:
        """The ``q``-th percentile user-facing latency of ``design`` (ok answers, model ms)."""
        return self.recorders[design].percentile(q)

    def mean(self, values: list[float]) -> float:
        """The mean of ``values`` (``nan`` when empty)."""
        return sum(values) / len(values) if values else float("nan")

    @property
    def end_to_end(self) -> list[float]:
        """Accepted to done, per async order (model ms)."""
        return [r.end_to_end_ms for r in self.rows]

    def share_under(self, design: str, ms: float) -> float:
        """Share of ``design``'s answers that came back OK in under ``ms`` model ms."""
        samples = self.recorders[design].samples
        return sum(s.ok and s.ms < ms for s in samples) / len(samples) if samples else 0.0

    @property
    def p50_end_to_end(self) -> float:
        """The median end to end of the async orders (model ms)."""
        return percentile(self.end_to_end, 50)

    @property
    def queued(self) -> list[float]:
        """Accepted to picked up, per async order: the time spent as lag."""
        return [r.queued_ms for r in self.rows]

    @property
    def processing(self) -> list[float]:
        """The payment and inventory calls' own time, per async order."""
        return [r.work_ms or 0.0 for r in self.rows]

    def table(self) -> str:
        """p50/p99 per design, plus the async orders' end to end."""
        lines = [f"{'design':<26}{'p50 ms':>9}{'p99 ms':>9}{'answers':>9}"]
        for design in DESIGNS:
            rec = self.recorders[design]
            lines.append(f"{LABELS[design]:<26}{self.p(design, 50):>9.1f}{self.p(design, 99):>9.1f}"
                         f"{len(rec) - rec.errors:>9}")
        e2e = self.end_to_end
        lines.append(f"{'202: accepted -> done':<26}{percentile(e2e, 50):>9.1f}"
                     f"{percentile(e2e, 99):>9.1f}{len(e2e):>9}")
        return "\n".join(lines)


class ThreeWays(Experiment):
    """The same Poisson stream of orders sent to ``/sync``, ``/async`` and ``/rr`` at once.

    ``dashboard()`` shows it; ``press_run(rate=4, payment_ms=150)`` is its Run button."""

    TITLE = "One order endpoint, three designs"
    BUTTON = "Run"
    OTHER_KEYWORDS = ("seconds",)

    def __init__(self, system: OrderSystem, seed: int = 11) -> None:
        self.system, self.seed, self._seconds = system, seed, 5.0
        self.result: ThreeWaysResult | None = None

    def more(self) -> ThreeWaysResult:
        """The same load once more, pooled with the last result (for a claim's ``more=``)."""
        require(self.result is not None, "run() first.")
        earlier = self.result
        self.result = earlier.pooled(self.run(earlier.rate, self._seconds))
        return self.result

    def run(self, rate: float = 4.0, seconds: float = 5.0) -> ThreeWaysResult:
        """Send ``rate`` orders/s for ``seconds`` to each design; wait until all are done."""
        require(0 < rate <= 10, f"rate must be above 0 and at most 10 orders/s, got {rate!r}.",
                "the consumers do about 4 orders/s each")
        times = poisson_times(rate, seconds, self.seed)
        system, self._seconds = self.system, seconds
        gc.collect()   # no collector pause in the middle of the measurement
        recorders = {d: Recorder(LABELS[d]) for d in DESIGNS}

        async def all_three() -> list[list[Any]]:
            start = asyncio.get_running_loop().time()   # one schedule for the three designs
            return list(await asyncio.gather(*(
                place_orders(system.lab, system.orders.url + d, times, recorders[d],
                             start=start) for d in DESIGNS)))

        bodies = system.lab.run(all_three(), timeout=to_wall(seconds) + 60)
        ids = ids_of(bodies[1])
        if not system.wait_done(ids):
            raise LabError(f"only {system.done_count(ids)} of {len(ids)} accepted orders were "
                           "done after 20 s.", "check the consumers: system.consumers")
        rows = {r.id: r for r in system.rows(ids)}
        self.result = ThreeWaysResult(
            recorders, [rows[oid] for oid in ids], rate, dict(zip(DESIGNS, bodies, strict=True)),
            {oid: system.placed[oid] for oid in ids},
            {oid: system.service_ms(oid) for oid in ids})
        return self.result

    def summary(self) -> str:
        r = self.result
        if r is None:
            return "press Run"
        return (f"{len(r.rows)} orders per design at {r.rate:g}/s. p50 user wait: sync "
                f"{r.p('sync', 50):.0f} ms, 202 {r.p('async', 50):.1f} ms, request-reply "
                f"{r.p('rr', 50):.0f} ms; 202 orders done {percentile(r.end_to_end, 50):.0f} ms "
                "after they were accepted (median)")

    def draw(self, ax: Any) -> None:
        """One row per design: each user's wait as a dot; the 202 orders' end to end too."""
        r = self.result
        if r is None:
            return
        rows = [(LABELS[d], r.recorders[d].latencies(), PALETTE[i]) for i, d in enumerate(DESIGNS)]
        rows.append(("202: accepted -> done", r.end_to_end, PALETTE[5]))
        jitter = random.Random(0)
        for y, (_label, values, colour) in enumerate(rows):
            ax.plot(values, [y + jitter.uniform(-0.18, 0.18) for _ in values], "o",
                    color=colour, markersize=3, alpha=0.7)
            ax.plot([percentile(values, 50)] * 2, [y - 0.3, y + 0.3], color="black", lw=2)
        ax.set_yticks(range(len(rows)), [label for label, _, _ in rows], fontsize=8)
        ax.set_xlim(left=0)
        ax.set_xlabel("model ms (each dot one order; bar = median)")

    def make_controls(self) -> dict[str, Any]:
        """Sliders: order rate and payment's mean latency; Run sends the same load to all three."""
        import ipywidgets as w

        return {
            "rate": w.FloatSlider(4, min=1, max=7, step=1, description="orders/s"),
            "payment_ms": w.IntSlider(150, 10, 500, step=10, description="payment ms"),
        }

    def run_controls(self, rate: float, payment_ms: int,
                     seconds: float = 5.0) -> ThreeWaysResult:
        """What Run does: ``press_run(rate=..., payment_ms=..., seconds=5.0)``; ``rate`` and
        ``payment_ms`` move the sliders, ``seconds`` is how long the load lasts."""
        self.system.payment.set(latency=Normal(payment_ms, payment_ms / 3))
        return self.show(self.run(rate, seconds))


@dataclass
class StatusReads:
    """Status reads through ``GET /status``: their latencies, and what each answer said."""

    recorder: Recorder
    said: list[tuple[str, Any]]   # (order id, the "status" in the answer's body)

    def saying(self, status: str) -> int:
        """How many answers said ``status``."""
        return sum(1 for _oid, said in self.said if said == status)

    def orders_read(self) -> int:
        """How many different orders were read."""
        return len({oid for oid, _ in self.said})


def status_reads(system: OrderSystem, ids: list[str], rounds: int = 2,
                 users: int = 4) -> StatusReads:
    """Read the status of every order in ``ids`` ``rounds`` times, ``users`` at once (the
    hybrid's synchronous read), keeping what each answer said."""
    require(ids and rounds >= 1 and users >= 1, "status_reads needs order ids, rounds >= 1 "
            "and users >= 1.")
    reads = StatusReads(Recorder("status reads"), [])
    todo = [oid for _ in range(rounds) for oid in ids]

    async def user(k: int) -> None:
        for oid in todo[k::users]:
            answer = await fetch(system.lab.session, f"{system.orders.url}status?id={oid}",
                                 None, "orders")
            reads.recorder.record(0.0, answer["ms"], answer["status"])
            body = answer["body"] if isinstance(answer["body"], dict) else {}
            reads.said.append((oid, body.get("status")))

    async def everyone() -> None:
        await asyncio.gather(*(user(k) for k in range(users)))

    system.lab.run(everyone(), timeout=60)
    return reads


def status_right_after_202(system: OrderSystem) -> str:
    """Place one order through ``/async`` and read its status at once: what did it say?
    (The control for the reads: the table must not say "done" before the work is.)"""
    placed = system.call("async")
    oid = placed.body["order_id"]
    answer = system.lab.call(system.orders, f"status?id={oid}")
    system.wait_done([oid], 10)
    return str((answer.body or {}).get("status"))


# ----- experiment: a command queue absorbs a burst ----------------------------------------------
@dataclass
class BurstResult:
    """A burst of orders: their 202 latencies, their rows, the lag over time."""

    recorder: Recorder
    rows: list[OrderRow]
    lag: LagSeries
    consumers: int
    placed: dict[str, tuple[int, int]] = field(default_factory=dict)
    charged: list[int] = field(default_factory=list)
    pilot: BurstResult | None = None

    @property
    def drain_ms(self) -> float:
        """First order accepted to last order done (model ms)."""
        return max(r.done_ms or 0 for r in self.rows) - min(r.accepted_ms or 0 for r in self.rows)

    @property
    def throughput(self) -> float:
        """Orders done per model second while draining."""
        return len(self.rows) / (self.drain_ms / 1000) if self.drain_ms > 0 else float("nan")

    def per_partition(self) -> dict[int, int]:
        """Orders in each partition, as the broker's acks placed them."""
        out: dict[int, int] = {}
        for partition, _offset in self.placed.values():
            out[partition] = out.get(partition, 0) + 1
        return out

    @property
    def per_order_ms(self) -> float:
        """A consumer's time per order (picked to done, mean, model ms)."""
        spans = [(r.done_ms or 0) - (r.picked_ms or 0) for r in self.rows]
        return sum(spans) / len(spans)

    def busiest(self) -> int:
        """Orders in the busiest partition (the broker's acks)."""
        return max(self.per_partition().values())

    def pace_ms(self, pickup_ms: float = 0.0) -> float:
        """A consumer's time per order while orders wait: this burst's drain, less one
        pickup, over its busiest partition's orders (model ms)."""
        return (self.drain_ms - pickup_ms) / self.busiest()

    def predicted_drain_ms(self, per_order_ms: float, pickup_ms: float = 0.0) -> float:
        """The busiest partition's orders, one after another: count x ``per_order_ms``, a
        time per order measured *before* the burst (not from this burst's rows)."""
        return self.busiest() * per_order_ms + pickup_ms


class Burst(Experiment):
    """``orders`` users place an order at the same moment; the consumers work through them."""

    TITLE = "A burst of orders on a command queue"
    BUTTON = "Send the burst"

    def __init__(self, system: OrderSystem) -> None:
        self.system = system
        self.result: BurstResult | None = None
        self._thread: threading.Thread | None = None
        self._lag: LagSeries | None = None
        self._ids: list[str] = []
        self._phase = "burst"

    def _waiting(self) -> int:
        # Our own count: orders accepted in this burst that are not done yet.
        return len(self._ids) - self.system.done_count(self._ids) if self._ids else 0

    def run(self, orders: int = 30, pilot: int = 8) -> BurstResult:
        """Send a small ``pilot`` burst and wait until it drained (its pace is the
        prediction's time per order: other orders, the same machine, the same dashboard
        drawing), then the burst: sample the lag every 20 ms (wall) until it is 0, return
        the result (``pilot=0``: no pilot)."""
        require(isinstance(pilot, int) and 0 <= pilot <= 50,
                f"pilot must be a whole number from 0 to 50, got {pilot!r}.")
        first = self._drain(pilot, "pilot") if pilot else None
        self.result = replace(self._drain(orders, "burst"), pilot=first)
        return self.result

    def _drain(self, orders: int, phase: str) -> BurstResult:
        self._phase = phase
        require(isinstance(orders, int) and 1 <= orders <= 200,
                f"orders must be a whole number from 1 to 200, got {orders!r}.")
        system, recorder = self.system, Recorder("burst")
        gc.collect()
        self._ids, self._lag = [], LagSeries(self._waiting)
        future = system.lab.submit(place_orders(system.lab, system.orders.url + "async",
                                                [0.0] * orders, recorder))

        def drained() -> bool:
            if future.done() and not self._ids:
                self._ids = ids_of(future.result())
            return self._lag.sample() == 0 and bool(self._ids)

        wait_until(drained, 30)
        if len(self._ids) != orders or not system.wait_done(self._ids, 1):
            raise LabError(f"the burst did not drain: {self._waiting()} orders still waiting.",
                           "check the consumers: system.consumers")
        return BurstResult(recorder, system.rows(self._ids), self._lag, len(system.consumers),
                           {oid: system.placed[oid] for oid in self._ids},
                           system.charged(self._ids))

    def start(self, orders: int = 30) -> None:
        """:meth:`run` in a background thread (for the live dashboard)."""
        self.result = None
        self._thread = threading.Thread(target=self.run, args=(orders,), daemon=True,
                                        name="labsupport-burst")
        self._thread.start()

    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def summary(self) -> str:
        r = self.result
        if r is None:
            lag = self._lag.last if self._lag else 0
            return f"{self._phase} running: {lag} orders waiting"
        return (f"{len(r.rows)} orders accepted, 202 p99 {r.recorder.percentile(99):.1f} ms; "
                f"peak lag {r.lag.peak}, drained in {r.drain_ms:.0f} ms by {r.consumers} "
                f"consumers ({r.throughput:.1f} orders/s; {r.per_order_ms:.0f} ms per order)"
                + (f"; a pilot of {len(r.pilot.rows)} just before drained in "
                   f"{r.pilot.drain_ms:.0f} ms" if r.pilot else ""))

    def draw(self, ax: Any) -> None:
        if self._lag is not None:
            self._lag.draw(ax)

    def make_controls(self) -> dict[str, Any]:
        """A slider for the burst size; Run; the lag plot redraws live."""
        import ipywidgets as w

        return {"orders": w.IntSlider(30, 5, 60, step=5, description="burst")}

    def run_controls(self, orders: int) -> LiveView:
        """What the button does: ``press_run(orders=30)`` moves the slider and starts the
        burst; the lag plot follows it live."""
        self.start(orders)
        return self.board.watch(self.done, self.summary, hz=5)


# ----- experiment: consumers down, then back -------------------------------------------------------
@dataclass
class OutageResult:
    """Three phases: consumers up, consumers down, consumers back (fresh members)."""

    up: Recorder
    down: Recorder
    lag_at_restart_broker: int
    lag_counted: int
    accepted_ids: list[str]
    rows: list[OrderRow]
    lag: LagSeries
    marks: dict[str, float] = field(default_factory=dict)
    charged: list[int] = field(default_factory=list)      # payment's count per accepted order
    redelivered: dict[str, int] = field(default_factory=dict)   # the re-delivery's counts
    control: dict[str, int] = field(default_factory=dict)       # the same, fulfil not idempotent

    @property
    def processed_once(self) -> int:
        """Accepted orders payment charged exactly once (its own record)."""
        return self.charged.count(1)

    @property
    def lost(self) -> int:
        """Accepted orders payment never charged."""
        return self.charged.count(0)

    @property
    def twice(self) -> int:
        """Accepted orders payment charged more than once."""
        return sum(c > 1 for c in self.charged)


class Outage:
    """Orders keep coming while the fulfilment consumers are stopped, then restarted."""

    def __init__(self, system: OrderSystem, rate: float = 6.0, seed: int = 21) -> None:
        self.system, self.rate, self.seed = system, rate, seed
        self.result: OutageResult | None = None

    def _orders(self, seconds: float, seed: int, recorder: Recorder) -> Any:
        return self.system.lab.submit(place_orders(
            self.system.lab, self.system.orders.url + "async",
            poisson_times(self.rate, seconds, seed), recorder))

    def run(self, up_s: float = 1.0, down_s: float = 2.0) -> OutageResult:
        """Orders for ``up_s`` with consumers, ``down_s`` without, then restart and drain."""
        system = self.system
        gc.collect()
        up = Recorder("202 with consumers")
        up_ids = ids_of(self._orders(up_s, self.seed, up).result(to_wall(up_s) + 30))
        system.wait_done(up_ids, 10)
        system.stop_consumers()
        since = now_ms()

        def waiting() -> int:   # our own count: accepted since the stop, not done yet
            ids = [oid for oid, t in list(system.accepted.items()) if t >= since]
            return len(ids) - system.done_count(ids)

        lag = LagSeries(waiting)
        down = Recorder("202 without consumers")
        future = self._orders(down_s, self.seed + 1, down)
        while not future.done():
            lag.sample()
            time.sleep(0.05)
        down_ids = ids_of(future.result())
        counted = lag.sample()
        broker_lag = system.lab.bus.lag(system.topic, system.group)
        marks = {"stopped": 0.0, "restarted": lag.points[-1][0]}
        system.start_consumers(len(system.consumers) or 1)
        wait_until(lambda: lag.sample() == 0, 20)
        marks["drained"] = lag.points[-1][0]
        ids = up_ids + down_ids
        charged = system.charged(ids)   # before the re-deliveries below
        again, control = self._redeliveries(up_ids)
        self.result = OutageResult(up, down, broker_lag, counted, ids, system.rows(ids), lag,
                                   marks, charged, again, control)
        return self.result

    def _redeliveries(self, done_ids: list[str]) -> tuple[dict[str, int], dict[str, int]]:
        """One done order's message delivered again (as after a crash before the commit), and
        the control arm: another done order delivered again with fulfil's check switched off.
        Counts come from fulfil's calls and from payment's own record."""
        system = self.system
        require(len(done_ids) >= 2, "the outage needs two orders before the stop.")
        out = []
        for oid, idempotent in ((done_ids[0], True), (done_ids[1], False)):
            charges = system.redeliver(oid, idempotent=idempotent)
            out.append({"order": oid, "deliveries": system.deliveries.get(oid, 0),
                        "charges": charges})
        return out[0], out[1]

    def summary(self) -> str:
        r = self.result
        if r is None:
            return "not run yet"
        return (f"202 p50 {r.up.percentile(50):.1f} ms with consumers, "
                f"{r.down.percentile(50):.1f} ms without; lag at restart {r.lag_at_restart_broker} "
                f"(broker) / {r.lag_counted} (counted); {len(r.accepted_ids)} accepted, "
                f"payment charged {r.processed_once} once, {r.lost} never, {r.twice} twice; "
                f"order {r.redelivered['order']} delivered {r.redelivered['deliveries']}x, "
                f"charged {r.redelivered['charges']}x; without the check, "
                f"{r.control['order']} delivered {r.control['deliveries']}x, charged "
                f"{r.control['charges']}x")

    def draw(self, ax: Any) -> None:
        r = self.result
        if r is None:
            return
        r.lag.draw(ax)
        ax.axvspan(r.marks["stopped"], r.marks["restarted"], color="#bbbbbb", alpha=0.35, lw=0)
        ax.axvline(r.marks["drained"], color=PALETTE[2], linestyle="--", label="drained")
        ax.legend(loc="upper left", fontsize=8)
        ax.set_xlabel("model seconds since the consumers stopped (grey: no consumers)")
