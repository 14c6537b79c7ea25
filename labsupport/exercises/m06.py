"""Module 06 · Delivery semantics: the exercise questions.

::

    from labsupport.exercises.m06 import q1, q2, q3, MAX_ATTEMPTS, apply_payment

* ``q2``: a dict ``crash_outcomes``: predict (lost, duplicated) for three commit strategies
  and crash points (:data:`CRASH_CASES`, replayed message by message to check).
* ``q3``: a dict ``log_diagnosis``: read a two-worker consumer log (:data:`CONSUMER_LOG`)
  and list the messages lost and processed twice.
* ``q4``: a number ``dead_lettered``: how many events a push dispatcher with the lab's
  Event Grid-like schedule dead-letters during an outage (:data:`OUTAGE_CASE`).

* ``q1``: a function ``handle(event, store, dlq)``, an idempotent consumer with a
  dead-letter queue for payments. ``event`` is a :class:`~labsupport.runtime.messaging.Event`
  whose value is ``{"id", "account", "amount"}``; ``store`` is a
  :class:`~labsupport.runtime.stores.Store` with tables ``balances`` and ``processed``
  (``message_id`` primary key); ``dlq(value, key=..., headers=...)`` publishes a dead
  letter. ``handle`` applies each payment exactly once (``apply_payment(tx, payment)``),
  skips a message id it has applied before, and after ``MAX_ATTEMPTS`` failed tries sends
  the event to ``dlq`` with the headers of :data:`~labsupport.lessons.m06_delivery_semantics.dead_letters.HEADERS` and
  returns normally.

The checker needs no broker. It feeds ``handle`` a partition's worth of payments with a
transient error (the first try fails with "database is locked"), a poison payment, an
exact redelivery (same offset) and a re-published duplicate (same id, new offset). Then it
restarts the "process": a fresh copy of ``handle`` whose process memory (module-level sets
and dicts, closures, default arguments) is back to what it was when the check began, as after
a real restart, and delivers an already applied payment to it. Last it crashes the process
after every single database step of a fresh payment, restarts it and delivers that payment
again, as a consumer that commits after processing would. Every check uses payment ids never
seen before (a new suffix each time), so nothing remembered from an earlier run can hide a
mistake. It counts: nothing lost, nothing applied twice, the poison in the DLQ with its
headers, the rest processed.
"""
from __future__ import annotations

import collections
import copy
import inspect
import secrets
import sqlite3
import tempfile
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labsupport.course import progress
from labsupport.course.checks import LearnerRaised, Mistake, NotYet, Question, Step, Value
from labsupport.lessons.m05_async_messaging.pushpull import (
    COMPRESS,
    EVENT_GRID_SCHEDULE_S,
    Policy,
    predict_push,
)
from labsupport.lessons.m06_delivery_semantics.dead_letters import (
    HEADERS,
    apply_payment,
    missing_headers,
    prepare_payments,
)
from labsupport.runtime.messaging import Event
from labsupport.runtime.stores import Store

MODULE = "06"
MAX_ATTEMPTS = 3           # tries before a message goes to the dead-letter queue
TOPIC = "payments"
SCENARIO_TIMEOUT_S = 10.0  # wall seconds; nothing in a check waits, so this means "stuck"
STUCK_OPERATIONS = 60      # database operations for one message that mean "retrying forever"
TRANSIENT = 2              # p-2: its first database operation fails with "database is locked"
POISON = 4                 # p-4: amount "lots", can never be applied
RESTART_TARGET = 20        # p-20: applied, then delivered again to a restarted process
CRASH_TARGETS = 30         # p-31, p-32, ...: one fresh payment per crash run

__all__ = ["q1", "q2", "q3", "q4", "QUESTIONS", "OUTAGE_CASE", "OutageCase", "MAX_ATTEMPTS", "apply_payment", "prepare_payments",
           "HEADERS", "payments_stream", "CheckStore", "RecordingDLQ", "CRASH_CASES", "CrashCase",
           "CONSUMER_LOG", "ConsumerLog", "LogPlan"]


class Crash(BaseException):
    """The checker's simulated process death (not an Exception: do not catch it)."""


class _Stuck(BaseException):
    """Raised by the checker's store when one message took too many operations."""


def payment(i: int, amount: Any = None, suffix: str = "") -> dict[str, Any]:
    """Payment ``p-i`` (plus ``suffix``, e.g. ``p-6-3fa2``): account ``acct-i`` (one account
    per payment, so each balance counts how many times its payment was applied), ``100 + i``
    cents unless ``amount`` is given."""
    return {"id": f"p-{i}{suffix}", "account": f"acct-{i}",
            "amount": 100 + i if amount is None else amount}


def fresh_suffix() -> str:
    """A suffix no earlier check used: ids from a previous run must not look familiar."""
    return f"-{secrets.token_hex(3)}"


def payments_stream(suffix: str = "") -> list[Event]:
    """The deliveries the checker makes, in order (offsets as a partition would have them).

    p-0 .. p-7 (p-4 is poison), then p-6 again at offset 6 (a redelivery after a crash),
    then p-7 re-published at offset 8 (a producer retry: same id, new offset), then p-8.
    """
    values = [payment(i, "lots" if i == POISON else None, suffix) for i in range(8)]
    events = [Event(TOPIC, 0, i, v["account"], v) for i, v in enumerate(values)]
    events.append(events[6])
    events.append(Event(TOPIC, 0, 8, values[7]["account"], values[7]))
    events.append(Event(TOPIC, 0, 9, "acct-8", payment(8, None, suffix)))
    return events


