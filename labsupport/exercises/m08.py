"""Module 08 · Sagas: the exercise questions.

::

    from labsupport.exercises.m08 import q1, q2, q3

* ``q2``: a dict ``after_failures``: for a new saga (:data:`TRIP`, a trip booking with a
  read-only step, a pivot and a retriable step), the commands an orchestrator sends when
  each of three steps fails (the lesson's rule on new inputs: :func:`after_failure`).
* ``q3``: a dict ``saga_diagnosis``: reading a saga log (:func:`log_text`) from a buggy
  orchestrator, the order that got a compensation for a step that never committed and the
  order whose compensations ran twice; the truth is read from the log's lines
  (:func:`log_truth`).

* ``q1``: a function ``on_reply(saga, reply) -> list[str]``, the orchestrator's decision
  after each reply (see :mod:`labsupport.lessons.m08_sagas.orchestration`: :class:`Saga`, :class:`Reply`,
  :data:`STEPS`). A success moves to the next step; a failure before the pivot undoes the
  steps done, last first; a failure after the pivot is retried; a reply seen before
  changes nothing.

The check runs the real orchestrator with your function, the order, payment and inventory
services and the broker: eight orders, one per failure point (none, payment declined,
stock unavailable, capture failing twice) with and without every message duplicated. The
orchestrator crashes mid-run (after its write, before its publish) and restarts the way a
new process would: your function's own memory (module-level or closure dicts, lists and
sets) goes back to what it held when the check started, and the reply it was handling is
delivered again. Only the saga record the orchestrator stores (``saga.done``,
``saga.seen``) survives. The check reads what your orchestrator sent for each order and
the services' stores, and names the first rule broken.
"""
from __future__ import annotations

import copy
import inspect
import itertools
import types
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from labsupport.course import progress
from labsupport.course.checks import LearnerRaised, NotYet, Question, Step
from labsupport.lessons.m08_sagas.orchestration import (
    COMMANDS,
    COMPENSATIONS,
    SERVICE_OF,
    STEPS,
    DecideError,
    Orchestration,
    Reply,
    Saga,
    SagaLoop,
    SagaStep,
)
from labsupport.lessons.m08_sagas.sagas import SagaFaults, check_invariants
from labsupport.runtime.errors import LabError

MODULE = "08"
_RUNS = itertools.count(1)

EXPECTED = {
    "none": ["create_order", "authorize_payment", "reserve_stock", "capture_payment",
             "confirm_order"],
    "payment": ["create_order", "authorize_payment", "cancel_order"],
    "stock": ["create_order", "authorize_payment", "reserve_stock", "refund_payment",
              "cancel_order"],
    "capture": ["create_order", "authorize_payment", "reserve_stock", "capture_payment",
                "capture_payment", "capture_payment", "confirm_order"],
}
"""What a correct orchestrator sends for an order failing at each point (capture fails twice)."""
WORDS = {"none": "no failure", "payment": "payment declined", "stock": "stock unavailable",
         "capture": "capture failing twice"}


CRASH_AT = 4
"""The orchestrator crashes while handling its 4th reply: most sagas are half-way then."""
_CONTAINERS = (dict, list, set, bytearray)


