"""Module 05 · Learning the result of an accepted order: polling versus a webhook callback.

After a 202 the client still wants to know when its order is done. Two ways:

* **polling**: ask ``GET /status?id=...`` every ``interval`` ms until it says done;
* **webhook**: give a callback URL with the order; the consumer that finishes the work
  POSTs to it once.

:class:`CallbackRace` does both for the same orders at the same time, so each order has
one moment it was done (from the status table) and two moments the client learned it.
Each polling client starts its clock at a random moment within one interval (a page
refresh timer does not know when the order was placed): then the wait from "done" to
the next poll is spread evenly over the interval, about ``interval / 2`` on average.
"""
from __future__ import annotations

import asyncio
import gc
import random
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from labsupport.kit.dashboard import PALETTE
from labsupport.kit.evidence import Estimate, mean, quantile
from labsupport.kit.experiment import Experiment
from labsupport.lessons.m05_async_messaging.async_orders import OrderSystem, now_ms
from labsupport.runtime.errors import LabError, require
from labsupport.runtime.metrics import percentile
from labsupport.runtime.services import fetch
from labsupport.runtime.settings import to_wall
from labsupport.runtime.waiting import wait_until


@dataclass(frozen=True)
class Learned:
    """One order: when it was done, when each client learned it, how many requests each made."""

    order_id: str
    done_ms: float
    polled_ms: float
    polls: int
    hooked_ms: float
    hooks: int

    @property
    def poll_delay_ms(self) -> float:
        """Done to the poll that saw it."""
        return self.polled_ms - self.done_ms

    @property
    def hook_delay_ms(self) -> float:
        """Done to the webhook's arrival."""
        return self.hooked_ms - self.done_ms


