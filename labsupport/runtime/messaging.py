"""Messaging on the lab's broker: topics for one experiment, publishing, consumer workers.

The messaging modules use a :class:`Bus`, which a :class:`~labsupport.Lab` creates on
first use and closes with the lab::

    lab = Lab()
    orders = lab.bus.topic("orders", partitions=3)   # '<ns>.orders.<run>', new every run
    pub = lab.bus.publisher()
    pub.send(orders, {"id": 1}, key="o-1").result()  # Delivery(partition=.., offset=..)
    worker = lab.bus.worker(orders, "fulfilment", handle)  # handle(event) in its own thread
    worker.wait_assigned(); ...; worker.stop()

Every topic gets a fresh run suffix, so running a notebook twice never reads the
first run's messages; the lab deletes its topics when it closes. Producers send
one record per batch (``batch.num.messages=1``) so that the broker's end offsets,
and the lag computed from them, are exact on the embedded broker too.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labsupport import broker
from labsupport.runtime.errors import LabError, require
from labsupport.runtime.settings import to_model

if TYPE_CHECKING:
    from labsupport.runtime.lab import Lab

#: A publisher gives up on a message after this long (librdkafka's default is 5 minutes).
DELIVERY_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class Delivery:
    """The broker's acknowledgement of one message; ``ack_ms`` is in model time."""

    topic: str
    partition: int
    offset: int
    ack_ms: float


@dataclass(frozen=True)
class Event:
    """One consumed message, decoded: JSON values become Python objects, keys become text."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: Any
    headers: dict[str, str] = field(default_factory=dict)
    timestamp_ms: int = 0


def encode(value: Any) -> bytes | None:
    """Message bytes for ``value``: bytes as they are, text as UTF-8, anything else as JSON."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, separators=(",", ":")).encode()


def decode(raw: bytes | None) -> Any:
    """The inverse of :func:`encode`: JSON if it parses, else text, else bytes."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        pass
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def to_event(msg: Any) -> Event:
    """An :class:`Event` from a ``confluent_kafka.Message``."""
    key = msg.key()
    headers = {name: (v.decode() if isinstance(v, bytes) else v)
               for name, v in (msg.headers() or [])}
    return Event(msg.topic(), msg.partition(), msg.offset(),
                 key.decode() if isinstance(key, bytes) else key, decode(msg.value()),
                 headers, msg.timestamp()[1])


class Bus:
    """The lab's connection to the broker: its topics, publishers and workers."""

    def __init__(self, lab: Lab | None = None) -> None:
        broker.ensure()  # a broker that is down is reported here, within seconds
        self.lab = lab
        self.run_id = uuid.uuid4().hex[:6]
        self.topics: list[str] = []
        self.publishers: list[Publisher] = []
        self.workers: list[Worker] = []
        self._probe: Any = None
        self.closed = False

    def topic(self, name: str, partitions: int = 1) -> str:
        """Create the topic ``<ns>.<name>.<run>`` for this experiment; returns its full name.

        Asking again for a name this bus already made gives a *new*, empty topic
        (``<ns>.<name>.<run>.2``, ...): a cell that sets up an experiment can run again and
        start from offset 0, never reading the previous run's messages.
        """
        require(isinstance(partitions, int) and 1 <= partitions <= 64,
                f"partitions must be a whole number from 1 to 64, got {partitions!r}.")
        require(isinstance(name, str) and name.replace(".", "").replace("-", "").isalnum(),
                f"A topic name is letters, digits, '.' and '-', got {name!r}.", "e.g. 'orders'")
        base = f"{name}.{self.run_id}"
        uses = sum(t == broker.topic(base) or t.startswith(broker.topic(base) + ".")
                   for t in self.topics)
        full = broker.create_topic(base if not uses else f"{base}.{uses + 1}", partitions)
        self.topics.append(full)
        return full

    def publisher(self, **overrides: Any) -> Publisher:
        """A :class:`Publisher`; ``overrides`` are producer settings (``linger_ms=5``)."""
        self._check_open()
        self.publishers.append(Publisher(**overrides))
        return self.publishers[-1]

    def worker(self, topics: str | Iterable[str], group: str,
               handler: Callable[[Event], Any], *, name: str | None = None,
               start: bool = True, **overrides: Any) -> Worker:
        """A :class:`Worker` in consumer group ``group`` calling ``handler`` for each event."""
        self._check_open()
        worker = Worker(topics, f"{group}.{self.run_id}", handler, name=name, lab=self.lab,
                        **overrides)
        self.workers.append(worker)
        if start:
            worker.start()
        return worker

    def end_offsets(self, topic: str) -> list[int]:
        """The broker's end offset (high watermark) of each partition of ``topic``."""
        from confluent_kafka import TopicPartition

        probe = self._probe_consumer()
        parts = probe.list_topics(topic, timeout=5).topics[topic].partitions
        return [probe.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                for p in sorted(parts)]

    def committed(self, topic: str, group: str) -> list[int]:
        """The offsets group ``group`` has committed on each partition (0 where none)."""
        from confluent_kafka import Consumer, TopicPartition

        count = len(self.end_offsets(topic))
        consumer = Consumer(broker.consumer_config(f"{group}.{self.run_id}",
                                                   enable_auto_commit=False))
        try:
            parts = consumer.committed([TopicPartition(topic, p) for p in range(count)],
                                       timeout=5)
        finally:
            consumer.close()
        return [max(tp.offset, 0) for tp in parts]

    def lag(self, topic: str, group: str) -> int:
        """Messages on ``topic`` that group ``group`` has not committed yet (all partitions)."""
        ends, done = self.end_offsets(topic), self.committed(topic, group)
        return sum(max(end - mark, 0) for end, mark in zip(ends, done, strict=True))

    def _probe_consumer(self) -> Any:
        from confluent_kafka import Consumer

        if self._probe is None:
            self._probe = Consumer(broker.consumer_config(f"probe.{self.run_id}",
                                                          enable_auto_commit=False))
        return self._probe

    def _check_open(self) -> None:
        if self.closed:
            raise LabError("This lab's bus is closed.", "create a new lab: lab = Lab()")

    def close(self) -> None:
        """Stop the workers, flush and close the publishers, delete this run's topics."""
        if self.closed:
            return
        self.closed = True
        for worker in self.workers:
            worker.stop(raise_error=False)
        for pub in self.publishers:
            pub.close()
        if self._probe is not None:
            self._probe.close()
        for name in self.topics:
            broker.delete_topic(name)

    def __repr__(self) -> str:
        return (f"<Bus run={self.run_id}: {len(self.topics)} topics, "
                f"{len(self.workers)} workers>")