class Relaunch:
    """Makes copies of a function as a freshly started process would have it: the mutable
    containers it keeps in its closure or in the globals it names (a ``seen = set()`` at
    module level, a dict of sagas) go back to what they held when this object was made."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.code = getattr(fn, "__code__", None)
        self.cells = [_snapshot(c.cell_contents) for c in (getattr(fn, "__closure__", None)
                                                           or ())]
        names = _names(self.code) if self.code else set()
        scope = getattr(fn, "__globals__", {})
        self.saved = {n: _snapshot(scope[n]) for n in names
                      if n in scope and isinstance(scope[n], _CONTAINERS)}

    @property
    def keeps_memory(self) -> bool:
        """True when the function can remember anything between calls (a container)."""
        return any(isinstance(c, _CONTAINERS) for c in self.cells) or bool(self.saved)

    def fresh(self) -> Callable[..., Any]:
        """The function with its memory as at the start (the same function if it has none)."""
        if self.code is None or not self.keeps_memory:
            return self.fn
        scope = {**self.fn.__globals__, **{n: _snapshot(v) for n, v in self.saved.items()}}
        cells = tuple(types.CellType(_snapshot(c)) for c in self.cells) or None
        clone = types.FunctionType(self.code, scope, self.fn.__name__, self.fn.__defaults__,
                                   cells)
        clone.__kwdefaults__ = copy.copy(self.fn.__kwdefaults__)
        return clone


def _snapshot(value: Any) -> Any:
    try:
        return copy.deepcopy(value) if isinstance(value, _CONTAINERS) else value
    except Exception:  # something that cannot be copied: keep it as it is
        return value


def _names(code: types.CodeType) -> set[str]:
    """Global names used by ``code`` and the functions defined inside it."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


class _RestartingOrchestration(Orchestration):
    """The real orchestrator, whose restart after a crash loses the decide function's memory
    the way a new process would (see :class:`Relaunch`)."""

    relaunch: Relaunch

    def _restart(self, name: str) -> None:
        if name == "orchestrator":
            self.decide = self.relaunch.fresh()
        super()._restart(name)


class SagaMatrix:
    """The orders of one check run and what happened to them."""

    def __init__(self, decide: Any) -> None:
        from labsupport.runtime import lab as lab_module

        current = lab_module.current()
        self.own = current is None
        self.lab = lab_module.Lab(seed=8) if self.own else current
        self.relaunch = Relaunch(decide)
        self.orch = _RestartingOrchestration(self.lab, prefix=f"chk{next(_RUNS)}_",
                                             decide=decide)
        self.orch.relaunch = self.relaunch
        shop = self.orch.shop
        shop.open_accounts({"alice": 1_000, "bob": 1_000})
        shop.stock_items({"book": 20})
        self.orders: list[tuple[dict[str, Any], str, bool]] = []
        for duplicated in (False, True):
            for point in ("stock", "payment", "capture", "none"):  # the most telling first
                order = shop.new_order("bob" if duplicated else "alice", "book", 40, fail=point)
                self.orders.append((order, point, duplicated))
        dup = tuple(o["id"] for o, _, d in self.orders if d)
        self.orch.faults = SagaFaults(capture_failures=2, duplicate_orders=dup, crash="orchestrator",
                                  crash_at=CRASH_AT, downtime_s=0.3)

    def run(self) -> None:
        self.orch.ready()
        self.orch.run([o for o, _, _ in self.orders], timeout_s=20)

    def restarted(self) -> bool:
        return any(name == "orchestrator" for name, _ in self.orch.restarts)

    def close(self) -> None:
        """Stop the check's workers (and its lab, if it made one)."""
        self.orch.stop()
        if self.own:
            self.lab.close()

    def sent(self, order: dict[str, Any]) -> list[str]:
        return [command for command, _ in self.orch.issued(order["id"])]


def _diagnose(m: SagaMatrix) -> None:
    """Raise NotYet naming the first rule your orchestrator broke."""
    for error, call in m.orch.errors:
        if isinstance(error, SagaLoop):
            continue
        if isinstance(error, DecideError):
            raise NotYet(str(error))
        raise LearnerRaised(error, call)
    states = m.orch.shop.order_states([o for o, _, _ in m.orders])
    for order, point, duplicated in m.orders:
        sent, want = m.sent(order), EXPECTED[point]
        if _same(sent, want, point) and states[order["id"]] in ("CONFIRMED", "CANCELLED"):
            continue
        if m.restarted():
            _memory(m.relaunch, order, point, sent, want, states[order["id"]])
        _explain(order, point, duplicated, sent, want, states[order["id"]], m.restarted(),
                 m.orch.issued(order["id"]))
    invariants = check_invariants(m.orch.shop, [o for o, _, _ in m.orders])
    if not invariants.ok:
        raise NotYet("the invariants do not hold: " + "; ".join(invariants.problems))


