"""Module 10 · The synchronous checkout: order -> payment -> inventory over HTTP.

``POST /checkout`` on the order service records the order as PENDING, calls payment's
``/charge``, then inventory's ``/reserve``, marks the order CONFIRMED and answers **200**.
The customer waits for all of it. When a step fails the order is FAILED, a charge already
made is refunded (``/refund``, a compensation) and the customer gets **503**.

Out of the box it has no protection at all (no timeouts, no retries, no breaker): the
design most systems start with. The exercise hardens it with the course's patterns,
through four calls a ``harden(checkout)`` function makes:

* :meth:`SyncCheckout.timeouts` (module 02): a timeout per call to payment and inventory;
* :meth:`SyncCheckout.retries` (module 03): attempts at payment, a backoff policy between
  them, and an ``Idempotency-Key`` header so a retry cannot charge twice (module 06);
* :meth:`SyncCheckout.breaker` (module 04): a circuit breaker around each payment call;
* :meth:`SyncCheckout.fallback` (modules 04-05): what to do when a step fails: e.g.
  :meth:`SyncCheckout.defer`, which publishes the order to the broker and answers
  **202 Accepted**; a *completer* consumer finishes it once the services are back.
"""
from __future__ import annotations

import asyncio
import inspect
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from labsupport.lessons.m03_retries_and_backoff.retries import FullJitter, Policy
from labsupport.lessons.m04_circuit_breakers.breakers import BreakerOpen, DependencyFailed
from labsupport.lessons.m10_capstone_checkout.checkout import (
    INVENTORY,
    PAYMENT,
    CheckoutShop,
    Scoreboard,
    Sent,
    charge,
    place,
    refund,
    reserve,
    set_state,
    sync_recovery_s,
    tell,
)
from labsupport.runtime.errors import LabError, require
from labsupport.runtime.latency import LatencyModel
from labsupport.runtime.services import fetch, json_body
from labsupport.runtime.settings import to_wall
from labsupport.runtime.waiting import wait_until

if TYPE_CHECKING:
    from labsupport.lessons.m10_capstone_checkout.chaos import ChaosSchedule
    from labsupport.runtime.lab import Lab
    from labsupport.runtime.messaging import Event, Worker

Fallback = Callable[[dict[str, Any]], Awaitable[bool]]
"""``async def fallback(order) -> bool``: True = the order is taken care of (answer 202)."""
COMPLETER_PATIENCE_S = 15.0
"""Wall seconds the completer keeps retrying one deferred order before it gives up."""
OUTAGES = ("error", "hang")
"""How payment is down: ``error`` answers 503 at once (the process is gone, its port
refuses); ``hang`` accepts the call and never answers until payment is back (a stuck
process, a full connection pool: a slow dependency, which is worse than a dead one)."""
HANG_LIMIT_S = 30.0
"""Model seconds a hung payment call waits at most, even if payment never comes back."""


