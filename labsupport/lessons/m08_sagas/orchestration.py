"""Module 08 · The order saga as **orchestration**: one orchestrator sends commands.

The orchestrator keeps each saga's state in its own store and drives the steps of
:data:`STEPS`, one command at a time, over the broker::

    orchestrator --create_order-->      order      --reply--> orchestrator
    orchestrator --authorize_payment--> payment    --reply--> orchestrator
    orchestrator --reserve_stock-->     inventory  --reply--> orchestrator   (the pivot)
    orchestrator --capture_payment-->   payment    --reply--> orchestrator   (retried)
    orchestrator --confirm_order-->     order      --reply--> orchestrator   (retried)

What to do after each reply is one function, ``decide(saga, reply) -> [commands]``
(:func:`reverse_compensation` here; module 08's exercise asks you to write it). The
plumbing around it (state in the store, the outbox, sending compensations one after
another, waiting on a semantic lock) is :class:`Orchestration`.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labsupport.lessons.m08_sagas import sagas
from labsupport.lessons.m08_sagas.sagas import Outcome, SagaFaults, SagaSystem
from labsupport.runtime.errors import require

if TYPE_CHECKING:
    from labsupport.runtime.lab import Lab
    from labsupport.runtime.messaging import Event


@dataclass(frozen=True)
class SagaStep:
    """One step of the saga: its ``command``, the ``service`` that runs it, the command that
    undoes it (``compensation``, or None) and its ``kind``: ``"compensatable"`` (can be
    undone), ``"pivot"`` (the point of no return) or ``"retriable"`` (after the pivot:
    retried until it works, never undone)."""

    command: str
    service: str
    compensation: str | None
    kind: str


STEPS = (
    SagaStep("create_order", "order", "cancel_order", "compensatable"),
    SagaStep("authorize_payment", "payment", "refund_payment", "compensatable"),
    SagaStep("reserve_stock", "inventory", None, "pivot"),
    SagaStep("capture_payment", "payment", None, "retriable"),
    SagaStep("confirm_order", "order", None, "retriable"),
)
COMMANDS = {s.command: s for s in STEPS}
COMPENSATIONS = {s.compensation: s for s in STEPS if s.compensation}
SERVICE_OF = {**{s.command: s.service for s in STEPS},
              **{c: s.service for c, s in COMPENSATIONS.items()}}


@dataclass(frozen=True)
class Reply:
    """A participant's answer to a command: ``id`` (the same for a duplicate of the same
    reply), the ``command`` it answers, ``ok`` and the ``reason`` in words."""

    id: str
    command: str
    ok: bool
    reason: str = ""


@dataclass
class Saga:
    """What ``decide`` sees of one saga (and may change): ``done`` lists the commands that
    succeeded, in order; ``seen`` holds the ids of the replies already handled; ``status``
    is running, compensating, confirmed or cancelled."""

    order: str
    done: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    status: str = "running"

    @staticmethod
    def step(command: str) -> SagaStep:
        """The :class:`SagaStep` of a forward ``command`` (e.g. ``"reserve_stock"``)."""
        require(command in COMMANDS, f"{command!r} is not a step of the saga.",
                f"use one of: {', '.join(COMMANDS)}")
        return COMMANDS[command]

    @staticmethod
    def step_after(command: str) -> SagaStep | None:
        """The step that follows ``command`` (None after the last one)."""
        names = list(COMMANDS)
        index = names.index(Saga.step(command).command) + 1
        return STEPS[index] if index < len(STEPS) else None


Decide = Callable[[Saga, Reply], list[str]]


def reverse_compensation(saga: Saga, reply: Reply) -> list[str]:
    """The orchestrator's rule: a repeated reply changes nothing; a success moves to the next
    step; a failure after the pivot is retried; before it, the steps done are undone, the
    last one first (a stack)."""
    if reply.id in saga.seen:
        return []
    saga.seen.add(reply.id)
    if reply.ok:
        saga.done.append(reply.command)
        following = Saga.step_after(reply.command)
        return [] if following is None else [following.command]
    if Saga.step(reply.command).kind == "retriable":
        return [reply.command]
    undo = [COMMANDS[c].compensation for c in saga.done]
    return [c for c in reversed(undo) if c]


MAX_COMMANDS = 16
"""A saga that sends more commands than this is stuck in a loop; the orchestrator stops it."""


class DecideError(Exception):
    """``decide`` returned something the orchestrator cannot send."""


class SagaLoop(DecideError):
    """One saga sent more than :data:`MAX_COMMANDS` commands: the orchestrator stopped it."""


class Orchestration(SagaSystem):
    """An orchestrator and three participants, each with its own command topic."""

    style = "orchestration"
    entry_path = "/sagas"

    def __init__(self, lab: Lab, faults: SagaFaults | None = None, prefix: str = "or_",
                 decide: Decide = reverse_compensation, lock: bool = False) -> None:
        require(callable(decide), "decide must be a function decide(saga, reply).")
        super().__init__(lab, prefix, faults)
        self.decide, self.lock = decide, lock
        self.errors: list[tuple[BaseException, str]] = []
        tag = prefix.strip("_")
        self.replies = lab.bus.topic(f"{tag}-replies")
        self.inbox = {name: lab.bus.topic(f"{tag}-{name}-commands")
                      for name in ("order", "payment", "inventory")}
        self.add_worker("orchestrator", [self.replies], self._orchestrate)
        for name, topic in self.inbox.items():
            self.add_worker(name, [topic], self._participant(name))

    # ----- starting a saga --------------------------------------------------------------------
    def place_now(self, order: dict[str, Any]) -> None:
        """The orchestrator starts a saga: state saved and the first command queued together."""
        def write(tx: Any) -> list[tuple[str, str, dict[str, Any]]]:
            if tx.execute("SELECT 1 FROM sagas WHERE order_id = ?", (order["id"],)).fetchone():
                return []
            state = {"order": order, "done": [], "seen": [], "status": "running",
                     "pending": [], "handled": [], "issued": [], "n": 0}
            commands = self._issue(state, [STEPS[0].command], "start")
            self._save(tx, state)
            return commands

        self.shop.nodes["orchestrator"].change(write, crashable=False)

    # ----- the orchestrator -------------------------------------------------------------------
    def _orchestrate(self, event: Event) -> None:
        reply = event.value
        self._remember(event, reply["order"])

        def write(tx: Any) -> list[tuple[str, str, dict[str, Any]]]:
            row = tx.execute("SELECT state FROM sagas WHERE order_id = ?",
                             (reply["order"],)).fetchone()
            state = json.loads(row[0])
            commands = self._on_reply(state, reply)
            self._save(tx, state)
            return commands

        self.shop.nodes["orchestrator"].change(write)

    def _on_reply(self, state: dict[str, Any], reply: dict[str, Any]) -> list[Any]:
        order_id = state["order"]["id"]
        if reply["compensation"] or reply["busy"]:
            if reply["id"] in state["handled"]:
                self.shop.trace.add(order_id, "orchestrator", "duplicate", "reply again")
                return []
            state["handled"].append(reply["id"])
            if reply["busy"]:  # a semantic lock: ask again
                return self._issue(state, [reply["command"]], reply["id"])
            if state["pending"]:
                return self._issue(state, [state["pending"].pop(0)], reply["id"])
            state["status"] = "cancelled"
            self.shop.trace.add(order_id, "orchestrator", "end", "CANCELLED")
            return []
        saga = Saga(order_id, list(state["done"]), set(state["seen"]), state["status"])
        answer = Reply(reply["id"], reply["command"], reply["ok"], reply["reason"])
        try:
            chosen = self.decide(saga, answer)
            chosen = _checked(chosen)
        except Exception as exc:  # learner code: keep the error for the checker to report
            self.errors.append((exc, f"decide(saga, {answer})"))
            return []
        repeated = answer.id in state["seen"]
        state["done"], state["seen"] = list(saga.done), sorted(saga.seen)
        if not chosen and repeated:
            self.shop.trace.add(order_id, "orchestrator", "duplicate", "reply again: ignored")
        forward = [c for c in chosen if c in COMMANDS]
        undo = [c for c in chosen if c in COMPENSATIONS]
        if undo and state["status"] == "compensating":  # one already in flight: queue all
            state["pending"] += undo
        elif undo:  # compensations run one after another, in the order decide chose
            state["status"] = "compensating"
            state["pending"] += undo[1:]
            forward.append(undo[0])
        if "confirm_order" in state["done"] and state["status"] == "running":
            state["status"] = "confirmed"
            self.shop.trace.add(order_id, "orchestrator", "end", "CONFIRMED")
        return self._issue(state, forward, reply["id"])

    def _issue(self, state: dict[str, Any], commands: list[str],
               because: str) -> list[tuple[str, str, dict[str, Any]]]:
        order = state["order"]
        out = []
        for command in commands:
            if len(state["issued"]) >= MAX_COMMANDS:
                self.errors.append((SagaLoop(
                    f"the orchestrator sent more than {MAX_COMMANDS} commands for order "
                    f"{order['id']} ({', '.join(c for c, _ in state['issued'][-4:])}, ...): "
                    "a loop?"), "the saga"))
                break
            state["n"] += 1
            again = any(c == command for c, _ in state["issued"])
            state["issued"].append([command, because])
            kind = ("compensation" if command in COMPENSATIONS else
                    "retry" if again else "step")
            self.shop.trace.add(order["id"], "orchestrator", kind, command)
            message = {"id": f"{order['id']}:{state['n']}:{command}", "command": command,
                       "order": order}
            out.append((self.inbox[SERVICE_OF[command]], order["id"], message))
        return out

    @staticmethod
    def _save(tx: Any, state: dict[str, Any]) -> None:
        tx.execute("INSERT INTO sagas VALUES (?, ?) ON CONFLICT(order_id) DO UPDATE SET "
                   "state = excluded.state", (state["order"]["id"], json.dumps(state)))

    # ----- the participants ----------------------------------------------------------------------
    def _participant(self, service: str) -> Callable[[Event], None]:
        def handle(event: Event) -> None:
            command = event.value
            order = command["order"]
            self._remember(event, order["id"])

            def write(tx: Any) -> list[tuple[str, str, dict[str, Any]]]:
                outcome = self._operation(command["command"], tx, order)
                self._mark(service, command["command"], order["id"], outcome)
                reply = {"id": f"{command['id']}/r", "command": command["command"],
                         "order": order["id"], "ok": outcome.ok, "reason": outcome.reason,
                         "busy": outcome.busy, "compensation": command["command"] in
                         COMPENSATIONS}
                return [(self.replies, order["id"], reply)]

            self.shop.nodes[service].change(write)

        return handle

    def _operation(self, command: str, tx: Any, order: dict[str, Any]) -> Outcome:
        faults = self.faults
        if command == "create_order":
            return sagas.create_order(tx, order)
        if command == "cancel_order":
            return sagas.end_order(tx, order["id"], "CANCELLED", "saga compensated")
        if command == "confirm_order":
            return sagas.end_order(tx, order["id"], "CONFIRMED")
        if command == "authorize_payment":
            return sagas.authorize(tx, order, faults, lock=self.lock)
        if command == "refund_payment":
            return sagas.refund(tx, order["id"])
        if command == "capture_payment":
            return sagas.capture(tx, order, faults)
        return sagas.reserve(tx, order, faults)

    def _mark(self, service: str, command: str, order_id: str, outcome: Outcome) -> None:
        trace = self.shop.trace
        if outcome.busy:
            trace.add(order_id, service, "wait", outcome.reason)
        elif not outcome.fresh:
            trace.add(order_id, service, "duplicate", f"{command} again")
        elif command in COMPENSATIONS:
            trace.add(order_id, service, "compensation", command)
        else:
            trace.add(order_id, service, "step" if outcome.ok else "failed",
                      command if outcome.ok else f"{command}: {outcome.reason}")

    # ----- what the orchestrator did -----------------------------------------------------------
    def issued(self, order_id: str) -> list[tuple[str, str]]:
        """``[(command, because-reply-id), ...]`` the orchestrator sent for one order."""
        state = self.saga_state(order_id)
        return [tuple(pair) for pair in state["issued"]] if state else []  # type: ignore

    def saga_state(self, order_id: str) -> dict[str, Any] | None:
        """The orchestrator's stored state of one saga (None if it never started)."""
        raw = self.shop.store("orchestrator").scalar(
            "SELECT state FROM sagas WHERE order_id = ?", (order_id,))
        return None if raw is None else json.loads(raw)


