"""Module 05 · Async messaging: the exercise questions.

::

    from labsupport.exercises.m05 import q1, q2, q3, shop

* ``q1``: turn a blocking order endpoint into publish + 202 + a consumer. Define three
  ``async def`` functions:

  - ``place_order(request)``: read the order (``await request.json()``), give it an id
    (``shop.new_order_id()``), ``await shop.publish(shop.topic, order, key=order_id)`` and
    answer **202** with ``{"order_id": ...}``;
  - ``fulfil(event)``: the consumer's handler: ``await shop.pay(order_id, amount)``,
    ``await shop.reserve(order_id)``, then ``shop.set_status(order_id, "done")``; a message
    can arrive twice, so skip an order that is already done;
  - ``order_status(request)``: ``GET /status?id=...`` answers ``{"order_id": ..., "status":
    ...}`` from ``shop.get_status`` (the hybrid: a fast read of a precomputed result).

* ``q2``: a number ``burst_drain_ms``: predict when a burst on six partitions read by three
  consumers is drained (:data:`BURST_CASE`).
* ``q3``: a dict ``lag_diagnosis``: read a lag table (:data:`LAG_RUN`) and name the hot
  partition and the one whose consumer is stuck.

``shop`` is live only while ``q1.check()`` runs: the checker starts real ``payment`` and
``inventory`` services, a topic on the lab's broker, a consumer that calls your ``fulfil``,
and your endpoints, then places orders, re-delivers one message, and reads every status.
"""
from __future__ import annotations

import asyncio
import contextvars
import inspect
import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiohttp import web

from labsupport.course import progress
from labsupport.course.checks import (
    MISSING,
    Diagnosis,
    LearnerRaised,
    Mistake,
    NotYet,
    Question,
    Step,
    Value,
    caller_namespace,
    describe_error,
    notebook_namespace,
)
from labsupport.kit import evidence
from labsupport.kit.evidence import Estimate
from labsupport.runtime.errors import LabError
from labsupport.runtime.latency import Normal
from labsupport.runtime.metrics import percentile
from labsupport.runtime.services import fetch
from labsupport.runtime.settings import to_model, to_wall
from labsupport.runtime.waiting import wait_until

MODULE = "05"
ORDERS = 12                        # orders the checker places
WORK_MS = 250.0                    # payment (150) + inventory (100): what a blocking answer costs
P50_BOUND_MS = 0.3 * WORK_MS       # place_order's own time beyond the broker's ack (median:
                                   # one slow answer on a busy machine is noise; the ack is
                                   # left out, since a busy broker slows it for every answer)
WAIT_S = 12.0                      # wall seconds to wait for the consumer to catch up
_COUNTER = itertools.count(1)
_ORDER_IDS = itertools.count(1)    # order ids never repeat, across checks: nothing a previous
                                   # run left in your memory can look like this run's orders
_REQUEST: contextvars.ContextVar[_Request | None] = contextvars.ContextVar("m05_request",
                                                                          default=None)


class Handlers(NamedTuple):
    """The three functions the question checks."""

    place_order: Any
    fulfil: Any
    order_status: Any


@dataclass
class _Request:
    """What happened inside one call of the learner's ``place_order``."""

    started: int = 0
    acked: int = 0
    answered: bool = False
    acked_late: int = 0
    worked: list[str] = field(default_factory=list)
    publish_s: float = 0.0             # wall seconds spent awaiting the broker's ack
    handler_s: float = 0.0             # wall seconds place_order took in all

    def beyond_publish_ms(self) -> float:
        """Model ms place_order spent on anything but awaiting the broker's acknowledgement."""
        return to_model(max(0.0, self.handler_s - self.publish_s)) * 1000


@dataclass
class _Run:
    """Everything the checker saw while one answer ran."""

    topic: str = ""
    paid: dict[str, list[float]] = field(default_factory=dict)
    reserved: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)
    early_done: list[str] = field(default_factory=list)
    bad_publish: list[str] = field(default_factory=list)
    errors: list[tuple[BaseException, str]] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    ids: int = 0


