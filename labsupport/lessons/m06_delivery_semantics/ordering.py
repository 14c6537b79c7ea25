"""Per-key order, and what a consumer-group rebalance does to it, measured live.

Kafka keeps order *within a partition*. A producer that sends a key picks the
partition from a hash of the key, so every message of one key goes to one partition
and is read in the order it was sent. Across partitions there is no order at all.

When a member joins or leaves a consumer group, the group *rebalances*: partitions
move between members. :class:`RebalanceExperiment` sends numbered messages per key
(``seq`` 1, 2, 3, ...) while member A runs, member B joins, and A leaves. Because the
lab's workers commit after processing, nothing is lost across the moves; any message
processed but not yet committed when its partition moved is processed again
(counted as a duplicate). Group timings are the broker's own (wall time): a join
takes about 1 s here (session timeout 2 s); a member that is *killed* instead of
leaving is noticed only after the session timeout (2 s here, 45 s by default).
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labsupport.kit.dashboard import PALETTE, LiveView
from labsupport.kit.experiment import Experiment
from labsupport.runtime.errors import LabError, require
from labsupport.runtime.messaging import Event
from labsupport.runtime.waiting import wait_until

if TYPE_CHECKING:
    from labsupport.runtime.lab import Lab


@dataclass(frozen=True)
class Handled:
    """One message processed: wall seconds since the start, by whom, what."""

    t: float
    worker: str
    partition: int
    offset: int
    key: str
    seq: int


@dataclass
class RebalanceRecord:
    """Everything one run recorded; the counts are computed from it."""

    sent: int = 0
    handled: list[Handled] = field(default_factory=list)
    samples: list[tuple[float, dict[str, list[int]]]] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)
    partition_of_key: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))

    @property
    def distinct(self) -> int:
        """Different (key, seq) pairs processed."""
        return len({(h.key, h.seq) for h in self.handled})

    @property
    def lost(self) -> int:
        """Messages sent that no member processed."""
        return self.sent - self.distinct

    @property
    def duplicates(self) -> int:
        """Extra processings of a message already processed once."""
        return len(self.handled) - self.distinct

    def order_breaks(self) -> int:
        """Keys whose messages, taken the first time each was processed, were not
        processed in the order sent (seq 1, 2, 3, ... with no gap and no step back)."""
        first: dict[str, list[int]] = defaultdict(list)
        seen: set[tuple[str, int]] = set()
        for h in self.handled:
            if (h.key, h.seq) not in seen:
                seen.add((h.key, h.seq))
                first[h.key].append(h.seq)
        return sum(1 for seqs in first.values() if seqs != list(range(1, len(seqs) + 1)))

    def keys_on_one_partition(self) -> int:
        """Keys whose every message the broker put on a single partition."""
        return sum(1 for parts in self.partition_of_key.values() if len(parts) == 1)

    def moves(self) -> int:
        """Times a partition changed owner (including 'nobody' during a rebalance)."""
        owners: dict[int, str] = {}
        moves = 0
        for _, assignment in self.samples:
            now = {p: name for name, parts in assignment.items() for p in parts}
            for p, name in now.items():
                if p in owners and owners[p] != name:
                    moves += 1
                owners[p] = name
        return moves


class RebalanceExperiment(Experiment):
    """Member A consumes; B joins; A leaves; messages keep flowing the whole time.

    ``partitions`` partitions, ``keys`` keys, ``rate`` messages per wall second,
    ``settle_s`` wall seconds between the steps once the group is stable.
    """

    TITLE = "A consumer group rebalancing: A, then A + B, then B"
    BUTTON = "Run"

    def __init__(self, lab: Lab, partitions: int = 3, keys: int = 6, rate: float = 150,
                 settle_s: float = 0.4) -> None:
        self.lab = lab
        self._check(partitions, keys, rate, settle_s)
        self.partitions, self.keys, self.rate, self.settle_s = partitions, keys, rate, settle_s
        self.record = RebalanceRecord()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._runs = 0

    @staticmethod
    def _check(partitions: int, keys: int, rate: float, settle_s: float) -> None:
        require(isinstance(partitions, int) and 1 <= partitions <= 12,
                f"partitions must be a whole number from 1 to 12, got {partitions!r}.")
        require(isinstance(keys, int) and 1 <= keys <= 100,
                f"keys must be a whole number from 1 to 100, got {keys!r}.")
        require(0 < rate <= 2000, f"rate must be above 0 and at most 2000 a second, got "
                f"{rate!r}.")
        require(0 <= settle_s <= 10, f"settle_s must be 0 to 10 s, got {settle_s!r}.")

    # ----- running -------------------------------------------------------------------------
    def start(self) -> RebalanceExperiment:
        """Start the run in the background (see :meth:`wait`)."""
        require(self._thread is None or not self._thread.is_alive(),
                "A rebalance run is already going.", "wait for it: experiment.wait()")
        self.record, self._error = RebalanceRecord(), None
        self._runs += 1
        self._thread = threading.Thread(target=self._guarded, daemon=True,
                                        name="labsupport-rebalance")
        self._thread.start()
        return self

    def done(self) -> bool:
        """True when the run has ended."""
        return self._thread is None or not self._thread.is_alive()

    def wait(self, timeout_s: float = 30.0) -> RebalanceRecord:
        """Wait for the run; returns its record (a :class:`LabError` if it failed)."""
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise LabError(f"The rebalance run did not end within {timeout_s:g} s.",
                               "check the broker: python -m labsupport broker status")
        if self._error is not None:
            raise self._error
        return self.record

    def run(self) -> RebalanceRecord:
        """Start and wait."""
        return self.start().wait()

    def _guarded(self) -> None:
        try:
            self._script()
        except BaseException as exc:  # shown to the caller by wait()
            self._error = exc

    def _script(self) -> None:
        bus, rec = self.lab.bus, self.record
        topic = bus.topic(f"shipments{self._runs}", partitions=self.partitions)
        start = time.monotonic()
        clock = lambda: time.monotonic() - start  # noqa: E731 - a tiny local clock
        lock = threading.Lock()
        workers: dict[str, Any] = {}

        def handler_for(name: str) -> Any:
            def handle(event: Event) -> None:
                with lock:
                    rec.handled.append(Handled(clock(), name, event.partition, event.offset,
                                               event.value["key"], event.value["seq"]))
            return handle

        stop_sending = threading.Event()
        sender = threading.Thread(target=self._send, args=(topic, stop_sending, lock),
                                  daemon=True, name="labsupport-rebalance-sender")

        def sample() -> None:
            rec.samples.append((clock(), {n: sorted(p for _, p in w.assignment)
                                          for n, w in workers.items() if w.running}))

        def settle(condition: Any, what: str, timeout_s: float = 15.0) -> None:
            def sampled() -> bool:   # sample the assignment on every look
                sample()
                return condition()

            wait_until(sampled, timeout_s, interval=0.05, what=f"the group to {what}")

        def owned(*names: str) -> bool:
            parts = [p for n in names for _, p in workers[n].assignment]
            everyone = len(names) > self.partitions or all(workers[n].assignment for n in names)
            return sorted(parts) == list(range(self.partitions)) and everyone

        def pause(seconds: float) -> None:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                sample()
                time.sleep(0.05)

        try:
            sender.start()
            rec.marks.append((clock(), "A starts"))
            workers["A"] = bus.worker(topic, "shipping", handler_for("A"), name="A")
            settle(lambda: owned("A"), "give A its partitions")
            pause(self.settle_s)
            rec.marks.append((clock(), "B joins"))
            workers["B"] = bus.worker(topic, "shipping", handler_for("B"), name="B")
            settle(lambda: owned("A", "B"), "share the partitions between A and B")
            pause(self.settle_s)
            rec.marks.append((clock(), "A leaves"))
            workers["A"].stop()
            settle(lambda: owned("B"), "move A's partitions to B")
            pause(self.settle_s)
            stop_sending.set()
            sender.join(10)
            settle(lambda: self.record.distinct >= self.record.sent, "process every message")
            rec.marks.append((clock(), "all processed"))
        finally:
            stop_sending.set()
            for worker in workers.values():
                worker.stop(raise_error=False)
            sample()

    def _send(self, topic: str, stop: threading.Event, lock: threading.Lock) -> None:
        pub = self.lab.bus.publisher()
        seqs = [0] * self.keys
        pending = []
        i = 0
        gap = 1 / self.rate
        next_at = time.monotonic()
        while not stop.is_set():
            k = i % self.keys
            seqs[k] += 1
            key = f"customer-{k}"
            pending.append((key, pub.send(topic, {"key": key, "seq": seqs[k]}, key=key)))
            i += 1
            next_at += gap
            time.sleep(max(0.0, next_at - time.monotonic()))
        pub.flush()
        with lock:
            for key, future in pending:
                self.record.partition_of_key[key].add(future.result().partition)
            self.record.sent = len(pending)

    # ----- showing it --------------------------------------------------------------------
    def draw(self, ax: Any) -> None:
        """Which member owned which partition over time (grey: nobody, mid-rebalance)."""
        rec = self.record
        colours = {"A": PALETTE[0], "B": PALETTE[1]}
        samples = list(rec.samples)
        for (t0, owners), (t1, _) in zip(samples, samples[1:], strict=False):
            by_partition = {p: n for n, parts in owners.items() for p in parts}
            for p in range(self.partitions):
                name = by_partition.get(p)
                ax.broken_barh([(t0, t1 - t0)], (p - 0.35, 0.7),
                               color=colours.get(name, "#BBBBBB"))
        for t, what in list(rec.marks):
            ax.axvline(t, color="#555555", linestyle=":", linewidth=1)
            ax.text(t + 0.03, -0.45, what, fontsize=7, rotation=90, va="bottom")
        ax.set_yticks(range(self.partitions), [f"P{p}" for p in range(self.partitions)])
        ax.set_ylim(-0.5, self.partitions + 0.4)
        ax.set_xlabel("wall seconds (group changes run on the broker's clock)")
        ax.set_xlim(left=0)
        for name, colour in colours.items():
            ax.plot([], [], color=colour, linewidth=6, label=f"member {name}")
        ax.plot([], [], color="#BBBBBB", linewidth=6, label="nobody (rebalancing)")
        ax.legend(loc="upper center", fontsize=7, ncol=3, frameon=False)

    def summary(self) -> str:
        """One line: sent, processed, lost, duplicates, order breaks, partition moves."""
        rec = self.record
        owned = [owners for _, owners in rec.samples if owners]
        now = ", ".join(f"{n} has {parts}" for n, parts in (owned[-1] if owned else {}).items())
        now = (now or "no members yet") if not self.done() else f"last: {now or 'no members'}"
        return (f"{now} | sent {rec.sent}, processed {len(rec.handled)} "
                f"({rec.distinct} different), lost {max(rec.lost, 0)}, duplicates "
                f"{rec.duplicates}, keys out of order {rec.order_breaks()}, "
                f"partition moves {rec.moves()}")

    def make_controls(self) -> dict[str, Any]:
        """Sliders for partitions and keys, a Run button, the ownership timeline live."""
        import ipywidgets as w

        return {
            "partitions": w.IntSlider(value=self.partitions, min=1, max=6,
                                      description="partitions"),
            "keys": w.IntSlider(value=self.keys, min=1, max=12, description="keys"),
        }

    def run_controls(self, partitions: int, keys: int) -> LiveView:
        """What the Run button does: ``press_run(partitions=3, keys=6)`` sets the sliders,
        then starts the run; the ownership timeline follows it live."""
        self._check(partitions, keys, self.rate, self.settle_s)
        self.partitions, self.keys = partitions, keys
        self.start()
        return self.board.watch(self.done, self.summary)

    def keys_table(self, names: Sequence[str] | None = None) -> str:
        """Each key and the partition(s) its messages went to."""
        rows = sorted(self.record.partition_of_key.items())
        return "\n".join(f"{key}: partition {sorted(parts)}" for key, parts in rows
                         if names is None or key in names)