def _checked(chosen: Any) -> list[str]:
    known = [*COMMANDS, *COMPENSATIONS]
    if not isinstance(chosen, (list, tuple)):
        raise DecideError(f"decide returned {type(chosen).__name__} {chosen!r}; return a list "
                          "of commands, e.g. ['reserve_stock'] or [] for nothing.")
    for command in chosen:
        if command not in known:
            raise DecideError(f"decide returned {command!r}, which is not a command; the "
                              f"commands are: {', '.join(known)}.")
    return list(chosen)


# ----- the lack of isolation, and a semantic lock ---------------------------------------------------
@dataclass
class IsolationRun:
    """Pairs of sagas for one customer: A holds 80 of 100 and then fails at the pivot (it is
    refunded); B wants 50 and arrives while A's hold is in place."""

    lock: bool
    pairs: int
    dirty_declines: int
    b_confirmed: int
    b_waits: int
    b_median_ms: float
    invariants: sagas.Invariants

    def summary(self) -> str:
        mode = "with the semantic lock" if self.lock else "without isolation"
        return (f"{mode}: {self.dirty_declines} of {self.pairs} B orders declined on money "
                f"that came back; {self.b_confirmed} of {self.pairs} B orders confirmed; "
                f"B waited {self.b_waits} times; B took {self.b_median_ms:.0f} wall ms (median)")