def number_of(payment_id: str) -> int:
    """``i`` of payment ``p-i`` (with or without a suffix)."""
    return int(payment_id.split("-")[1])


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
    """A :class:`~labsupport.runtime.stores.Store` that can fail once, crash after step ``n``, and
    notices a message that takes more than :data:`STUCK_OPERATIONS` operations."""

    def __init__(self, path: Path) -> None:
        self.store = prepare_payments(Store(path))
        self.crash_at: int | None = None
        self.steps = 0
        self.crashed = False
        self.fail_next: int | None = None
        self.operations = 0
        self.transactions = 0
        self.tries: dict[str, int] = {}
        self.current: Event | None = None

    # what a handler may use
    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        self._touch()
        with self.store.transaction() as conn:
            yield _Tx(conn, self)
        self.transactions += 1
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
                number_of(self.current.value.get("id")) == self.fail_next:
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
        i = number_of(payment_id)
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


# ----- a restart: the process's memory is lost -------------------------------------------------
_STATE_TYPES = (set, dict, list, bytearray, collections.deque)


def _is_state(value: Any, module: str) -> bool:
    """Memory a process holds and a restart empties: containers, and objects of the learner's
    own classes (their attributes)."""
    if isinstance(value, _STATE_TYPES):
        return True
    kind = type(value)
    return (kind.__module__ == module and hasattr(value, "__dict__")
            and not isinstance(value, (type, types.FunctionType, types.ModuleType)))


def _code_names(code: types.CodeType) -> set[str]:
    """Global names a function's code (and the code nested in it) looks up."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _same(a: Any, b: Any) -> bool:
    try:
        if hasattr(a, "__dict__") and not isinstance(a, _STATE_TYPES):
            return vars(a) == vars(b)
        return bool(a == b)
    except Exception:  # an odd object: count it as changed, it is only used in a message
        return False


def _article(value: Any) -> str:
    name = type(value).__name__
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


class _ProcessImage:
    """What a new process starts with: ``handle``'s code, and its memory (module-level sets
    and dicts it uses, closures, default arguments, attributes) as it was when the check
    began. :meth:`start` makes a fresh copy: a process just (re)started."""

    def __init__(self, answer: Callable[..., Any]) -> None:
        self.answer = answer
        self.start_memory: dict[tuple[str, ...], Any] = {}
        self.where: dict[tuple[str, ...], str] = {}
        self.functions: list[types.FunctionType] = []
        if not isinstance(answer, types.FunctionType):
            self._keep(("object",), answer, "the handler object's attributes")
            return
        module, space = answer.__module__, answer.__globals__
        todo, names = [answer], set()
        while todo:   # handle, and the functions of the same notebook it calls
            fn = todo.pop()
            self.functions.append(fn)
            names |= _code_names(fn.__code__)
            todo += [v for n, v in space.items() if n in names and isinstance(
                v, types.FunctionType) and v.__globals__ is space and v not in self.functions
                and v not in todo]
        for name in sorted(names):
            if name in space and _is_state(space[name], module):
                self._keep(("global", name), space[name], f"`{name}`")
        for index, fn in enumerate(self.functions):
            self._keep_function(index, fn, module)

    def _keep(self, key: tuple[str, ...], value: Any, where: str) -> None:
        try:
            self.start_memory[key] = copy.deepcopy(value)
        except Exception:  # cannot be copied (a lock, a connection): not the process's memory
            return
        self.where[key] = where

    def _keep_function(self, index: int, fn: types.FunctionType, module: str) -> None:
        for var, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True):
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if _is_state(value, module):
                self._keep(("cell", str(index), var), value,
                           f"`{var}` (in the closure of {fn.__name__})")
        for i, value in enumerate(fn.__defaults__ or ()):
            if _is_state(value, module):
                self._keep(("default", str(index), str(i)), value,
                           f"a default argument of {fn.__name__}")
        for attr, value in vars(fn).items():
            if _is_state(value, module):
                self._keep(("attr", str(index), attr), value, f"`{fn.__name__}.{attr}`")

    def start(self) -> _Process:
        """A freshly started process: a new handle with a new copy of the memory."""
        memory = {key: copy.deepcopy(value) for key, value in self.start_memory.items()}
        if not self.functions:
            handle = memory.get(("object",), self.answer)
            return _Process(handle, memory, self)
        space = dict(self.functions[0].__globals__)
        space.update({key[1]: value for key, value in memory.items() if key[0] == "global"})
        built = [self._rebuild(i, fn, space, memory) for i, fn in enumerate(self.functions)]
        for fn, new in zip(self.functions[1:], built[1:], strict=True):
            space[fn.__name__] = new
        return _Process(built[0], memory, self)

    @staticmethod
    def _rebuild(index: int, fn: types.FunctionType, space: dict[str, Any],
                 memory: dict[tuple[str, ...], Any]) -> types.FunctionType:
        cells = []
        for var, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True):
            key = ("cell", str(index), var)
            cells.append(types.CellType(memory[key]) if key in memory else cell)
        defaults = tuple(memory.get(("default", str(index), str(i)), value)
                         for i, value in enumerate(fn.__defaults__ or ()))
        new = types.FunctionType(fn.__code__, space, fn.__name__, defaults or None,
                                 tuple(cells) or None)
        new.__kwdefaults__ = fn.__kwdefaults__
        for attr, value in vars(fn).items():
            setattr(new, attr, memory.get(("attr", str(index), attr), value))
        return new


@dataclass
class _Process:
    """One run of the consumer process: its handle and the memory it started with."""

    handle: Callable[..., Any]
    memory: dict[tuple[str, ...], Any]
    image: _ProcessImage

    def remembered(self) -> list[str]:
        """Where this process kept something in memory ("`seen` (a set)")."""
        start = self.image.start_memory
        return [f"{self.image.where[key]} ({_article(value)})" for key, value in
                self.memory.items() if not _same(value, start[key])]


# ----- the step ----------------------------------------------------------------------------
@dataclass
class _Seen:
    """What the learner's handle did, for the success message."""

    poison_tries: int = 0
    poison_error: str = ""
    steps: int = 0
    transactions: int = 0
    memory: list[str] = field(default_factory=list)