class CallbackRace(Experiment):
    """A ``client`` service that receives webhooks, and pollers, over one :class:`OrderSystem`."""

    TITLE = "Polling or a webhook?"
    BUTTON = "Run"
    OTHER_KEYWORDS = ("orders",)

    def __init__(self, system: OrderSystem, seed: int = 3) -> None:
        self.system, self.seed = system, seed
        self.hooks: dict[str, list[float]] = {}
        self.client = system.lab.service("client", 0, routes={"/hook": self._hook})
        self.results: list[Learned] = []
        self.interval_ms = 0.0
        self.rate = 5.0

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.hooks.setdefault(body["order_id"], []).append(now_ms())
        return web.json_response({"ok": True})

    async def _one(self, start_s: float, interval_ms: float, rng: random.Random) -> tuple:
        await asyncio.sleep(to_wall(start_s))
        lab, orders = self.system.lab, self.system.orders
        placed = await fetch(lab.session, orders.url + "async", None, "orders", "POST",
                             {"callback": self.client.url + "hook"})
        if placed["status"] != 202:
            raise LabError(f"placing an order answered {placed['status']}.",
                           "check system.orders.describe()")
        oid = placed["body"]["order_id"]
        await asyncio.sleep(to_wall(rng.uniform(0, interval_ms) / 1000))
        polls = 0
        while True:
            polls += 1
            answer = await fetch(lab.session, f"{orders.url}status?id={oid}", None, "orders")
            if (answer["body"] or {}).get("status") == "done":
                return oid, now_ms(), polls
            await asyncio.sleep(to_wall(interval_ms / 1000))

    def run(self, orders: int = 30, rate: float = 5.0, interval_ms: float = 400.0) -> list[Learned]:
        """``orders`` orders at ``rate`` per second, each polled every ``interval_ms`` and
        registered for a webhook; returns what each client learned, and when."""
        require(isinstance(orders, int) and 1 <= orders <= 200,
                f"orders must be a whole number from 1 to 200, got {orders!r}.")
        require(0 < rate <= 20, f"rate must be above 0 and at most 20 per second, got {rate!r}.")
        require(20 <= interval_ms <= 5000, f"interval_ms must be 20 to 5000 ms, got "
                f"{interval_ms!r}.", "e.g. 200")
        rng = random.Random(self.seed)
        self.hooks, self.interval_ms, self.rate = {}, interval_ms, rate
        gc.collect()   # no collector pause in the middle of the measurement

        async def everyone() -> list[tuple]:
            return list(await asyncio.gather(*(self._one(i / rate, interval_ms, rng)
                                               for i in range(orders))))

        polled = self.system.lab.run(everyone(), timeout=60)
        self.system.wait_done([oid for oid, _, _ in polled], 5)
        done = {r.id: r.done_ms for r in self.system.rows([oid for oid, _, _ in polled])}
        wait_until(lambda: all(oid in self.hooks for oid, _, _ in polled), to_wall(2.0),
                   interval=0.01)   # the last callbacks may still be on their way
        self.results = [Learned(oid, done[oid] or 0.0, t, polls,
                                min(self.hooks.get(oid, [float("nan")])),
                                len(self.hooks.get(oid, [])))
                        for oid, t, polls in polled]
        return self.results

    # ----- what it says ------------------------------------------------------------------------
    def poll_delay(self, q: float = 50) -> float:
        """The ``q``-th percentile of done -> learned by polling (model ms); the median of a
        delay spread evenly over the interval is interval / 2, like its mean."""
        return percentile([r.poll_delay_ms for r in self.results], q)

    def hook_delay(self, q: float = 50) -> float:
        """The ``q``-th percentile of done -> webhook arrived (model ms)."""
        return percentile([r.hook_delay_ms for r in self.results], q)

    def poll_delay_mean(self) -> Estimate:
        """The mean of done -> learned by polling (model ms), with its interval: a delay
        spread evenly over the interval averages interval / 2."""
        return mean([r.poll_delay_ms for r in self.results])

    def more_poll_delays(self) -> Estimate:
        """Run as many orders again (same interval and rate), keep them with the earlier
        ones, and return the pooled :meth:`poll_delay_mean` (for a claim's ``more=``)."""
        earlier, seed = list(self.results), self.seed
        self.seed = seed + len(earlier)   # new polling phases, not a replay
        try:
            self.run(len(earlier), self.rate, self.interval_ms)
        finally:
            self.seed = seed
        self.results = earlier + self.results
        return self.poll_delay_mean()

    def hook_delay_estimate(self, q: float = 0.5) -> Estimate:
        """The ``q``-quantile of done -> webhook arrived (model ms), with its interval."""
        return quantile([r.hook_delay_ms for r in self.results], q)

    def polls_estimate(self) -> Estimate:
        """Status requests per order (mean), with its interval."""
        return mean([float(r.polls) for r in self.results])

    def polls_per_order(self) -> float:
        """Status requests each order's client made, on average."""
        return _mean([float(r.polls) for r in self.results])

    def hooks_per_order(self) -> float:
        """Webhook requests each order's client received, on average."""
        return _mean([float(r.hooks) for r in self.results])

    def summary(self) -> str:
        if not self.results:
            return "press Run"
        return (f"{len(self.results)} orders, polling every {self.interval_ms:g} ms: learned "
                f"{self.poll_delay():.0f} ms after done (median) with "
                f"{self.polls_per_order():.1f} requests per order; webhook: "
                f"{self.hook_delay():.1f} ms after done, {self.hooks_per_order():.0f} "
                "request per order")

    def draw(self, ax: Any) -> None:
        """How late each client learned, per order: polling dots and webhook dots."""
        if not self.results:
            return
        xs = range(len(self.results))
        ax.plot(xs, [r.poll_delay_ms for r in self.results], "o", color=PALETTE[1],
                label=f"polling every {self.interval_ms:g} ms")
        ax.plot(xs, [r.hook_delay_ms for r in self.results], "s", color=PALETTE[0],
                label="webhook")
        ax.axhline(self.interval_ms / 2, color=PALETTE[1], linestyle="--", lw=1,
                   label="interval / 2")
        ax.set_xlabel("order")
        ax.set_ylabel("learned after done (model ms)")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper right", fontsize=8)

    def make_controls(self) -> dict[str, Any]:
        """A slider for the polling interval; Run."""
        import ipywidgets as w

        return {"interval_ms": w.IntSlider(400, 50, 1000, step=50,
                                           description="poll every ms")}

    def run_controls(self, interval_ms: int, orders: int = 30) -> list[Learned]:
        """What Run does: ``press_run(interval_ms=400, orders=30)``; ``interval_ms`` moves the
        slider, ``orders`` is how many orders race."""
        return self.show(self.run(orders, interval_ms=interval_ms))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")

