"""Module 05 · Kafka's vocabulary, shown on the lab's broker: topics, partitions, keys,
consumer groups, offsets and lag.

* :func:`publish_orders`: send one message per key and keep each acknowledgement
  (which partition, which offset);
* :class:`Placement`: where every key landed, messages per partition, offsets per partition;
* :class:`GroupsDemo`: two consumer groups on one topic; inside a group the partitions are
  shared out, every group gets every message;
* :class:`LagSeries`: consumer lag over time (messages written but not yet processed).

Lag here is counted two ways, and the lesson says which it shows: the broker's view
(``bus.lag``: end offsets minus the group's committed offsets, exact on the embedded broker
because the lab's publishers send one record per batch) and our own count (messages acked
minus messages processed), cheap enough to sample many times a second.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from labsupport.kit.dashboard import PALETTE
from labsupport.kit.experiment import Experiment
from labsupport.runtime.errors import require
from labsupport.runtime.lab import Lab
from labsupport.runtime.messaging import Delivery, Event, Publisher
from labsupport.runtime.settings import to_model
from labsupport.runtime.waiting import wait_until


def customer_keys(customers: int, orders: int) -> list[str]:
    """``orders`` keys spread round-robin over ``customers`` customers: c1, c2, ..., c1, ..."""
    require(isinstance(customers, int) and customers >= 1,
            f"customers must be a whole number of 1 or more, got {customers!r}.", "e.g. 4")
    require(isinstance(orders, int) and orders >= 1,
            f"orders must be a whole number of 1 or more, got {orders!r}.", "e.g. 24")
    return [f"c{i % customers + 1}" for i in range(orders)]


def publish_orders(publisher: Publisher, topic: str, keys: Sequence[str]) -> list[Delivery]:
    """Publish one order per key (``{"n": i, "customer": key}``), in order; returns every
    acknowledgement (each one names the partition and offset the broker chose)."""
    futures = [publisher.send(topic, {"n": n, "customer": key}, key=key)
               for n, key in enumerate(keys)]
    return [future.result(10) for future in futures]


@dataclass
class Placement:
    """Where messages landed: built from the acknowledgements of :func:`publish_orders`."""

    keys: list[str]
    deliveries: list[Delivery]

    def partitions_of(self) -> dict[str, set[int]]:
        """``{key: {partitions it landed in}}``: one partition per key when keys are used."""
        out: dict[str, set[int]] = defaultdict(set)
        for key, delivery in zip(self.keys, self.deliveries, strict=True):
            out[key].add(delivery.partition)
        return dict(out)

    def per_partition(self, partitions: int) -> list[int]:
        """Messages in each partition, ``[p0, p1, ...]``."""
        counts = Counter(d.partition for d in self.deliveries)
        return [counts.get(p, 0) for p in range(partitions)]

    def offsets(self, partition: int) -> list[int]:
        """The offsets the broker gave in ``partition``, in the order they were sent."""
        return [d.offset for d in self.deliveries if d.partition == partition]

    def keys_split(self) -> int:
        """How many keys landed in more than one partition (0 means per-key order holds)."""
        return sum(len(parts) > 1 for parts in self.partitions_of().values())

    def gaps(self, partitions: int) -> int:
        """How many partitions' offsets are *not* 0, 1, 2, ... in send order (0 is right)."""
        return sum(self.offsets(p) != list(range(len(self.offsets(p))))
                   for p in range(partitions))

    def table(self) -> str:
        """One line per key: its partition and its offsets there."""
        lines = []
        for key, parts in sorted(self.partitions_of().items(), key=lambda kv: kv[0]):
            offs = [d.offset for k, d in zip(self.keys, self.deliveries, strict=True)
                    if k == key]
            lines.append(f"{key}: partition {', '.join(map(str, sorted(parts)))}, "
                         f"offsets {offs}")
        return "\n".join(lines)

    def draw(self, ax: Any, partitions: int) -> None:
        """Stacked bars: messages per partition, one colour per key."""
        bottoms = [0] * partitions
        for i, key in enumerate(sorted(set(self.keys))):
            counts = [sum(1 for k, d in zip(self.keys, self.deliveries, strict=True)
                          if k == key and d.partition == p) for p in range(partitions)]
            ax.bar(range(partitions), counts, bottom=bottoms, color=PALETTE[i % len(PALETTE)],
                   label=key, edgecolor="white")
            bottoms = [b + c for b, c in zip(bottoms, counts, strict=True)]
        ax.set_xticks(range(partitions), [f"partition {p}" for p in range(partitions)])
        ax.set_ylabel("messages")
        ax.legend(title="key", fontsize=7, ncol=2, loc="upper right")