class _HandleStep(Step):
    """The clean run, a restart, then a crash after every step of a fresh payment."""

    def __init__(self) -> None:
        self.seen = _Seen()

    def run(self, answer: Any) -> None:
        self._interface(answer)
        self.seen = _Seen()
        image, suffix = _ProcessImage(answer), fresh_suffix()
        with tempfile.TemporaryDirectory(prefix="check06-") as folder:
            self._clean(image, Path(folder), suffix)
            self._restart(image, Path(folder), suffix)
            self._crashes(image, Path(folder), suffix)

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
    def _clean(self, image: _ProcessImage, folder: Path, suffix: str) -> None:
        store = CheckStore(folder / "clean.sqlite")
        store.fail_next = TRANSIENT
        run = _Run(store, RecordingDLQ(store))
        events, process = payments_stream(suffix), image.start()

        def work() -> None:
            for event in events:
                _deliver(process.handle, run, event)

        try:
            _in_thread(lambda: _guard(work))
            self._judge_clean(run, suffix)
        finally:
            store.store.close()
        self.seen.memory = process.remembered()

    def _judge_clean(self, run: _Run, suffix: str) -> None:
        store, letters = run.store, run.dlq.letters
        for event, error in run.escaped:
            pid, i = event.value["id"], number_of(event.value["id"])
            if i == POISON:
                raise NotYet(f"handle let the poison payment's error escape ({error!r}). In a "
                             "consumer that stops the partition: the message is never "
                             "committed, so it comes back forever and nothing behind it is "
                             "processed. After MAX_ATTEMPTS tries, send it to dlq and return.")
            if i == TRANSIENT:
                raise NotYet(f"a payment whose first try failed with a passing error ({error!r}) "
                             "made handle raise. Catch the error and try again, up to "
                             "MAX_ATTEMPTS times: most failures are brief.")
            raise NotYet(f"handle raised {error!r} on payment {pid} (offset {event.offset}).")
        dead = [number_of(str(letter["value"].get("id"))) if isinstance(letter["value"], dict)
                and str(letter["value"].get("id", "")).startswith("p-") else None
                for letter in letters]
        transient, poison = f"p-{TRANSIENT}{suffix}", f"p-{POISON}{suffix}"
        if TRANSIENT in dead:
            raise NotYet(f"payment {transient} failed once (database is locked), and you sent it "
                         "to the dead-letter queue. Retry first: dead-letter only after "
                         "MAX_ATTEMPTS failed tries.")
        if store.applied(transient) == 0:
            raise NotYet(f"payment {transient} failed once (database is locked) and was never "
                         "applied or dead-lettered: it is lost. Try again after a failure.")
        if POISON not in dead:
            if store.marked(poison):
                raise NotYet("the poison payment is marked as processed but was neither applied "
                             "nor dead-lettered: you record the id *before* the effect, in its "
                             "own transaction, so the retry thought it was done. Record the id "
                             "in the same transaction as apply_payment.")
            raise NotYet("the poison payment vanished: it was not applied and nothing was sent "
                         "to dlq. Dropping it silently loses a payment; dead-letter it so a "
                         "person can fix it.")
        tries = store.tries.get(f"acct-{POISON}", 0)
        if tries not in (0, 1, MAX_ATTEMPTS):
            raise NotYet(f"you tried the poison payment {tries} time(s) before dead-lettering it; "
                         f"try exactly MAX_ATTEMPTS ({MAX_ATTEMPTS}) times, each in its own "
                         "transaction.")
        dupes = sorted({f"p-{i}{suffix}" if i is not None else "?" for i in dead
                        if i != POISON})
        if dupes:
            raise NotYet(f"you dead-lettered {dupes}: a message you have already "
                         "applied is not an error. Check whether its id is in `processed` and "
                         "return quietly.")
        letter = letters[dead.index(POISON)]
        self._judge_letter(letter, tries, suffix)
        self._judge_counts(store, suffix)
        self.seen.poison_tries = tries
        self.seen.poison_error = str(letter["headers"].get("error-type", ""))

    @staticmethod
    def _judge_letter(letter: dict[str, Any], tries: int, suffix: str) -> None:
        missing = missing_headers(letter["headers"])
        if missing:
            raise NotYet(f"the dead letter has no {', '.join(missing)} header(s). Whoever "
                         "reads the dead-letter topic needs the error, the original topic, "
                         "partition and offset, and how many attempts were made.")
        if letter["value"] != payment(POISON, "lots", suffix):
            raise NotYet("send the original event.value to dlq (unchanged), so it can be "
                         "re-published once fixed.")
        attempts = ("0", "1") if tries == 0 else (str(tries),)
        said = letter["headers"].get("attempts")
        if str(said) not in attempts or str(letter["headers"].get("original-offset")) != "4":
            raise NotYet(f"the dead letter's headers say attempts={said!r}, original-offset="
                         f"{letter['headers'].get('original-offset')!r}; expected "
                         f"'{attempts[-1]}' (the tries you made) and '4' (event.offset), as "
                         "text.")

    @staticmethod
    def _judge_counts(store: CheckStore, suffix: str) -> None:
        if store.applied(f"p-6{suffix}") > 1:
            raise NotYet(f"payment p-6{suffix} was delivered twice (a redelivery after a "
                         "crash) and applied twice. Record each message id in `processed` "
                         "and skip an id you have seen.")
        if store.applied(f"p-7{suffix}") > 1:
            raise NotYet(f"payment p-7{suffix} was published twice (a producer retry: same id, "
                         "new offset) and applied twice. Deduplicate by the message's own id, "
                         "event.value['id'], not by its offset.")
        for i in (0, 1, 2, 3, 5, 6, 7, 8):
            times = store.applied(f"p-{i}{suffix}")
            if times != 1:
                raise NotYet(f"payment p-{i}{suffix} was applied {times} times; every good "
                             "payment must be applied exactly once (the ones after the poison "
                             "too).")

    # a restart between two deliveries ---------------------------------------------------------
    def _restart(self, image: _ProcessImage, folder: Path, suffix: str) -> None:
        value = payment(RESTART_TARGET, None, suffix)
        event = Event(TOPIC, 0, 10, value["account"], value)
        store = CheckStore(folder / "restart.sqlite")
        first, second = image.start(), image.start()
        run = _Run(store, RecordingDLQ(store))
        try:
            _in_thread(lambda: _guard(lambda: _deliver(first.handle, run, event)))
            _in_thread(lambda: _guard(lambda: _deliver(second.handle, run, event)))
            times = store.applied(value["id"])
        finally:
            store.store.close()
        if run.escaped:
            raise NotYet(f"handle raised {run.escaped[0][1]!r} on payment {value['id']}, a "
                         "payment it had applied before the process restarted.")
        if times > 1:
            remembered = first.remembered()
            where = (f"Your handler remembers what it applied in {remembered[0]}, in the "
                     "process's memory, and a restart empties it. " if remembered else
                     "Whatever told the first process it had applied the payment did not "
                     "survive the restart. ")
            raise NotYet(f"payment {value['id']} was applied; then the consumer process "
                         "restarted (a deploy, a crash: its memory is gone) and the message "
                         "came again, as it does when the offset was not committed yet, and "
                         f"the new process applied it a second time. {where}Record the id in "
                         "the `processed` table, in the same transaction as apply_payment: "
                         "the database is what outlives the process.")

    # crash after each step ---------------------------------------------------------------------
    def _crashes(self, image: _ProcessImage, folder: Path, suffix: str) -> None:
        value = payment(CRASH_TARGETS, None, suffix)
        probe = CheckStore(folder / "probe.sqlite")
        process = image.start()
        try:
            _in_thread(lambda: _guard(lambda: _deliver(
                process.handle, _Run(probe, RecordingDLQ()),
                Event(TOPIC, 0, 11, value["account"], value))))
            self.seen.steps, self.seen.transactions = probe.steps, probe.transactions
        finally:
            probe.store.close()
        if self.seen.steps == 0:   # nothing to crash after: the checker must not pass it blind
            raise NotYet(f"handle made no database step for a payment it had never seen "
                         f"({value['id']}): apply it with apply_payment inside "
                         "`with store.transaction() as tx:`.")
        for crash_at in range(1, self.seen.steps + 1):
            target = payment(CRASH_TARGETS + crash_at, None, suffix)
            event = Event(TOPIC, 0, 11 + crash_at, target["account"], target)
            store = CheckStore(folder / f"crash{crash_at}.sqlite")
            store.crash_at = crash_at
            try:
                self._crash_once(image, _Run(store, RecordingDLQ(store)), event, crash_at)
            finally:
                store.store.close()

    @staticmethod
    def _crash_once(image: _ProcessImage, run: _Run, event: Event, crash_at: int) -> None:
        store, pid = run.store, event.value["id"]

        def work() -> None:
            try:
                _deliver(image.start().handle, run, event)
            except Crash:
                pass
            if not store.crashed:
                return
            if store.steps > crash_at:  # it went on after the crash: the Crash was caught
                raise NotYet("handle kept going after the checker's simulated crash: an "
                             "`except BaseException` (or a bare `except:`) swallowed it. "
                             "Catch Exception only.")
            _deliver(image.start().handle, run, event)   # the restarted process: redelivery

        _in_thread(lambda: _guard(work))
        times = store.applied(pid)
        if times > 1:
            raise NotYet(f"the process crashed after database step {crash_at} of payment "
                         f"{pid} (the effect was committed, its id was not) and the "
                         "redelivery applied it again. The effect and the id must commit "
                         "together: put both in one `with store.transaction() as tx:`.")
        if times == 0:
            raise NotYet(f"the process crashed after database step {crash_at} of payment "
                         f"{pid} (its id was committed, the effect was not) and the "
                         "redelivery skipped it: the payment is lost. Record the id in the "
                         "same transaction as the effect, not before it.")

    def said(self) -> str:
        """The success message, from what this handle did."""
        s = self.seen
        commits = f"{s.steps} database steps ({s.transactions} transaction(s))"
        poison = (f"the poison tried {s.poison_tries} time(s) and dead-lettered with its "
                  "headers")
        if s.poison_tries < MAX_ATTEMPTS:
            poison = (f"the poison dead-lettered after {s.poison_tries} tr"
                      f"{'y' if s.poison_tries == 1 else 'ies'}, not {MAX_ATTEMPTS}, with its "
                      f"headers. Better than the worked solution: its {s.poison_error or 'error'}"
                      " (the amount is not a number) is a fact about the message, so no retry "
                      "could pass and retrying only holds the partition up; you still retried "
                      "the passing 'database is locked'")
        memory = (f" Your {', '.join(s.memory)} in process memory is only a shortcut: after "
                  "the restart the `processed` table decided." if s.memory else "")
        return (f"each payment applied exactly once: a redelivery (same offset) and a "
                f"re-published duplicate (new offset) skipped by id; after a restart (process "
                f"memory lost) the ledger still knew the payment; a crash after each of your "
                f"{commits} lost nothing and doubled nothing, because the effect and the id "
                f"commit together. The passing error was retried; {poison}; the rest of the "
                f"partition processed.{memory}")


