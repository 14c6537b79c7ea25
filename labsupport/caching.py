"""Caches of precomputed results: refreshed by events, or expired by a TTL.

The result cached is a customer's summary (open orders and their amount), computed from
the command side's store by :func:`compute_summary`, which costs ``compute_ms`` (the
expensive query or recommendation job of a real system). Two services answer
``GET /summary/{customer}`` from a cache, synchronously:

* ``ttl_cache``: an entry lives ``ttl_ms``; a read that finds none (or an expired one)
  computes it on the user's path (a miss) and keeps it.
* ``event_cache``: every entry is computed ahead of time, and a bus worker recomputes a
  customer's entry *off the user's path* when an event about that customer arrives
  (skipping events the entry already includes). Reads always hit.

Each entry remembers the customer's write sequence number it was computed from, and the
command side remembers when each sequence number was committed, so every read's
**staleness** is measured: how long ago the truth moved past what the read returned.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .cqrs import OrderShop, _together, model_now, open_loop, require_positive
from .dashboard import PALETTE, Dashboard, LiveView, set_controls
from .errors import LabError, require
from .metrics import Recorder, percentile
from .services import fetch
from .settings import to_wall

if TYPE_CHECKING:
    from .lab import Lab
    from .messaging import Event


@dataclass(frozen=True)
class Entry:
    """A cached summary: the value, the write sequence it includes, when it was stored."""

    value: dict[str, Any]
    seq: int
    stored_at: float   # model s


@dataclass
class ReadLog:
    """What one cache's readers got: hits, misses and the staleness of every answer (ms)."""

    hits: int = 0
    misses: int = 0
    staleness_ms: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    @property
    def reads(self) -> int:
        return self.hits + self.misses

    def hit_rate(self) -> float:
        return self.hits / self.reads if self.reads else math.nan

    def stale(self, q: float) -> float:
        """Percentile ``q`` of staleness (model ms; 0 for an answer that was up to date)."""
        return percentile(self.staleness_ms, q)

    def worst(self) -> float:
        return max(self.staleness_ms, default=math.nan)

    def summary(self, name: str) -> str:
        if not self.reads:
            return f"{name}: no reads yet"
        return (f"{name}: hit rate {self.hit_rate():.1%} of {self.reads}, staleness p50 "
                f"{self.stale(50):.0f} ms, p99 {self.stale(99):.0f} ms, worst "
                f"{self.worst():.0f} ms")


def compute_summary(shop: OrderShop, customer: str) -> Entry:
    """The customer's open orders and amount, read from the command side's store in one
    query, with the write sequence number it reflects (call after the compute delay)."""
    row = shop.write_store.query(
        "SELECT (SELECT COUNT(*) FROM orders WHERE customer = ?1 AND state != 'CANCELLED'), "
        "(SELECT COALESCE(SUM(amount), 0) FROM orders WHERE customer = ?1 "
        "AND state != 'CANCELLED'), "
        "(SELECT COALESCE(MAX(seq), 0) FROM customers WHERE id = ?1)", (customer,))[0]
    value = {"customer": customer, "orders": row[0], "amount": round(row[1], 2)}
    return Entry(value, row[2], model_now())