class Publisher:
    """A Kafka producer whose acknowledgements arrive as futures (sync or ``await``-able).

    A background thread serves the delivery reports, so nothing waits unless you ask.
    """

    def __init__(self, **overrides: Any) -> None:
        from confluent_kafka import Producer

        settings = {"linger_ms": 0, "batch_num_messages": 1,
                    "message_timeout_ms": DELIVERY_TIMEOUT_MS, **overrides}
        self._producer = Producer(broker.producer_config(**settings))
        self._stop = threading.Event()
        self.sent = 0
        self.acked = 0
        self._thread = threading.Thread(target=self._serve_reports, daemon=True,
                                        name="labsupport-publisher")
        self._thread.start()

    def _serve_reports(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.02)

    def send(self, topic: str, value: Any, key: str | bytes | None = None,
             headers: dict[str, str] | None = None) -> concurrent.futures.Future[Delivery]:
        """Produce one message; the future holds its :class:`Delivery` once the broker acks."""
        require(not self._stop.is_set(), "This publisher is closed.", "lab.bus.publisher()")
        future: concurrent.futures.Future[Delivery] = concurrent.futures.Future()
        start = time.perf_counter()

        def report(err: Any, msg: Any) -> None:
            if err is not None:
                future.set_exception(LabError(f"The broker did not take a message for {topic}: "
                                              f"{err.str()}.", "check broker.status()"))
                return
            self.acked += 1
            future.set_result(Delivery(msg.topic(), msg.partition(), msg.offset(),
                                       to_model(time.perf_counter() - start) * 1000))

        self._producer.produce(topic, encode(value), key=encode(key),
                               headers=list((headers or {}).items()), on_delivery=report)
        self.sent += 1
        return future

    async def publish(self, topic: str, value: Any, key: str | bytes | None = None,
                      headers: dict[str, str] | None = None) -> Delivery:
        """``await`` this from a service: returns when the broker has acknowledged."""
        return await asyncio.wrap_future(self.send(topic, value, key, headers))

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every message sent is acknowledged; a clear error if some are not."""
        left = self._producer.flush(timeout)
        if left:
            raise LabError(f"{left} messages were still unacknowledged after {timeout:.0f} s.",
                           "check that the broker runs: python -m labsupport broker status")

    def close(self) -> None:
        """Flush (up to 5 s), then stop the report thread."""
        if self._stop.is_set():
            return
        try:
            self._producer.flush(5)
        finally:
            self._stop.set()
            self._thread.join(timeout=5)

    def __repr__(self) -> str:
        return f"<Publisher sent={self.sent} acked={self.acked}>"


class Worker:
    """A consumer in its own thread that calls ``handler(event)`` for every message.

    It commits each message's offset after the handler returns (so a crash re-delivers,
    never skips). An ``async def`` handler runs on the lab's loop. If the handler raises,
    the worker stops and :meth:`stop` reports the error with the offset.
    """

    def __init__(self, topics: str | Iterable[str], group: str,
                 handler: Callable[[Event], Any], *, name: str | None = None,
                 lab: Lab | None = None, **overrides: Any) -> None:
        require(callable(handler), f"handler must be a function of one event, got {handler!r}.")
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.group, self.handler, self.lab = group, handler, lab
        self.name = name or group.rsplit(".", 1)[0]
        self.overrides = overrides
        self.processed = 0
        self.error: BaseException | None = None
        self.error_at: tuple[str, int, int] | None = None
        self.assignment: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._assigned = threading.Event()
        self._thread: threading.Thread | None = None
        self._is_async = inspect.iscoroutinefunction(handler)
        require(not self._is_async or lab is not None,
                "An async handler needs the lab's loop.", "create the worker with lab.bus.worker")

    def start(self) -> Worker:
        """Join the group and start consuming in the background."""
        require(self._thread is None, f"Worker {self.name} was already started.",
                "create a new worker with lab.bus.worker(...)")
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"labsupport-worker-{self.name}")
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_assigned(self, timeout: float = 10.0) -> Worker:
        """Block until the group gave this worker its partitions (about 1 s)."""
        if not self._assigned.wait(timeout):
            self._raise_if_failed()
            raise LabError(f"Worker {self.name} got no partitions within {timeout:.0f} s.",
                           "check the broker (python -m labsupport broker status), or give "
                           "the group longer")
        return self

    def pause(self) -> None:
        """Stop fetching (the worker stays in its group; lag grows on the broker)."""
        self._paused.set()

    def resume(self) -> None:
        """Fetch again after :meth:`pause`."""
        self._paused.clear()

    def stop(self, timeout: float = 10.0, raise_error: bool = True) -> Worker:
        """Leave the group and end the thread; re-raises a handler error as a LabError."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if raise_error:
            self._raise_if_failed()
        return self

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            where = self.error_at or ("?", -1, -1)
            raise LabError(f"Worker {self.name}'s handler failed on {where[0]} partition "
                           f"{where[1]} offset {where[2]}: {self.error!r}.",
                           "fix the handler; the message was not committed, so a new "
                           "worker in the same group will get it again")

    # ----- the consumer thread -------------------------------------------------------------
    def _run(self) -> None:
        from confluent_kafka import Consumer

        config = broker.consumer_config(self.group, enable_auto_commit=False,
                                        **self.overrides)
        consumer = Consumer(config)
        try:
            consumer.subscribe(self.topics, on_assign=self._on_assign,
                               on_revoke=self._on_revoke)
            self._loop(consumer)
        finally:
            consumer.close()

    def _on_assign(self, consumer: Any, parts: list[Any]) -> None:
        self.assignment = [(tp.topic, tp.partition) for tp in parts]
        self._assigned.set()

    def _on_revoke(self, consumer: Any, parts: list[Any]) -> None:
        self.assignment = []
        self._assigned.clear()

    def _loop(self, consumer: Any) -> None:
        paused = False
        while not self._stop.is_set():
            if self._paused.is_set() != paused:
                paused = self._set_paused(consumer, self._paused.is_set())
            msg = consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            if not self._handle(msg):
                return
            consumer.commit(message=msg, asynchronous=False)
            self.processed += 1

    def _set_paused(self, consumer: Any, pause: bool) -> bool:
        parts = consumer.assignment()
        if parts:
            (consumer.pause if pause else consumer.resume)(parts)
        return pause

    def _handle(self, msg: Any) -> bool:
        event = to_event(msg)
        try:
            if self._is_async:
                assert self.lab is not None
                self.lab.run(self.handler(event))
            else:
                self.handler(event)
        except BaseException as exc:  # the handler is learner code: keep the error to report
            self.error, self.error_at = exc, (event.topic, event.partition, event.offset)
            return False
        return True

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Worker {self.name} {state}, processed={self.processed}>"