def _guard(work: Callable[[], None]) -> None:
    try:
        work()
    except _Stuck:
        raise NotYet(f"handle used the database more than {STUCK_OPERATIONS} times for one "
                     "message: it retries the poison payment forever, so the partition is "
                     f"stuck. Stop after MAX_ATTEMPTS ({MAX_ATTEMPTS}) tries and dead-letter "
                     "it.") from None


class _HandleQuestion(Question):
    """q1, whose success message says what the learner's handle did."""

    def _evaluate(self, answer: Any) -> tuple[str, str]:
        status, message = super()._evaluate(answer)
        if status == progress.DONE:
            return status, _STEP.said()
        return status, message


_STEP = _HandleStep()
q1 = _HandleQuestion(
    id="q1", module=MODULE, title="an idempotent consumer with a dead-letter queue",
    name="handle",
    what="a function handle(event, store, dlq) that applies each payment once and "
         "dead-letters poison",
    steps=[_STEP],
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
    success="",   # built from what the handle did: _HandleStep.said()
)



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
    from labsupport.lessons.m06_delivery_semantics.dead_letters import DeadLetterQueue
    from labsupport.lessons.m06_delivery_semantics.delivery import read_topic
    from labsupport.runtime.errors import LabError
    from labsupport.runtime.waiting import wait_until

    bus = lab.bus
    topic, dlq_topic = bus.topic("ledger"), bus.topic("ledger-dlq")
    store = prepare_payments(lab.store("ledger"))
    pub = bus.publisher()
    values = [payment(i, "lots" if i == POISON else None) for i in range(payments)]
    values.insert(8, values[7])   # p-7 again: a producer retry, same id, new offset
    for value in values:
        pub.send(topic, value, key=value["account"])
    pub.flush()
    dlq = DeadLetterQueue(pub, dlq_topic)
    workers = [bus.worker(topic, group, lambda e: handle(e, store, dlq), name=group)
               for group in ("ledger", "ledger-replay")]
    wait_until(lambda: not any(w.running and w.processed < len(values) for w in workers),
               timeout_s)
    for worker in workers:
        worker.stop(raise_error=False)
    failed = [w for w in workers if w.error is not None]
    if failed:
        raise LabError(f"Your handle raised inside consumer {failed[0].name}: "
                       f"{failed[0].error!r} (at offset {failed[0].error_at[2]}).",
                       "run q1.check() and fix what it says")
    counts = dict(store.query("SELECT account, cents FROM balances"))
    times = [counts.get(f"acct-{i}", 0) // (100 + i) for i in range(payments)
             if i != POISON]
    return LedgerResult(payments, len(values), sum(w.processed for w in workers),
                        times.count(1), sum(1 for t in times if t > 1), times.count(0),
                        read_topic(dlq_topic, expected=2, idle_s=0.3),
                        sum(bus.lag(topic, g) for g in ("ledger", "ledger-replay")))