def _memory(relaunch: Relaunch, order: dict[str, Any], point: str, sent: list[str],
            want: list[str], state: str) -> None:
    """Raise NotYet when the decision depends on memory a restart loses: the same saga record
    and the same reply get another answer from a freshly started copy of the function."""
    lost = _answers_differ_after_restart(relaunch)
    if lost is None:
        return
    raise NotYet(f"order {order['id']} ({WORDS[point]}): your orchestrator sent "
                 f"{sent or 'nothing'} and the order is {state}; a correct one sends {want}. "
                 f"The orchestrator crashed mid-run and restarted, as a new process: {lost} "
                 "Your function keeps per-saga state in its own memory (a dict, list or set "
                 "outside the saga), which a restart loses. Keep it in saga.done and "
                 "saga.seen: the orchestrator stores them with the saga and hands them back "
                 "after a restart.")


def _answers_differ_after_restart(relaunch: Relaunch) -> str | None:
    """Replay two short stories in a running copy and, after a 'restart', in a fresh copy
    given the stored record; the words for the first difference (None: no difference)."""
    if not relaunch.keeps_memory:
        return None
    ok = [("p:1/r", "create_order", True), ("p:2/r", "authorize_payment", True)]
    stories = [  # (replies before the restart, the reply after it, what it shows)
        (ok, ("p:2/r", "authorize_payment", True),
         "a reply it had handled before the crash came again and it acted on it again"),
        (ok, ("p:3/r", "reserve_stock", False),
         "after the stock failed it chose other compensations than before the crash"),
    ]
    for before, after, words in stories:
        try:
            running, record = relaunch.fresh(), Saga("memory-probe")
            for reply in before:
                running(record, Reply(*reply))
            warm = running(copy.deepcopy(record), Reply(*after))
            cold = relaunch.fresh()(copy.deepcopy(record), Reply(*after))
        except Exception:  # its own errors are reported by the matrix, not here
            return None
        if list(warm or []) != list(cold or []):
            return (f"{words} (same stored saga, same reply: {list(warm or [])} before a "
                    f"restart, {list(cold or [])} after).")
    return None


def _same(sent: list[str], want: list[str], point: str) -> bool:
    """``sent`` is what a correct orchestrator sends. A duplicated capture command uses up one
    of the planned gateway failures, so with duplicates capture may be sent 2 or 3 times."""
    if point != "capture":
        return sent == want
    without = [c for c in sent if c != "capture_payment"]
    captures = sent.count("capture_payment")
    return (without == [c for c in want if c != "capture_payment"] and 2 <= captures <= 3
            and sent[3:3 + captures] == ["capture_payment"] * captures)


