"""Module 08 · Sagas: the exercise question.

::

    from labsupport.exercises.m08 import q1

* ``q1``: a function ``on_reply(saga, reply) -> list[str]``, the orchestrator's decision
  after each reply (see :mod:`labsupport.orchestration`: :class:`Saga`, :class:`Reply`,
  :data:`STEPS`). A success moves to the next step; a failure before the pivot undoes the
  steps done, last first; a failure after the pivot is retried; a reply seen before
  changes nothing.

The check runs the real orchestrator with your function, the order, payment and inventory
services and the broker: eight orders, one per failure point (none, payment declined,
stock unavailable, capture failing twice) with and without every message duplicated. It
reads what your orchestrator sent for each order and the services' stores, and names the
first rule broken.
"""
from __future__ import annotations

import inspect
import itertools
from collections import Counter
from typing import Any

from ..checks import LearnerRaised, NotYet, Question, Step
from ..errors import LabError
from ..orchestration import COMPENSATIONS, DecideError, Orchestration, SagaLoop
from ..sagas import Faults, check_invariants, wait_settled

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


class SagaMatrix:
    """The orders of one check run and what happened to them."""

    def __init__(self, decide: Any) -> None:
        from .. import lab as lab_module

        current = lab_module.current()
        self.own = current is None
        self.lab = lab_module.Lab(seed=8) if self.own else current
        self.orch = Orchestration(self.lab, prefix=f"chk{next(_RUNS)}_", decide=decide)
        shop = self.orch.shop
        shop.open_accounts({"alice": 1_000, "bob": 1_000})
        shop.stock_items({"book": 20})
        self.orders: list[tuple[dict[str, Any], str, bool]] = []
        for duplicated in (False, True):
            for point in ("stock", "payment", "capture", "none"):  # the most telling first
                order = shop.new_order("bob" if duplicated else "alice", "book", 40, fail=point)
                self.orders.append((order, point, duplicated))
        dup = tuple(o["id"] for o, _, d in self.orders if d)
        self.orch.faults = Faults(capture_failures=2, duplicate_orders=dup)

    def run(self) -> None:
        self.orch.ready()
        self.orch.place([o for o, _, _ in self.orders])
        wait_settled(self.orch.shop, [o for o, _, _ in self.orders], timeout_s=20, quiet_s=1.5)

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
        _explain(order, point, duplicated, sent, want, states[order["id"]])
    invariants = check_invariants(m.orch.shop, [o for o, _, _ in m.orders])
    if not invariants.ok:
        raise NotYet("the invariants do not hold: " + "; ".join(invariants.problems))


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
             want: list[str], state: str) -> None:
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
    if duplicated and extra:
        kind = "compensation " if extra[0] in COMPENSATIONS else "command "
        raise NotYet(f"{where} A duplicated reply made it send the {kind}{extra[0]!r} twice. "
                     "Kafka delivers at least once: remember the ids of the replies you have "
                     "handled (saga.seen) and return [] for one you have seen before.")
    if point in ("payment", "stock") and sent.count(want[len(want) - len(right_undo) - 1]) > 1:
        raise NotYet(f"{where} It retried a step before the pivot. A declined payment or "
                     "missing stock will fail again; only steps after the pivot are retried. "
                     "Before it, compensate.")
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
        except LabError as exc:
            raise NotYet(f"the check could not run the services: {exc}") from exc
        finally:
            matrix.close()


def _probe(answer: Any) -> None:
    """One call without the broker, so a placeholder or a crash is reported at once."""
    from ..orchestration import Reply, Saga

    saga = Saga("probe")
    try:
        answer(saga, Reply("probe:1:create_order/r", "create_order", True))
    except Exception as exc:
        raise LearnerRaised(exc, "on_reply(saga, Reply(id=..., command='create_order', "
                                 "ok=True))") from exc


q1 = Question(
    id="q1", module=MODULE, title="the orchestrator's decisions and compensations",
    name="on_reply",
    what="a function on_reply(saga, reply) returning the list of commands to send",
    steps=[_SagaStep()],
    hints=[
        "Four cases, in this order. (1) A reply whose id is already in saga.seen: return []. "
        "(2) reply.ok: record the step in saga.done and return the next step's command (none "
        "after the last). (3) A failed step after the pivot (its kind is 'retriable'): try it "
        "again. (4) Otherwise: undo what is done.",
        "saga.step(command) gives the Step: .kind is 'compensatable', 'pivot' or 'retriable', "
        ".compensation is the command that undoes it (None for the pivot and after). "
        "saga.step_after(command) is the next Step or None. Add reply.id to saga.seen before "
        "you return.",
        "The compensations: [saga.step(c).compensation for c in reversed(saga.done) if "
        "saga.step(c).compensation]. reversed: the last step done is undone first. saga.done "
        "holds only the steps that succeeded, so the failed step is never undone.",
    ],
    success="your orchestrator moves forward on success, retries after the pivot, undoes the "
            "steps done in reverse before it, and ignores duplicate replies: on the real "
            "services every order ended confirmed or fully compensated, money and stock "
            "conserved.",
)

QUESTIONS = [q1]
__all__ = ["q1", "QUESTIONS", "EXPECTED", "SagaMatrix"]
