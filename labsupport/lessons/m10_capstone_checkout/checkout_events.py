"""Module 10 · The event-driven checkout: the customer gets 202, events do the rest.

``POST /checkout`` on the order service records the order as PENDING, publishes
**OrderPlaced**, waits only for the broker's acknowledgement and answers **202 Accepted**
with the order id. Then three consumers, one consumer group each, do the work:

* payment consumes ``OrderPlaced``: does its work, charges (idempotent by order id: the
  charge carries the key ``pay-<order id>``), publishes **PaymentProcessed**;
* inventory consumes ``PaymentProcessed``: reserves (idempotent by order id), publishes
  **StockReserved**;
* order consumes ``StockReserved``: marks the order **CONFIRMED**.

The confirmation is asynchronous: ``GET /orders/<id>`` answers at once with the state.
A consumer commits an event only after handling it, so when one stops (crashes) its
events wait in the log and a new consumer in the same group resumes from there; the
idempotent handlers make a re-delivered event harmless.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from labsupport.lessons.m10_capstone_checkout.checkout import (
    INVENTORY,
    PAYMENT,
    CheckoutShop,
    Scoreboard,
    Sent,
    charge,
    drain_recovery_s,
    now_ms,
    place,
    reserve,
    set_state,
    tell,
)
from labsupport.runtime.errors import LabError
from labsupport.runtime.latency import LatencyModel
from labsupport.runtime.services import json_body
from labsupport.runtime.waiting import wait_until

if TYPE_CHECKING:
    from labsupport.lessons.m10_capstone_checkout.chaos import ChaosSchedule
    from labsupport.runtime.lab import Lab
    from labsupport.runtime.messaging import Event, Worker

EVENTS = (("OrderPlaced", "placed", "payment"), ("PaymentProcessed", "paid", "inventory"),
          ("StockReserved", "reserved", "order"))
"""(event, topic, the service that consumes it)."""


class EventCheckout:
    """The event-driven design on the lab: three services, three topics, three consumers."""

    name = "event-driven"

    def __init__(self, lab: Lab, prefix: str = "ev_", payment: LatencyModel | float = PAYMENT,
                 inventory: LatencyModel | float = INVENTORY) -> None:
        self.lab = lab
        self.shop = CheckoutShop(lab, prefix, payment, inventory, routes={
            "order": {"/checkout": self._checkout, "/orders/{order_id}": self._status}})
        self.topics = {topic: lab.bus.topic(self.shop.topic_name(topic)) for _, topic, _ in EVENTS}
        self.publisher = lab.bus.publisher()
        self.picked: dict[str, float] = {}
        self.restarts = 0
        self.workers: dict[str, Worker] = {}
        for role in ("payment", "inventory", "order"):
            self.workers[role] = self._worker(role)

    @property
    def url(self) -> str:
        """The checkout endpoint customers POST to."""
        return self.shop.order.url + "checkout"

    def _worker(self, role: str) -> Worker:
        topic, handler = {"payment": ("placed", self._pay),
                          "inventory": ("paid", self._reserve),
                          "order": ("reserved", self._confirm)}[role]
        return self.lab.bus.worker(self.topics[topic], f"{self.shop.prefix}{role}", handler,
                                   name=f"{self.shop.prefix}{role}")

    def ready(self, timeout: float = 15.0) -> EventCheckout:
        """Wait until every consumer has its partition (the three joins run at once)."""
        for worker in self.workers.values():
            worker.wait_assigned(timeout)
        return self

    # ----- the endpoints ------------------------------------------------------------------------------
    async def _checkout(self, request: web.Request) -> web.Response:
        order = await json_body(request)
        oid = order.get("order_id")
        if not isinstance(oid, str) or not isinstance(order.get("amount"), int):
            return web.json_response({"error": "give order_id and amount"}, status=400)
        place(self.shop.orders, order)
        await self.publisher.publish(self.topics["placed"], {**order, "event": "OrderPlaced"},
                                     key=oid)   # the broker has it: nothing can lose it now
        tell(self.shop.orders, oid, "accepted")
        return web.json_response({"order_id": oid, "state": "PENDING",
                                  "status_url": f"/orders/{oid}"}, status=202)

    async def _status(self, request: web.Request) -> web.Response:
        oid = request.match_info["order_id"]
        state = self.shop.state_of([oid])[oid]
        return web.json_response({"order_id": oid, "state": state},
                                 status=404 if state == "missing" else 200)

    # ----- the consumers (each idempotent by order id) -------------------------------------------------
    async def _pay(self, event: Event) -> None:
        order = event.value
        self.picked.setdefault(order["order_id"], now_ms())
        await self.shop.payment.work()
        charge(self.shop.charges, order["order_id"], order["amount"], f"pay-{order['order_id']}")
        await self.publisher.publish(self.topics["paid"], {**order, "event": "PaymentProcessed"},
                                     key=order["order_id"])

    async def _reserve(self, event: Event) -> None:
        order = event.value
        await self.shop.inventory.work()
        reserve(self.shop.stock, order["order_id"])
        await self.publisher.publish(self.topics["reserved"], {**order, "event": "StockReserved"},
                                     key=order["order_id"])

    async def _confirm(self, event: Event) -> None:
        set_state(self.shop.orders, event.value["order_id"], "CONFIRMED")

    # ----- chaos ----------------------------------------------------------------------------------------
    def slow_inventory(self, factor: float) -> None:
        """Inventory's work takes ``factor`` times as long (1: normal)."""
        self.shop.slow_inventory(factor)

    def crash_payment(self) -> None:
        """The payment consumer stops (its process is gone): OrderPlaced events wait."""
        self.workers["payment"].stop(timeout=0, raise_error=False)

    def restore_payment(self) -> None:
        """A new payment consumer joins the group and resumes from the committed offset."""
        self.restarts += 1
        self.workers["payment"] = self._worker("payment")

    # ----- the score ------------------------------------------------------------------------------------
    def wait_confirmed(self, ids: list[str], timeout_s: float = 25.0) -> bool:
        """Wait (wall s) until every order in ``ids`` is CONFIRMED; True if they all are."""
        def confirmed() -> bool:
            failed = [w for w in self.workers.values() if w.error is not None]
            if failed:
                failed[0].stop()   # raises the handler's error as a LabError
            return all(s == "CONFIRMED" for s in self.shop.state_of(ids).values())

        return wait_until(confirmed, timeout_s)

    def left_in_log(self) -> int:
        """Events not yet handled, over the three topics (exact: one record per batch)."""
        return sum(self.lab.bus.lag(self.topics[topic], f"{self.shop.prefix}{role}")
                   for _, topic, role in EVENTS)

    def hop_ms(self, ids: list[str]) -> list[float]:
        """Per order: OrderPlaced accepted -> picked up by the payment consumer (model ms):
        one hop over the broker, with no work in it."""
        placed = dict(self.shop.orders.query("SELECT id, placed_ms FROM orders"))
        return [self.picked[oid] - placed[oid] for oid in ids
                if oid in self.picked and oid in placed]

    def scoreboard(self, sent: list[Sent], schedule: ChaosSchedule) -> Scoreboard:
        """Wait until every accepted order is confirmed (the lag drained), then score."""
        ids = [s.order_id for s in sent]
        accepted = [s.order_id for s in sent if s.ok]
        left = 0 if self.wait_confirmed(accepted) else self.left_in_log()
        e2e = self.shop.end_to_end_ms(ids)
        board = Scoreboard(self.name, sent, self.shop.state_of(ids), e2e,
                           self.shop.double_charged(ids), left, schedule.windows)
        at = {s.order_id: s.t + e2e[s.order_id] / 1000 for s in sent if s.order_id in e2e}
        board.recover_s = drain_recovery_s(sent, at, schedule.end_s)
        return board

    def close(self) -> None:
        """Stop the consumers one at a time (the lab's bus would do it too)."""
        for worker in self.workers.values():
            try:
                worker.stop()
            except LabError:
                pass


def read_status(lab: Lab, design: EventCheckout, order_id: str) -> dict[str, Any]:
    """``GET /orders/<id>`` on the event-driven order service (what a customer's app polls)."""
    return lab.call(design.shop.order, f"orders/{order_id}").body