def isolation_run(orch: Orchestration, pairs: int = 4, lock: bool = False) -> IsolationRun:
    """Run ``pairs`` A/B saga pairs with or without the semantic lock; count the anomalies."""
    require(isinstance(pairs, int) and 1 <= pairs <= 20, f"pairs must be 1 to 20, got {pairs!r}.")
    shop = orch.shop
    orch.faults, orch.lock = SagaFaults(), lock
    tag = f"iso{len(shop.placed)}"
    shop.open_accounts({f"{tag}c{k}": 100 for k in range(pairs)})
    shop.stock_items({f"{tag}gadget": pairs})
    orders = []
    for k in range(pairs):
        orders.append(shop.new_order(f"{tag}c{k}", f"{tag}gadget", 80, fail="stock"))
        orders.append(shop.new_order(f"{tag}c{k}", f"{tag}gadget", 50))
    invariants = orch.run(orders)
    b_ids = [o["id"] for o in orders[1::2]]
    states = shop.order_states(orders[1::2])
    times = []
    for order_id in b_ids:
        marks = shop.trace.of(order_id)
        times.append(marks[-1].t_ms - marks[0].t_ms if marks else float("nan"))
    times.sort()
    return IsolationRun(lock, pairs, sagas.dirty_declines(shop, b_ids),
                        sum(states[i] == "CONFIRMED" for i in b_ids),
                        shop.trace.count("wait", b_ids), times[len(times) // 2], invariants)
