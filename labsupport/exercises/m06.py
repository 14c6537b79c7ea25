"""Module 06 · Delivery semantics: the exercise question.

::

    from labsupport.exercises.m06 import q1, MAX_ATTEMPTS, apply_payment

* ``q1``: a function ``handle(event, store, dlq)``, an idempotent consumer with a
  dead-letter queue for payments. ``event`` is a :class:`~labsupport.messaging.Event`
  whose value is ``{"id", "account", "amount"}``; ``store`` is a
  :class:`~labsupport.stores.Store` with tables ``balances`` and ``processed``
  (``message_id`` primary key); ``dlq(value, key=..., headers=...)`` publishes a dead
  letter. ``handle`` applies each payment exactly once (``apply_payment(tx, payment)``),
  skips a message id it has applied before, and after ``MAX_ATTEMPTS`` failed tries sends
  the event to ``dlq`` with the headers of :data:`~labsupport.dead_letters.HEADERS` and
  returns normally.

The checker needs no broker. It feeds ``handle`` a partition's worth of payments with a
transient error (the first try fails with "database is locked"), a poison payment, an
exact redelivery (same offset) and a re-published duplicate (same id, new offset); then it
crashes the "process" after every single database step of one payment and delivers that
payment again, as a consumer that commits after processing would. It counts: nothing lost,
nothing applied twice, the poison in the DLQ with its headers, the rest processed.
"""
from __future__ import annotations

import inspect
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checks import LearnerRaised, NotYet, Question, Step
from ..dead_letters import HEADERS, apply_payment, missing_headers, prepare_payments
from ..messaging import Event
from ..stores import Store

MODULE = "06"
MAX_ATTEMPTS = 3           # tries before a message goes to the dead-letter queue
TOPIC = "payments"
SCENARIO_TIMEOUT_S = 10.0  # wall seconds; nothing in a check waits, so this means "stuck"
STUCK_OPERATIONS = 60      # database operations for one message that mean "retrying forever"
TRANSIENT = "p-2"          # its first database operation fails with "database is locked"
POISON = "p-4"             # amount "lots": can never be applied
CRASH_TARGET = "p-1"       # the payment the crash runs are made on

__all__ = ["q1", "QUESTIONS", "MAX_ATTEMPTS", "apply_payment", "prepare_payments", "HEADERS",
           "payments_stream", "CheckStore", "RecordingDLQ"]


class Crash(BaseException):
    """The checker's simulated process death (not an Exception: do not catch it)."""


class _Stuck(BaseException):
    """Raised by the checker's store when one message took too many operations."""


def payment(i: int, amount: Any = None) -> dict[str, Any]:
    """Payment ``p-i``: account ``acct-i`` (one account per payment, so each balance counts
    how many times its payment was applied), ``100 + i`` cents unless ``amount`` is given."""
    return {"id": f"p-{i}", "account": f"acct-{i}", "amount": 100 + i if amount is None
            else amount}


def payments_stream() -> list[Event]:
    """The deliveries the checker makes, in order (offsets as a partition would have them).

    p-0 .. p-7 (p-4 is poison), then p-6 again at offset 6 (a redelivery after a crash),
    then p-7 re-published at offset 8 (a producer retry: same id, new offset), then p-8.
    """
    values = [payment(i, "lots" if f"p-{i}" == POISON else None) for i in range(8)]
    events = [Event(TOPIC, 0, i, v["account"], v) for i, v in enumerate(values)]
    events.append(events[6])
    events.append(Event(TOPIC, 0, 8, values[7]["account"], values[7]))
    events.append(Event(TOPIC, 0, 9, "acct-8", payment(8)))
    return events