def _explain(order: dict[str, Any], point: str, duplicated: bool, sent: list[str],
             want: list[str], state: str, restarted: bool = False,
             issued: list[tuple[str, str]] = ()) -> None:
    where = (f"order {order['id']} ({WORDS[point]}{', every message duplicated' if duplicated else ''})"
             f": your orchestrator sent {sent or 'nothing'} and the order is {state}; a "
             f"correct one sends {want}.")
    undo = [c for c in sent if c in COMPENSATIONS]
    right_undo = [c for c in want if c in COMPENSATIONS]
    if point == "capture" and undo:
        raise NotYet(f"{where} Capturing failed after the pivot (reserve_stock succeeded), and "
                     "your orchestrator compensated. After the point of no return a saga only "
                     "goes forward: a failed retriable step is retried (return "
                     "[reply.command]).")
    if point == "payment" and "refund_payment" in undo:
        raise NotYet(f"{where} It compensated a step that never ran: the payment was declined, "
                     "so there is nothing to refund. Undo only the commands in saga.done (the "
                     "failed step is not among them).")
    counts, right = Counter(sent), Counter(want)
    extra = [c for c in counts if counts[c] > right[c]]
    failing = want[len(want) - len(right_undo) - 1]
    if point in ("payment", "stock") and any(   # sent again because of its own failure
            c == failing and because.endswith(f":{c}/r") for c, because in issued):
        raise NotYet(f"{where} It retried a step before the pivot. A declined payment or "
                     "missing stock will fail again; only steps after the pivot are retried. "
                     "Before it, compensate.")
    if (duplicated or restarted) and extra:
        kind = "compensation " if extra[0] in COMPENSATIONS else "command "
        again = "" if duplicated else (" (the orchestrator restarted, and the reply it was "
                                       "handling when it crashed came again)")
        raise NotYet(f"{where} A duplicated reply made it send the {kind}{extra[0]!r} "
                     f"twice{again}. "
                     "Kafka delivers at least once: remember the ids of the replies you have "
                     "handled (saga.seen) and return [] for one you have seen before.")
    if len(undo) >= 2 and undo == list(reversed(right_undo)):
        raise NotYet(f"{where} It compensated in forward order. Undo like a stack, the last "
                     "step done first: refund the payment before cancelling the order (walk "
                     "saga.done in reverse).")
    if right_undo and undo and "cancel_order" not in undo:
        raise NotYet(f"{where} It forgot to compensate the first step: create_order is undone "
                     "by cancel_order, and without it the order stays PENDING for ever. Walk "
                     "all of saga.done, including index 0.")
    if point == "payment" and not undo and "cancel_order" in right_undo and len(sent) == 2:
        raise NotYet(f"{where} After the payment was declined it sent nothing: the order is "
                     "left PENDING. A failure before the pivot must undo every step in "
                     "saga.done, here cancel_order.")
    if point == "stock" and not undo and sent[:3] == want[:3]:
        raise NotYet(f"{where} After the stock was unavailable it sent no compensation: the "
                     "money stays held and the order PENDING. Return the compensations of "
                     "saga.done, last step first.")
    if point == "capture" and sent.count("capture_payment") == 1:
        raise NotYet(f"{where} Capturing failed once (a gateway timeout, after the pivot) and "
                     "your orchestrator gave up: the order stays PENDING with the money held. "
                     "After the pivot, retry the failed step: return [reply.command].")
    if len(sent) <= 1 or sent == want[: len(sent)] and state == "PENDING":
        raise NotYet(f"{where} The saga stopped half-way and the order is still PENDING: after "
                     "a successful step, return the next one ([saga.step_after(reply.command)"
                     ".command], nothing after the last).")
    raise NotYet(where)


class _SagaStep(Step):
    """Run the matrix on the real services and broker; explain the first problem."""

    did = ""

    def run(self, answer: Any) -> None:
        if not callable(answer) or inspect.isclass(answer):
            raise NotYet(f"`on_reply` should be a function (def on_reply(saga, reply): ...), "
                         f"got {type(answer).__name__}.")
        try:
            inspect.signature(answer).bind(object(), object())
        except TypeError as exc:
            raise NotYet("on_reply must take two arguments: on_reply(saga, reply).") from exc
        except ValueError:
            pass
        _probe(answer)
        matrix = SagaMatrix(answer)
        try:
            matrix.run()
            _diagnose(matrix)
            self.did = _what_it_did(matrix)
        except LabError as exc:
            raise NotYet(f"the check could not run the services: {exc}") from exc
        finally:
            matrix.close()


def _what_it_did(m: SagaMatrix) -> str:
    """The success message, from what this orchestrator did in this run."""
    states = m.orch.shop.order_states([o for o, _, _ in m.orders])
    ids = [o["id"] for o, _, _ in m.orders]
    trace = m.orch.shop.trace
    undo = [c for o in ids for c in m.sent({"id": o}) if c in COMPENSATIONS]
    retries = sum(max(m.sent({"id": o}).count("capture_payment") - 1, 0) for o in ids)
    restart = ("the orchestrator crashed on its 4th reply and your decisions carried on from "
               "the stored saga record" if m.restarted() else "no restart was needed")
    return (f"on the real services {sum(s == 'CONFIRMED' for s in states.values())} orders "
            f"were confirmed and {sum(s == 'CANCELLED' for s in states.values())} cancelled. "
            f"Your orchestrator sent {len(undo)} compensations, each saga's last step first, "
            f"retried capture {retries} times after the pivot instead of undoing it, "
            f"{trace.count('duplicate', ids)} repeated messages changed nothing, and {restart}; nothing is "
            "left held and every customer paid exactly for their confirmed orders.")


