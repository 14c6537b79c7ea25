"""Module 05/06 · Push or pull: an Event Grid-like dispatcher against a Kafka consumer group.

The same events go to the same subscriber service two ways at once:

* **push** (Event Grid, SNS, webhooks): the publisher POSTs each event to the lab's own
  :class:`Dispatcher`, which answers as soon as it has *stored* the event; the dispatcher then
  POSTs it to the subscriber's ``/push`` endpoint with a delivery timeout, retries on failure
  on a schedule shaped like Event Grid's, and dead-letters an event (to a topic on the broker)
  after its last attempt, or at once on an error no retry can fix (400, 401, 403, 413);
* **pull** (Kafka): the publisher produces the event to a topic and waits for the broker's
  ack; one consumer of a group fetches the events one at a time and POSTs each to the
  subscriber's ``/pull`` endpoint. A failure is retried every :data:`PULL_RETRY_MS` while the
  partition waits (the committed offset does not move, so the backlog is lag on the broker).

Event Grid's documented schedule (learn.microsoft.com, "Event Grid message delivery and
retry") is 10 s, 30 s, 1 min, 5 min, 10 min, 30 min, 1 h, 3 h, 6 h, then every 12 h up to
24 h, on a best-effort basis with a small randomisation; it waits 30 s for an answer; an
event subscription's retry policy defaults to 30 delivery attempts and a 1440-minute time to
live. The lab runs that schedule :data:`COMPRESS` times faster (model time, then scaled by
``LAB_TIME_SCALE``), without randomisation, and plans each attempt from the moment the event
was stored (``stored + 100 ms``, ``+ 400 ms``, ...), so when each event is delivered can be
predicted from the publish times, the schedule and the outage alone: :func:`predict_push`.

Everything about a run is measured at its source: deliveries and their concurrency at the
subscriber (its own clock), the publisher's waits at the publisher, the dispatcher's queue
in the dispatcher, the consumer group's lag and the dead letters on the broker.
"""
from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from labsupport import broker
from labsupport.kit.dashboard import PALETTE
from labsupport.kit.evidence import Estimate, difference, quantile
from labsupport.kit.experiment import Experiment
from labsupport.runtime.errors import LabError, require
from labsupport.runtime.lab import Lab
from labsupport.runtime.load import client_timeout
from labsupport.runtime.metrics import percentile
from labsupport.runtime.services import fetch
from labsupport.runtime.settings import to_model, to_wall
from labsupport.runtime.waiting import wait_until

EVENT_GRID_SCHEDULE_S = (10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600)
"""Event Grid's documented waits between delivery attempts, in seconds (then every 12 h)."""
EVENT_GRID_LATER_S = 12 * 3600
EVENT_GRID_TIMEOUT_S = 30          # it waits this long for the endpoint's answer
EVENT_GRID_MAX_ATTEMPTS = 30       # the retry policy's default (1 to 30)
EVENT_GRID_TTL_MIN = 1440          # the retry policy's default event time to live (minutes)
COMPRESS = 100                     # the lab runs Event Grid's clock this many times faster
PERMANENT = frozenset({400, 401, 403, 413})
"""Answers Event Grid does not retry for a webhook: the event is dead-lettered at once."""
PULL_RETRY_MS = 100.0              # the pull consumer's wait before it tries the head again
DESIGNS = ("push", "pull")
SCENARIOS = {
    # scenario: rate (events/s), events, subscriber delay (ms), outage (ms, 0 = none)
    "healthy": {"rate": 20.0, "events": 30, "delay_ms": 20.0, "outage_ms": 0.0},
    "slow": {"rate": 10.0, "events": 20, "delay_ms": 200.0, "outage_ms": 0.0},
    "down": {"rate": 20.0, "events": 60, "delay_ms": 50.0, "outage_ms": 1500.0},
}
OUTAGE_FROM_MS = 500.0             # the subscriber goes down this long after the first event