# ----- the checker's store and DLQ -------------------------------------------------------------
class _Tx:
    """The connection ``store.transaction()`` yields, counting each statement as a step."""

    def __init__(self, conn: sqlite3.Connection, owner: CheckStore) -> None:
        self._conn, self._owner = conn, owner

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self._owner._touch()
        cursor = self._conn.execute(sql, params)
        self._owner._note(sql, params)
        self._owner._step()
        return cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class CheckStore:
    """A :class:`~labsupport.stores.Store` that can fail once, crash after step ``n``, and
    notices a message that takes more than :data:`STUCK_OPERATIONS` operations."""

    def __init__(self, path: Path) -> None:
        self.store = prepare_payments(Store(path))
        self.crash_at: int | None = None
        self.steps = 0
        self.crashed = False
        self.fail_next: str | None = None
        self.operations = 0
        self.tries: dict[str, int] = {}
        self.current: Event | None = None

    # what a handler may use
    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        self._touch()
        with self.store.transaction() as conn:
            yield _Tx(conn, self)
        self._step()

    def execute(self, sql: str, params: Any = ()) -> int:
        self._touch()
        changed = self.store.execute(sql, params)
        self._note(sql, params)
        self._step()
        return changed

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        self._touch()
        return self.store.query(sql, params)

    def scalar(self, sql: str, params: Any = ()) -> Any:
        self._touch()
        return self.store.scalar(sql, params)

    # the checker's own bookkeeping
    def _touch(self) -> None:
        self.operations += 1
        if self.operations > STUCK_OPERATIONS:
            raise _Stuck()
        if self.fail_next is not None and self.current is not None and \
                self.current.value.get("id") == self.fail_next:
            self.fail_next = None
            raise sqlite3.OperationalError("database is locked")

    def _note(self, sql: str, params: Any) -> None:
        # apply_payment starts with this statement: one per try
        if "INTO balances" in sql and params:
            self.tries[params[0]] = self.tries.get(params[0], 0) + 1

    def _step(self) -> None:
        self.steps += 1
        if self.crash_at is not None and self.steps == self.crash_at and not self.crashed:
            self.crashed = True
            raise Crash(f"crash after step {self.steps}")

    def applied(self, payment_id: str) -> int:
        """How many times payment ``p-i`` was applied (its account's balance / amount)."""
        i = int(payment_id.split("-")[1])
        cents = self.store.scalar("SELECT cents FROM balances WHERE account = ?", (f"acct-{i}",))
        return (cents or 0) // (100 + i)

    def marked(self, payment_id: str) -> bool:
        return bool(self.store.scalar("SELECT 1 FROM processed WHERE message_id = ?",
                                      (payment_id,)))


@dataclass
class RecordingDLQ:
    """The checker's dead-letter queue: remembers every call (a step, like a publish)."""

    store: CheckStore | None = None
    letters: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, value: Any, key: Any = None, headers: dict[str, Any] | None = None
                 ) -> None:
        self.letters.append({"value": value, "key": key, "headers": dict(headers or {})})
        if self.store is not None:
            self.store._step()


# ----- running the learner's handle -------------------------------------------------------------
@dataclass
class _Run:
    store: CheckStore
    dlq: RecordingDLQ
    escaped: list[tuple[Event, BaseException]] = field(default_factory=list)


def _deliver(handle: Callable[..., Any], run: _Run, event: Event) -> None:
    run.store.current, run.store.operations = event, 0
    try:
        handle(event, run.store, run.dlq)
    except (Crash, _Stuck):
        raise
    except NotImplementedError as exc:
        raise LearnerRaised(exc, "handle(event, store, dlq)") from exc
    except Exception as exc:
        run.escaped.append((event, exc))


def _in_thread(work: Callable[[], None]) -> None:
    box: dict[str, BaseException] = {}

    def main() -> None:
        try:
            work()
        except BaseException as exc:  # handed back to the checking thread
            box["error"] = exc

    thread = threading.Thread(target=main, name="check06", daemon=True)
    thread.start()
    thread.join(SCENARIO_TIMEOUT_S)
    if thread.is_alive():
        raise NotYet(f"handle did not return within {SCENARIO_TIMEOUT_S:g} s: a loop that "
                     "never ends? Try at most MAX_ATTEMPTS times, then dead-letter.")
    if "error" in box:
        raise box["error"]