class _OnReplyQuestion(Question):
    """q1, whose success message says what the learner's orchestrator did."""

    def _evaluate(self, answer: Any) -> tuple[str, str]:
        status, message = super()._evaluate(answer)
        if status == progress.DONE:
            return status, _STEP.did
        return status, message


def _probe(answer: Any) -> None:
    """One call without the broker, so a placeholder or a crash is reported at once."""
    from labsupport.lessons.m08_sagas.orchestration import Reply, Saga

    saga = Saga("probe")
    try:
        answer(saga, Reply("probe:1:create_order/r", "create_order", True))
    except Exception as exc:
        raise LearnerRaised(exc, "on_reply(saga, Reply(id=..., command='create_order', "
                                 "ok=True))") from exc


_STEP = _SagaStep()
q1 = _OnReplyQuestion(
    id="q1", module=MODULE, title="the orchestrator's decisions and compensations",
    name="on_reply",
    what="a function on_reply(saga, reply) returning the list of commands to send",
    steps=[_STEP],
    hints=[
        "Four cases, in this order. (1) A reply whose id is already in saga.seen: return []. "
        "(2) reply.ok: record the step in saga.done and return the next step's command (none "
        "after the last). (3) A failed step after the pivot (its kind is 'retriable'): try it "
        "again. (4) Otherwise: undo what is done.",
        "saga.step(command) gives the SagaStep: .kind is 'compensatable', 'pivot' or 'retriable', "
        ".compensation is the command that undoes it (None for the pivot and after). "
        "saga.step_after(command) is the next SagaStep or None. Add reply.id to saga.seen before "
        "you return.",
        "The compensations: [saga.step(c).compensation for c in reversed(saga.done) if "
        "saga.step(c).compensation]. reversed: the last step done is undone first. saga.done "
        "holds only the steps that succeeded, so the failed step is never undone.",
    ],
    success="",
)



# ----- q2: predict what the orchestrator sends after a failure --------------------------------------
TRIP = (
    SagaStep("create_trip", "trips", "cancel_trip", "compensatable"),
    SagaStep("reserve_flight", "flights", "release_flight", "compensatable"),
    SagaStep("check_visa", "visas", None, "read-only"),
    SagaStep("reserve_hotel", "hotels", "release_hotel", "compensatable"),
    SagaStep("charge_card", "payments", "refund_card", "compensatable"),
    SagaStep("issue_tickets", "flights", None, "pivot"),
    SagaStep("send_itinerary", "mail", None, "retriable"),
)
"""q2's saga: a trip booking, in :class:`~labsupport.lessons.m08_sagas.orchestration.SagaStep` form."""
TRIP_FAILURES = ("charge_card", "issue_tickets", "send_itinerary")
"""The steps q2 asks about: each one fails (its local transaction does not commit)."""


def after_failure(steps: tuple[SagaStep, ...], failed: str) -> list[str]:
    """What an orchestrator sends when ``failed`` fails, every step before it having
    succeeded: a retry after the pivot, else the compensations of the steps done, last first."""
    names = [s.command for s in steps]
    step = steps[names.index(failed)]
    if step.kind == "retriable":
        return [failed]
    done = steps[: names.index(failed)]
    return [s.compensation for s in reversed(done) if s.compensation]


def trip_table() -> str:
    """The trip saga's steps as the notebook shows them."""
    lines = [f"{'step':16} {'service':9} {'kind':14} undone by"]
    lines += [f"{s.command:16} {s.service:9} {s.kind:14} {s.compensation or '-'}" for s in TRIP]
    return "\n".join(lines)


