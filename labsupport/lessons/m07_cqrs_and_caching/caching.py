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

Nothing the caches say about themselves is used as evidence. The **hit rate** is measured
at the origin: the computation counts the requests it served, per client, and a cache's
hit rate is one minus its origin requests over the reads its users sent. The **staleness**
of an answer is measured by the reader: it compares the value it got with the command
side's history of that customer's value, at the moment of the read (0 when it is the
current value; else how long ago the truth moved away from it).

:class:`CacheBench` holds what every cache experiment shares (the origin's count, the
readers' judgement, the paired traffic, the predictions); :class:`CacheExperiment` is the two
dict caches above, and :mod:`labsupport.lessons.m07_cqrs_and_caching.shared_cache` builds the caches on a real cache
server on it, with the dict TTL cache (:meth:`CacheBench._dict_ttl`) as a control arm.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from labsupport.kit.dashboard import PALETTE, LiveView
from labsupport.kit.evidence import Estimate, difference, share
from labsupport.kit.experiment import Experiment
from labsupport.lessons.m07_cqrs_and_caching.cqrs import (
    OrderShop,
    fire_paths,
    model_now,
    require_positive,
    submit_loaded,
)
from labsupport.runtime.errors import LabError, require
from labsupport.runtime.load import Shot
from labsupport.runtime.metrics import Recorder, percentile
from labsupport.runtime.settings import to_wall
from labsupport.runtime.waiting import wait_until

if TYPE_CHECKING:
    from labsupport.runtime.lab import Lab
    from labsupport.runtime.messaging import Event


@dataclass(frozen=True)
class Entry:
    """A cached summary: the value, the write sequence it includes, when it was stored."""

    value: dict[str, Any]
    seq: int
    stored_at: float   # model s


@dataclass
class ReadLog:
    """What one cache's readers got: the staleness of every answer (model ms, measured by
    the reader), and the cache's own hit and miss flags (shown, never used as evidence)."""

    hits: int = 0
    misses: int = 0
    staleness_ms: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    origin_requests: int = 0
    #: (model s sent, model s answered, customer, index of the answer in the customer's
    #: value history), both times since the run began
    seen: list[tuple[float, float, str, int]] = field(default_factory=list)

    @property
    def reads(self) -> int:
        """Answers the readers received."""
        return len(self.staleness_ms)

    def hit_rate(self) -> float:
        """1 - origin requests / reads: reads the origin never heard of were hits."""
        return 1 - self.origin_requests / self.reads if self.reads else math.nan

    def hit_share(self) -> Estimate:
        """:meth:`hit_rate` with its Wilson interval."""
        return share(max(self.reads - self.origin_requests, 0), self.reads)

    def stale_share(self) -> Estimate:
        """The share of answers that were no longer the truth when the reader got them."""
        return share(sum(ms > 0 for ms in self.staleness_ms), self.reads)

    def wrong(self) -> int:
        """Answers that were never the customer's true value (a broken cache)."""
        return sum(math.isinf(ms) for ms in self.staleness_ms)

    def backward(self) -> int:
        """Answers older than one the same customer's readers had already *received* when
        this read was sent: the value went back in time (two caches that disagree, read one
        after the other)."""
        count = 0
        for sent, _, customer, index in self.seen:
            known = [i for _, answered, c, i in self.seen if c == customer and answered < sent]
            count += index < max(known, default=-1)
        return count

    def stale(self, q: float) -> float:
        """Percentile ``q`` of staleness (model ms; 0 for an answer that was up to date)."""
        return percentile(self.staleness_ms, q)

    def worst(self) -> float:
        return max(self.staleness_ms, default=math.nan)

    def summary(self, name: str) -> str:
        if not self.reads:
            return f"{name}: no reads yet"
        return (f"{name}: hit rate {self.hit_rate():.1%} of {self.reads} (origin served "
                f"{self.origin_requests}), {self.stale_share().value:.0%} stale, staleness p50 "
                f"{self.stale(50):.0f} ms, p90 {self.stale(90):.0f} ms, worst "
                f"{self.worst():.0f} ms")


def compute_summary(shop: OrderShop, customer: str) -> Entry:
    """The customer's open orders and amount, read from the command side's store, with the
    write sequence number it reflects (call after the compute delay)."""
    with shop.write_store.transaction() as tx:
        row = tx.execute(
            "SELECT (SELECT COUNT(*) FROM orders WHERE customer = ?1 AND state != 'CANCELLED'),"
            " (SELECT COALESCE(SUM(amount), 0) FROM orders WHERE customer = ?1 "
            "AND state != 'CANCELLED'), "
            "(SELECT COALESCE(MAX(seq), 0) FROM customers WHERE id = ?1)", (customer,)
        ).fetchone()
    value = {"customer": customer, "orders": row[0], "amount": round(row[1], 2)}
    return Entry(value, row[2], model_now())


def value_index(shop: OrderShop, customer: str, answer: tuple[int, float], now: float) -> int:
    """Where ``answer`` ((open orders, amount)) sits in the customer's value history at model
    time ``now``: the latest change that produced it (-1 if it never was the value)."""
    for i in range(len(shop.values[customer]) - 1, -1, -1):
        committed, value = shop.values[customer][i]
        if value == answer and committed <= now:
            return i
    return -1


def catch_up(worker: Any, events: int, timeout: float = 20.0) -> None:
    """Wait until ``worker`` has read the ``events`` already on its topic, so a run starts
    with a caught-up cache (raises, naming the fix, when it does not get there)."""
    wait_until(lambda: worker.processed >= events or not worker.running, timeout,
               interval=0.01)
    if worker.processed < events:
        worker.stop()   # re-raises a handler error, if that is what happened
        raise LabError(f"The event cache's worker read {worker.processed} of {events} events "
                       f"within {timeout:g} s.", "check the broker (python -m labsupport "
                       "broker status)")


_caches = itertools.count(1)
CACHES = ("ttl", "event")   # the order in which each read goes to the two caches


def ttl_hit_rate(reads_per_s: float, ttl_ms: float, compute_ms: float) -> float:
    """The hit rate of one TTL entry read ``reads_per_s`` times a second: after a miss, the
    reads during the compute also miss; the next ttl seconds of reads hit:
    r*ttl / (1 + r*compute + r*ttl)."""
    r, ttl, compute = reads_per_s, ttl_ms / 1000, compute_ms / 1000
    return r * ttl / (1 + r * compute + r * ttl)


class CacheBench(Experiment):
    """What every cache experiment of module 07 shares: the shop, the origin that counts the
    requests it serves, the readers who judge every answer, and the paired traffic.

    A subclass names its ``arms`` (one cache design each), starts their services and says
    with :meth:`url` where a read goes; every read of the schedule goes to every arm at the
    same moment, so ``logs[a].staleness_ms[i]`` and ``logs[b].staleness_ms[i]`` are a pair.
    The origin counts requests by client: ``f"{arm}_cache"`` for a read that missed.
    ``dashboard()`` shows it; ``press_run(ttl_ms=..., compute_ms=..., read_rate=...)`` is its
    Run button.
    """

    TITLE = "A TTL cache and an event-refreshed cache"
    BUTTON = "Run 8 s of traffic"
    arms: tuple[str, ...] = CACHES

    def __init__(self, lab: Lab, shop: OrderShop, compute_ms: float, ttl_ms: float) -> None:
        self.lab, self.shop = lab, shop
        self.set(compute_ms=compute_ms, ttl_ms=ttl_ms)
        self.logs = {arm: ReadLog() for arm in self.arms}
        #: the origin's own request log: requests it served, by client
        self.origin: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.started = model_now()
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

    # ----- the origin -----------------------------------------------------------------------
    def _compute_blocking(self, customer: str, client: str) -> Entry:
        """The origin, called from a worker thread; it logs the request under ``client``."""
        with self._lock:
            self.origin[client] += 1
        time.sleep(to_wall(self.compute_ms / 1000))
        return compute_summary(self.shop, customer)

    async def _compute(self, customer: str, client: str) -> Entry:
        """The origin, called on a user's path; it logs the request under ``client``."""
        with self._lock:
            self.origin[client] += 1
        await asyncio.sleep(to_wall(self.compute_ms / 1000))
        return compute_summary(self.shop, customer)

    async def _dict_ttl(self, arm: str, entries: dict[str, Entry],
                        customer: str) -> web.Response:
        """Cache-aside in a dict of this process: an entry lives ``ttl_ms``; a read that finds
        none, or an expired one, computes it on the user's path (a miss) and keeps it."""
        entry = entries.get(customer)
        hit = entry is not None and (model_now() - entry.stored_at) * 1000 < self.ttl_ms
        if entry is None or not hit:
            entry = await self._compute(customer, f"{arm}_cache")   # a miss: the user waits
            entries[customer] = entry
        return self._answer(arm, entry, hit)

    def _answer(self, arm: str, entry: Entry, hit: bool) -> web.Response:
        log = self.logs[arm]
        log.hits += hit
        log.misses += not hit
        return web.json_response({**entry.value, "hit": hit})

    # ----- the traffic ------------------------------------------------------------------------
    def url(self, arm: str, index: int) -> str:
        """The base URL that read ``index`` of the schedule goes to, for ``arm``."""
        raise NotImplementedError

    def _reset(self) -> None:
        """Empty the arms' caches before a run (each subclass knows its own)."""

    def start(self, write_rate: float = 10.0, read_rate: float = 40.0,
              duration: float = 8.0) -> concurrent.futures.Future:
        """Writes on the shop and reads of every arm (same customers, same moments)."""
        require_positive(write_rate=write_rate, read_rate=read_rate, duration=duration)
        self.read_rate, self.duration = read_rate, duration
        self.logs = {arm: ReadLog() for arm in self.arms}
        self.origin.clear()
        self._reset()
        self.started = model_now()
        self.shop.commands.set(latency=5)
        self.run_future = submit_loaded(self.lab, self._traffic(write_rate, read_rate, duration))
        return self.run_future

    def run(self, write_rate: float = 10.0, read_rate: float = 40.0,
            duration: float = 8.0) -> CacheBench:
        """:meth:`start` and wait."""
        self.start(write_rate, read_rate, duration).result()
        return self

    async def _traffic(self, write_rate: float, read_rate: float, duration: float) -> None:
        """Writes on the shop; each read sent to every arm at the same moment."""
        schedule = [(t, f"summary/{path.split('/')[-1]}")
                    for t, path in self.shop.read_schedule(read_rate, duration)]
        judged: dict[tuple[int, int], tuple[float, float]] = {}

        def arm_reads(side: int, arm: str) -> Any:
            return fire_paths(self.lab.session, [""],
                              [(t, self.url(arm, i) + path) for i, (t, path) in
                               enumerate(schedule)],
                              on_shot=lambda _, shot: self._judge(side, shot, judged))

        _, *answers = await asyncio.gather(
            self.shop.write_load(write_rate, duration, Recorder("writes")),
            *(arm_reads(side, arm) for side, arm in enumerate(self.arms)))
        self._keep_pairs([got[0] for got in answers], judged)

    def _judge(self, side: int, shot: Shot, judged: dict[tuple[int, int],
                                                        tuple[float, float]]) -> None:
        """The reader judges one answer, as it arrives, against the command side's history
        of the customer's value at that moment (and the live plot shows it)."""
        if not shot.ok:
            return
        now, body = model_now(), shot.body
        customer = body["customer"]
        answer = (body["orders"], round(float(body["amount"]), 2))
        staleness = self.shop.stale_since_ms(customer, answer, now)
        judged[(side, shot.index)] = (now - self.started, staleness)
        arm = self.arms[side]
        log = self.logs[arm]
        log.staleness_ms.append(staleness)
        log.times.append(now - self.started)
        log.seen.append((shot.t, shot.t + shot.ms / 1000, customer,
                         value_index(self.shop, customer, answer, now)))
        log.origin_requests = self.origin[f"{arm}_cache"]

    def _keep_pairs(self, answers: list[list[Shot]],
                    judged: dict[tuple[int, int], tuple[float, float]]) -> None:
        """After the run, each log in schedule order, keeping only the reads every arm
        answered: ``logs[a].staleness_ms[i]`` and ``logs[b].staleness_ms[i]`` are a pair."""
        both = set.intersection(*({s.index for s in got} for got in answers),
                                *({i for side, i in judged if side == arm}
                                  for arm in range(len(self.arms))))
        for side, name in enumerate(self.arms):
            log = self.logs[name]
            log.times = [judged[(side, i)][0] for i in sorted(both)]
            log.staleness_ms = [judged[(side, i)][1] for i in sorted(both)]
            log.origin_requests = self.origin[f"{name}_cache"]

    def done(self) -> bool:
        return self.run_future is None or self.run_future.done()

    labels = {"ttl": "TTL cache", "event": "event-refreshed cache"}

    def draw(self, ax: Any) -> None:
        """The staleness of every answer over time, one colour per arm; the TTL dashed."""
        ax.axhline(self.ttl_ms, color=PALETTE[3], linestyle="--", lw=1.5, label="TTL")
        for arm, colour in zip(self.arms, (PALETTE[1], PALETTE[0], PALETTE[2], PALETTE[5]),
                               strict=False):
            log = self.logs[arm]
            count = min(len(log.times), len(log.staleness_ms))
            if count:
                ax.plot(log.times[:count], log.staleness_ms[:count], ".", color=colour,
                        markersize=4,
                        label=f"{self.labels.get(arm, arm)}: hit rate {log.hit_rate():.0%}")
        ax.set_xlabel("model seconds since the run started")
        ax.set_ylabel("staleness of the answer (model ms)")
        ax.set_ylim(bottom=-50, top=max(self.ttl_ms * 1.4, 100))
        ax.legend(loc="upper left", fontsize=8)

    def summary(self) -> str:
        """One line: the knobs, then each arm's hit rate and staleness."""
        return " | ".join([f"TTL {self.ttl_ms:g} ms, compute {self.compute_ms:g} ms",
                           *(self.logs[arm].summary(self.labels.get(arm, arm))
                             for arm in self.arms)])

    def make_controls(self) -> dict[str, Any]:
        """Sliders for the TTL and the compute cost; Run sends writes and reads."""
        import ipywidgets as w

        return {
            "ttl_ms": w.IntSlider(int(self.ttl_ms), 250, 5000, step=250, description="TTL ms"),
            "compute_ms": w.IntSlider(int(self.compute_ms), 0, 500, step=25,
                                      description="compute ms"),
            "read_rate": w.IntSlider(40, 10, 100, step=10, description="reads/s"),
        }

    def run_controls(self, ttl_ms: int, compute_ms: int, read_rate: int) -> LiveView:
        """What Run does: ``press_run(ttl_ms=2000, compute_ms=50, read_rate=40)`` moves the
        sliders, then sends 8 s of writes and reads; the plot follows them live."""
        self.set(compute_ms=compute_ms, ttl_ms=ttl_ms)
        self.start(read_rate=read_rate)
        return self.board.watch(self.done, self.summary, hz=4)

    # ----- predictions from other inputs ------------------------------------------------------
    def predicted_ttl_hit_rate(self, instances: int = 1) -> float:
        """Per customer, reads arrive at r = read_rate / customers a second (spread over
        ``instances`` caches of their own: r / instances each): :func:`ttl_hit_rate`."""
        r = self.read_rate / len(self.shop.customers) / instances
        return ttl_hit_rate(r, self.ttl_ms, self.compute_ms)

    def staleness_gap(self, q: float = 90, arm: str = "ttl", over: str = "event") -> Estimate:
        """``arm`` minus ``over`` staleness at percentile ``q`` (model ms), over the same
        reads (each read went to both caches at once): a paired bootstrap interval."""
        return difference(self.logs[arm].staleness_ms, self.logs[over].staleness_ms,
                          q=q / 100, paired=True)

    def predicted_ttl_stale_share(self, instances: int = 1) -> float:
        """From the TTL and the rate at which the truth changed during the run (w per
        customer per second, counted from the command side's history, not from the caches):
        a hit reads an entry of uniform age a in [0, ttl]; it is stale if the value changed
        since, with chance 1 - exp(-w*a). Averaged: 1 - (1 - exp(-w*ttl)) / (w*ttl), times
        the predicted hit rate (a miss is fresh)."""
        w = self.shop.value_changes(self.started) / len(self.shop.customers) / self.duration
        x = w * self.ttl_ms / 1000
        stale_hit = 1 - (1 - math.exp(-x)) / x if x > 0 else 0.0
        return self.predicted_ttl_hit_rate(instances) * stale_hit


class CacheExperiment(CacheBench):
    """The two caches side by side, over the same shop, the same writes and the same reads:
    a TTL cache and an event-refreshed cache, each a dict inside its own service."""

    def __init__(self, lab: Lab, shop: OrderShop, compute_ms: float = 50.0,
                 ttl_ms: float = 2000.0, prefix: str = "") -> None:
        super().__init__(lab, shop, compute_ms, ttl_ms)
        self.ttl_entries: dict[str, Entry] = {}
        self.event_entries: dict[str, Entry] = {}
        #: model ms from a write's commit to the event cache holding it, per write
        self.refresh_ms: list[float] = []
        self.rng = random.Random(f"{lab.seed}:{prefix}cache")
        self.ttl_service = lab.service(f"{prefix}ttl_cache", 0, routes={
            "/summary/{customer}": self._ttl_get})
        self.event_service = lab.service(f"{prefix}event_cache", 0, routes={
            "/summary/{customer}": self._event_get})
        for customer in shop.customers:   # precompute every entry, ahead of any read
            self.event_entries[customer] = self._compute_blocking(customer, "event_refresher")
        group = f"{prefix}summary-cache-{next(_caches)}"   # a new group: reads from offset 0
        self.worker = lab.bus.worker(shop.topic, group, self._on_event,
                                     name=group).wait_assigned()
        catch_up(self.worker, sum(lab.bus.end_offsets(shop.topic)))

    def url(self, arm: str, index: int) -> str:
        return (self.ttl_service if arm == "ttl" else self.event_service).url

    def _reset(self) -> None:
        self.ttl_entries.clear()
        self.refresh_ms = []

    def _on_event(self, event: Event) -> None:
        """The event cache's worker: recompute the customer's entry unless it has this write."""
        customer, seq = event.value["customer"], event.value["customer_seq"]
        held = self.event_entries.get(customer)
        if held is not None and held.seq >= seq:
            return   # already included by an earlier recompute: skip
        fresh = self._compute_blocking(customer, "event_refresher")
        now = model_now()
        with self._lock:
            self.event_entries[customer] = fresh
            for number, committed in self.shop.history[customer]:
                if (held.seq if held else 0) < number <= fresh.seq:
                    self.refresh_ms.append((now - committed) * 1000)

    # ----- serving ----------------------------------------------------------------------------
    async def _ttl_get(self, request: web.Request) -> web.Response:
        return await self._dict_ttl("ttl", self.ttl_entries, request.match_info["customer"])

    async def _event_get(self, request: web.Request) -> web.Response:
        customer = request.match_info["customer"]
        entry = self.event_entries.get(customer)
        hit = entry is not None
        if entry is None:
            entry = await self._compute(customer, "event_cache")
        return self._answer("event", entry, hit)

    def wait_refreshed(self, timeout: float = 10.0) -> None:
        """Block until the event cache holds every committed write (the worker caught up)."""
        if not wait_until(lambda: all(self.event_entries[c].seq >= self.shop.history[c][-1][0]
                                      for c in self.shop.customers), timeout, interval=0.01):
            raise LabError(f"The event cache was still behind after {timeout:g} s.",
                           "check the broker (python -m labsupport broker status) and "
                           "the worker: cache.worker")