class _HandleStep(Step):
    """The clean run, then a crash after every step of one payment."""

    def run(self, answer: Any) -> None:
        self._interface(answer)
        with tempfile.TemporaryDirectory(prefix="check06-") as folder:
            self._clean(answer, Path(folder))
            self._crashes(answer, Path(folder))

    @staticmethod
    def _interface(answer: Any) -> None:
        if not callable(answer) or inspect.isclass(answer):
            raise NotYet(f"`handle` should be a function (def handle(event, store, dlq):), "
                         f"got {type(answer).__name__}.")
        try:
            inspect.signature(answer).bind(None, None, None)
        except TypeError:
            raise NotYet("handle must take three arguments: handle(event, store, dlq).") from None
        except ValueError:
            pass

    # the clean run --------------------------------------------------------------------------
    def _clean(self, handle: Callable[..., Any], folder: Path) -> None:
        store = CheckStore(folder / "clean.sqlite")
        store.fail_next = TRANSIENT
        run = _Run(store, RecordingDLQ(store))
        events = payments_stream()

        def work() -> None:
            for event in events:
                _deliver(handle, run, event)

        try:
            _in_thread(lambda: _guard(work))
            self._judge_clean(run)
        finally:
            store.store.close()

    @staticmethod
    def _judge_clean(run: _Run) -> None:
        store, letters = run.store, run.dlq.letters
        for event, error in run.escaped:
            pid = event.value["id"]
            if pid == POISON:
                raise NotYet(f"handle let the poison payment's error escape ({error!r}). In a "
                             "consumer that stops the partition: the message is never "
                             "committed, so it comes back forever and nothing behind it is "
                             "processed. After MAX_ATTEMPTS tries, send it to dlq and return.")
            if pid == TRANSIENT:
                raise NotYet(f"a payment whose first try failed with a passing error ({error!r}) "
                             "made handle raise. Catch the error and try again, up to "
                             "MAX_ATTEMPTS times: most failures are brief.")
            raise NotYet(f"handle raised {error!r} on payment {pid} (offset {event.offset}).")
        dead_ids = [str((letter["value"] or {}).get("id")) if isinstance(letter["value"], dict)
                    else repr(letter["value"]) for letter in letters]
        if TRANSIENT in dead_ids:
            raise NotYet(f"payment {TRANSIENT} failed once (database is locked), and you sent it "
                         "to the dead-letter queue. Retry first: dead-letter only after "
                         "MAX_ATTEMPTS failed tries.")
        if store.applied(TRANSIENT) == 0:
            raise NotYet(f"payment {TRANSIENT} failed once (database is locked) and was never "
                         "applied or dead-lettered: it is lost. Try again after a failure.")
        if POISON not in dead_ids:
            if store.marked(POISON):
                raise NotYet("the poison payment is marked as processed but was neither applied "
                             "nor dead-lettered: you record the id *before* the effect, in its "
                             "own transaction, so the retry thought it was done. Record the id "
                             "in the same transaction as apply_payment.")
            raise NotYet("the poison payment vanished: it was not applied and nothing was sent "
                         "to dlq. Dropping it silently loses a payment; dead-letter it so a "
                         "person can fix it.")
        tries = store.tries.get("acct-4", 0)
        if tries != MAX_ATTEMPTS:
            raise NotYet(f"you tried the poison payment {tries} time(s) before dead-lettering it; "
                         f"try exactly MAX_ATTEMPTS ({MAX_ATTEMPTS}) times, each in its own "
                         "transaction.")
        dupes = [d for d in dead_ids if d not in (POISON,)]
        if dupes:
            raise NotYet(f"you dead-lettered {sorted(set(dupes))}: a message you have already "
                         "applied is not an error. Check whether its id is in `processed` and "
                         "return quietly.")
        letter = letters[dead_ids.index(POISON)]
        missing = missing_headers(letter["headers"])
        if missing:
            raise NotYet(f"the dead letter has no {', '.join(missing)} header(s). Whoever "
                         "reads the dead-letter topic needs the error, the original topic, "
                         "partition and offset, and how many attempts were made.")
        if letter["value"] != payment(4, "lots"):
            raise NotYet("send the original event.value to dlq (unchanged), so it can be "
                         "re-published once fixed.")
        if str(letter["headers"].get("attempts")) != str(MAX_ATTEMPTS) or \
                str(letter["headers"].get("original-offset")) != "4":
            raise NotYet("the dead letter's headers say attempts="
                         f"{letter['headers'].get('attempts')!r}, original-offset="
                         f"{letter['headers'].get('original-offset')!r}; expected "
                         f"'{MAX_ATTEMPTS}' and '4' (event.offset), as text.")
        twice_redelivered, twice_republished = store.applied("p-6"), store.applied("p-7")
        if twice_redelivered > 1:
            raise NotYet("payment p-6 was delivered twice (a redelivery after a crash) and "
                         "applied twice. Record each message id in `processed` and skip an id "
                         "you have seen.")
        if twice_republished > 1:
            raise NotYet("payment p-7 was published twice (a producer retry: same id, new "
                         "offset) and applied twice. Deduplicate by the message's own id, "
                         "event.value['id'], not by its offset.")
        for i in (0, 1, 2, 3, 5, 6, 7, 8):
            times = store.applied(f"p-{i}")
            if times != 1:
                raise NotYet(f"payment p-{i} was applied {times} times; every good payment "
                             "must be applied exactly once (the ones after the poison too).")

    # crash after each step -------------------------------------------------------------------
    def _crashes(self, handle: Callable[..., Any], folder: Path) -> None:
        event = next(e for e in payments_stream() if e.value["id"] == CRASH_TARGET)
        probe = CheckStore(folder / "probe.sqlite")
        try:
            _in_thread(lambda: _guard(lambda: _deliver(handle, _Run(probe, RecordingDLQ()),
                                                        event)))
            steps = probe.steps
        finally:
            probe.store.close()
        for crash_at in range(1, steps + 1):
            store = CheckStore(folder / f"crash{crash_at}.sqlite")
            store.crash_at = crash_at
            run = _Run(store, RecordingDLQ(store))
            try:
                self._crash_once(handle, run, event, crash_at)
            finally:
                store.store.close()

    @staticmethod
    def _crash_once(handle: Callable[..., Any], run: _Run, event: Event, crash_at: int) -> None:
        store = run.store

        def work() -> None:
            try:
                _deliver(handle, run, event)
            except Crash:
                pass
            if not store.crashed:
                return
            if store.steps > crash_at:  # it went on after the crash: the Crash was caught
                raise NotYet("handle kept going after the checker's simulated crash: an "
                             "`except BaseException` (or a bare `except:`) swallowed it. "
                             "Catch Exception only.")
            _deliver(handle, run, event)   # the redelivery after the restart

        _in_thread(lambda: _guard(work))
        times = store.applied(CRASH_TARGET)
        if times > 1:
            raise NotYet(f"the process crashed after database step {crash_at} of payment "
                         f"{CRASH_TARGET} (the effect was committed, its id was not) and the "
                         "redelivery applied it again. The effect and the id must commit "
                         "together: put both in one `with store.transaction() as tx:`.")
        if times == 0:
            raise NotYet(f"the process crashed after database step {crash_at} of payment "
                         f"{CRASH_TARGET} (its id was committed, the effect was not) and the "
                         "redelivery skipped it: the payment is lost. Record the id in the "
                         "same transaction as the effect, not before it.")