_ALL_TRIP = {s.command for s in TRIP} | {s.compensation for s in TRIP if s.compensation}


def _trip_mistake(failed: str, got: list[str]) -> str:
    """Why ``got`` is not what the orchestrator sends after ``failed`` fails."""
    right = after_failure(TRIP, failed)
    names = [s.command for s in TRIP]
    done = TRIP[: names.index(failed)]
    undo_all = [s.compensation for s in done if s.compensation]
    kind = TRIP[names.index(failed)].kind
    own = TRIP[names.index(failed)].compensation
    if kind == "retriable" and got != right:
        return (f"{failed} comes after the pivot (issue_tickets): the tickets are issued and "
                f"cannot be taken back, so nothing is undone. The orchestrator retries the "
                f"step that failed: [{failed!r}].")
    if got == [failed]:
        return (f"a failure of {failed} is not retried: it is {'the pivot itself' if kind == 'pivot' else 'before the pivot'}, "
                "so the saga goes back, undoing what is done.")
    if got == undo_all and got != right:
        return ("those are in the order the steps ran. Compensations run last step first "
                "(a stack): the newest change is undone before what it was built on.")
    if own and own in got:
        return (f"{failed} failed: its local transaction never committed, so there is nothing "
                f"to {own.split('_')[0]}. Undo only the steps that succeeded before it.")
    if any(c not in _ALL_TRIP for c in got):
        bad = next(c for c in got if c not in _ALL_TRIP)
        return (f"{bad!r} is not a command of this saga. check_visa changed nothing (it only "
                "read), so it has no compensation: skip it.")
    if set(got) < set(right):
        missing = [c for c in right if c not in got]
        return (f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing: every "
                "step that succeeded before the failure is undone, the first one too.")
    return (f"the orchestrator sends {len(right)} command{'s' if len(right) != 1 else ''} "
            "here. Walk the steps done before the failure from the last to the first.")


class _TripStep(Step):
    def run(self, answer: Any) -> None:
        if not isinstance(answer, dict) or set(answer) != set(TRIP_FAILURES):
            raise NotYet("after_failures should be a dict with the keys "
                         f"{', '.join(repr(f) for f in TRIP_FAILURES)}, each a list of "
                         "commands, e.g. {'charge_card': ['...', ...], ...}.")
        for failed in TRIP_FAILURES:
            got = answer[failed]
            if not isinstance(got, (list, tuple)) or not all(isinstance(c, str) for c in got):
                raise NotYet(f"after_failures[{failed!r}] should be a list of command names "
                             f"(strings), got {got!r}.")
            if list(got) != after_failure(TRIP, failed):
                raise NotYet(f"when {failed} fails you have {list(got)}: "
                             f"{_trip_mistake(failed, list(got))}")


q2 = Question(
    id="q2", module=MODULE, title="predict what the orchestrator sends after a failure",
    name="after_failures",
    what="a dict: for each failing step of the trip saga, the list of commands sent next",
    steps=[_TripStep()],
    hints=[
        "Where is the failing step relative to the pivot? Before it (and at it) the saga goes "
        "back; after it, the saga can only go forward.",
        "Going back: the steps that succeeded before the failure are undone, the last one "
        "first; a step that changed nothing has nothing to undo, and the step that failed "
        "never committed. Going forward: the failed step is sent again.",
        "charge_card: walk reserve_hotel, check_visa, reserve_flight, create_trip and write "
        "down each one's 'undone by' (skip '-'). issue_tickets: the same, starting from "
        "charge_card. send_itinerary: one command.",
    ],
    success="before the pivot and at it, the steps done are undone last first (check_visa "
            "has nothing to undo, the failed step never committed); after the pivot the "
            "failed step is retried.",
)


# ----- q3: diagnose a saga log -----------------------------------------------------------------------
@dataclass(frozen=True)
class LogLine:
    """One line of q3's log: model ms, order, lane (service) and what happened."""

    ms: int
    order: str
    lane: str
    text: str