class SyncCheckout:
    """The synchronous design on the lab: three services, their stores, one endpoint."""

    name = "synchronous"

    def __init__(self, lab: Lab, prefix: str = "sync_", payment: LatencyModel | float = PAYMENT,
                 inventory: LatencyModel | float = INVENTORY, name: str | None = None,
                 seed: int = 3, outage: str = "error") -> None:
        require(outage in OUTAGES, f"outage must be one of {OUTAGES}, got {outage!r}.")
        self.lab, self.outage = lab, outage
        self.name = name or self.name
        self.shop = CheckoutShop(lab, prefix, payment, inventory, routes={
            "order": {"/checkout": self._checkout},
            "payment": {"/charge": self._charge, "/refund": self._refund},
            "inventory": {"/reserve": self._reserve}})
        self.payment_down = False
        self.payment_timeout_ms: float | None = None
        self.inventory_timeout_ms: float | None = None
        self.attempts = 1
        self.backoff: Policy | None = None
        self.idempotency_key = False
        self._breaker: Any = None
        self._fallback: Fallback | None = None
        self.payment_calls = 0
        self.tries: dict[str, int] = {}
        """Payment calls the checkout itself sent per order id (not the completer's)."""
        self.unpaid: set[str] = set()
        """Orders whose payment failed in the checkout (every attempt, or the breaker)."""
        self.learner_errors: list[BaseException] = []
        self.deferred_topic: str | None = None
        self.completer: Worker | None = None
        self.deferred = 0
        self._rng = random.Random(f"sync:{seed}")

    @property
    def url(self) -> str:
        """The checkout endpoint customers POST to."""
        return self.shop.order.url + "checkout"

    # ----- the hardening the exercise applies ---------------------------------------------------
    def timeouts(self, payment_ms: float | None = None,
                 inventory_ms: float | None = None) -> SyncCheckout:
        """Give up on one call to payment / inventory after this many model ms (None: wait
        for ever, the default)."""
        for name, value in (("payment_ms", payment_ms), ("inventory_ms", inventory_ms)):
            require(value is None or (isinstance(value, (int, float)) and
                                      not isinstance(value, bool) and value > 0),
                    f"{name} must be None or a number of model ms above 0, got {value!r}.",
                    f"e.g. timeouts({name}=120)")
        self.payment_timeout_ms, self.inventory_timeout_ms = payment_ms, inventory_ms
        return self

    def retries(self, attempts: int = 1, backoff: Policy | None = None,
                idempotency_key: bool = False) -> SyncCheckout:
        """Try payment up to ``attempts`` times (the first try counts), waiting as ``backoff``
        (a :mod:`labsupport.lessons.m03_retries_and_backoff.retries` policy; None: retry at once) between tries; with
        ``idempotency_key=True`` every try carries the same ``Idempotency-Key`` header."""
        require(isinstance(attempts, int) and not isinstance(attempts, bool)
                and 1 <= attempts <= 10,
                f"attempts must be a whole number from 1 to 10, got {attempts!r}.",
                "attempts counts the first try too: 2 retries means attempts=3")
        require(backoff is None or isinstance(backoff, Policy),
                f"backoff must be a policy from labsupport.lessons.m03_retries_and_backoff.retries, got {backoff!r}.",
                "e.g. backoff=FullJitter(base_ms=10, cap_ms=50), or None to retry at once")
        require(isinstance(idempotency_key, bool),
                f"idempotency_key must be True or False, got {idempotency_key!r}.")
        self.attempts, self.backoff, self.idempotency_key = attempts, backoff, idempotency_key
        return self

    def breaker(self, breaker: Any) -> SyncCheckout:
        """Send every payment call through ``breaker`` (e.g. :class:`~labsupport.lessons.m04_circuit_breakers.breakers.
        AsyncPyBreaker`, or the breaker you wrote in module 04); None removes it."""
        require(breaker is None or all(hasattr(breaker, a) for a in ("state", "call")),
                f"breaker must have `state` and `async call(fn)`, got {breaker!r}.",
                "e.g. AsyncPyBreaker(fail_max=5, reset_timeout_s=0.5)")
        self._breaker = breaker
        return self

    def fallback(self, fn: Fallback | None) -> SyncCheckout:
        """When payment or inventory fails: ``await fn(order)``; True answers 202 (the order
        is taken care of), False turns the customer away (503). None removes it.

        Setting a fallback starts the completer (it joins its consumer group: about 1 s),
        so that :meth:`defer` has someone to finish the orders it publishes."""
        require(fn is None or inspect.iscoroutinefunction(fn),
                f"fallback must be an async function fallback(order) -> bool, got {fn!r}.",
                "e.g. checkout.fallback(checkout.defer)")
        self._fallback = fn
        if fn is not None:
            self.start_completer()
        return self

    @property
    def breaker_in_use(self) -> Any:
        """The breaker set with :meth:`breaker` (None: no breaker)."""
        return self._breaker

    @property
    def fallback_in_use(self) -> Fallback | None:
        """The fallback set with :meth:`fallback` (None: no fallback)."""
        return self._fallback

    def policy(self) -> str:
        """The protection in place, in one line."""
        parts = [f"payment timeout {_ms(self.payment_timeout_ms)}",
                 f"inventory timeout {_ms(self.inventory_timeout_ms)}",
                 f"{self.attempts} payment attempt(s)"]
        if self.attempts > 1:
            parts.append(f"backoff {getattr(self.backoff, 'name', None) or 'none'}")
            parts.append("idempotency key" if self.idempotency_key else "no idempotency key")
        parts.append(f"breaker {type(self._breaker).__name__}" if self._breaker else "no breaker")
        parts.append(f"fallback {getattr(self._fallback, '__name__', 'yes')}"
                     if self._fallback else "no fallback")
        return ", ".join(parts)

    def worst_case_ms(self) -> float:
        """The longest a customer can wait when every try times out (model ms), the backoff
        at its cap; ``inf`` when a call has no timeout."""
        if self.payment_timeout_ms is None or self.inventory_timeout_ms is None:
            return math.inf
        cap = getattr(self.backoff, "cap_ms", 0.0) if self.backoff is not None else 0.0
        return (self.attempts * self.payment_timeout_ms + (self.attempts - 1) * min(cap, 1e6)
                + self.inventory_timeout_ms)

    # ----- the services' endpoints -----------------------------------------------------------------
    async def _down(self) -> web.Response:
        """Payment is down: 503 at once, or (``outage="hang"``) only once it is back."""
        deadline = time.monotonic() + to_wall(HANG_LIMIT_S)
        while self.outage == "hang" and self.payment_down and time.monotonic() < deadline:
            await asyncio.sleep(to_wall(0.02))
        return web.json_response({"outcome": "payment is down"}, status=503)

    async def _charge(self, request: web.Request) -> web.Response:
        self.shop.payment.received += 1
        if self.payment_down:
            return await self._down()
        order = await json_body(request)
        seq = charge(self.shop.charges, order["order_id"], order["amount"],
                     request.headers.get("Idempotency-Key"))
        await self.shop.payment.work()   # the money has moved; the answer takes its time
        return web.json_response({"charge": seq})

    async def _refund(self, request: web.Request) -> web.Response:
        if self.payment_down:
            return await self._down()
        order = await json_body(request)
        return web.json_response({"refunded": refund(self.shop.charges, order["order_id"])})

    async def _reserve(self, request: web.Request) -> web.Response:
        self.shop.inventory.received += 1
        order = await json_body(request)
        await self.shop.inventory.work()
        reserve(self.shop.stock, order["order_id"])
        return web.json_response({"reserved": order["order_id"]})

    async def _checkout(self, request: web.Request) -> web.Response:
        order = await json_body(request)
        oid = order.get("order_id")
        if not isinstance(oid, str) or not isinstance(order.get("amount"), int):
            return web.json_response({"error": "give order_id and amount"}, status=400)
        place(self.shop.orders, order)
        paid = await self._pay(order)
        if not paid:
            self.unpaid.add(oid)
        if paid and await self._call("inventory", order, self.inventory_timeout_ms):
            set_state(self.shop.orders, oid, "CONFIRMED")
            tell(self.shop.orders, oid, "confirmed")
            return web.json_response({"order_id": oid, "state": "CONFIRMED"})
        if self._fallback is not None and await self._run_fallback(order):
            tell(self.shop.orders, oid, "accepted")
            return web.json_response({"order_id": oid, "state": "PENDING"}, status=202)
        if paid:
            await self._call("refund", order, None)   # undo the charge (a compensation)
        set_state(self.shop.orders, oid, "FAILED")
        tell(self.shop.orders, oid, "failed")
        return web.json_response({"order_id": oid, "state": "FAILED"}, status=503)

    async def _run_fallback(self, order: dict[str, Any]) -> bool:
        assert self._fallback is not None
        try:
            return bool(await self._fallback(dict(order)))
        except Exception as exc:  # learner code: kept for the checker, the customer gets 503
            self.learner_errors.append(exc)
            return False

    # ----- one call, and payment with its policy -----------------------------------------------------
    async def _call(self, step: str, order: dict[str, Any], timeout_ms: float | None,
                    key: bool = False) -> bool:
        """One attempt at ``step`` (payment, inventory or refund); True on 200."""
        svc = self.shop.inventory if step == "inventory" else self.shop.payment
        path = {"payment": "charge", "inventory": "reserve", "refund": "refund"}[step]
        timeout = aiohttp.ClientTimeout(total=to_wall(timeout_ms / 1000)) if timeout_ms else None
        headers = {"Idempotency-Key": f"pay-{order['order_id']}"} if key else None
        if step == "payment":
            self.payment_calls += 1
        result = await fetch(self.lab.session, svc.url + path, timeout, svc.name, "POST",
                             order, headers)
        return result["status"] == 200

    async def _attempt_payment(self, order: dict[str, Any]) -> bool:
        async def once() -> dict[str, Any]:
            oid = order["order_id"]
            self.tries[oid] = self.tries.get(oid, 0) + 1
            if not await self._call("payment", order, self.payment_timeout_ms,
                                    self.idempotency_key):
                raise DependencyFailed({"service": "payment", "status": 503})
            return {"status": 200}

        if self._breaker is None:
            try:
                await once()
                return True
            except DependencyFailed:
                return False
        try:
            await self._breaker.call(once)
            return True
        except DependencyFailed:
            return False

    async def _pay(self, order: dict[str, Any]) -> bool:
        """Payment under the policy: attempts, backoff, breaker. True when charged."""
        delays = self.backoff.delays(self._rng) if self.backoff is not None else None
        for attempt in range(self.attempts):
            if attempt and delays is not None:
                await asyncio.sleep(to_wall(next(delays, 0.0) / 1000))
            try:
                if await self._attempt_payment(order):
                    return True
            except BreakerOpen:
                return False   # the breaker says payment is down: do not hammer it
        return False

    # ----- deferring to the broker: the fallback the course recommends --------------------------------
    def start_completer(self) -> Worker:
        """Create the ``deferred`` topic and start the completer (once)."""
        if self.completer is None:
            self.deferred_topic = self.lab.bus.topic(self.shop.topic_name("deferred"))
            self.publisher = self.lab.bus.publisher()
            self.completer = self.lab.bus.worker(self.deferred_topic,
                                                 f"{self.shop.prefix}completer", self._complete,
                                                 name=f"{self.shop.prefix}completer")
        return self.completer

    async def defer(self, order: dict[str, Any]) -> bool:
        """Publish ``order`` to the ``deferred`` topic; True once the broker has it.

        The order stays PENDING; the completer charges (with the same idempotency key, if
        the policy uses one) and reserves it when the services answer again."""
        if self.deferred_topic is None:
            raise LabError("defer needs the completer.", "set it as the fallback: "
                           "checkout.fallback(checkout.defer)")
        await self.publisher.publish(self.deferred_topic, order, key=order["order_id"])
        self.deferred += 1
        return True

    async def _complete(self, event: Event) -> None:
        order = event.value
        oid = order["order_id"]
        if self.shop.state_of([oid])[oid] == "CONFIRMED":
            return   # a repeat: done already
        deadline = time.monotonic() + COMPLETER_PATIENCE_S
        delays = FullJitter(20, 400).delays(self._rng)
        for step in ("payment", "inventory"):
            timeout = self.payment_timeout_ms if step == "payment" else self.inventory_timeout_ms
            while not await self._call(step, order, max(timeout or 0, 2000),
                                       step == "payment" and self.idempotency_key):
                if time.monotonic() > deadline:
                    return   # left PENDING: the scoreboard counts it
                await asyncio.sleep(to_wall(next(delays, 0.0) / 1000))
        set_state(self.shop.orders, oid, "CONFIRMED")

    # ----- chaos -------------------------------------------------------------------------------------
    def slow_inventory(self, factor: float) -> None:
        """Inventory's work takes ``factor`` times as long (1: normal)."""
        self.shop.slow_inventory(factor)

    def crash_payment(self) -> None:
        """Payment is down: its endpoint answers 503 at once, or hangs (``outage="hang"``)."""
        self.payment_down = True

    def restore_payment(self) -> None:
        """Payment answers again."""
        self.payment_down = False

    # ----- the score ----------------------------------------------------------------------------------
    def wait_deferred(self, ids: list[str], timeout_s: float = 20.0) -> bool:
        """Wait (wall s) until every order in ``ids`` is CONFIRMED; True if they all are."""
        def confirmed() -> bool:
            return all(s == "CONFIRMED" for s in self.shop.state_of(ids).values())

        def settled() -> bool:   # all confirmed, or nothing left that could confirm them
            return confirmed() or self.completer is None or not self.completer.running or \
                self.completer.processed >= self.deferred

        wait_until(settled, timeout_s)
        return confirmed()

    def scoreboard(self, sent: list[Sent], schedule: ChaosSchedule) -> Scoreboard:
        """Wait for deferred orders (if any), then score this run."""
        ids = [s.order_id for s in sent]
        deferred = [s.order_id for s in sent if s.status == 202]
        if deferred:
            self.wait_deferred(deferred)
        left = 0
        if self.completer is not None and self.deferred_topic is not None:
            left = self.lab.bus.lag(self.deferred_topic, f"{self.shop.prefix}completer")
        e2e = self.shop.end_to_end_ms(ids)
        board = Scoreboard(self.name, sent, self.shop.state_of(ids), e2e,
                           self.shop.double_charged(ids), left, schedule.windows,
                           payment_calls=self.payment_calls)
        board.recover_s = recovery_s(board, schedule)
        return board


def recovery_s(board: Scoreboard, schedule: ChaosSchedule) -> float:
    """The synchronous path normal again (every answer 200 and no slower than before the
    chaos), and every deferred order confirmed: model seconds after the chaos ended."""
    from labsupport.lessons.m10_capstone_checkout.checkout import drain_recovery_s

    calm = board.p(99, outcome="confirmed", during="calm")
    normal = math.inf if math.isnan(calm) else calm * 1.5 + 20
    confirmed_at = {s.order_id: s.t + board.end_to_end_ms[s.order_id] / 1000
                    for s in board.sent if s.order_id in board.end_to_end_ms}
    back = sync_recovery_s(board.sent, schedule.end_s, normal)
    deferred = [s for s in board.sent if s.status == 202]
    drained = drain_recovery_s(deferred, confirmed_at, schedule.end_s) if deferred else 0.0
    return max(back, drained)


def _ms(value: float | None) -> str:
    return "none" if value is None else f"{value:g} ms"