def _guard(work: Callable[[], None]) -> None:
    try:
        work()
    except _Stuck:
        raise NotYet(f"handle used the database more than {STUCK_OPERATIONS} times for one "
                     "message: it retries the poison payment forever, so the partition is "
                     f"stuck. Stop after MAX_ATTEMPTS ({MAX_ATTEMPTS}) tries and dead-letter "
                     "it.") from None


q1 = Question(
    id="q1", module=MODULE, title="an idempotent consumer with a dead-letter queue",
    name="handle",
    what="a function handle(event, store, dlq) that applies each payment once and "
         "dead-letters poison",
    steps=[_HandleStep()],
    hints=[
        "Two jobs. Exactly once: in ONE `with store.transaction() as tx:`, insert "
        "event.value['id'] into `processed` (INSERT OR IGNORE: rowcount 0 means seen before, "
        "so return) and call apply_payment(tx, event.value). Poison: wrap that in a loop of "
        "MAX_ATTEMPTS tries that catches Exception.",
        "A failed try rolls its transaction back (the id too), so the next try starts clean. "
        "After the last failed try, call dlq(event.value, key=event.key, headers=...) and "
        "return normally: the consumer then commits the offset and moves on.",
        "headers = {'error': str(error), 'error-type': type(error).__name__, "
        "'original-topic': event.topic, 'original-partition': str(event.partition), "
        "'original-offset': str(event.offset), 'attempts': str(MAX_ATTEMPTS)}. Catch "
        "Exception, never BaseException, and dedup by the id in the value, not the offset.",
    ],
    success="each payment applied exactly once through redeliveries, re-published duplicates "
            "and a crash after every database step; the passing error retried; the poison "
            "tried 3 times and dead-lettered with its headers; the rest of the partition "
            "processed.",
)