def _script(order: str, fails: str | None = None, duplicate: str | None = None,
            bug: str | None = None) -> list[tuple[str, str]]:
    """One order's saga as (lane, text) lines, from an orchestrator that sends each command
    and logs each reply. ``bug``: 'undo-failed' also compensates the step that failed;
    'double' handles a duplicate reply twice. ``duplicate``: the reply delivered twice."""
    out: list[tuple[str, str]] = []
    done: list[str] = []
    for step in STEPS:
        out.append(("orchestrator", f"send {step.command}"))
        ok = step.command != fails
        out.append((step.service, f"{step.command}: {'ok' if ok else 'FAILED'}"))
        replies = 2 if duplicate == step.command else 1
        for n in range(replies):
            again = n > 0
            if again and bug != "double":
                out.append(("orchestrator", f"reply {step.command} again: seen, ignored"))
                continue
            out.append(("orchestrator", f"reply {step.command}: {'ok' if ok else 'FAILED'}"
                        + (" (again)" if again else "")))
            if ok and not again:
                continue
            if not ok:
                undo = [s.compensation for s in reversed(done) if s.compensation]
                if bug == "undo-failed" and step.compensation:
                    undo.insert(0, step.compensation)
                for command in undo:
                    out.append(("orchestrator", f"send {command} (compensation)"))
                    out.append((SERVICE_OF[command], f"{command}: ok"))
        if not ok:
            return out
        done.append(step)
    return out


#: q3's run: eight orders, two of them handled by a buggy orchestrator
LOG_ORDERS = {
    "o-1": {},
    "o-2": {"fails": "authorize_payment", "bug": "undo-failed"},
    "o-3": {"fails": "reserve_stock"},
    "o-4": {"fails": "reserve_stock", "duplicate": "reserve_stock", "bug": "double"},
    "o-5": {"duplicate": "authorize_payment"},
    "o-6": {"fails": "authorize_payment"},
    "o-7": {"fails": "reserve_stock", "duplicate": "reserve_stock"},
    "o-8": {},
}


def saga_log() -> list[LogLine]:
    """q3's log: the orders' lines interleaved in time, as a log collector shows them."""
    lines = []
    for k, (order, how) in enumerate(LOG_ORDERS.items()):
        for i, (lane, text) in enumerate(_script(order, **how)):
            lines.append(LogLine(9 * k + 6 * i, order, lane, text))
    return sorted(lines, key=lambda line: (line.ms, line.order))


def log_text() -> str:
    """The log, one line per entry."""
    return "\n".join(f"{line.ms:5d} ms  {line.order}  {line.lane:12} {line.text}"
                     for line in saga_log())


def log_facts(order: str) -> dict[str, Any]:
    """What the log shows for ``order``: the steps that committed, the compensations sent."""
    lines = [line for line in saga_log() if line.order == order]
    committed = [line.text.split(":")[0] for line in lines
                 if line.lane != "orchestrator" and line.text.endswith(": ok")
                 and line.text.split(":")[0] in COMMANDS]
    undone = [line.text.split()[1] for line in lines if line.text.endswith("(compensation)")]
    failed = [line.text.split(":")[0] for line in lines
              if line.lane != "orchestrator" and line.text.endswith("FAILED")]
    return {"committed": committed, "compensations": undone, "failed": failed,
            "ignored": sum(line.text.endswith("ignored") for line in lines)}


def log_truth() -> dict[str, str]:
    """From the log itself: the order with a compensation for a step that never committed,
    and the order with a compensation sent twice."""
    never, twice = "", ""
    for order in LOG_ORDERS:
        facts = log_facts(order)
        undone_steps = [COMPENSATIONS[c].command for c in facts["compensations"]]
        if any(step not in facts["committed"] for step in undone_steps):
            never = order
        if len(facts["compensations"]) != len(set(facts["compensations"])):
            twice = order
    return {"never_ran": never, "twice": twice}