# ----- q2: predict what a crash loses or repeats --------------------------------------------------
@dataclass(frozen=True)
class CrashCase:
    """One partition of 12 orders (offsets 0-11). The consumer takes ``batch`` messages at a
    time and commits the offset after the batch either before processing them
    (``commit_first``) or after. It dies at offset ``crash_at``, before or after processing
    it; a new process starts from the committed offset and reads to the end."""

    commit_first: bool
    batch: int
    crash_at: int
    crashed_after_processing: bool
    messages: int = 12

    def run(self) -> tuple[list[int], int]:
        """(every offset processed, in order, by both processes; committed offset at the
        crash): a message-by-message replay of the two processes."""
        processed, committed = [], 0
        for start in range(0, self.messages, self.batch):
            end = min(start + self.batch, self.messages)
            if self.commit_first:
                committed = end
            for offset in range(start, end):
                if offset == self.crash_at and not self.crashed_after_processing:
                    return processed + list(range(committed, self.messages)), committed
                processed.append(offset)
                if offset == self.crash_at:
                    return processed + list(range(committed, self.messages)), committed
            committed = end
        return processed, committed

    def outcome(self) -> tuple[int, int]:
        """(orders never processed, orders processed twice)."""
        processed, _ = self.run()
        counts = collections.Counter(processed)
        return (sum(counts[o] == 0 for o in range(self.messages)),
                sum(n > 1 for n in counts.values()))

    def describe(self) -> str:
        order = "commit, then process" if self.commit_first else "process, then commit"
        when = "after processing" if self.crashed_after_processing else "before processing"
        return (f"batches of {self.batch}, {order}; the process dies {when} offset "
                f"{self.crash_at}")


