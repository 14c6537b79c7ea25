"""Backpressure in a Kafka consumer: pause fetching when the local buffer is full.

A consumer that fetches in one thread and hands messages to a slower worker through a local
buffer (to batch, or to keep polling while a slow call runs) has a choice when the worker
falls behind:

* **keep fetching**: the buffer, in the consumer's memory, grows by (produced − processed);
* **pause at a high watermark, resume at a low one** (``Consumer.pause``/``resume`` on the
  assignment): the buffer stays small and the backlog stays where it is safe and cheap, on
  the broker, as **lag** (end offset − committed offset).

Either way nothing is lost: each message is committed only after it was processed.
:class:`BufferedConsumer` is that consumer; :class:`ConsumerBackpressure` runs both kinds
side by side against the same producer and the same slow downstream service::

    exp = ConsumerBackpressure(lab)
    result = exp.run(rate=100, duration_s=3)
    result["pause"].max_buffer()   # <= high watermark + one fetch
"""
from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labsupport import broker
from labsupport.kit.dashboard import PALETTE, Dashboard, LiveView
from labsupport.kit.experiment import Experiment
from labsupport.lessons.m09_backpressure_and_observability.backpressure import PanelDashboard
from labsupport.runtime import settings
from labsupport.runtime.errors import LabError, require
from labsupport.runtime.latency import Constant
from labsupport.runtime.load import arrival_times
from labsupport.runtime.messaging import decode
from labsupport.runtime.services import fetch
from labsupport.runtime.settings import to_model, to_wall
from labsupport.runtime.waiting import wait_until

if TYPE_CHECKING:
    from labsupport.runtime.lab import Lab
    from labsupport.runtime.services import Service

#: librdkafka hands over at most this many messages per poll() here: the "one fetch" slack.
FETCH_SLACK = 1
DRAIN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Tick:
    """One sample (model s since the start): produced and acknowledged, taken into the
    buffer, processed, in the buffer now (messages and bytes), paused or not."""

    t: float
    produced: int
    fetched: int
    processed: int
    buffer: int
    buffer_bytes: int
    paused: bool

    @property
    def lag(self) -> int:
        """Produced but not yet processed (and so not committed): the group's lag."""
        return self.produced - self.processed

    @property
    def on_broker(self) -> int:
        """Produced but not yet fetched: the part of the lag that is only on the broker."""
        return self.produced - self.fetched


