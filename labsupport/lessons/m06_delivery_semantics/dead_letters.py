"""Poison messages: retry a few times, then park the message in a dead-letter topic.

A *poison* message is one the consumer can never process (bad data, a bug for one
shape of input). Kafka delivers a partition in order, so a consumer that keeps
failing on it (or stops on it) holds back everything behind it. The usual answer:
try it ``attempts`` times, then publish it, with the error and where it came from in
its headers, to a dead-letter topic, and move on::

    dlq = DeadLetterQueue(lab.bus.publisher(), lab.bus.topic("payments-dlq"))
    worker = lab.bus.worker(payments, "ledger", RetryThenDeadLetter(apply_payment, dlq))

Someone (a person, a tool) reads the dead-letter topic later, fixes the cause and
re-publishes the message if it should still happen.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labsupport.lessons.m06_delivery_semantics.delivery import read_topic
from labsupport.runtime.errors import LabError, require
from labsupport.runtime.messaging import Event
from labsupport.runtime.settings import to_wall
from labsupport.runtime.waiting import wait_until

if TYPE_CHECKING:
    from labsupport.runtime.lab import Lab
    from labsupport.runtime.messaging import Delivery, Publisher

#: The headers a dead letter carries (Kafka Connect's DLQ uses similar ones).
HEADERS = ("error", "error-type", "original-topic", "original-partition", "original-offset",
           "attempts")


def dead_letter_headers(event: Event, error: BaseException, attempts: int) -> dict[str, str]:
    """The headers of ``event``'s dead letter: the error and where the message came from."""
    return {"error": str(error) or type(error).__name__, "error-type": type(error).__name__,
            "original-topic": event.topic, "original-partition": str(event.partition),
            "original-offset": str(event.offset), "attempts": str(attempts)}


def missing_headers(headers: dict[str, Any] | None) -> list[str]:
    """Which of :data:`HEADERS` ``headers`` lacks (or leaves empty)."""
    headers = headers or {}
    return [name for name in HEADERS if not str(headers.get(name, "")).strip()]


class DeadLetterQueue:
    """``dlq(value, key=None, headers=None)`` publishes to the dead-letter ``topic`` and
    waits for the broker's ack (a dead letter must not sit in a memory queue)."""

    def __init__(self, publisher: Publisher, topic: str) -> None:
        self.publisher, self.topic = publisher, topic
        self.sent: list[Delivery] = []

    def __call__(self, value: Any, key: str | None = None,
                 headers: dict[str, str] | None = None) -> Delivery:
        delivery = self.publisher.send(self.topic, value, key=key, headers=headers).result(10)
        self.sent.append(delivery)
        return delivery

    def __repr__(self) -> str:
        return f"<DeadLetterQueue {self.topic}: {len(self.sent)} dead letters>"


@dataclass
class RetryThenDeadLetter:
    """Wrap ``handler(event)``: up to ``attempts`` tries, ``backoff_ms`` (model ms) apart;
    then the event goes to ``dlq`` with :func:`dead_letter_headers`, and the consumer
    moves on (the wrapper returns normally, so the offset is committed)."""

    handler: Callable[[Event], Any]
    dlq: Callable[..., Any]
    attempts: int = 3
    backoff_ms: float = 20.0
    tries: dict[tuple[int, int], int] = field(default_factory=dict)
    dead: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        require(isinstance(self.attempts, int) and 1 <= self.attempts <= 20,
                f"attempts must be a whole number from 1 to 20, got {self.attempts!r}.",
                "3 is common: enough for a brief glitch, not enough to stall a partition")
        require(self.backoff_ms >= 0, f"backoff_ms must be 0 or more, got {self.backoff_ms!r}.")

    def __call__(self, event: Event) -> None:
        where = (event.partition, event.offset)
        for attempt in range(1, self.attempts + 1):
            self.tries[where] = attempt
            try:
                self.handler(event)
                return
            except Exception as error:  # any failure counts; the last one is dead-lettered
                if attempt == self.attempts:
                    self.dlq(event.value, key=event.key,
                             headers=dead_letter_headers(event, error, attempt))
                    self.dead.append(event)
                    return
                time.sleep(to_wall(self.backoff_ms / 1000))


# ----- the experiment -----------------------------------------------------------------------
class BadPayment(ValueError):
    """A payment whose amount is not a number: it will never succeed."""


def cents_of(payment: Any) -> int:
    """A payment's amount in cents; :class:`BadPayment` if it is not a whole number."""
    amount = payment.get("amount") if isinstance(payment, dict) else None
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise BadPayment(f"amount {amount!r} is not a whole number of cents")
    return amount


def amount_of(event: Event) -> int:
    """The amount of the payment in ``event`` (see :func:`cents_of`)."""
    return cents_of(event.value)


PAYMENT_TABLES = (
    "CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, cents INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS processed (message_id TEXT PRIMARY KEY)",
)


