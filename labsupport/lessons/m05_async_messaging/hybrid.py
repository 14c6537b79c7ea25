"""Module 05 · The hybrid: answer the user on the fast path, publish the follow-up work.

A checkout does a short synchronous step (price and stock, ``sync_ms``) and answers; the
follow-up work (logging, analytics, precomputing recommendations) goes to a topic as an
event. Three endpoints of one service take the same orders at the same moments:

* ``/sync``: the synchronous step only, no event (the floor: what the user must wait for);
* ``/ack``: the step, then ``await publish(...)``: the answer waits for the broker's ack;
* ``/forget``: the step, then ``producer.produce(...)`` into librdkafka's local queue, bounded
  by ``queue.buffering.max.messages``; a full queue raises ``BufferError`` and the event is
  dropped (counted). The answer never waits for the broker.

:class:`HybridExperiment` runs them under three broker conditions: ``up``; ``slow`` (every
ack comes ``linger_ms`` later: the producers hold each message that long before sending,
``linger.ms``); and ``down`` (the producers' bootstrap is a port where nothing listens:
connection refused, no ack ever; an event expires after ``message.timeout.ms``, checked by
librdkafka about once a wall second). Users' waits are timed from each request's scheduled
send (:func:`labsupport.runtime.load.fire`); events are counted at the producer (acked, failed,
dropped) and at the broker (its end offsets).
"""
from __future__ import annotations

import asyncio
import gc
import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from labsupport.kit.evidence import Estimate, difference, quantile
from labsupport.runtime import load
from labsupport.runtime.errors import require
from labsupport.runtime.lab import Lab
from labsupport.runtime.messaging import Publisher
from labsupport.runtime.metrics import percentile
from labsupport.runtime.settings import to_model, to_wall

CONDITIONS = ("up", "slow", "down")
DESIGNS = ("sync", "ack", "forget")
DOWN_TIMEOUT_WALL_MS = 2000   # message.timeout.ms when the broker is down (wall ms)
LOADS = {"up": (5.0, 20), "slow": (5.0, 20), "down": (40.0, 40)}
"""(orders a second, orders) per condition: one at a time below the linger for ``slow`` (each
message alone in its batch); for ``down`` a burst that ends before the first event expires."""


def dead_bootstrap() -> str:
    """``127.0.0.1:<port>`` of a port that was free a moment ago: nothing listens there."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@dataclass
class Counts:
    """What happened to the events of one design, at the producer and at the broker."""

    produced: int = 0      # handed to the producer
    dropped: int = 0       # refused at once: the local queue was full (BufferError)
    acked: int = 0         # the broker acknowledged
    failed: int = 0        # the producer gave up (timed out, refused)
    on_broker: int = 0     # the broker's end offsets of the design's topic


@dataclass
class HybridRun:
    """One condition: every user's wait per design (same schedule, so index i of each design
    is the same moment) and each design's event counts."""

    condition: str
    ms: dict[str, list[float]]
    counts: dict[str, Counts]
    buffer: int
    linger_ms: float
    timeout_ms: float          # model ms after which a down broker's event expires

    def p50(self, design: str) -> Estimate:
        return quantile(self.ms[design], 0.5)

    def extra(self, design: str, over: str = "sync") -> Estimate:
        """Paired median of ``design``'s wait minus ``over``'s, request by request."""
        return difference(self.ms[design], self.ms[over], paired=True)

    def row(self) -> str:
        c = {d: self.counts[d] for d in ("ack", "forget")}
        return (f"{self.condition:<5} | " + " ".join(f"{percentile(self.ms[d], 50):>7.0f}"
                                                   for d in DESIGNS)
                + f" | {c['ack'].acked:>4}/{c['ack'].failed:<4} | {c['forget'].acked:>4}/"
                  f"{c['forget'].failed:<4} {c['forget'].dropped:>5} | "
                  f"{c['ack'].on_broker:>4} {c['forget'].on_broker:>4}")


@dataclass
class _Arm:
    """The producers and counters of one run of one condition."""

    publishers: dict[str, Publisher]
    topics: dict[str, str]
    counts: dict[str, Counts] = field(default_factory=lambda: {d: Counts() for d in DESIGNS})
    pending: list[Any] = field(default_factory=list)