class CacheExperiment:
    """The two caches side by side, over the same shop, the same writes and the same reads."""

    def __init__(self, lab: Lab, shop: OrderShop, compute_ms: float = 50.0,
                 ttl_ms: float = 2000.0, prefix: str = "") -> None:
        self.lab, self.shop = lab, shop
        self.set(compute_ms=compute_ms, ttl_ms=ttl_ms)
        self.ttl_entries: dict[str, Entry] = {}
        self.event_entries: dict[str, Entry] = {}
        self.logs = {"ttl": ReadLog(), "event": ReadLog()}
        #: model ms from a write's commit to the event cache holding it, per write
        self.refresh_ms: list[float] = []
        self._lock = threading.Lock()
        self.rng = random.Random(f"{lab.seed}:{prefix}cache")
        self.started = model_now()
        self.ttl_service = lab.service(f"{prefix}ttl_cache", 0, routes={
            "/summary/{customer}": self._ttl_get})
        self.event_service = lab.service(f"{prefix}event_cache", 0, routes={
            "/summary/{customer}": self._event_get})
        for customer in shop.customers:   # precompute every entry, ahead of any read
            self.event_entries[customer] = self._compute_blocking(customer)
        self.worker = lab.bus.worker(shop.topic, f"{prefix}summary-cache", self._on_event,
                                     name=f"{prefix}summary-cache").wait_assigned()
        self._catch_up(sum(lab.bus.end_offsets(shop.topic)))
        self.run_future: concurrent.futures.Future | None = None
        self.read_rate, self.duration = 40.0, 8.0

    def set(self, compute_ms: float | None = None, ttl_ms: float | None = None) -> None:
        """Change the compute cost or the TTL (model ms)."""
        if compute_ms is not None:
            require(isinstance(compute_ms, (int, float)) and compute_ms >= 0,
                    f"compute_ms must be a number of ms of 0 or more, got {compute_ms!r}.")
            self.compute_ms = float(compute_ms)
        if ttl_ms is not None:
            require(isinstance(ttl_ms, (int, float)) and ttl_ms > 0,
                    f"ttl_ms must be a number of ms above 0, got {ttl_ms!r}.",
                    "e.g. ttl_ms=2000 keeps an entry for 2 s")
            self.ttl_ms = float(ttl_ms)

    # ----- computing ------------------------------------------------------------------------
    def _compute_blocking(self, customer: str) -> Entry:
        time.sleep(to_wall(self.compute_ms / 1000))
        return compute_summary(self.shop, customer)

    async def _compute(self, customer: str) -> Entry:
        await asyncio.sleep(to_wall(self.compute_ms / 1000))
        return compute_summary(self.shop, customer)

    def _on_event(self, event: Event) -> None:
        """The event cache's worker: recompute the customer's entry unless it has this write."""
        customer, seq = event.value["customer"], event.value["customer_seq"]
        held = self.event_entries.get(customer)
        if held is not None and held.seq >= seq:
            return   # already included by an earlier recompute: skip
        fresh = self._compute_blocking(customer)
        now = model_now()
        with self._lock:
            self.event_entries[customer] = fresh
            for number, committed in self.shop.history[customer]:
                if (held.seq if held else 0) < number <= fresh.seq:
                    self.refresh_ms.append((now - committed) * 1000)

    # ----- serving ----------------------------------------------------------------------------
    async def _ttl_get(self, request: web.Request) -> web.Response:
        customer = request.match_info["customer"]
        entry = self.ttl_entries.get(customer)
        hit = entry is not None and (model_now() - entry.stored_at) * 1000 < self.ttl_ms
        if not hit:
            entry = await self._compute(customer)   # a miss: the user waits for the compute
            self.ttl_entries[customer] = entry
        return self._answer("ttl", customer, entry, hit)

    async def _event_get(self, request: web.Request) -> web.Response:
        customer = request.match_info["customer"]
        entry = self.event_entries.get(customer)
        hit = entry is not None
        if entry is None:
            entry = await self._compute(customer)
        return self._answer("event", customer, entry, hit)

    def _answer(self, cache: str, customer: str, entry: Entry, hit: bool) -> web.Response:
        staleness = self.staleness_ms(customer, entry.seq)
        log = self.logs[cache]
        log.hits += hit
        log.misses += not hit
        log.staleness_ms.append(staleness)
        log.times.append(model_now() - self.started)
        return web.json_response({**entry.value, "hit": hit, "staleness_ms": staleness})

    def staleness_ms(self, customer: str, seq: int) -> float:
        """How long ago (model ms) the customer's truth moved past write ``seq`` (0: current)."""
        for number, committed in self.shop.history.get(customer, []):
            if number == seq + 1:
                return max(0.0, (model_now() - committed) * 1000)
        return 0.0

    # ----- the experiment -----------------------------------------------------------------------
    def start(self, write_rate: float = 10.0, read_rate: float = 40.0,
              duration: float = 8.0) -> concurrent.futures.Future:
        """Writes on the shop and reads of both caches (same customers, same moments)."""
        require_positive(write_rate=write_rate, read_rate=read_rate, duration=duration)
        self.read_rate, self.duration = read_rate, duration
        self.logs = {"ttl": ReadLog(), "event": ReadLog()}
        self.ttl_entries.clear()
        self.refresh_ms = []
        self.started = model_now()
        self.shop.commands.set(latency=5)
        stop = threading.Event()
        self.run_future = self.lab.submit(_together(
            open_loop(self.shop._random_write, write_rate, duration, Recorder("writes"), stop),
            open_loop(self._read_both, read_rate, duration, Recorder("reads"), stop)))
        return self.run_future

    def run(self, write_rate: float = 10.0, read_rate: float = 40.0,
            duration: float = 8.0) -> CacheExperiment:
        """:meth:`start` and wait."""
        self.start(write_rate, read_rate, duration).result()
        return self

    async def _read_both(self) -> int:
        customer = self.rng.choice(self.shop.customers)
        results = await asyncio.gather(*(
            fetch(self.lab.session, f"{svc.url}summary/{customer}", None)
            for svc in (self.ttl_service, self.event_service)))
        return max(r["status"] for r in results)

    def _catch_up(self, events: int, timeout: float = 20.0) -> None:
        """Wait until the worker has read the ``events`` already on the topic (it skips the
        ones the precomputed entries include), so a run starts with a caught-up worker."""
        deadline = time.monotonic() + timeout
        while self.worker.processed < events:
            if time.monotonic() > deadline or not self.worker.running:
                self.worker.stop()   # re-raises a handler error, if that is what happened
                raise LabError(f"The event cache's worker read {self.worker.processed} of "
                               f"{events} events within {timeout:g} s.",
                               "check the broker (python -m labsupport broker status)")
            time.sleep(0.01)

    def wait_refreshed(self, timeout: float = 10.0) -> None:
        """Block until the event cache holds every committed write (the worker caught up)."""
        deadline = time.monotonic() + timeout
        while any(self.event_entries[c].seq < self.shop.history[c][-1][0]
                  for c in self.shop.customers):
            if time.monotonic() > deadline:
                raise LabError(f"The event cache was still behind after {timeout:g} s.",
                               "check the broker (python -m labsupport broker status) and "
                               "the worker: cache.worker")
            time.sleep(0.01)

    def predicted_ttl_hit_rate(self) -> float:
        """Per customer, reads arrive at r = read_rate / customers a second. After a miss,
        reads during the compute also miss; the next ttl seconds of reads hit:
        hit rate = r*ttl / (1 + r*compute + r*ttl)."""
        r = self.read_rate / len(self.shop.customers)
        ttl, compute = self.ttl_ms / 1000, self.compute_ms / 1000
        return r * ttl / (1 + r * compute + r * ttl)

    def summary(self) -> str:
        return (f"TTL {self.ttl_ms:g} ms, compute {self.compute_ms:g} ms | "
                f"{self.logs['ttl'].summary('TTL cache')} | "
                f"{self.logs['event'].summary('event-refreshed cache')}")

    def done(self) -> bool:
        return self.run_future is None or self.run_future.done()

    def draw(self, ax: Any) -> None:
        """The staleness of every answer over time, for both caches; the TTL dashed."""
        ax.axhline(self.ttl_ms, color=PALETTE[3], linestyle="--", lw=1.5, label="TTL")
        for name, colour, label in (("ttl", PALETTE[1], "TTL cache"),
                                    ("event", PALETTE[0], "event-refreshed cache")):
            log = self.logs[name]
            count = min(len(log.times), len(log.staleness_ms))
            if count:
                ax.plot(log.times[:count], log.staleness_ms[:count], ".", color=colour,
                        markersize=4, label=f"{label}: hit rate {log.hit_rate():.0%}")
        ax.set_xlabel("model seconds since the run started")
        ax.set_ylabel("staleness of the answer (model ms)")
        ax.set_ylim(bottom=-50, top=max(self.ttl_ms * 1.4, 100))
        ax.legend(loc="upper left", fontsize=8)

    def dashboard(self) -> Dashboard:
        """Sliders for the TTL and the compute cost; Run sends writes and reads."""
        import ipywidgets as w

        self.controls = {
            "ttl_ms": w.IntSlider(int(self.ttl_ms), 250, 5000, step=250, description="TTL ms"),
            "compute_ms": w.IntSlider(int(self.compute_ms), 0, 500, step=25,
                                      description="compute ms"),
            "read_rate": w.IntSlider(40, 10, 100, step=10, description="reads/s"),
        }
        button = w.Button(description="Run 8 s of traffic", button_style="primary",
                          layout=w.Layout(width="auto"))
        button.on_click(lambda _: self.press_run())
        self.board = Dashboard("A TTL cache and an event-refreshed cache",
                               [*self.controls.values(), button], self.draw)
        return self.board

    def press_run(self, **values: Any) -> LiveView:
        """What Run does; ``values`` (ttl_ms, compute_ms, read_rate) move the sliders."""
        c = set_controls(self.controls, values)
        self.set(compute_ms=c["compute_ms"], ttl_ms=c["ttl_ms"])
        self.start(read_rate=c["read_rate"])
        return self.board.watch(self.done, self.summary, hz=4)