@dataclass(frozen=True)
class Policy:
    """A dispatcher's retry policy, in model time: Event Grid's, :data:`COMPRESS` x faster."""

    max_attempts: int = EVENT_GRID_MAX_ATTEMPTS
    ttl_ms: float = EVENT_GRID_TTL_MIN * 60_000 / COMPRESS
    timeout_ms: float = EVENT_GRID_TIMEOUT_S * 1000 / COMPRESS

    def __post_init__(self) -> None:
        require(isinstance(self.max_attempts, int) and 1 <= self.max_attempts <= 30,
                f"max_attempts is 1 to 30 (Event Grid's range), got {self.max_attempts!r}.")
        require(self.ttl_ms > 0 and self.timeout_ms > 0, "ttl_ms and timeout_ms above 0.")

    def offsets_ms(self) -> list[float]:
        """When each attempt is due, model ms after the event was stored (0 = at once);
        attempts beyond the time to live are not made."""
        waits = [s * 1000 / COMPRESS for s in EVENT_GRID_SCHEDULE_S]
        waits += [EVENT_GRID_LATER_S * 1000 / COMPRESS] * 30
        offsets, at = [0.0], 0.0
        for wait in waits[:self.max_attempts - 1]:
            at += wait
            if at >= self.ttl_ms:
                break
            offsets.append(at)
        return offsets


def predict_push(published_ms: list[float], outage: tuple[float, float],
                 policy: Policy) -> list[float | None]:
    """When each event reaches the subscriber (model ms), or ``None`` if it is dead-lettered:
    its first planned attempt that falls outside the outage ``[start, end)``."""
    start, end = outage
    fates: list[float | None] = []
    for t in published_ms:
        due = [t + off for off in policy.offsets_ms()]
        fates.append(next((d for d in due if not start <= d < end), None))
    return fates


def dead_letter_time(t: float, policy: Policy) -> float:
    """When an event published at ``t`` is dead-lettered if every attempt fails."""
    return t + policy.offsets_ms()[-1]


@dataclass(frozen=True)
class Visit:
    """One request the subscriber received: which event, when (model ms), what it answered."""

    index: int
    start: float
    end: float
    status: int