CRASH_CASES = {
    "A": CrashCase(commit_first=False, batch=4, crash_at=6, crashed_after_processing=True),
    "B": CrashCase(commit_first=True, batch=4, crash_at=6, crashed_after_processing=False),
    "C": CrashCase(commit_first=False, batch=1, crash_at=6, crashed_after_processing=False),
}
"""q2's three consumers: ``CRASH_CASES[name].describe()`` says what each does."""


def _restart_words(case: CrashCase) -> str:
    """What the replay of ``case`` shows, in words: where the restart began and why."""
    processed, committed = case.run()
    before = processed[:len(processed) - (case.messages - committed)]
    done = f"offsets {before[0]}-{before[-1]}" if before else "nothing"
    return (f"the first process had processed {done} and committed {committed}, so the new "
            f"one begins at offset {committed}")


def _judge_case(name: str, got: tuple[int, int]) -> None:
    case = CRASH_CASES[name]
    lost, twice = case.outcome()
    if got == (lost, twice):
        return
    why = _restart_words(case)
    if got == (twice, lost) and lost != twice:
        raise NotYet(f"{name}: you swapped lost and duplicated. {why}.")
    if not case.commit_first and got[0] > 0:
        raise NotYet(f"{name}: you have {got[0]} lost, but this consumer commits only after "
                     "processing: a crash can only make the new process repeat work, never "
                     f"skip it. {why}.")
    if case.commit_first and got[1] > 0:
        raise NotYet(f"{name}: you have {got[1]} duplicated, but this consumer commits before "
                     "it processes: the new process begins past everything committed, so "
                     f"nothing runs twice. {why}.")
    if case.commit_first and got[0] == 1 and lost > 1:
        raise NotYet(f"{name}: not only offset {case.crash_at}. The commit covered the whole "
                     f"batch, up to offset {case.run()[1] - 1}, and none of the rest of it was "
                     f"processed. {why}.")
    if not case.commit_first and twice > 1 and got[1] == 1:
        raise NotYet(f"{name}: not only offset {case.crash_at}. The restart begins at the last "
                     f"COMMIT, not at the crash. {why}.")
    if twice == 0 and got[1] > 0:
        raise NotYet(f"{name}: the process died BEFORE processing offset {case.crash_at}: its "
                     f"effect was never written, so running it again is its first time. {why}.")
    if not case.commit_first and got[1] == twice + 1:
        raise NotYet(f"{name}: one too many. A committed offset is the NEXT offset to read: "
                     f"{why}, which was not yet processed before.")
    raise NotYet(f"{name}: you have {got[0]} lost and {got[1]} duplicated. Replay it: {why}.")