QUESTIONS = [q1]


# ----- the learner's handle on the real broker (the solution notebook) ---------------------------
@dataclass(frozen=True)
class LedgerResult:
    """What ``handle`` did on the real broker, counted from the ledger and the topics."""

    payments: int
    published: int
    processed: int
    applied_once: int
    applied_twice: int
    lost: int
    dead_letters: list[Event]
    lag: int

    def summary(self) -> str:
        """One line a person reads: what was published, applied, lost, dead-lettered."""
        return (f"{self.published} messages for {self.payments} payments (one poison, one "
                f"re-published), {self.processed} deliveries in two groups: "
                f"{self.applied_once} applied once, {self.applied_twice} twice, {self.lost} "
                f"lost; {len(self.dead_letters)} dead letters; lag {self.lag}")


def run_on_broker(lab: Any, handle: Callable[..., Any], payments: int = 10,
                  timeout_s: float = 15.0) -> LedgerResult:
    """Publish ``payments`` payments (p-4 poison, p-7 published twice) to a real topic and
    run ``handle`` in two consumer groups at once on one ledger: the second group re-reads
    everything, as a consumer whose committed offsets were lost would."""
    import time

    from ..dead_letters import DeadLetterQueue
    from ..delivery import read_topic
    from ..errors import LabError

    bus = lab.bus
    topic, dlq_topic = bus.topic("ledger"), bus.topic("ledger-dlq")
    store = prepare_payments(lab.store("ledger"))
    pub = bus.publisher()
    values = [payment(i, "lots" if f"p-{i}" == POISON else None) for i in range(payments)]
    values.insert(8, values[7])   # p-7 again: a producer retry, same id, new offset
    for value in values:
        pub.send(topic, value, key=value["account"])
    pub.flush()
    dlq = DeadLetterQueue(pub, dlq_topic)
    workers = [bus.worker(topic, group, lambda e: handle(e, store, dlq), name=group)
               for group in ("ledger", "ledger-replay")]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(w.running and w.processed < len(values)
                                              for w in workers):
        time.sleep(0.02)
    for worker in workers:
        worker.stop(raise_error=False)
    failed = [w for w in workers if w.error is not None]
    if failed:
        raise LabError(f"Your handle raised inside consumer {failed[0].name}: "
                       f"{failed[0].error!r} (at offset {failed[0].error_at[2]}).",
                       "run q1.check() and fix what it says")
    counts = dict(store.query("SELECT account, cents FROM balances"))
    times = [counts.get(f"acct-{i}", 0) // (100 + i) for i in range(payments)
             if f"p-{i}" != POISON]
    return LedgerResult(payments, len(values), sum(w.processed for w in workers),
                        times.count(1), sum(1 for t in times if t > 1), times.count(0),
                        read_topic(dlq_topic, expected=2, idle_s=0.3),
                        sum(bus.lag(topic, g) for g in ("ledger", "ledger-replay")))