class BufferedConsumer:
    """Fetch into a local buffer in one thread, process from it in another.

    ``high``: pause the assignment when the buffer holds that many; ``low``: resume when it
    is down to that many. ``high=None`` never pauses. ``process(value)`` is called for each
    message in order; the offset is committed after it returns.
    """

    def __init__(self, lab: Lab, topic: str, group: str, downstream: Service,
                 high: int | None = None, low: int | None = None, name: str = "consumer") -> None:
        if high is not None:
            require(isinstance(high, int) and high >= 1,
                    f"high must be a whole number of messages, 1 or more, got {high!r}.",
                    "e.g. high=20, low=10")
            low = high // 2 if low is None else low
            require(isinstance(low, int) and 0 <= low < high,
                    f"low must be a whole number below high ({high}), got {low!r}.",
                    "resume when the buffer is down to e.g. half the high watermark")
        self.lab, self.topic, self.group, self.downstream = lab, topic, group, downstream
        self.high, self.low, self.name = high, low, name
        self.overrides: dict[str, Any] = {}
        self.buffer: collections.deque[tuple[int, Any, int]] = collections.deque()
        self.buffer_bytes = 0
        self.fetched = 0
        self.processed_ids: list[int] = []
        self.paused = False
        self.pauses = 0
        self.error: BaseException | None = None
        self._done_offset = -1
        self._next_offset = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._threads = [threading.Thread(target=self._fetch_loop, daemon=True,
                                          name=f"labsupport-fetch-{name}"),
                         threading.Thread(target=self._process_loop, daemon=True,
                                          name=f"labsupport-process-{name}")]

    @property
    def processed(self) -> int:
        return len(self.processed_ids)

    def start(self) -> BufferedConsumer:
        for thread in self._threads:
            thread.start()
        if not self._ready.wait(10):
            raise LabError(f"{self.name} could not start its consumer.",
                           "check the broker: python -m labsupport broker status")
        return self

    # ----- fetching ----------------------------------------------------------------------------
    def _fetch_loop(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(broker.consumer_config(self.group, enable_auto_commit=False, **self.overrides))
        committed = -1
        try:
            # assign(), not subscribe(): one partition, no group join to wait for
            consumer.assign([TopicPartition(self.topic, 0, 0)])
            self._ready.set()
            while not self._stop.is_set():
                self._watermarks(consumer)
                msg = consumer.poll(0.01)
                if msg is not None and not msg.error():
                    value = msg.value() or b""
                    with self._lock:
                        self.buffer.append((msg.offset(), value, len(value)))
                        self.buffer_bytes += len(value)
                        self.fetched += 1
                    self._next_offset = msg.offset() + 1
                committed = self._commit(consumer, committed)
            self._commit(consumer, committed, wait=True)
        except BaseException as exc:  # reported by stop()
            self.error = exc
            self._ready.set()
        finally:
            consumer.close()

    def _watermarks(self, consumer: Any) -> None:
        if self.high is None:
            return
        size = len(self.buffer)
        if not self.paused and size >= self.high:
            consumer.pause(consumer.assignment())
            self.paused, self.pauses = True, self.pauses + 1
        elif self.paused and size <= (self.low or 0):
            from confluent_kafka import TopicPartition

            consumer.resume(consumer.assignment())
            # Restart the fetch from our own position at once: librdkafka otherwise waits
            # about a second on the embedded broker; on Kafka the seek changes nothing.
            consumer.seek(TopicPartition(self.topic, 0, self._next_offset))
            self.paused = False

    def _commit(self, consumer: Any, committed: int, wait: bool = False) -> int:
        from confluent_kafka import TopicPartition

        done = self._done_offset
        if done > committed:
            consumer.commit(offsets=[TopicPartition(self.topic, 0, done + 1)],
                            asynchronous=not wait)
        return max(done, committed)

    # ----- processing ----------------------------------------------------------------------------
    def _process_loop(self) -> None:
        url = self.downstream.url + "local"
        while not self._stop.is_set():
            with self._lock:
                item = self.buffer.popleft() if self.buffer else None
            if item is None:
                time.sleep(0.002)
                continue
            offset, value, size = item
            try:
                self.lab.run(fetch(self.lab.session, url, None, self.downstream.name), 30)
            except BaseException as exc:  # reported by stop()
                self.error = exc
                return
            with self._lock:
                self.buffer_bytes -= size
            self.processed_ids.append(decode(value)["id"])
            self._done_offset = offset

    def halt(self) -> None:
        """Stop both threads (the last processed offset is committed first); an error stays
        in :attr:`error`."""
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def stop(self) -> None:
        """Stop both threads, as :meth:`halt`; raise if the consumer failed."""
        self.halt()
        if self.error is not None:
            raise LabError(f"{self.name} failed: {self.error!r}.", "run the cell again")

    def tick(self, t: float, produced: int) -> Tick:
        with self._lock:
            return Tick(t, produced, self.fetched, self.processed, len(self.buffer),
                        self.buffer_bytes, self.paused)


@dataclass
class ConsumerRun:
    """One consumer's record: its ticks, the ids produced and processed, the broker's view."""

    name: str
    high: int | None
    produced_ids: list[int] = field(default_factory=list)
    processed_ids: list[int] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    end_offset: int = -1
    broker_lag: int = -1
    pauses: int = 0

    def max_buffer(self) -> int:
        return max((k.buffer for k in self.ticks), default=0)

    def max_buffer_bytes(self) -> int:
        return max((k.buffer_bytes for k in self.ticks), default=0)

    def at_end_of_production(self) -> Tick:
        """The tick with the most produced and the least processed: when the backlog peaked."""
        require(bool(self.ticks), "this run recorded nothing.", "run the experiment first")
        return max(self.ticks, key=lambda k: (k.lag, k.t))

    def lost(self) -> int:
        """Produced ids never processed."""
        return len(set(self.produced_ids) - set(self.processed_ids))

    def duplicated(self) -> int:
        """Processings beyond the first of an id."""
        return len(self.processed_ids) - len(set(self.processed_ids))

    def summary(self) -> str:
        peak = self.at_end_of_production() if self.ticks else None
        where = (f"at the peak {peak.buffer} in memory, {peak.on_broker} only on the broker"
                 if peak else "no ticks")
        return (f"{self.name}: {len(self.processed_ids)}/{len(self.produced_ids)} processed, "
                f"buffer max {self.max_buffer()} ({self.max_buffer_bytes() / 1024:.0f} KiB), "
                f"{where}")


class ConsumerBackpressure(Experiment):
    """One producer, two topics, two consumers (keep fetching / pause-resume), each with its
    own slow downstream service of one worker.

    ``exp.dashboard()`` shows a rate slider, a duration and Run, with buffer vs lag for each
    consumer, live; ``exp.press_run(rate=100, duration_s=3)`` is what Run does."""

    TITLE = "A slow consumer: keep fetching or pause?"
    BUTTON = "Run"

    def __init__(self, lab: Lab, work_ms: float = 25.0, value_bytes: int = 1024,
                 high: int = 20, low: int = 10, prefix: str = "") -> None:
        require(isinstance(value_bytes, int) and 16 <= value_bytes <= 64 * 1024,
                f"value_bytes must be a whole number from 16 to 65536, got {value_bytes!r}.")
        self.lab, self.value_bytes, self.high, self.low = lab, value_bytes, high, low
        self.kinds = {"keep fetching": None, "pause/resume": high}
        self.prefix = prefix
        self.topics: dict[str, str] = {}
        self.downstream = {kind: lab.service(f"{prefix}slow_sink{i}", Constant(work_ms),
                                             workers=1)
                           for i, kind in enumerate(self.kinds)}
        self.publisher = lab.bus.publisher()
        self.runs: dict[str, ConsumerRun] = {}
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._rounds = 0

    def start(self, rate: float = 100.0, duration_s: float = 3.0) -> dict[str, ConsumerRun]:
        """Produce ``rate`` messages per model second for ``duration_s`` to both topics."""
        require(isinstance(rate, (int, float)) and 10 <= rate <= 400,
                f"rate must be 10 to 400 messages per second, got {rate!r}.", "e.g. 100")
        require(isinstance(duration_s, (int, float)) and 0.5 <= duration_s <= 10,
                f"duration_s must be 0.5 to 10 model seconds, got {duration_s!r}.", "e.g. 3")
        require(self._thread is None or not self._thread.is_alive(),
                "the previous run is still going.", "wait for it: exp.wait()")
        self._rounds += 1
        self.topics = {kind: self.lab.bus.topic(f"{self.prefix}bp{i}r{self._rounds}")
                       for i, kind in enumerate(self.kinds)}
        self.runs = {kind: ConsumerRun(kind, high) for kind, high in self.kinds.items()}
        self._error = None
        self._thread = threading.Thread(target=self._main, args=(rate, duration_s),
                                        daemon=True, name="labsupport-bp-producer")
        self._thread.start()
        return self.runs

    MIN_SCALE = 0.5
    """The smallest time scale a run uses: 300 messages in 0.6 s of wall time (scale 0.2)
    outran a busy machine's fetch loop, which held only 38% of the backlog at the peak
    (measured beside a second test process); the lesson is about where the backlog waits,
    not about the fetch loop's speed."""

    def _main(self, rate: float, duration_s: float) -> None:
        with settings.scale_at_least(self.MIN_SCALE):
            self._run_both(rate, duration_s)

    def _run_both(self, rate: float, duration_s: float) -> None:
        consumers = {}
        try:
            for i, kind in enumerate(self.kinds):
                consumers[kind] = BufferedConsumer(
                    self.lab, self.topics[kind], self._group(kind), self.downstream[kind],
                    self.kinds[kind], self.low if self.kinds[kind] else None,
                    name=f"bp{i}").start()
            self._produce(consumers, rate, duration_s)
            self._drain(consumers)
        except BaseException as exc:  # re-raised by wait()
            self._error = exc
        finally:
            for kind, consumer in consumers.items():
                consumer.halt()
                run = self.runs[kind]
                run.processed_ids, run.pauses = list(consumer.processed_ids), consumer.pauses
                self._error = self._error or consumer.error

    def _group(self, kind: str) -> str:
        return f"bp{list(self.kinds).index(kind)}-r{self._rounds}.{self.lab.bus.run_id}"

    def _produce(self, consumers: dict[str, BufferedConsumer], rate: float,
                 duration_s: float) -> None:
        start, pad = time.monotonic(), "x" * max(0, self.value_bytes - 20)
        acked = {kind: [0] for kind in self.kinds}
        next_tick = 0.0
        for n, t in enumerate(arrival_times(rate, duration_s)):
            while time.monotonic() - start < to_wall(t):
                next_tick = self._sample(consumers, acked, start, next_tick)
                time.sleep(min(0.002, max(0.0, start + to_wall(t) - time.monotonic())))
            for kind in self.kinds:
                self.publisher.send(self.topics[kind], {"id": n, "pad": pad}).add_done_callback(
                    lambda f, box=acked[kind]: box.__setitem__(0, box[0] + (f.exception()
                                                                            is None)))
                self.runs[kind].produced_ids.append(n)
        self.publisher.flush()
        self._wait_drained(consumers, acked, start)

    def _wait_drained(self, consumers: dict[str, BufferedConsumer],
                      acked: dict[str, list[int]], start: float) -> None:
        deadline, next_tick = time.monotonic() + DRAIN_TIMEOUT_S, 0.0
        while any(c.processed < len(self.runs[k].produced_ids) for k, c in consumers.items()):
            if time.monotonic() > deadline or any(c.error for c in consumers.values()):
                break
            next_tick = self._sample(consumers, acked, start, next_tick)
            time.sleep(0.005)
        self._sample(consumers, acked, start, 0.0)

    def _sample(self, consumers: dict[str, BufferedConsumer], acked: dict[str, list[int]],
                start: float, next_tick: float) -> float:
        now = to_model(time.monotonic() - start)
        if now < next_tick:
            return next_tick
        for kind, consumer in consumers.items():
            self.runs[kind].ticks.append(consumer.tick(now, acked[kind][0]))
        return now + 0.05

    def _drain(self, consumers: dict[str, BufferedConsumer]) -> None:
        """After the drain: the broker's end offset and the group's committed lag."""
        for kind, consumer in consumers.items():
            consumer.halt()
            run = self.runs[kind]
            run.end_offset = self.lab.bus.end_offsets(self.topics[kind])[0]
            group = self._group(kind).rsplit(".", 1)[0]
            run.broker_lag = self.lab.bus.lag(self.topics[kind], group)

    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def wait(self) -> dict[str, ConsumerRun]:
        """Wait until both consumers drained; returns ``{"keep fetching": .., "pause/resume": ..}``."""
        require(self._thread is not None, "nothing is running.", "call exp.start() first")
        wait_until(self.done, DRAIN_TIMEOUT_S + 30, what="both consumers to drain")
        if self._error is not None:
            raise LabError(f"the consumer experiment failed: {self._error!r}.",
                           "check the broker (python -m labsupport broker status), then run "
                           "the cell again")
        return self.runs

    def run(self, rate: float = 100.0, duration_s: float = 3.0) -> dict[str, ConsumerRun]:
        """:meth:`start` then :meth:`wait`."""
        self.start(rate, duration_s)
        return self.wait()

    # ----- the picture --------------------------------------------------------------------------
    def summary(self) -> str:
        if not self.runs:
            return "press Run"
        return " | ".join(r.summary() for r in self.runs.values())

    def draw(self, axes: Sequence[Any]) -> None:
        """Per consumer: in memory (buffer) and lag over time."""
        draw_buffer_vs_lag(axes, self.runs, self.high)

    def make_controls(self) -> dict[str, Any]:
        """A rate slider and a duration slider."""
        import ipywidgets as w

        return {
            "rate": w.IntSlider(100, 20, 200, step=10, description="msgs/s"),
            "duration_s": w.FloatSlider(3.0, min=1, max=6, step=0.5, description="seconds"),
        }

    def make_board(self, widgets: list[Any]) -> Dashboard:
        """Buffer vs lag for each consumer (two panels), drawn once now."""
        board = PanelDashboard(self.TITLE, widgets, self.draw, (1, 2), size=(7.0, 3.2))
        board.refresh(self.summary())   # the first drawing is the slow one: not mid-run
        return board

    def run_controls(self, rate: int, duration_s: float) -> LiveView:
        """What Run does: ``press_run(rate=, duration_s=)`` moves those sliders first, starts
        the run and returns its :class:`LiveView` (``view.join()`` waits, then ``wait()``)."""
        self.start(rate, duration_s)
        return self.board.watch_model(self.done, self.summary, every_model_s=0.5)


def draw_buffer_vs_lag(axes: Sequence[Any], runs: dict[str, ConsumerRun],
                       high: int | None) -> None:
    """One panel per consumer: messages in its memory, and its lag, against model time."""
    top = max((k.lag for r in runs.values() for k in list(r.ticks)), default=10)
    for ax, (name, run) in zip(axes, runs.items(), strict=False):
        ticks = list(run.ticks)
        if ticks:
            ts = [k.t for k in ticks]
            ax.fill_between(ts, [k.lag for k in ticks], color=PALETTE[4], alpha=0.5,
                            label="lag (produced − processed)")
            ax.plot(ts, [k.buffer for k in ticks], color=PALETTE[3], linewidth=2,
                    label="in the consumer's memory")
        if run.high is not None:
            ax.axhline(run.high, color=PALETTE[1], linestyle="--", linewidth=1,
                       label=f"high watermark {run.high}")
        ax.set_title(name, fontsize=9)
        ax.set_ylim(0, top * 1.1 + 1)
        ax.set_xlim(left=0)
        ax.set_xlabel("model seconds", fontsize=8)
        ax.tick_params(labelsize=7)
        if ticks or run.high is not None:
            ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("messages", fontsize=8)


def paused_buffer_bound(high: int) -> int:
    """What a pausing consumer can hold at most: the high watermark plus one fetch."""
    return high + FETCH_SLACK


def retention_note(topic: str) -> str:
    """How long the broker keeps a backlog for a paused consumer: ``retention.ms`` of
    ``topic``, read from the Kafka container; on the embedded broker, a note instead."""
    from labsupport.broker import identity

    which = identity()
    if not which.real_kafka:
        return (f"Skipped on {which.label}: it keeps every record in memory and never "
                "deletes any (no retention). On the Kafka container this cell reads the "
                "topic's retention.ms: how long a paused consumer may fall behind before the "
                "oldest messages are deleted under it.")
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient(broker.admin_config())
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    retention_ms = int(configs["retention.ms"].value)
    days = retention_ms / 86_400_000
    return (f"Kafka container: {topic} keeps messages for retention.ms = {retention_ms:,} "
            f"({days:.1f} days). A consumer paused, or lagging, for longer than that loses "
            "the oldest messages of its backlog.")