class HybridExperiment:
    """``orders`` checkouts at ``rate`` a second to /sync, /ack and /forget at once."""

    def __init__(self, lab: Lab, sync_ms: float = 40.0, buffer: int = 10,
                 linger_ms: float = 150.0) -> None:
        require(sync_ms >= 0 and linger_ms > 0, "sync_ms >= 0 and linger_ms > 0 (model ms).")
        require(isinstance(buffer, int) and buffer >= 1, f"buffer must be 1 or more, got {buffer!r}.")
        self.lab, self.sync_ms, self.buffer, self.linger_ms = lab, sync_ms, buffer, linger_ms
        self.runs: dict[str, HybridRun] = {}
        self._arm: _Arm | None = None
        self.service = lab.service("checkout", 0, routes={
            "/sync": self._sync, "/ack": self._ack, "/forget": self._forget})

    # ----- the service ---------------------------------------------------------------------
    async def _sync(self, request: web.Request) -> web.Response:
        return await self._answer(request, None)

    async def _ack(self, request: web.Request) -> web.Response:
        return await self._answer(request, "ack")

    async def _forget(self, request: web.Request) -> web.Response:
        return await self._answer(request, "forget")

    async def _answer(self, request: web.Request, design: str | None) -> web.Response:
        await asyncio.sleep(to_wall(self.sync_ms / 1000))   # price and stock: the fast path
        arm, event = self._arm, {"path": request.path}
        if design is None or arm is None:
            return web.json_response({"ok": True})
        counts, pub, topic = arm.counts[design], arm.publishers[design], arm.topics[design]
        counts.produced += 1
        try:
            future = pub.send(topic, event)
        except BufferError:
            counts.dropped += 1           # the bounded local queue is full: the event is gone
            return web.json_response({"ok": True, "event": "dropped"})
        future.add_done_callback(lambda f: self._settled(counts, f))
        if design == "ack":
            try:
                await asyncio.wrap_future(future)
            except Exception:             # the broker never acked: the user waited for nothing
                return web.json_response({"ok": True, "event": "failed"})
        arm.pending.append(future)
        return web.json_response({"ok": True, "event": "sent"})

    @staticmethod
    def _settled(counts: Counts, future: Any) -> None:
        if future.exception() is None:
            counts.acked += 1
        else:
            counts.failed += 1

    # ----- one condition -------------------------------------------------------------------
    def _producers(self, condition: str) -> dict[str, Publisher]:
        """Each design's producer for ``condition`` (the lab closes them too, if a run fails)."""
        settings: dict[str, Any] = {}
        if condition == "slow":
            settings = {"linger_ms": max(1, round(to_wall(self.linger_ms / 1000) * 1000)),
                        "batch_num_messages": 10_000}
        if condition == "down":
            settings = {"bootstrap_servers": dead_bootstrap(),
                        "message_timeout_ms": DOWN_TIMEOUT_WALL_MS}
        bus = self.lab.bus
        return {"ack": bus.publisher(**settings),
                "forget": bus.publisher(queue_buffering_max_messages=self.buffer, **settings)}

    def run(self, condition: str = "up", rate: float | None = None,
            orders: int | None = None) -> HybridRun:
        """The same ``orders`` (``rate`` a second; :data:`LOADS` by default) to the three
        endpoints at once, under ``condition``."""
        require(condition in CONDITIONS, f"condition is one of {CONDITIONS}, got {condition!r}.")
        rate, orders = rate or LOADS[condition][0], orders or LOADS[condition][1]
        require(rate > 0 and isinstance(orders, int) and orders >= 5,
                "rate above 0 and at least 5 orders.")
        self._release()
        bus = self.lab.bus
        self._arm = _Arm(self._producers(condition),
                         {d: bus.topic(f"followups-{d}") for d in ("ack", "forget")})
        times = [i / rate for i in range(orders)]
        gc.collect()

        async def together() -> list[list[load.Shot]]:
            start = asyncio.get_running_loop().time() + 0.05
            return list(await asyncio.gather(*(
                load.fire(self.lab.session, self.service.url + d, times, method="POST",
                          start=start, timeout_ms=60_000) for d in DESIGNS)))

        shots = self.lab.run(together(), timeout=120)
        self._settle()
        arm = self._arm
        for design, topic in arm.topics.items():
            arm.counts[design].on_broker = sum(bus.end_offsets(topic))
        timeout_ms = to_model(DOWN_TIMEOUT_WALL_MS / 1000) * 1000
        self.runs[condition] = HybridRun(condition, {d: [s.ms for s in got]
                                                     for d, got in zip(DESIGNS, shots, strict=True)},
                                         arm.counts, self.buffer, self.linger_ms, timeout_ms)
        self._release()
        return self.runs[condition]

    def _settle(self) -> None:
        """Wait until every event handed to a producer was acked or given up on."""
        for future in list(self._arm.pending if self._arm else []):
            try:
                future.result(timeout=10)
            except Exception:   # counted as failed by _settled
                pass

    def _release(self) -> None:
        """Close this experiment's producers (each run owns its own)."""
        arm, self._arm = self._arm, None
        for pub in (arm.publishers.values() if arm else ()):
            pub.close()

    def run_all(self) -> dict[str, HybridRun]:
        """Every condition in turn: up, slow, down."""
        return {c: self.run(c) for c in CONDITIONS}

    def dropped_predicted(self, orders: int | None = None) -> int:
        """Events the forget design must drop with the broker down, from the bound alone: the
        first ``buffer`` wait in the queue (until they expire), every later one finds it full."""
        return max(0, (orders or LOADS["down"][1]) - self.buffer)

    def close(self) -> None:
        """Stop the checkout service and close the producers."""
        self._release()
        self.lab.remove("checkout")

    # ----- what it shows -------------------------------------------------------------------
    def table(self) -> str:
        head = ("broker | p50 wait (model ms)      | ack design | forget design    | on broker\n"
                "       |    sync     ack  forget | acked/fail | acked/fail  drop | ack forget")
        return head + "\n" + "\n".join(self.runs[c].row() for c in CONDITIONS if c in self.runs)

    def draw(self, ax: Any) -> None:
        """Median wait per design and condition, as grouped bars."""
        conditions = [c for c in CONDITIONS if c in self.runs]
        width = 0.8 / len(DESIGNS)
        for j, design in enumerate(DESIGNS):
            ax.bar([i + j * width for i in range(len(conditions))],
                   [percentile(self.runs[c].ms[design], 50) for c in conditions], width,
                   label=design)
        ax.set_xticks([i + width for i in range(len(conditions))], conditions)
        ax.set_ylabel("user's median wait (model ms)")
        ax.set_yscale("log")
        ax.legend()


__all__ = ["HybridExperiment", "HybridRun", "Counts", "CONDITIONS", "DESIGNS", "dead_bootstrap"]