class _CrashOutcomesStep(Step):
    def run(self, answer: Any) -> None:
        if not isinstance(answer, dict) or set(answer) != set(CRASH_CASES):
            raise NotYet('crash_outcomes should be a dict {"A": (lost, duplicated), "B": '
                         '(...), "C": (...)}: two whole numbers per consumer.')
        for name in CRASH_CASES:
            value = answer[name]
            if (not isinstance(value, (tuple, list)) or len(value) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
                raise NotYet(f"{name}: give a pair of whole numbers (lost, duplicated), got "
                             f"{value!r}.")
            _judge_case(name, (value[0], value[1]))


q2 = Question(
    id="q2", module=MODULE, title="predict what a crash loses or repeats",
    name="crash_outcomes",
    what='a dict {"A": (lost, duplicated), "B": ..., "C": ...}: orders never processed and '
         "orders processed twice, per consumer",
    steps=[_CrashOutcomesStep()],
    hints=[
        "After a crash the new process starts at the group's committed offset, whatever the "
        "old one had done. For each consumer: what was committed, what was processed?",
        "A commit marks the NEXT offset to read. Write down, for each case, the committed "
        "offset at the moment of the crash and the offsets already processed; everything "
        "from the committed offset on runs (again).",
        "A: committed 4 after offsets 0-3, processed 0-6. B: the batch 4-7 was committed (8) "
        "before any of it was processed, and the crash came before 6. C: commits after each "
        "message; 6 was not processed yet. Count offsets processed 0 times and 2 times.",
    ],
    success="A (commit after a batch of 4) repeats the whole unfinished batch, B (commit a "
            "batch first) loses the rest of its batch, C (commit after each message, crash "
            "before the work) neither: the committed offset at the crash decides, not the "
            "offset that crashed.",
)


# ----- q3: diagnose a consumer log -----------------------------------------------------------------
@dataclass(frozen=True)
class LogPlan:
    """How the consumer of one partition was written (the log's ground truth)."""

    partition: int
    messages: int
    commit_first: bool = False     # the bug: commit the offset, then process
    commit_every: int = 1          # commit after this many messages
    fails_once: int | None = None  # this offset's first try raises (rolled back), the retry works


@dataclass(frozen=True)
class ConsumerLog:
    """worker-1 reads three partitions in turn, one message of each, and dies while it is
    processing ``crash`` = (partition, offset); worker-2, the same code, takes over every
    partition from the committed offsets and reads to the end (committing at the end of a
    partition too). Each line is one event of that replay."""

    plans: tuple[LogPlan, ...]
    crash: tuple[int, int]

    def lines(self) -> list[tuple[str, int, int, str]]:
        """(worker, partition, offset, what) for every event, in order."""
        out: list[tuple[str, int, int, str]] = []
        committed = {p.partition: 0 for p in self.plans}
        if self._first_worker(out, committed):
            for p in self.plans:
                out.append(("worker-2", p.partition, committed[p.partition],
                            "assigned, starts at committed offset"))
                for offset in range(committed[p.partition], p.messages):
                    self._one("worker-2", p, offset, out)
        return out

    def _first_worker(self, out: list[tuple[str, int, int, str]],
                      committed: dict[int, int]) -> bool:
        for offset in range(max(p.messages for p in self.plans)):
            for p in self.plans:
                if offset >= p.messages:
                    continue
                out.append(("worker-1", p.partition, offset, "polled"))
                if self._one("worker-1", p, offset, out, committed):
                    return True
        return False

    def _one(self, worker: str, p: LogPlan, offset: int, out: list[tuple[str, int, int, str]],
             committed: dict[int, int] | None = None) -> bool:
        """One message as ``p``'s code handles it; True if worker-1 crashed on it."""
        due = (offset + 1) % p.commit_every == 0 or offset + 1 == p.messages
        if p.commit_first and due:
            out.append((worker, p.partition, offset + 1, "committed"))
        if committed is not None:
            if p.commit_first and due:
                committed[p.partition] = offset + 1
            if (p.partition, offset) == self.crash:
                out.append((worker, p.partition, offset, "CRASH while processing"))
                return True
            if offset == p.fails_once:
                out.append((worker, p.partition, offset,
                            "failed (database locked), rolled back; retrying"))
        out.append((worker, p.partition, offset, "processed"))
        if not p.commit_first and due:
            out.append((worker, p.partition, offset + 1, "committed"))
            if committed is not None:
                committed[p.partition] = offset + 1
        return False

    def text(self) -> str:
        """The log as the two workers printed it."""
        return "\n".join(f"{i:>3}  {worker}  p{part}  "
                         + (f"{what} {offset}" if what.startswith(("committed", "assigned"))
                            else f"offset {offset}: {what}")
                         for i, (worker, part, offset, what) in enumerate(self.lines(), 1))

    def times_processed(self, partition: int, offset: int) -> int:
        return sum(1 for _, p, o, what in self.lines()
                   if (p, o, what) == (partition, offset, "processed"))

    def truth(self) -> dict[str, set[tuple[int, int]]]:
        """Offsets the replay processed zero times (lost) and twice (duplicated)."""
        every = [(p.partition, o) for p in self.plans for o in range(p.messages)]
        return {"lost": {m for m in every if self.times_processed(*m) == 0},
                "duplicated": {m for m in every if self.times_processed(*m) > 1}}


CONSUMER_LOG = ConsumerLog((
    LogPlan(0, messages=8, fails_once=2),
    LogPlan(1, messages=8, commit_first=True),
    LogPlan(2, messages=8, commit_every=3),
), crash=(1, 5))
"""q3's run: ``print(CONSUMER_LOG.text())`` and read it."""
_LOG_PLANS = {p.partition: p for p in CONSUMER_LOG.plans}


def _offset_story(partition: int, offset: int) -> str:
    """What the log says about one message, in words."""
    if partition not in _LOG_PLANS or not 0 <= offset < _LOG_PLANS[partition].messages:
        return f"there is no p{partition} offset {offset} in the log"
    log, times = CONSUMER_LOG, CONSUMER_LOG.times_processed(partition, offset)
    lines = [i for i, (_, p, o, what) in enumerate(log.lines(), 1)
             if (p, o) == (partition, offset) and what != "committed"]
    where = f" (log lines {', '.join(map(str, lines))})" if lines else ""
    return f"p{partition} offset {offset} was processed {times} time{'s' * (times != 1)}{where}"


def _pairs(value: Any, key: str) -> set[tuple[int, int]]:
    if not isinstance(value, (list, tuple, set)) or not all(
            isinstance(m, (list, tuple)) and len(m) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in m) for m in value):
        raise NotYet(f"{key} should be a list of (partition, offset) pairs of whole numbers, "
                     f"e.g. [(0, 3)], or [] for none; got {value!r}.")
    return {(m[0], m[1]) for m in value}


class _LogDiagnosisStep(Step):
    def run(self, answer: Any) -> None:
        if not isinstance(answer, dict) or set(answer) != {"lost", "duplicated"}:
            raise NotYet('log_diagnosis should be a dict {"lost": [(partition, offset), ...], '
                         '"duplicated": [(partition, offset), ...]}.')
        truth = CONSUMER_LOG.truth()
        for key, verb in (("lost", "lost"), ("duplicated", "processed twice")):
            got, want = _pairs(answer[key], key), truth[key]
            wrong = sorted(got - want)
            if wrong:
                first = wrong[0]
                extra = ""
                if key == "duplicated" and first[1] == _LOG_PLANS[first[0]].fails_once:
                    extra = (": a try that failed and rolled back wrote nothing, so its retry "
                             "is the first time it took effect")
                elif key == "lost" and (first[0], first[1] - 1) in want:
                    extra = (": a committed offset is the NEXT one to read. Look at the "
                             "offset just before it")
                raise NotYet(f"{key}: {_offset_story(*first)}{extra}.")
            missing = sorted(want - got)
            if missing:
                where = ", ".join(f"p{part}" for part in sorted({m[0] for m in missing}))
                raise NotYet(f"{key}: you found {len(got)} of the messages {verb}; "
                             f"{len(missing)} more, on {where}. Count, per offset, the "
                             "'processed' lines of both workers.")