class Shop:
    """What your functions may use. It works only while ``q1.check()`` runs them."""

    def __init__(self) -> None:
        self._run: _Run | None = None
        self._lab: Any = None
        self._publisher: Any = None
        self._payment: Any = None
        self._inventory: Any = None

    def _live(self) -> _Run:
        if self._run is None:
            raise LabError("`shop` works only while q1.check() runs your functions.",
                           "define place_order, fulfil and order_status, then run "
                           "q1.check()")
        return self._run

    @property
    def topic(self) -> str:
        """The orders topic (its full name on the broker)."""
        return self._live().topic

    def new_order_id(self) -> str:
        """A new order id, e.g. ``'o-7'`` (never one an earlier check used)."""
        run = self._live()
        run.ids += 1
        return f"o-{next(_ORDER_IDS)}"

    async def publish(self, topic: str, value: Any, key: str | None = None) -> Any:
        """Publish ``value`` to ``topic`` with ``key``; returns once the broker acknowledged."""
        run, request = self._live(), _REQUEST.get()
        if request is not None:
            request.started += 1
        if topic != run.topic:
            run.bad_publish.append(f"topic {topic!r}")
            raise LabError(f"there is no topic {topic!r} here.", "publish to shop.topic")
        if key is None:
            run.bad_publish.append("no key")
        began = time.perf_counter()
        delivery = await self._publisher.publish(topic, value, key=key)
        if request is not None:
            request.publish_s += time.perf_counter() - began
            request.acked += 1
            request.acked_late += request.answered
        return delivery

    async def pay(self, order_id: str, amount: float) -> None:
        """Charge ``amount`` for ``order_id`` at the payment service (about 150 ms)."""
        await self._work(self._payment, "pay", order_id, {"order_id": order_id,
                                                           "amount": amount})

    async def reserve(self, order_id: str) -> None:
        """Reserve the goods of ``order_id`` at the inventory service (about 100 ms)."""
        await self._work(self._inventory, "reserve", order_id, {"order_id": order_id})

    async def _work(self, svc: Any, path: str, order_id: str, body: dict[str, Any]) -> None:
        self._live()
        request = _REQUEST.get()
        if request is not None:
            request.worked.append(path)
        result = await fetch(self._lab.session, svc.url + path, None, svc.name, "POST", body)
        if result["status"] != 200:
            raise LabError(f"{svc.name} answered {result['status']}.", "send the order id")

    def set_status(self, order_id: str, status: str) -> None:
        """Record ``order_id``'s status (e.g. ``"done"``) in the orders table."""
        run = self._live()
        if status == "done" and not (run.paid.get(order_id) and run.reserved.get(order_id)):
            run.early_done.append(order_id)
        run.statuses[order_id] = status

    def get_status(self, order_id: str) -> str | None:
        """``order_id``'s status, or ``None`` if nothing was recorded yet."""
        return self._live().statuses.get(order_id)

    def __repr__(self) -> str:
        state = "live" if self._run is not None else "not live (q1.check() makes it live)"
        return f"<Shop {state}: topic, new_order_id, publish, pay, reserve, set/get_status>"


shop = Shop()


