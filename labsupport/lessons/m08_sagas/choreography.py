"""Module 08 · The order saga as **choreography**: services react to each other's events.

Nobody is in charge. Each service listens to one ``events`` topic and reacts::

    OrderPlaced -> payment holds the money     -> PaymentTaken   (or PaymentDeclined)
    PaymentTaken -> inventory reserves stock    -> StockReserved  (or StockUnavailable) [pivot]
    StockReserved -> payment captures (retries) -> PaymentCaptured
    PaymentCaptured -> order confirms           -> OrderConfirmed

A failure is an event too, and the compensations follow it back up the chain in reverse:
StockUnavailable -> payment refunds -> PaymentRefunded -> order cancels -> OrderCancelled.
The saga's logic is spread over three handlers; :data:`REACTIONS` lists it in one place.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labsupport.lessons.m08_sagas import sagas
from labsupport.lessons.m08_sagas.sagas import Outcome, SagaFaults, SagaSystem, sleep_model

if TYPE_CHECKING:
    from labsupport.runtime.lab import Lab
    from labsupport.runtime.messaging import Event

REACTIONS = {
    # event heard: (service, what it does, event on success, event on failure)
    "OrderPlaced": ("payment", "hold the money", "PaymentTaken", "PaymentDeclined"),
    "PaymentTaken": ("inventory", "reserve stock (the pivot)", "StockReserved",
                     "StockUnavailable"),
    "StockReserved": ("payment", "capture the money (retries)", "PaymentCaptured", None),
    "PaymentCaptured": ("order", "confirm the order", "OrderConfirmed", None),
    "StockUnavailable": ("payment", "refund (compensation)", "PaymentRefunded", None),
    "PaymentDeclined": ("order", "cancel (compensation)", "OrderCancelled", None),
    "PaymentRefunded": ("order", "cancel (compensation)", "OrderCancelled", None),
}
"""Who reacts to which event, and what it publishes: the whole saga, read off the handlers."""

CAPTURE_RETRY_S = 0.05  # model seconds between capture attempts
MAX_CAPTURE_ATTEMPTS = 20


class Choreography(SagaSystem):
    """Order, payment and inventory services reacting to events on one topic."""

    style = "choreography"

    def __init__(self, lab: Lab, faults: SagaFaults | None = None, prefix: str = "ch_") -> None:
        super().__init__(lab, prefix, faults)
        self.events = lab.bus.topic(f"{prefix.strip('_')}-events")
        for name in ("order", "payment", "inventory"):
            self.add_worker(name, [self.events], getattr(self, f"_{name}"))

    # ----- the order service ---------------------------------------------------------------
    def place_now(self, order: dict[str, Any]) -> None:
        """The order service takes an order: PENDING, and OrderPlaced in the same transaction."""
        def write(tx: Any) -> list[tuple[str, str, dict[str, Any]]]:
            outcome = sagas.create_order(tx, order)
            self.shop.trace.add(order["id"], "order", "step", "OrderPlaced")
            return [self._event("OrderPlaced", order)] if outcome.fresh else []

        self.shop.nodes["order"].change(write, crashable=False)

    def _order(self, event: Event) -> None:
        kind, order = event.value["type"], event.value["order"]
        if kind not in ("PaymentCaptured", "PaymentDeclined", "PaymentRefunded"):
            return
        self._remember(event, order["id"])
        state = "CONFIRMED" if kind == "PaymentCaptured" else "CANCELLED"
        reason = "" if state == "CONFIRMED" else event.value.get("reason", kind)
        self._react(event, "order", lambda tx: sagas.end_order(tx, order["id"], state, reason))

    # ----- the payment service ---------------------------------------------------------------
    def _payment(self, event: Event) -> None:
        kind, order = event.value["type"], event.value["order"]
        if kind == "OrderPlaced":
            self._remember(event, order["id"])
            self._react(event, "payment",
                        lambda tx: sagas.authorize(tx, order, self.faults))
        elif kind == "StockUnavailable":
            self._remember(event, order["id"])
            self._react(event, "payment", lambda tx: sagas.refund(tx, order["id"]))
        elif kind == "StockReserved":
            self._remember(event, order["id"])
            self._capture(event, order)

    def _capture(self, event: Event, order: dict[str, Any]) -> None:
        """After the pivot there is no going back: capture until it works."""
        self._react(event, "payment", lambda tx: sagas.capture(tx, order, self.faults),
                    retry=True)

    # ----- the inventory service -------------------------------------------------------------
    def _inventory(self, event: Event) -> None:
        kind, order = event.value["type"], event.value["order"]
        if kind != "PaymentTaken":
            return
        self._remember(event, order["id"])
        self._react(event, "inventory", lambda tx: sagas.reserve(tx, order, self.faults))

    # ----- shared: do it, record it, publish what follows -------------------------------------
    def _react(self, event: Event, service: str, operation: Any, retry: bool = False) -> None:
        """Run ``operation`` and queue the event that follows, in one transaction; with
        ``retry``, a failure is tried again (after the pivot) instead of reported."""
        heard = event.value["type"]
        _, _, on_ok, on_fail = REACTIONS[heard]
        order = event.value["order"]
        results: list[Outcome] = []

        def write(tx: Any) -> list[tuple[str, str, dict[str, Any]]]:
            outcome: Outcome = operation(tx)
            results.append(outcome)
            if retry and not outcome.ok:
                self.shop.trace.add(order["id"], service, "retry", outcome.reason)
                return []
            follow = on_ok if outcome.ok else on_fail
            self._mark(order["id"], service, heard, outcome, follow or "")
            return [] if follow is None else [self._event(follow, order, outcome.reason)]

        for _ in range(MAX_CAPTURE_ATTEMPTS if retry else 1):
            self.shop.nodes[service].change(write)
            if results[-1].ok or not retry:
                return
            sleep_model(CAPTURE_RETRY_S)

    def _mark(self, order_id: str, service: str, heard: str, outcome: Outcome,
              follow: str) -> None:
        trace = self.shop.trace
        if not outcome.fresh:
            trace.add(order_id, service, "duplicate", f"{heard} again")
        elif "compensation" in REACTIONS[heard][1]:
            trace.add(order_id, service, "compensation", follow)
        else:
            trace.add(order_id, service, "step" if outcome.ok else "failed",
                      follow if outcome.ok else f"{follow}: {outcome.reason}")
        if follow in ("OrderConfirmed", "OrderCancelled") and outcome.fresh:
            trace.add(order_id, service, "end", follow.replace("Order", "").upper())

    def _event(self, kind: str, order: dict[str, Any],
               reason: str = "") -> tuple[str, str, dict[str, Any]]:
        return self.events, order["id"], {"type": kind, "order": order, "reason": reason}