class Subscriber:
    """The service both designs deliver to: ``/push`` and ``/pull`` do the same work.

    It takes ``delay_ms`` per event, answers 503 while it is down, and 400 to an event marked
    ``"bad"`` (a permanent error). Every request is recorded with the subscriber's own clock.
    """

    def __init__(self, lab: Lab, delay_ms: float = 20.0) -> None:
        self.delay_ms = delay_ms
        self.down: tuple[float, float] = (0.0, 0.0)      # monotonic seconds [from, until)
        self.origin = time.monotonic()
        self.visits: dict[str, list[Visit]] = {d: [] for d in DESIGNS}
        self.service = lab.service("subscriber", 0, routes={
            "/push": self._handler("push"), "/pull": self._handler("pull")})

    def reset(self, origin: float, delay_ms: float, down: tuple[float, float]) -> None:
        """A new run: times count from ``origin``; down during ``down`` (monotonic s)."""
        self.origin, self.delay_ms, self.down = origin, delay_ms, down
        self.visits = {d: [] for d in DESIGNS}

    def _ms(self, t: float) -> float:
        return to_model(t - self.origin) * 1000

    def _handler(self, design: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            start = time.monotonic()
            event = await request.json()
            status = 200
            if self.down[0] <= start < self.down[1]:
                status = 503
            elif event.get("bad"):
                status = 400
            else:
                await asyncio.sleep(to_wall(self.delay_ms / 1000))
            self.visits[design].append(Visit(event["i"], self._ms(start),
                                             self._ms(time.monotonic()), status))
            return web.json_response({"ok": status == 200}, status=status)
        return handle


class Dispatcher:
    """The lab's Event Grid: ``POST /publish`` stores the event and answers 200 at once (or,
    with ``ack_after_delivery``, only after the subscriber took it: the control arm); each
    event is then delivered to ``target`` on :class:`Policy`'s schedule."""

    def __init__(self, lab: Lab, target: str, dead_letters: str) -> None:
        self.lab, self.target, self.dead_letters = lab, target, dead_letters
        self.policy = Policy()
        self.ack_after_delivery = False
        self.pending: dict[str, float] = {}       # event id -> when it was stored
        self.attempts: Counter[str] = Counter()
        self.timed_out: Counter[str] = Counter()  # attempts whose answer never came in time
        self.dead: dict[str, str] = {}            # event id -> why
        self.late_ms = 0.0                        # the latest an attempt left, or a refused
        #                                           one was answered, after its plan
        self._tasks: set[asyncio.Task[None]] = set()
        self._publisher = lab.bus.publisher()
        self.service = lab.service("dispatcher", 0, routes={"/publish": self._publish})

    async def _publish(self, request: web.Request) -> web.Response:
        event = await request.json()
        self.pending[event["id"]] = time.monotonic()
        task = asyncio.create_task(self._deliver(event, self.pending[event["id"]]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self.ack_after_delivery:
            await asyncio.shield(task)
        return web.json_response({"stored": True})

    async def _deliver(self, event: dict[str, Any], stored: float) -> None:
        timeout = client_timeout(self.policy.timeout_ms)
        status = 0
        for offset in self.policy.offsets_ms():
            due = stored + to_wall(offset / 1000)
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            self.late_ms = max(self.late_ms, to_model(time.monotonic() - due) * 1000)
            self.attempts[event["id"]] += 1
            status = (await fetch(self.lab.session, self.target, timeout, method="POST",
                                  json=event))["status"]
            if 200 <= status < 300:
                self.pending.pop(event["id"], None)
                return
            # a refused attempt reached the subscriber before its answer came back: this
            # bounds how late after its plan an attempt can arrive (loop and trip together)
            if status:  # answered (a timeout is no trip: it says nothing of the path)
                self.late_ms = max(self.late_ms, to_model(time.monotonic() - due) * 1000)
            if not status:
                self.timed_out[event["id"]] += 1
            if status in PERMANENT:
                break
        why = f"answer {status}, not retried" if status in PERMANENT else "attempts used up"
        await self._dead_letter(event, why)

    async def _dead_letter(self, event: dict[str, Any], why: str) -> None:
        self.dead[event["id"]] = why
        await self._publisher.publish(self.dead_letters, event, headers={
            "reason": why, "attempts": str(self.attempts[event["id"]])})
        self.pending.pop(event["id"], None)

    def busy(self) -> bool:
        """True while an event is still being delivered (or waiting for its next attempt)."""
        return bool(self.pending or self._tasks)


class PullConsumer:
    """One consumer of a group on ``topic``: it POSTs each event to ``target`` and retries a
    failed one every :data:`PULL_RETRY_MS` (the partition waits); a permanent error sends the
    event to ``dead_letters`` and the consumer moves on."""

    def __init__(self, lab: Lab, topic: str, target: str, dead_letters: str) -> None:
        self.lab, self.target, self.dead_letters = lab, target, dead_letters
        self.retries = 0
        self.dead: dict[str, str] = {}
        self._publisher = lab.bus.publisher()
        self.group = f"pushpull-{uuid.uuid4().hex[:6]}"   # a new group for each experiment
        self.worker = lab.bus.worker(topic, self.group, self._handle, name="pull")

    async def _handle(self, event: Any) -> None:
        timeout = client_timeout(60_000)
        while True:
            status = (await fetch(self.lab.session, self.target, timeout, method="POST",
                                  json=event.value))["status"]
            if 200 <= status < 300:
                return
            if status in PERMANENT:
                self.dead[event.value["id"]] = f"answer {status}"
                await self._publisher.publish(self.dead_letters, event.value,
                                              headers={"reason": f"answer {status}"})
                return
            self.retries += 1
            await asyncio.sleep(to_wall(PULL_RETRY_MS / 1000))


@dataclass
class PushPullRun:
    """One scenario, both designs: every number measured where it happens (model ms)."""

    scenario: str
    rate: float
    delay_ms: float
    outage: tuple[float, float]                  # model ms [start, end) of the outage
    policy: Policy
    published: list[float]                       # when each event was published
    waits: dict[str, list[float]]                # the publisher's wait: dispatcher / produce ack
    visits: dict[str, list[Visit]]
    dead: dict[str, int]                         # dead letters on the broker (end offsets)
    backlog: list[tuple[float, int, int]] = field(default_factory=list)
    """(model ms, dispatcher's queue, consumer lag on the broker), sampled during the run."""
    at_recovery: tuple[float, float, int, int] | None = None
    """(from ms, to ms, dispatcher's queue, broker lag) read just before the subscriber came
    back (the broker's answer takes a while, hence a span)."""
    bad: frozenset[int] = frozenset()
    dead_ids: dict[str, set[int]] = field(default_factory=dict)
    """The events each design dead-lettered, by its own record."""
    late_ms: float = 0.0
    """The latest any push attempt left after its planned moment, or any refused attempt
    was answered (the loop was busy, the trip was long): how late an attempt can arrive."""
    timed_out: dict[int, int] = field(default_factory=dict)
    """Push attempts per event whose answer did not come within the delivery timeout, by
    the dispatcher's own record: it never saw that answer, so it tried again."""

    def slack_ms(self, floor_ms: float = 50.0) -> float:
        """How far the push predictions' outage end may be off: ``floor_ms`` plus the
        dispatcher's measured lateness."""
        return floor_ms + self.late_ms

    # ----- deliveries, from the subscriber's record -------------------------------------------
    def ok(self, design: str) -> list[Visit]:
        return [v for v in self.visits[design] if v.status == 200]

    def first_receipt(self, design: str) -> dict[int, float]:
        """Each delivered event's first receipt at the subscriber (model ms)."""
        first: dict[int, float] = {}
        for v in sorted(self.ok(design), key=lambda v: v.start):
            first.setdefault(v.index, v.start)
        return first

    def deliver_ms(self, design: str) -> list[float]:
        """Publish to receipt at the subscriber, per delivered event (in event order)."""
        first = self.first_receipt(design)
        return [first[i] - self.published[i] for i in sorted(first)]

    def wait(self, design: str, q: float = 0.5) -> Estimate:
        """The publisher's wait for ``design``'s ack (dispatcher / broker), quantile ``q``."""
        return quantile(self.waits[design], q)

    def paired_extra(self, design: str = "pull", over: str = "push") -> Estimate:
        """Paired median of ``design``'s time to deliver minus ``over``'s, event by event."""
        a, b = self.first_receipt(design), self.first_receipt(over)
        both = sorted(set(a) & set(b))
        return difference([a[i] - self.published[i] for i in both],
                          [b[i] - self.published[i] for i in both], paired=True)

    def tries(self, design: str) -> Counter[int]:
        """How many requests the subscriber received for each event (any answer)."""
        return Counter(v.index for v in self.visits[design])

    def answered(self, design: str, status: int) -> Counter[int]:
        """How many times the subscriber answered ``status`` to each event: a 400 counted
        twice for one event means it was sent again after a permanent error."""
        return Counter(v.index for v in self.visits[design] if v.status == status)

    def dead_lettered(self, design: str = "push") -> list[int]:
        """Events never delivered that were not marked bad: the retries ran out."""
        first = self.first_receipt(design)
        return [i for i in range(len(self.published)) if i not in first and i not in self.bad]

    def lost(self, design: str) -> int:
        """Events neither delivered nor dead-lettered (a push delivery that timed out may be
        both: the subscriber took it, the dispatcher never heard)."""
        first = self.first_receipt(design)
        return sum(i not in first and i not in self.dead_ids.get(design, set())
                   for i in range(len(self.published)))

    def duplicates(self, design: str) -> int:
        """Successful deliveries beyond the first of each event."""
        return len(self.ok(design)) - len(self.first_receipt(design))

    def max_concurrency(self, design: str, window: tuple[float, float] | None = None) -> int:
        """The most requests the subscriber was working on at once (accepted ones), among
        requests that arrived in ``window`` (all by default)."""
        lo, hi = window or (-float("inf"), float("inf"))
        spans = [(v.start, v.end) for v in self.ok(design)]
        best = 0
        for start, _ in spans:
            if lo <= start < hi:
                best = max(best, sum(s <= start < e for s, e in spans))
        return best

    def recovery(self, window_ms: float = 1000.0) -> tuple[float, float]:
        """The first ``window_ms`` after the subscriber came back."""
        return self.outage[1], self.outage[1] + window_ms

    def deliveries_in(self, design: str, window: tuple[float, float]) -> int:
        """Accepted requests that reached the subscriber in ``window``."""
        return sum(window[0] <= v.start < window[1] for v in self.ok(design))

    # ----- predictions, from the publish times, the schedule and the outage only --------------
    def predicted_push(self, slack_ms: float = 0.0) -> list[float | None]:
        """:func:`predict_push` with the outage's end moved by ``slack_ms``."""
        outage = (self.outage[0], self.outage[1] + slack_ms)
        return [None if i in self.bad else f
                for i, f in enumerate(predict_push(self.published, outage, self.policy))]

    def predicted_in(self, window: tuple[float, float], slack_ms: float) -> tuple[int, int]:
        """(fewest, most) push deliveries predicted in ``window`` when the outage may end up to
        ``slack_ms`` earlier or later than set and an attempt may reach the subscriber up to
        ``slack_ms`` after its plan (timers, the loop and the trip are not exact): most, those
        planned from ``slack_ms`` before the window; fewest, those planned in it with
        ``slack_ms`` to spare."""
        start, end = window

        def counted(low: float, high: float) -> list[int]:
            return [sum(f is not None and low <= f < high for f in self.predicted_push(s))
                    for s in (-slack_ms, 0.0, slack_ms)]
        return min(counted(start, end - slack_ms)), max(counted(start - slack_ms, end))

    def predicted_dead(self, slack_ms: float = 0.0) -> tuple[int, int]:
        """(fewest, most) events the dispatcher must dead-letter, as :meth:`predicted_in`."""
        counts = [sum(f is None for f in self.predicted_push(s)) for s in (-slack_ms, 0.0,
                                                                          slack_ms)]
        return min(counts), max(counts)

    def predicted_queue(self, t0: float, t1: float, slack_ms: float = 0.0) -> tuple[int, int]:
        """Push: (fewest, most) events the dispatcher holds (published, neither delivered nor
        dead-lettered yet) at the moment its queue was read, somewhere between ``t0`` and
        ``t1``, from the publish times and the schedule, the outage's end known to
        ``slack_ms`` (as :meth:`predicted_in`). Fewest: held through all of ``[t0, t1]``;
        most: held at some moment of it."""
        fewest, most = [], []
        for s in (-slack_ms, 0.0, slack_ms):
            ends = [f if f is not None else dead_letter_time(p, self.policy)
                    for p, f in zip(self.published, self.predicted_push(s), strict=True)]
            fewest.append(sum(p <= t0 and e > t1 for p, e in zip(self.published, ends,
                                                                 strict=True)))
            most.append(sum(p <= t1 and e > t0 for p, e in zip(self.published, ends,
                                                               strict=True)))
        return min(fewest), max(most)

    def predicted_lag(self, t0: float, t1: float) -> tuple[int, int]:
        """Pull, while the subscriber is down: (fewest, most) events on the topic that the
        group has not committed between ``t0`` and ``t1``: the events on the topic (produce
        acked by ``t0``, at most published by ``t1``) less those the subscriber had taken
        (answered 200: the consumer commits each right after); at most one more if that
        commit had not reached the broker yet."""
        acked = [p + w for p, w in zip(self.published, self.waits["pull"], strict=True)]

        def taken(t: float) -> int:
            return len({v.index for v in self.ok("pull") if v.end < t})
        return (sum(a <= t0 for a in acked) - taken(t1),
                sum(p <= t1 for p in self.published) - taken(t0) + 1)

    # ----- what it shows --------------------------------------------------------------------
    def row(self, design: str) -> str:
        ms = self.deliver_ms(design) or [float("nan")]
        window = self.recovery()
        burst = (f"{self.deliveries_in(design, window):>4} {self.max_concurrency(design, window):>4}"
                 if self.outage[1] > self.outage[0] else f"{'-':>4} {'-':>4}")
        return (f"{design:<5}| {percentile(self.waits[design], 50):>9.1f} | "
                f"{percentile(ms, 50):>7.0f} {max(ms):>8.0f} | {self.max_concurrency(design):>4} | "
                f"{len(self.first_receipt(design)):>5} {self.dead[design]:>4} "
                f"{self.lost(design):>4} {self.duplicates(design):>4} | {burst}")

    def table(self) -> str:
        """Both designs side by side; ``conc`` is the most requests the subscriber worked on
        at once, ``1st s back`` the first second after it came back."""
        down = (f", down {self.outage[0]:.0f}-{self.outage[1]:.0f} ms"
                if self.outage[1] > self.outage[0] else "")
        return "\n".join([
            f"{self.scenario}: {len(self.published)} events at {self.rate:g}/s, subscriber "
            f"{self.delay_ms:g} ms each{down} (model ms)",
            "     | publisher | time to deliver  | peak | deliv dead lost dupl | 1st s back",
            "     |  wait p50 |     p50      max | conc |                      | reqs conc",
            *(self.row(d) for d in DESIGNS)])

    def draw(self, ax: Any) -> None:
        """Who holds the backlog: the dispatcher's queue and the consumer lag, over time."""
        if self.outage[1] > self.outage[0]:
            ax.axvspan(*self.outage, color="#999999", alpha=0.25, label="subscriber down")
        if self.backlog:
            t = [b[0] for b in self.backlog]
            ax.step(t, [b[1] for b in self.backlog], where="post", color=PALETTE[1],
                    label="push: dispatcher's retry queue")
            ax.step(t, [b[2] for b in self.backlog], where="post", color=PALETTE[0],
                    label="pull: consumer lag (broker)")
        ax.set_xlabel("model ms since the first event")
        ax.set_ylabel("events waiting")
        ax.legend(loc="upper right", fontsize=8)


class PushPull(Experiment):
    """The experiment: a subscriber, a dispatcher (push) and a consumer group (pull)."""

    TITLE = "Push (dispatcher) or pull (consumer group)"
    BUTTON = "Run"

    def __init__(self, lab: Lab) -> None:
        earlier = _LIVE.pop(id(lab), None)
        if earlier is not None and earlier.lab is lab and not lab.closed:
            earlier.close()            # the cell ran again: stop the last run's consumer first
        self.lab = lab
        bus = lab.bus
        self.topic = bus.topic("pushpull-events")
        self.dead_topics = {d: bus.topic(f"pushpull-dead-{d}") for d in DESIGNS}
        self.subscriber = Subscriber(lab)
        self.dispatcher = Dispatcher(lab, self.subscriber.service.url + "push",
                                     self.dead_topics["push"])
        self.pull = PullConsumer(lab, self.topic, self.subscriber.service.url + "pull",
                                 self.dead_topics["pull"])
        self._producer = bus.publisher()
        self.runs: dict[str, PushPullRun] = {}
        self.last: PushPullRun | None = None
        self._runs = 0
        self._probe: Any = None
        self._probe_lock = threading.Lock()
        self.pull.worker.wait_assigned(15)
        _LIVE[id(lab)] = self

    # ----- one run ----------------------------------------------------------------------------
    def run(self, scenario: str = "healthy", *, rate: float | None = None,
            events: int | None = None, delay_ms: float | None = None,
            outage_ms: float | None = None, max_attempts: int = EVENT_GRID_MAX_ATTEMPTS,
            bad: tuple[int, ...] = (), ack_after_delivery: bool = False) -> PushPullRun:
        """Publish ``events`` at ``rate`` a second to both designs and wait until each event
        is delivered or dead-lettered. The subscriber takes ``delay_ms`` per event and is down
        for ``outage_ms`` from :data:`OUTAGE_FROM_MS`; events at the indices ``bad`` get a
        permanent error (400). Defaults come from :data:`SCENARIOS`."""
        require(scenario in SCENARIOS, f"scenario is one of {list(SCENARIOS)}, got {scenario!r}.")
        p = SCENARIOS[scenario]
        rate, events = rate or p["rate"], events or int(p["events"])
        delay_ms = p["delay_ms"] if delay_ms is None else delay_ms
        outage_ms = p["outage_ms"] if outage_ms is None else outage_ms
        require(rate > 0 and isinstance(events, int) and 2 <= events <= 500,
                "rate above 0 and 2 to 500 events.")
        require(delay_ms >= 0 and outage_ms >= 0, "delay_ms and outage_ms are 0 or more.")
        self._runs += 1
        self.dispatcher.policy = Policy(max_attempts=max_attempts)
        self.dispatcher.ack_after_delivery = ack_after_delivery
        origin = time.monotonic() + 0.1
        down = (origin + to_wall(OUTAGE_FROM_MS / 1000),
                origin + to_wall((OUTAGE_FROM_MS + outage_ms) / 1000)) if outage_ms else (0, 0)
        self.subscriber.reset(origin, delay_ms, down)
        self.pull.dead, self.dispatcher.late_ms = {}, 0.0
        outage = (OUTAGE_FROM_MS, OUTAGE_FROM_MS + outage_ms) if outage_ms else (0.0, 0.0)
        times = [i / rate for i in range(events)]
        ends = {d: sum(self.lab.bus.end_offsets(self.dead_topics[d])) for d in DESIGNS}
        sampler = _Sampler(self, origin, down[1] if outage_ms else None)
        sampler.start()
        try:
            published, waits = self.lab.run(self._publish_all(origin, times, set(bad)),
                                             timeout=120)
            wait_until(lambda: self._done(events), timeout=60 + to_wall(outage_ms / 1000) * 10,
                       what="every event to be delivered or dead-lettered")
        finally:
            sampler.stop()
        dead = {d: sum(self.lab.bus.end_offsets(self.dead_topics[d])) - ends[d] for d in DESIGNS}
        run = PushPullRun(scenario, rate, delay_ms, outage, self.dispatcher.policy, published,
                          waits, self.subscriber.visits, dead, sampler.samples,
                          sampler.at_recovery, frozenset(bad),
                          {"push": self._indices(self.dispatcher.dead),
                           "pull": self._indices(self.pull.dead)}, self.dispatcher.late_ms,
                          self._counts(self.dispatcher.timed_out))
        self.runs[scenario] = self.last = run
        return run

    async def _publish_all(self, origin: float, times: list[float],
                           bad: set[int]) -> tuple[list[float], dict[str, list[float]]]:
        """Each event at its time: to the dispatcher (its ack) and to the topic (its ack)."""
        published = [0.0] * len(times)
        waits: dict[str, list[float]] = {d: [0.0] * len(times) for d in DESIGNS}
        url, run = self.dispatcher.service.url + "publish", self._runs

        async def one(i: int, due: float) -> None:
            event = {"id": f"r{run}-{i}", "i": i, "bad": i in bad}
            published[i] = to_model(time.monotonic() - origin) * 1000

            async def push() -> None:
                await fetch(self.lab.session, url, client_timeout(60_000), method="POST",
                            json=event)
                waits["push"][i] = to_model(time.monotonic() - due) * 1000

            async def pull() -> None:
                await self._producer.publish(self.topic, event, key=event["id"])
                waits["pull"][i] = to_model(time.monotonic() - due) * 1000
            await asyncio.gather(push(), pull())

        tasks = []
        for i, t in enumerate(times):
            due = origin + to_wall(t)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
        return published, waits

    def _counts(self, counter: Counter[str]) -> dict[int, int]:
        """``counter``'s counts for this run's events, by index."""
        return {i: counter[f"r{self._runs}-{i}"] for i in self._indices(counter)}

    def _indices(self, ids: Iterable[str]) -> set[int]:
        """The indices of this run's events among ``ids`` (``r<run>-<index>``)."""
        prefix = f"r{self._runs}-"
        return {int(k[len(prefix):]) for k in ids if k.startswith(prefix)}

    def _done(self, events: int) -> bool:
        """Every event reached the subscriber or a dead-letter topic, in both designs."""
        if not self.pull.worker.running:
            self.pull.worker.stop()          # raises the consumer's error, if it had one
            raise LabError("The pull consumer has stopped.", "create the experiment again")
        pulled = {v.index for v in self.subscriber.visits["pull"] if v.status == 200}
        return not self.dispatcher.busy() and len(pulled | self._indices(self.pull.dead)) >= events

    def lag(self) -> int:
        """The pull design's backlog, from the broker: end offsets minus the group's committed
        offsets (one query each, on a probe kept open: a few ms)."""
        from confluent_kafka import Consumer, TopicPartition

        with self._probe_lock:
            if self._probe is None:
                self._probe = Consumer(broker.consumer_config(
                    f"{self.pull.group}.{self.lab.bus.run_id}", enable_auto_commit=False))
            part = TopicPartition(self.topic, 0)
            end = self._probe.get_watermark_offsets(part, timeout=5)[1]
            done = self._probe.committed([part], timeout=5)[0].offset
        return end - max(done, 0)

    # ----- the dashboard ----------------------------------------------------------------------
    def make_controls(self) -> dict[str, Any]:
        """Sliders for the subscriber's delay, the outage, the rate and max attempts; Run."""
        import ipywidgets as w

        return {
            "delay_ms": w.FloatSlider(50, min=0, max=500, step=10, description="delay ms"),
            "outage_ms": w.FloatSlider(1500, min=0, max=4000, step=100, description="outage ms"),
            "rate": w.FloatSlider(20, min=2, max=50, step=1, description="events/s"),
            "max_attempts": w.IntSlider(30, min=1, max=30, description="max attempts"),
        }

    def run_controls(self, delay_ms: float, outage_ms: float, rate: float,
                     max_attempts: int) -> PushPullRun:
        """What Run does: 3 s of events, e.g. ``press_run(delay_ms=50, outage_ms=1500,
        rate=20, max_attempts=30)`` (each moves its slider first). An outage makes it the
        ``"down"`` scenario, delay x rate above 1 s the ``"slow"`` one, else ``"healthy"``."""
        scenario = ("down" if outage_ms else
                    "slow" if delay_ms * rate > 1000 else "healthy")
        run = self.run(scenario, rate=rate, delay_ms=delay_ms, outage_ms=outage_ms,
                       max_attempts=max_attempts, events=max(2, min(500, round(rate * 3))))
        return self.show(run)

    def draw(self, ax: Any) -> None:
        """The last run's plot."""
        if self.last is not None:
            self.last.draw(ax)

    def summary(self, run: PushPullRun | None = None) -> str:
        """One line: time to deliver, backlog, losses and the recovery load of both designs
        (of ``run``, or of the last run)."""
        run = self.last if run is None else run
        if run is None:
            return "press Run"
        parts = []
        for d in DESIGNS:
            ms = run.deliver_ms(d)
            parts.append(f"{d}: p50 {percentile(ms, 50) if ms else float('nan'):.0f} ms to deliver,"
                         f" {run.dead[d]} dead-lettered, {run.lost(d)} lost, at most "
                         f"{run.max_concurrency(d)} at once")
        return f"{run.scenario}: " + "; ".join(parts)

    def close(self) -> None:
        """Stop the consumer and the two services."""
        if _LIVE.get(id(self.lab)) is self:
            del _LIVE[id(self.lab)]
        self.pull.worker.stop(raise_error=False)
        with self._probe_lock:
            if self._probe is not None:
                self._probe.close()
                self._probe = None
        for name in ("dispatcher", "subscriber"):
            self.lab.remove(name)


_LIVE: dict[int, PushPull] = {}
"""The experiment each lab runs now (one per lab: the services have fixed names)."""


class _Sampler:
    """Reads the dispatcher's queue and the broker's lag every few tenths of a second, and
    once just before the subscriber comes back (``recover_at``, monotonic seconds)."""

    def __init__(self, exp: PushPull, origin: float, recover_at: float | None) -> None:
        self.exp, self.origin, self.recover_at = exp, origin, recover_at
        self.samples: list[tuple[float, int, int]] = []
        self.at_recovery: tuple[float, float, int, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="pushpull-sampler")

    def _ms(self, t: float) -> float:
        return to_model(t - self.origin) * 1000

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        step = max(0.05, to_wall(0.25))
        read_at = None if self.recover_at is None else self.recover_at - to_wall(0.1)
        while not self._stop.is_set():
            now = time.monotonic()
            if read_at is not None and now >= read_at:
                self._read_at_recovery()
                read_at = None
                continue
            self.samples.append((self._ms(now), len(self.exp.dispatcher.pending),
                                 self.exp.lag()))
            wake = step if read_at is None else min(step, max(0.0, read_at - time.monotonic()))
            self._stop.wait(wake)

    def _read_at_recovery(self) -> None:
        t0 = time.monotonic()
        queue, lag = len(self.exp.dispatcher.pending), self.exp.lag()
        t1 = time.monotonic()
        self.at_recovery = (self._ms(t0), self._ms(t1), queue, lag)
        self.samples.append((self._ms(t0), queue, lag))


def push_and_pull_services() -> dict[str, list[str]]:
    """Which real services push and which are pulled from."""
    return {
        "push (the service calls your endpoint, retries, dead-letters)": [
            "Azure Event Grid (HTTP webhooks, Azure Functions)", "Amazon SNS (HTTP/S endpoints)",
            "webhooks (GitHub, Stripe, ...)"],
        "pull (your consumer asks for the next events at its own pace)": [
            "Apache Kafka consumer groups", "Amazon SQS (ReceiveMessage)",
            "Redis Streams (XREADGROUP)", "NATS JetStream pull consumers"],
        "push with a window (the broker pushes, but only so many unacknowledged at once)": [
            "RabbitMQ consumers (basic.qos prefetch count)"],
    }


__all__ = ["PushPull", "PushPullRun", "Policy", "Dispatcher", "PullConsumer", "Subscriber",
           "Visit", "predict_push", "dead_letter_time", "push_and_pull_services", "SCENARIOS",
           "DESIGNS", "COMPRESS", "EVENT_GRID_SCHEDULE_S", "PERMANENT", "PULL_RETRY_MS"]