# ----- running the learner's three functions ---------------------------------------------------------
class _Harness:
    """Real services and a consumer around the learner's functions."""

    def __init__(self, lab: Any, answer: Handlers) -> None:
        self.lab, self.answer, self.run = lab, answer, _Run()
        n = next(_COUNTER)
        self.payment = lab.service(f"chk05_payment{n}", Normal(150, 20),
                                   routes={"/pay": self._pay})
        self.inventory = lab.service(f"chk05_inventory{n}", Normal(100, 15),
                                     routes={"/reserve": self._reserve})
        self.shop_svc = lab.service(f"chk05_shop{n}", 0, routes={
            "/orders": self._place, "/status": self._status})
        self.services = [self.payment, self.inventory, self.shop_svc]
        self.run.topic = lab.bus.topic(f"chk05.orders{n}", 2)
        self.requests: list[_Request] = []
        shop._run, shop._lab = self.run, lab
        shop._publisher = lab.bus.publisher()
        shop._payment, shop._inventory = self.payment, self.inventory
        self.worker = lab.bus.worker(self.run.topic, f"chk05-fulfil{n}", self._fulfil,
                                     name=f"chk05-fulfil{n}")

    # the services' own records ------------------------------------------------------------------
    async def _pay(self, request: web.Request) -> web.Response:
        body = await request.json()
        await self.payment.work()
        self.run.paid.setdefault(str(body.get("order_id")), []).append(body.get("amount"))
        return web.json_response({"ok": True})

    async def _reserve(self, request: web.Request) -> web.Response:
        body = await request.json()
        await self.inventory.work()
        oid = str(body.get("order_id"))
        self.run.reserved[oid] = self.run.reserved.get(oid, 0) + 1
        return web.json_response({"ok": True})

    # the learner's functions, wrapped -----------------------------------------------------------------
    async def _place(self, request: web.Request) -> web.StreamResponse:
        record = _Request()
        self.requests.append(record)
        _REQUEST.set(record)
        began = time.perf_counter()
        try:
            return await self.answer.place_order(request)
        except Exception as exc:
            self.run.errors.append((exc, "await place_order(request)"))
            return web.json_response({"error": repr(exc)}, status=500)
        finally:
            record.handler_s = time.perf_counter() - began
            record.answered = True

    async def _status(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self.answer.order_status(request)
        except Exception as exc:
            self.run.errors.append((exc, f"await order_status(request) for {request.query_string}"))
            return web.json_response({"error": repr(exc)}, status=500)

    async def _fulfil(self, event: Any) -> None:
        self.run.events.append(event)
        try:
            result = self.answer.fulfil(event)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self.run.errors.append((exc, "await fulfil(event)"))

    def close(self) -> None:
        self.worker.stop(raise_error=False)
        shop._run = None
        for svc in self.services:
            self.lab.remove(svc.name, timeout=10)

    # the scenario ---------------------------------------------------------------------------------------
    def place(self) -> list[dict[str, Any]]:
        """ORDERS orders, 50 model ms apart; each answer with its latency and first status."""
        url = self.shop_svc.url

        async def one(i: int) -> dict[str, Any]:
            await asyncio.sleep(to_wall(i * 0.05))
            order = {"customer": f"c{i % 4 + 1}", "amount": 10 + i}
            placed = await fetch(self.lab.session, url + "orders", None, "shop", "POST", order)
            placed["order"] = order
            body = placed["body"]
            if placed["status"] == 202 and isinstance(body, dict) and "order_id" in body:
                oid = body["order_id"]
                first = await fetch(self.lab.session, f"{url}status?id={oid}", None, "shop")
                placed["first_status"] = first
                placed["work_done_then"] = bool(self.run.paid.get(str(oid))
                                                and self.run.reserved.get(str(oid)))
            return placed

        async def everyone() -> list[dict[str, Any]]:
            return list(await asyncio.gather(*(one(i) for i in range(ORDERS))))

        return self.lab.run(everyone(), timeout=60)

    def status_of(self, oid: str) -> dict[str, Any]:
        return self.lab.run(fetch(self.lab.session, f"{self.shop_svc.url}status?id={oid}",
                                  None, "shop"), timeout=10)

    def wait(self, condition: Callable[[], bool]) -> bool:
        """Wait until ``condition()``, an error of the learner's or a stopped worker."""
        wait_until(lambda: condition() or self.run.errors or not self.worker.running, WAIT_S)
        return condition()

    def raise_learner_error(self) -> None:
        if self.run.errors:
            error, call = self.run.errors[0]
            raise LearnerRaised(error, call)
        if self.worker.error is not None:
            raise LearnerRaised(self.worker.error, "fulfil(event)")


@contextmanager
def scratch_lab() -> Iterator[Any]:
    """The learner's current lab (the checker's services removed again after) or a private one."""
    from labsupport.runtime import lab as lab_module

    current = lab_module.current()
    own = current is None or current.closed
    lab = lab_module.Lab(seed=5) if own else current
    try:
        yield lab
    finally:
        if own:
            lab.close()


# ----- the steps, each wrong answer with its own message ------------------------------------------------
def _interface(answer: Any) -> None:
    for name in Handlers._fields:
        fn = getattr(answer, name, None)
        if not callable(fn):
            raise NotYet(f"`{name}` should be a function (async def {name}(...):), got "
                         f"{type(fn).__name__}.")
        if not inspect.iscoroutinefunction(fn):
            what = "it awaits shop.pay and shop.reserve" if name == "fulfil" else \
                "aiohttp awaits its handlers"
            raise NotYet(f"`{name}` must be an `async def` ({what}).")


def _check_answers(h: _Harness, placed: list[dict[str, Any]]) -> list[str]:
    run = h.run
    if any(p["status"] == 500 for p in placed):
        h.raise_learner_error()
    for record in h.requests:
        if record.worked:
            raise NotYet(f"place_order called shop.{record.worked[0]}(...) before it answered: "
                         "it still blocks. Publish the order and answer 202 at once; the "
                         "payment and the reservation belong in fulfil, which runs later in "
                         "the consumer.")
    if any("topic" in b for b in run.bad_publish):
        wrong = next(b for b in run.bad_publish if "topic" in b)
        raise NotYet(f"place_order published to {wrong.split(' ', 1)[1]}; publish to "
                     "shop.topic, the topic the consumer reads.")
    if "no key" in run.bad_publish:
        raise NotYet("place_order published without a key. Use key=order_id: the key picks "
                     "the partition, so every message about one order lands in the same "
                     "partition, in order, and fulfil can tell which order it is.")
    statuses = {p["status"] for p in placed}
    if statuses == {200}:
        raise NotYet("place_order answered 200 OK. Answer 202 Accepted "
                     "(web.json_response(..., status=202)): the order is accepted, not done; "
                     "200 tells the client the work is finished.")
    if statuses != {202}:
        raise NotYet(f"place_order answered {sorted(statuses)}; it should answer 202 Accepted "
                     "to every order.")
    bodies = [p["body"] for p in placed]
    if not all(isinstance(b, dict) and b.get("order_id") for b in bodies):
        raise NotYet("the 202 answer has no order id. Answer {\"order_id\": order_id}: "
                     "without it the client cannot ask for the status or match a webhook.")
    if not all(r.started for r in h.requests):
        raise NotYet("place_order answered without publishing anything (did you call "
                     "shop.publish without `await`? Then it never runs).")
    if any(r.acked_late or r.acked < r.started for r in h.requests):
        raise NotYet("place_order answered 202 before the broker acknowledged the message "
                     "(e.g. asyncio.create_task(shop.publish(...))). `await shop.publish(...)` "
                     "before answering: a 202 is a promise that the order is safely in the log; "
                     "if the broker never takes it, the order is lost although the user was "
                     "told it was accepted.")
    ids = [str(b["order_id"]) for b in bodies]
    if len(set(ids)) != len(ids):
        raise NotYet(f"two orders got the same id ({ids}); use shop.new_order_id() for each.")
    p50 = percentile([r.beyond_publish_ms() for r in h.requests], 50)
    if p50 > P50_BOUND_MS:
        raise NotYet(f"place_order spent {p50:.0f} ms (median) on things other than the "
                     f"publish before it answered; that should be a few ms, well under the "
                     f"{WORK_MS:.0f} ms of work. Is place_order waiting for something besides "
                     "the publish?")
    return ids


def _check_status_while_pending(placed: list[dict[str, Any]]) -> set[str]:
    """Each first status read must be 200 and never "done" before the work; returns what
    the reads said."""
    said_while_pending: set[str] = set()
    for p in placed:
        first = p.get("first_status") or {}
        said = (first.get("body") or {}).get("status") if isinstance(first.get("body"),
                                                                      dict) else None
        if not p.get("work_done_then"):
            said_while_pending.add(str(said))
        if said == "done" and not p.get("work_done_then"):
            raise NotYet("order_status said 'done' before the order was paid and reserved. "
                         "Report what fulfil recorded (shop.get_status), not what you hope.")
        if first.get("status") != 200:
            raise NotYet(f"order_status answered {first.get('status')} for an order that is "
                         "accepted but not done yet; answer 200 with a status such as "
                         "'pending' (shop.get_status returns None until fulfil sets one).")
    return said_while_pending


def _check_fulfilment(h: _Harness, ids: list[str], amounts: dict[str, float]) -> None:
    run = h.run
    complete = h.wait(lambda: all(run.paid.get(i) and run.reserved.get(i) for i in ids)
                      and all(run.statuses.get(i) == "done" for i in ids))
    h.raise_learner_error()
    if not run.events:
        raise NotYet("fulfil was never called: nothing reached the consumer. Publish to "
                     "shop.topic.")
    if run.early_done:
        raise NotYet("fulfil set the status to 'done' before shop.pay and shop.reserve had "
                     "finished. Do the work first, then record it as done.")
    unpaid = [i for i in ids if not run.paid.get(i)]
    if unpaid:
        raise NotYet(f"{len(unpaid)} of {len(ids)} orders were never paid (e.g. {unpaid[0]}). "
                     "In fulfil, `await shop.pay(order_id, amount)` (without await it never "
                     "runs), with the order id you answered to the client.")
    unreserved = [i for i in ids if not run.reserved.get(i)]
    if unreserved:
        raise NotYet(f"{len(unreserved)} orders were paid but never reserved; "
                     "`await shop.reserve(order_id)` too.")
    wrong = [i for i in ids if run.paid[i][0] != amounts[i]]
    if wrong:
        raise NotYet(f"order {wrong[0]} was charged {run.paid[wrong[0]][0]!r}, but it was for "
                     f"{amounts[wrong[0]]!r}: charge event.value['amount'].")
    twice = [i for i in ids if len(run.paid[i]) > 1]
    if twice:
        raise NotYet(f"order {twice[0]} was paid {len(run.paid[twice[0]])} times although each "
                     "order was published once.")
    if not complete:
        raise NotYet("every order was paid and reserved, but fulfil never recorded them as "
                     "done: shop.set_status(order_id, 'done') after the work.")


def _check_status_done(h: _Harness, ids: list[str]) -> None:
    for oid in ids:
        answer = h.status_of(oid)
        h.raise_learner_error()
        body = answer["body"] if isinstance(answer["body"], dict) else {}
        if answer["status"] != 200 or body.get("status") != "done":
            raise NotYet(f"order {oid} is done (paid, reserved, recorded), but GET "
                         f"/status?id={oid} answered {answer['status']} {answer['body']!r}. "
                         "Answer {\"order_id\": ..., \"status\": shop.get_status(order_id)}.")


def _check_redelivery(h: _Harness, ids: list[str]) -> str:
    run = h.run
    again = run.events[0]
    before = len(run.events)
    shop._publisher.send(run.topic, again.value, key=again.key).result(10)
    h.wait(lambda: len(run.events) > before)
    time.sleep(to_wall(0.4))   # time for a second payment to arrive, if there is one
    h.raise_learner_error()
    twice = [i for i in ids if len(run.paid.get(i, [])) > 1]
    if twice:
        raise NotYet(f"the checker delivered the message of order {twice[0]} a second time "
                     "(Kafka delivers at least once: a consumer that crashes before it "
                     "commits gets the message again) and fulfil paid for it twice. Make it "
                     "idempotent: if shop.get_status(order_id) is already 'done', return "
                     "without doing the work.")
    return str(again.key)


class _OrdersStep(Step):
    def __init__(self) -> None:
        self.said = ""

    def run(self, answer: Any) -> None:
        _interface(answer)
        self.said = ""
        with scratch_lab() as lab:
            h = _Harness(lab, answer)
            try:
                h.worker.wait_assigned(15)
                placed = h.place()
                ids = _check_answers(h, placed)
                amounts = {str(p["body"]["order_id"]): p["order"]["amount"] for p in placed}
                pending = _check_status_while_pending(placed)
                _check_fulfilment(h, ids, amounts)
                _check_status_done(h, ids)
                again = _check_redelivery(h, ids)
            finally:
                h.close()
        self.said = _success(placed, pending, again)


def _success(placed: list[dict[str, Any]], pending: set[str], again: str) -> str:
    """What this answer did, in a sentence (the success message)."""
    ms = [p["ms"] for p in placed]
    while_pending = (f"said {', '.join(repr(s) for s in sorted(pending))} while an order was "
                     "being worked on and 'done' once it was" if pending else
                     "said 'done' for every order once it was (the consumer was faster than "
                     "the first read)")
    return (f"your endpoint answered {len(ms)} orders with 202 and the order id in "
            f"{percentile(ms, 50):.0f} ms (median; the work takes about {WORK_MS:.0f} ms), each "
            "after the broker acknowledged it; the consumer paid and reserved every order "
            f"once, and when the message of order {again} came a second time it paid nothing; "
            f"your status endpoint {while_pending}.")


# ----- after the check: your endpoint against the blocking one ------------------------------------------
async def _blocking_place(request: web.Request) -> web.Response:
    """The endpoint the exercise starts from: pay and reserve before answering."""
    order = await request.json()
    order_id = shop.new_order_id()
    await shop.pay(order_id, order["amount"])
    await shop.reserve(order_id)
    shop.set_status(order_id, "done")
    return web.json_response({"order_id": order_id, "status": "done"})


async def _nothing_to_fulfil(event: Any) -> None:
    """The blocking endpoint publishes nothing, so its consumer has nothing to do."""


@dataclass
class SideBySide:
    """User-facing latency (model ms) of your endpoint and of the blocking one, same orders;
    ``done``: your orders that payment and inventory both recorded (their own records)."""

    yours: list[float]
    blocking: list[float]
    done: int
    orders: int

    def median_ratio(self) -> float:
        """Your median answer divided by the blocking endpoint's median."""
        return percentile(self.yours, 50) / percentile(self.blocking, 50)

    def ratio(self) -> Estimate:
        """The same ratio with a bootstrap interval (12 orders each: not a point)."""
        return evidence.ratio(self.yours, self.blocking, 0.5)

    def table(self) -> str:
        """p50 and p99 of both."""
        rows = [f"{'endpoint':<22}{'p50 ms':>9}{'p99 ms':>9}"]
        for name, values in (("yours (202)", self.yours), ("blocking (200)", self.blocking)):
            rows.append(f"{name:<22}{percentile(values, 50):>9.1f}{percentile(values, 99):>9.1f}")
        return "\n".join(rows)


def side_by_side(place_order: Any, fulfil: Any, order_status: Any) -> SideBySide:
    """Place the checker's 12 orders through your three functions, then through the blocking
    endpoint, on real services; your orders must all be done before it returns."""
    _interface(Handlers(place_order, fulfil, order_status))
    latencies: dict[str, list[float]] = {}
    done = 0
    with scratch_lab() as lab:
        for label, answer in (("yours", Handlers(place_order, fulfil, order_status)),
                              ("blocking", Handlers(_blocking_place, _nothing_to_fulfil,
                                                    order_status))):
            h = _Harness(lab, answer)
            try:
                h.worker.wait_assigned(15)
                placed = h.place()
                try:
                    h.raise_learner_error()
                except LearnerRaised as raised:
                    raise LabError(describe_error(raised.error, raised.call),
                                   "make q1.check() pass first") from None
                latencies[label] = [p["ms"] for p in placed]
                if label == "yours":
                    ids = [str(p["body"]["order_id"]) for p in placed]
                    h.wait(lambda ids=ids, h=h: all(h.run.paid.get(i) and h.run.reserved.get(i)
                                                    for i in ids))
                    done = sum(bool(h.run.paid.get(i) and h.run.reserved.get(i)) for i in ids)
            finally:
                h.close()
    return SideBySide(latencies["yours"], latencies["blocking"], done, ORDERS)


class _HandlersQuestion(Question):
    """Looks up the three functions by name in your notebook; says what they did."""

    def _evaluate(self, answer: Any) -> tuple[str, str]:
        status, message = super()._evaluate(answer)
        if status == progress.DONE and _STEP.said:
            return status, _STEP.said
        return status, message

    def _lookup(self) -> Any:
        namespace = notebook_namespace()
        if namespace is None:
            namespace = caller_namespace()
        found = [namespace.get(name, MISSING) for name in Handlers._fields]
        return MISSING if MISSING in found else Handlers(*found)


_STEP = _OrdersStep()
q1 = _HandlersQuestion(
    id="q1", module=MODULE, title="publish, answer 202, fulfil in a consumer", name="place_order",
    what="async def place_order(request), async def fulfil(event) and "
         "async def order_status(request)",
    steps=[_STEP],
    hints=[
        "place_order does three things only: make an id (shop.new_order_id()), "
        "`await shop.publish(shop.topic, order, key=order_id)`, and return "
        "web.json_response({'order_id': order_id}, status=202). No payment there.",
        "fulfil(event) gets the order back: event.key is the key you published with, "
        "event.value the order. Pay, reserve, then shop.set_status(order_id, 'done'). A message "
        "can be delivered twice: start with `if shop.get_status(order_id) == 'done': return`.",
        "order_status(request): order_id = request.query['id']; return "
        "web.json_response({'order_id': order_id, 'status': shop.get_status(order_id) or "
        "'pending'}).",
    ],
    success="",   # built from what the answer did: _success()
)



# ----- q2: predict a burst's drain time ---------------------------------------------------------
@dataclass(frozen=True)
class BurstCase:
    """A burst of orders accepted at once: how they landed (the broker's acks, per partition),
    which consumer of the group holds which partitions, and one order's work."""

    per_partition: tuple[int, ...] = (9, 4, 7, 5, 8, 3)
    owners: tuple[tuple[int, ...], ...] = ((0, 1), (2, 3), (4, 5))
    per_order_ms: float = 250.0   # payment 150 + inventory 100, one order after another

    @property
    def orders(self) -> int:
        return sum(self.per_partition)

    def per_consumer(self) -> list[int]:
        """Orders each consumer must work through (the sum over the partitions it holds)."""
        return [sum(self.per_partition[p] for p in held) for held in self.owners]

    def drain_ms(self) -> float:
        """Burst to last order done: the busiest consumer's orders, one after another."""
        return max(self.per_consumer()) * self.per_order_ms

    def table(self) -> str:
        """The burst as the lesson's cells print it."""
        lines = [f"{self.orders} orders accepted at once, {len(self.per_partition)} partitions, "
                 f"{len(self.owners)} consumers; one order takes {self.per_order_ms:g} ms",
                 "partition  orders  held by"]
        for p, count in enumerate(self.per_partition):
            owner = next(i for i, held in enumerate(self.owners) if p in held)
            lines.append(f"{p:>9}  {count:>6}  consumer {'ABCDEFGH'[owner]}")
        return "\n".join(lines)


BURST_CASE = BurstCase()
"""q2's burst: print ``BURST_CASE.table()``."""
_B = BURST_CASE


q2 = Question(
    id="q2", module=MODULE, title="predict a burst's drain time", name="burst_drain_ms",
    what="a number of milliseconds: from the burst until the last of its orders is done",
    steps=[Value(_B.drain_ms(), rel=0.02, unit=" ms", mistakes=[
        Mistake("that is the busiest PARTITION's orders. Three consumers share six partitions:"
                " each works through both of its partitions, one order after another.",
                like=max(_B.per_partition) * _B.per_order_ms),
        Mistake("that splits the orders evenly over the consumers. The keys did not: the "
                "busiest consumer decides when the burst is drained.",
                like=_B.orders / len(_B.owners) * _B.per_order_ms),
        Mistake("that splits the orders evenly over the partitions, as if each partition had "
                "its own consumer and the same number of orders.",
                like=_B.orders / len(_B.per_partition) * _B.per_order_ms),
        Mistake("that is every order one after another, as if one consumer did them all. The "
                "group's consumers work in parallel, each on its own partitions.",
                like=_B.orders * _B.per_order_ms),
        Mistake("that looks like seconds: give milliseconds.", like=_B.drain_ms() / 1000),
        Mistake("that is one order's work: the orders of one partition are handled one after "
                "another, not all at once.", like=_B.per_order_ms),
    ])],
    hints=[
        "Inside a group each partition has one reader, and a reader handles its messages one "
        "after another. Who has the most work to do?",
        "Add up the orders of the partitions each consumer holds (print(BURST_CASE.table())); "
        "the burst is drained when the busiest consumer is done.",
        "max(sum of its partitions' orders, over the consumers) x 250 ms. Simulating the "
        "three consumers gives the same.",
    ],
    success=f"The busiest consumer holds {max(_B.per_consumer())} orders: "
            f"{max(_B.per_consumer())} x {_B.per_order_ms:g} ms = {_B.drain_ms():,.0f} ms. "
            "Neither the busiest partition nor the average decides: the consumer with the most "
            "orders across its partitions does.",
)


# ----- q3: diagnose a lag table -----------------------------------------------------------------
@dataclass(frozen=True)
class PartitionPlan:
    """How one partition of :data:`LAG_RUN` was built (the run's ground truth)."""

    partition: int
    arrivals_per_s: float          # orders the keys send to it per second
    handle_per_s: float = 12.0     # orders its consumer finishes per second
    stuck_from_s: float | None = None   # its consumer stops committing from then on


@dataclass(frozen=True)
class LagRun:
    """One topic, four partitions, one consumer per partition, 5 s of orders; every 0.5 s a
    look at each partition's end offset and the group's committed offset (the broker's
    numbers) and their difference, the lag. Built message by message from the plan."""

    plans: tuple[PartitionPlan, ...]
    duration: float = 5.0
    looks: tuple[float, ...] = tuple(0.5 * i for i in range(1, 11))

    def times(self, p: PartitionPlan) -> tuple[list[float], list[float]]:
        """(written, committed) seconds of every message of partition ``p``."""
        written = [i / p.arrivals_per_s for i in range(int(p.arrivals_per_s * self.duration))]
        committed, free = [], 0.0
        for w in written:
            free = max(w, free) + 1 / p.handle_per_s
            stuck = p.stuck_from_s is not None and free >= p.stuck_from_s
            committed.append(float("inf") if stuck else free)
        return written, committed

    def row(self, p: PartitionPlan, t: float) -> tuple[int, int]:
        """(end offset, committed offset) of partition ``p`` at ``t`` seconds."""
        written, committed = self.times(p)
        return sum(w <= t for w in written), sum(c <= t for c in committed)

    def table(self) -> str:
        """The run as ``kafka-consumer-groups --describe`` would show it, look by look."""
        head = "  t (s) | " + " | ".join(f"{'partition ' + str(p.partition):^20}"
                                         for p in self.plans)
        sub = "        | " + " | ".join(f"{'end':>6} {'commit':>6} {'lag':>6}"
                                        for _ in self.plans)
        lines = [head, sub, "-" * len(head)]
        for t in self.looks:
            cells = [self.row(p, t) for p in self.plans]
            lines.append(f"{t:7.1f} | " + " | ".join(f"{end:>6} {done:>6} {end - done:>6}"
                                                    for end, done in cells))
        return "\n".join(lines)

    def truth(self) -> dict[str, int]:
        """What the construction says: the partition the keys overload, the stuck consumer's."""
        busiest = max(self.plans, key=lambda p: p.arrivals_per_s)
        return {"hot": busiest.partition,
                "stuck": next(p.partition for p in self.plans if p.stuck_from_s is not None)}

    def rates(self, p: PartitionPlan) -> tuple[float, float]:
        """(end offset, committed offset) growth per second over the run, from the table."""
        end0, done0 = self.row(p, self.looks[0])
        end1, done1 = self.row(p, self.looks[-1])
        span = self.looks[-1] - self.looks[0]
        return (end1 - end0) / span, (done1 - done0) / span


LAG_RUN = LagRun((
    PartitionPlan(0, arrivals_per_s=7),
    PartitionPlan(1, arrivals_per_s=17),
    PartitionPlan(2, arrivals_per_s=7, stuck_from_s=1.2),
    PartitionPlan(3, arrivals_per_s=9),
))
"""q3's run: print ``LAG_RUN.table()`` and read it."""
_PLANS = {p.partition: p for p in LAG_RUN.plans}


def _partition_shows(partition: int) -> str:
    """One partition's columns in words, from the run: what naming it overlooked."""
    p = _PLANS[partition]
    writes, commits = LAG_RUN.rates(p)
    end, done = LAG_RUN.row(p, LAG_RUN.looks[-1])
    if p.stuck_from_s is not None:
        return (f"partition {partition} receives {writes:.0f} orders/s like its quiet "
                f"neighbours, but its committed offset stops at {done} while the end offset "
                f"runs on to {end}: its consumer stopped, the keys did not overload it")
    if writes > max(q.arrivals_per_s for q in LAG_RUN.plans if q is not p):
        return (f"partition {partition}'s end offset grows {writes:.0f} a second, more than "
                f"any other, and its committed offset keeps moving ({commits:.0f} a second, "
                "the consumer's full pace): a busy consumer on an overloaded partition, "
                "not a stopped one")
    worst = max(e - d for e, d in (LAG_RUN.row(p, t) for t in LAG_RUN.looks))
    return (f"partition {partition} keeps its lag at {worst} or less in every look "
            f"(end offset {writes:.0f}/s, committed {commits:.0f}/s): healthy")


_LAG_DIAGNOSIS = Diagnosis(
    name="lag_diagnosis", noun="partition", options=lambda: list(_PLANS),
    truth=LAG_RUN.truth, shows=_partition_shows,
    why={"hot": "A hot partition is the one whose END offset climbs fastest (its keys send "
                "it the most orders), whatever its lag.",
         "stuck": "A stuck consumer shows as a COMMITTED offset that stops moving while the "
                  "end offset goes on."},
    same_for_two="Two different partitions show the two symptoms: compare how fast each "
                 "one's end offset and committed offset move.")


q3 = Question(
    id="q3", module=MODULE, title="diagnose a lag table", name="lag_diagnosis",
    what='a dict {"hot": partition, "stuck": partition} naming two partitions of the table',
    steps=[_LAG_DIAGNOSIS],
    hints=[
        "Lag = end offset - committed offset. Two different things make it grow: more "
        "messages arriving, or fewer being finished. Which column shows which?",
        "The end offset grows with the orders the keys send to a partition; the committed "
        "offset grows with the work its consumer finishes. Compare both columns' growth per "
        "partition, not just the lag.",
        "Per partition, (last end - first end) / 4.5 s and (last commit - first commit) / 4.5 s "
        "(LAG_RUN.rates(plan) gives them): the hot one has the fastest end offset, the stuck "
        "one a committed offset that stops.",
    ],
    success=f"{_partition_shows(LAG_RUN.truth()['hot'])}. And "
            f"{_partition_shows(LAG_RUN.truth()['stuck'])}. The largest lag alone does not say "
            "which: read the end offset for the load and the committed offset for the consumer.",
)

QUESTIONS = [q1, q2, q3]
__all__ = ["q1", "q2", "q3", "shop", "Shop", "Handlers", "QUESTIONS", "side_by_side",
           "SideBySide", "BURST_CASE", "BurstCase", "LAG_RUN", "LagRun", "PartitionPlan"]