class KeysExperiment(Experiment):
    """Publish orders keyed by customer to a fresh topic; show where each key lands."""

    BUTTON = "Publish"

    def __init__(self, lab: Lab, partitions: int = 3) -> None:
        require(isinstance(partitions, int) and 1 <= partitions <= 8,
                f"partitions must be a whole number from 1 to 8, got {partitions!r}.")
        self.lab, self.partitions = lab, partitions
        self.publisher = lab.bus.publisher()
        self.placement: Placement | None = None
        self.topic = ""

    def run(self, customers: int = 4, orders: int = 24, keyed: bool = True) -> Placement:
        """A new topic, ``orders`` messages from ``customers`` customers (keyed or not)."""
        keys = customer_keys(customers, orders)
        self.topic = self.lab.bus.topic("keys", self.partitions)
        sent = publish_orders(self.publisher, self.topic, keys) if keyed else \
            [self.publisher.send(self.topic, {"n": n, "customer": k}).result(10)
             for n, k in enumerate(keys)]
        self.placement = Placement(keys, sent)
        return self.placement

    def summary(self) -> str:
        if self.placement is None:
            return "press Publish"
        p = self.placement
        return (f"{len(p.keys)} messages: per partition {p.per_partition(self.partitions)}; "
                f"{p.keys_split()} of {len(p.partitions_of())} keys split over partitions; "
                f"broker end offsets {self.lab.bus.end_offsets(self.topic)}")

    def draw(self, ax: Any) -> None:
        if self.placement is not None:
            self.placement.draw(ax, self.partitions)

    @property
    def TITLE(self) -> str:
        """The dashboard's title names the topic's partitions."""
        return f"Keys and {self.partitions} partitions"

    def make_controls(self) -> dict[str, Any]:
        """Sliders for customers and orders, a keyed switch, Publish."""
        import ipywidgets as w

        return {
            "customers": w.IntSlider(4, 1, 8, description="customers"),
            "orders": w.IntSlider(24, 3, 60, description="orders"),
            "keyed": w.Checkbox(True, description="key = customer"),
        }

    def run_controls(self, customers: int, orders: int, keyed: bool) -> Placement:
        """What Publish does: ``press_run(customers=4, orders=24, keyed=True)`` moves the
        controls and publishes to a new topic."""
        return self.show(self.run(customers, orders, keyed))


@dataclass
class GroupsDemo:
    """Consumer groups on one topic: ``billing`` has two members, ``analytics`` one.

    Inside a group the partitions are shared out (each partition to one member); each group
    reads every message for itself, at its own offsets.
    """

    lab: Lab
    partitions: int = 3
    seen: dict[str, list[Event]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        self._start()

    def _start(self) -> None:
        self.topic = self.lab.bus.topic("groups", self.partitions)   # a new, empty topic
        self.seen = defaultdict(list)
        self.members = {
            "billing-1": self._member("billing", "billing-1"),
            "billing-2": self._member("billing", "billing-2"),
            "analytics-1": self._member("analytics", "analytics-1"),
        }
        self.stopped = False

    def _member(self, group: str, name: str) -> Any:
        return self.lab.bus.worker(self.topic, group, self.seen[name].append, name=name)

    def wait_assigned(self) -> None:
        """Wait until every member has its partitions (the group join, about 1-2 s).

        After :meth:`stop` (a cell run again), new members join a new topic first."""
        if self.stopped:
            self._start()
        for worker in self.members.values():
            worker.wait_assigned(15)
        wait_until(self._settled, 15, interval=0.05)

    def _settled(self) -> bool:
        billing = [p for n in ("billing-1", "billing-2") for p in self.owned(n)]
        return (sorted(billing) == list(range(self.partitions))
                and self.owned("analytics-1") == list(range(self.partitions)))

    def owned(self, name: str) -> list[int]:
        """The partitions member ``name`` holds now."""
        return sorted(p for _, p in self.members[name].assignment)

    def publish(self, keys: Sequence[str]) -> list[Delivery]:
        """Publish one order per key and wait until both groups have processed all of them."""
        deliveries = publish_orders(self.lab.bus.publisher(), self.topic, keys)
        wait_until(lambda: min(self.processed("billing"), self.processed("analytics"))
                   >= len(keys), 10)
        return deliveries

    def processed(self, group: str) -> int:
        """Messages processed by all members of ``group``."""
        return sum(len(events) for name, events in self.seen.items() if name.startswith(group))

    def lag(self, group: str) -> int:
        """The broker's view: end offsets minus the group's committed offsets."""
        return self.lab.bus.lag(self.topic, group)

    def describe(self) -> str:
        """Each member: its partitions and how many messages it processed."""
        return "\n".join(f"{name}: partitions {self.owned(name)}, processed "
                         f"{len(self.seen[name])}" for name in self.members)

    def stop(self) -> None:
        """Every member leaves its group."""
        for worker in self.members.values():
            worker.stop()
        self.stopped = True


@dataclass
class LagSeries:
    """Consumer lag over time: ``sample()`` adds a point (model s, messages waiting)."""

    waiting: Callable[[], int]
    points: list[tuple[float, int]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def sample(self) -> int:
        """Count the messages waiting now and add the point."""
        value = self.waiting()
        self.points.append((to_model(time.perf_counter() - self.started), value))
        return value

    @property
    def peak(self) -> int:
        """The highest lag seen."""
        return max((v for _, v in self.points), default=0)

    @property
    def last(self) -> int:
        """The latest lag seen."""
        return self.points[-1][1] if self.points else 0

    def draw(self, ax: Any, colour: str = PALETTE[0], label: str = "consumer lag") -> None:
        """Lag (messages) against model seconds."""
        if self.points:
            ax.step(*zip(*self.points, strict=True), where="post", color=colour, label=label)
        ax.set_xlabel("model seconds")
        ax.set_ylabel("messages waiting (lag)")
        ax.set_ylim(bottom=0)