def prepare_payments(store: Any) -> Any:
    """Create the ledger's tables: ``balances(account, cents)`` and ``processed(message_id)``."""
    return store.create(*PAYMENT_TABLES)


def apply_payment(tx: Any, payment: dict[str, Any]) -> None:
    """Add ``payment["amount"]`` cents to ``payment["account"]`` using ``tx`` (a transaction's
    connection). Raises :class:`BadPayment` for an amount that is not a whole number."""
    account = payment.get("account") if isinstance(payment, dict) else None
    tx.execute("INSERT OR IGNORE INTO balances (account, cents) VALUES (?, 0)", (account,))
    tx.execute("UPDATE balances SET cents = cents + ? WHERE account = ?",
               (cents_of(payment), account))


def balances(store: Any) -> dict[str, int]:
    """Every account's balance in ``store``."""
    return dict(store.query("SELECT account, cents FROM balances"))


@dataclass(frozen=True)
class PoisonResult:
    """What one consumer did with a partition holding one poison message."""

    name: str
    sent: int
    poison_offset: int
    applied: int
    lag: int
    tries_on_poison: int
    dead_letters: list[Event]
    error: str


class PoisonExperiment:
    """``messages`` payments on one partition, the one at ``poison_at`` unpayable.

    :meth:`run` starts two consumers on the same partition in two groups at once:
    one with a plain handler (it stops at the poison, as a consumer that lets the
    error escape does), one wrapped in :class:`RetryThenDeadLetter`.
    """

    def __init__(self, lab: Lab, messages: int = 20, poison_at: int = 5,
                 attempts: int = 3) -> None:
        require(isinstance(messages, int) and 2 <= messages <= 1000,
                f"messages must be 2 to 1000, got {messages!r}.")
        require(isinstance(poison_at, int) and 0 <= poison_at < messages,
                f"poison_at must be an offset from 0 to {messages - 1}, got {poison_at!r}.")
        self.lab, self.messages, self.poison_at, self.attempts = lab, messages, poison_at, attempts
        self.results: dict[str, PoisonResult] = {}

    def _payments(self) -> list[dict[str, Any]]:
        return [{"id": f"pay-{i}", "account": f"acct-{i % 4}",
                 "amount": "lots" if i == self.poison_at else 100 + i}
                for i in range(self.messages)]

    def run(self, timeout_s: float = 15.0) -> dict[str, PoisonResult]:
        """Publish, run both consumers until each is done or stopped; returns both results."""
        bus = self.lab.bus
        topic, dlq_topic = bus.topic("payments"), bus.topic("payments-dlq")
        pub = bus.publisher()
        for payment in self._payments():
            pub.send(topic, payment, key=payment["account"])
        pub.flush()
        applied = {"plain": 0, "dead-letter": 0}
        tries = {"plain": 0, "dead-letter": 0}   # counted by the handler, not the wrapper
        lock = threading.Lock()

        def make(name: str) -> Callable[[Event], None]:
            def apply(event: Event) -> None:
                with lock:
                    tries[name] += event.offset == self.poison_at
                amount_of(event)
                with lock:
                    applied[name] += 1
            return apply

        wrapped = RetryThenDeadLetter(make("dead-letter"), DeadLetterQueue(pub, dlq_topic),
                                      attempts=self.attempts)
        workers = {"plain": bus.worker(topic, "ledger-plain", make("plain"), name="plain"),
                   "dead-letter": bus.worker(topic, "ledger-dlq", wrapped, name="dead-letter")}
        wait_until(lambda: not workers["plain"].running
                   and workers["dead-letter"].processed >= self.messages, timeout_s)
        for worker in workers.values():
            worker.stop(raise_error=False)
        if workers["dead-letter"].processed < self.messages:
            raise LabError(f"The dead-letter consumer processed only "
                           f"{workers['dead-letter'].processed} of {self.messages} in "
                           f"{timeout_s:g} s.", "check the broker and run the cell again")
        dead = read_topic(dlq_topic, expected=len(wrapped.dead))
        plain_error = workers["plain"].error
        self.results = {
            "plain": PoisonResult("plain handler", self.messages, self.poison_at,
                                  applied["plain"], bus.lag(topic, "ledger-plain"),
                                  tries["plain"], [], repr(plain_error) if plain_error else ""),
            "dead-letter": PoisonResult("retry 3x, then dead-letter", self.messages,
                                        self.poison_at, applied["dead-letter"],
                                        bus.lag(topic, "ledger-dlq"),
                                        tries["dead-letter"], dead, ""),
        }
        return self.results

    def summary(self) -> str:
        """One line per consumer: applied, lag, tries on the poison, dead letters."""
        return "\n".join(f"{r.name:<28} applied {r.applied:>3} of {r.sent}, lag {r.lag:>3}, "
                         f"tries on the poison {r.tries_on_poison}, dead letters "
                         f"{len(r.dead_letters)}" for r in self.results.values())