q3 = Question(
    id="q3", module=MODULE, title="diagnose a consumer log", name="log_diagnosis",
    what='a dict {"lost": [(partition, offset), ...], "duplicated": [...]} from the log',
    steps=[_LogDiagnosisStep()],
    hints=[
        "worker-2 starts each partition at the offset worker-1 last committed. Compare that "
        "with what worker-1 had actually processed, partition by partition.",
        "A partition whose commit comes BEFORE its 'processed' line can have a committed "
        "offset past a message nobody finished: that message is lost. One that commits only "
        "every few messages repeats the uncommitted ones.",
        "Count the 'processed' lines per (partition, offset), across both workers (a failed "
        "try that was rolled back is not one): 0 means lost, 2 means duplicated.",
    ],
    success="p1 committed each offset before processing it, so the crash lost the message it "
            "was working on; p2 committed every third message, so worker-2 repeated what "
            "worker-1 had done since its last commit; p0's failed try rolled back and counts "
            "once. The log's commit lines, not the crash line, say what is lost or repeated.",
)


# ----- q4: which pushed events are dead-lettered? ------------------------------------------------
@dataclass(frozen=True)
class OutageCase:
    """A push dispatcher with the lab's Event Grid-like schedule and a subscriber that is down:
    which events run out of attempts? (The ground truth is :func:`~labsupport.lessons.m05_async_messaging.pushpull.
    predict_push`, the rule module 06's experiment 6 measured.)"""

    rate: float = 10.0             # events a second, the first at 0 ms
    events: int = 60
    outage_ms: float = 5000.0      # the subscriber answers 503 from 0 ms until then
    max_attempts: int = 4

    def published(self) -> list[float]:
        return [i * 1000 / self.rate for i in range(self.events)]

    def dead(self, policy: Any = None) -> int:
        """Events every planned attempt of which falls inside the outage."""
        fates = predict_push(self.published(), (0.0, self.outage_ms),
                             policy or Policy(max_attempts=self.max_attempts))
        return sum(f is None for f in fates)

    def dead_if_last_attempt_at(self, offset_ms: float) -> int:
        """A wrong model's count: dead when ``t + offset_ms`` is still inside the outage."""
        return sum(t + offset_ms < self.outage_ms for t in self.published())

    def describe(self) -> str:
        waits = ", ".join(f"{s * 1000 / COMPRESS:g}" for s in EVENT_GRID_SCHEDULE_S[:5])
        return (f"{self.events} events at {self.rate:g} a second (the first at 0 ms); the "
                f"subscriber answers 503 from 0 ms to {self.outage_ms:g} ms, then 200. The "
                f"dispatcher waits {waits}, ... ms between attempts (Event Grid's schedule, "
                f"{COMPRESS} times faster) and makes at most max_attempts = {self.max_attempts} "
                f"attempts: the first try counts.")


OUTAGE_CASE = OutageCase()
"""q4's case: print ``OUTAGE_CASE.describe()``."""
_O = OUTAGE_CASE
_WAITS = [s * 1000 / COMPRESS for s in EVENT_GRID_SCHEDULE_S[:3]]


def _q4_mistakes() -> list[Mistake]:
    return [
        Mistake("that counts max_attempts as RETRIES after the first try: 4 retries = 5 "
                "attempts, the last 4000 ms after the event. max_attempts counts every attempt, "
                "the first included (module 03: 3 retries = 4 attempts).",
                like=_O.dead(Policy(max_attempts=_O.max_attempts + 1))),
        Mistake("that is every event published while the subscriber was down. The events of "
                "the outage's last second still had an attempt left after it ended: they were "
                "delivered late, not dead-lettered.", like=_O.dead_if_last_attempt_at(0)),
        Mistake("that says nothing is dead-lettered, as if the dispatcher retried until the "
                "subscriber came back. A consumer group waits like that (the events stay on the "
                "topic); a push dispatcher gives up after max_attempts.", like=0),
        Mistake("that reads the schedule as times since the event (attempts at 0, 100, 300, "
                "600 ms). They are waits BETWEEN attempts: add them up (0, 100, 400, 1000).",
                like=_O.dead_if_last_attempt_at(_WAITS[2])),
        Mistake("that spaces the attempts by the first wait only (0, 100, 200, 300 ms). The "
                "waits grow: exponential backoff.", like=_O.dead_if_last_attempt_at(
                    _WAITS[0] * (_O.max_attempts - 1))),
        Mistake("that is a share of the events; give a number of events.",
                like=_O.dead() / _O.events),
    ]


q4 = Question(
    id="q4", module=MODULE, title="which pushed events are dead-lettered?",
    name="dead_lettered",
    what="a whole number: how many of the events the dispatcher dead-letters",
    steps=[Value(float(_O.dead()), abs_=0.5, unit=" events", mistakes=_q4_mistakes())],
    hints=[
        "An event is dead-lettered when ALL its attempts fail, i.e. all fall inside the "
        "outage. When is an event's last attempt?",
        "The attempts are at 0, 100, 100 + 300 and 100 + 300 + 600 ms after the event: the "
        "last one 1000 ms after it. Which events' last attempt is still before 5000 ms?",
        "Events at 0, 100, ..., 5900 ms; dead when t + 1000 < 5000. Count them "
        "(OUTAGE_CASE.published() lists the times).",
    ],
    success=f"Every event published before {_O.outage_ms - 1000:g} ms used its 4th and last "
            f"attempt 1000 ms later, still inside the outage: {_O.dead()} dead-lettered. Later "
            "ones had an attempt after the subscriber came back and were delivered late. A "
            "consumer group would have lost none: the events wait on the topic as lag.",
)

QUESTIONS = [q1, q2, q3, q4]