def _order_in_words(order: str) -> str:
    """What ``order``'s lines show, in one sentence (for a learner who named it)."""
    f = log_facts(order)
    undone, failed = f["compensations"], f["failed"]
    if not failed:
        extra = (" (a reply came twice and was ignored)" if f["ignored"] else "")
        return f"{order} was confirmed{extra}: no compensation ran"
    steps = [COMPENSATIONS[c].command for c in undone]
    if len(undone) != len(set(undone)):
        return (f"{order}'s compensations ({', '.join(undone)}) undo steps that committed, "
                "but each was sent twice: that is the other symptom")
    if any(s not in f["committed"] for s in steps):
        return (f"{order}: {failed[0]} FAILED, yet {undone[0]} was sent for it, once: that "
                "is the other symptom")
    ignored = " (a duplicate reply was ignored, as it should be)" if f["ignored"] else ""
    return (f"{order}: {failed[0]} failed and the compensations ({', '.join(undone)}) undo "
            f"only steps that committed ({', '.join(f['committed'])}), each once{ignored}: "
            "a correct saga")


class _LogStep(Step):
    def run(self, answer: Any) -> None:
        if not isinstance(answer, dict) or set(answer) != {"never_ran", "twice"}:
            raise NotYet('saga_diagnosis should be a dict with two keys: {"never_ran": '
                         '"<order>", "twice": "<order>"}.')
        for key, value in answer.items():
            if value not in LOG_ORDERS:
                raise NotYet(f"{key}: {value!r} is not an order of the log "
                             f"({', '.join(LOG_ORDERS)}).")
        truth = log_truth()
        if answer["never_ran"] == answer["twice"]:
            raise NotYet(f"you named {answer['twice']} for both; the two symptoms are in two "
                         "different orders.")
        for key, rule in (("never_ran", "a compensation for a step whose own line says "
                                        "FAILED (it never committed, so there was nothing to "
                                        "undo)"),
                          ("twice", "the same compensation sent twice (a duplicate reply "
                                    "handled as if it were new)")):
            if answer[key] != truth[key]:
                raise NotYet(f"{key}: {_order_in_words(answer[key])}. Look for {rule}.")


class _LogQuestion(Question):
    """q3, whose success message is built from the log."""

    def _evaluate(self, answer: Any) -> tuple[str, str]:
        status, message = super()._evaluate(answer)
        if status == progress.DONE:
            truth = log_truth()
            never, twice = log_facts(truth["never_ran"]), log_facts(truth["twice"])
            return status, (f"{truth['never_ran']}: {never['failed'][0]} FAILED and still got "
                            f"{never['compensations'][0]}, an undo of nothing; "
                            f"{truth['twice']}: {', '.join(sorted(set(twice['compensations'])))}"
                            " each sent twice, when its failure reply came again. The fixes: "
                            "compensate only saga.done, and record each reply id (saga.seen) "
                            "before acting on it.")
        return status, message



q3 = _LogQuestion(
    id="q3", module=MODULE, title="diagnose a saga log", name="saga_diagnosis",
    what='a dict {"never_ran": order, "twice": order} naming two orders of the log',
    steps=[_LogStep()],
    hints=[
        "A compensation undoes a step that committed. For each compensation in the log, find "
        "the step it undoes and check that step's own line.",
        "refund_payment undoes authorize_payment, cancel_order undoes create_order. One order "
        "gets a refund although its authorize_payment line says FAILED; another gets the same "
        "compensations twice after a reply arrived twice. A reply 'seen, ignored' is the "
        "orchestrator doing it right.",
        "Filter the log by order: [l for l in saga_log() if l.order == 'o-2'], and count each "
        "order's lines that end with '(compensation)'.",
    ],
    success="",
)


QUESTIONS = [q1, q2, q3]
__all__ = ["q1", "q2", "q3", "QUESTIONS", "EXPECTED", "SagaMatrix", "TRIP", "TRIP_FAILURES",
           "after_failure", "trip_table", "saga_log", "log_text", "log_facts", "log_truth"]
