"""Module 07 · CQRS and caching: the exercise questions.

::

    from labsupport.exercises.m07 import q1, q2, q3, q4

* ``q2``: a number ``ttl_hit_rate``: the hit rate of a TTL cache, predicted from the read
  rate, the number of customers, the TTL and the compute time (the lesson's reasoning on
  new inputs).
* ``q3``: a dict ``diagnosis``: reading a staleness/lag table of four projections
  (:data:`STALENESS_RUN`), which one commits its offsets before it applies the events, and
  which one stalled. Checked against how the run's projections were built.

* ``q4``: an async function ``get_or_compute(cache, key, compute, ttl_ms, lock_ms)`` on the
  lab's cache server (redis-py asyncio): the stampede fix. The checker sends 40 readers at
  once to a missing key and counts the calls of its own ``compute``; checks that every reader
  gets the value, that the value has a TTL, and that a lock holder that dies inside
  ``compute`` (no return, no ``finally``) delays the others only until its lock expires.

* ``q1``: a function ``apply(view, event)`` that updates a read model in place.
  ``view`` is ``{"orders": {order_id: row}, "customers": {customer: totals}}`` where a row
  is ``{"customer", "amount", "state", "version"}`` and totals are ``{"orders", "amount"}``
  over the customer's orders that are not cancelled. ``event`` is one order event as the
  lesson's command side publishes it: ``{"type", "order", "version", "customer",
  "amount", "state"}``, carrying the whole order after the change.

The checker feeds ``apply`` adversarial event sequences, the way Kafka can deliver them
(a redelivery after a crash, two writers publishing one order's versions in the wrong
order, interleaved orders, a cancellation followed by a late older event, a first event
that is not OrderPlaced, a version that never arrives) and compares the view with the
expected one, naming the rule a wrong projection breaks. Then long random sequences, a
restart (your function's own memory goes back to what it held at the start, as in a new
process, while the view, the store, survives, and the last events are delivered again) and
a rebuild (the same events replayed into an empty view). Every run uses fresh order ids,
so state a projection keeps outside the view is only ever tested by the restart and the
rebuild, where a real one would lose it.
"""
from __future__ import annotations

import asyncio
import copy
import inspect
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from labsupport.course import progress
from labsupport.course.checks import (
    Diagnosis,
    LearnerRaised,
    Mistake,
    NotYet,
    Question,
    Step,
    Value,
    call_learner,
)
from labsupport.exercises.m08 import Relaunch

MODULE = "07"
FIELDS = ("customer", "amount", "state", "version")
_RUNS = itertools.count(1)


def event(order: str, version: int, kind: str, customer: str, amount: float,
          state: str) -> dict[str, Any]:
    """One order event, as the lesson's command side publishes it."""
    return {"type": kind, "order": order, "version": version, "customer": customer,
            "amount": amount, "state": state}


def new_view() -> dict[str, dict[str, Any]]:
    """An empty read model: ``{"orders": {}, "customers": {}}``."""
    return {"orders": {}, "customers": {}}


# ----- the story of two orders, version by version ------------------------------------------
A1 = event("A", 1, "OrderPlaced", "c1", 30, "PLACED")
A2 = event("A", 2, "ItemAdded", "c1", 45, "PLACED")
A3 = event("A", 3, "OrderPaid", "c1", 45, "PAID")
A4 = event("A", 4, "OrderShipped", "c1", 45, "SHIPPED")
B1 = event("B", 1, "OrderPlaced", "c2", 20, "PLACED")
B2 = event("B", 2, "OrderPaid", "c2", 20, "PAID")
B3 = event("B", 3, "OrderCancelled", "c2", 20, "CANCELLED")
C1 = event("C", 1, "OrderPlaced", "c1", 10, "PLACED")
C2 = event("C", 2, "ItemAdded", "c1", 25, "PLACED")


def expected_view(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The checker's own answer: for each order the event with the highest version wins;
    totals count the orders that are not cancelled."""
    latest: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["order"] not in latest or e["version"] > latest[e["order"]]["version"]:
            latest[e["order"]] = e
    view = new_view()
    for order, e in latest.items():
        view["orders"][order] = {k: e[k] for k in FIELDS}
        if e["state"] != "CANCELLED":
            totals = view["customers"].setdefault(e["customer"], {"orders": 0, "amount": 0})
            totals["orders"] += 1
            totals["amount"] += e["amount"]
    return view


def _plain(view: Any) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """Comparable form: rows as tuples, totals with zero customers left out."""
    if not isinstance(view, dict) or not isinstance(view.get("orders"), dict) or \
            not isinstance(view.get("customers"), dict):
        raise NotYet("view must stay a dict with the keys 'orders' and 'customers' (both "
                     "dicts): change it in place, do not replace or reshape it.")
    orders = {}
    for order, row in view["orders"].items():
        if not isinstance(row, dict) or any(k not in row for k in FIELDS):
            raise NotYet(f"view['orders'][{order!r}] is {row!r}; a row is a dict with the keys "
                          f"{', '.join(FIELDS)}.")
        orders[order] = (row["customer"], round(float(row["amount"]), 2), row["state"],
                         row["version"])
    customers = {}
    for customer, totals in view["customers"].items():
        if not isinstance(totals, dict) or "orders" not in totals or "amount" not in totals:
            raise NotYet(f"view['customers'][{customer!r}] is {totals!r}; totals are a dict "
                         "with the keys 'orders' and 'amount'.")
        if totals["orders"] or round(float(totals["amount"]), 2):
            customers[customer] = (totals["orders"], round(float(totals["amount"]), 2))
    return orders, customers


def run_apply(apply: Callable[..., Any], events: list[dict[str, Any]],
              view: dict[str, Any] | None = None, run: int | None = None) -> dict[str, Any]:
    """Feed ``events`` one by one to ``apply(view, event)`` (on a new view unless ``view``
    is given); returns the view, with the order ids as in ``events``.

    Each run gives the orders fresh ids (``A`` becomes ``A#7``; the same ``run`` number
    gives the same ids again), so memory an ``apply`` keeps between calls never meets an id
    it has seen, except where the check means it to. Each event is a fresh copy.
    """
    run = next(_RUNS) if run is None else run
    view = _tagged(new_view() if view is None else view, run)
    for e in events:
        fresh = {**copy.deepcopy(e), "order": f"{e['order']}#{run}",
                 "customer": f"{e['customer']}#{run}"}
        returned = call_learner(apply, view, fresh, call=f"apply(view, {_short(fresh)})")
        if isinstance(returned, dict) and returned is not view and "orders" in returned:
            view = returned
    return _untagged(view)


def _tagged(view: dict[str, Any], run: int) -> dict[str, Any]:
    """The view with run ``run``'s ids (orders, customers and the rows' customers)."""
    if isinstance(view, dict) and isinstance(view.get("orders"), dict):
        view["orders"] = {f"{k}#{run}": _row_tagged(v, run) for k, v in view["orders"].items()}
    if isinstance(view, dict) and isinstance(view.get("customers"), dict):
        view["customers"] = {f"{k}#{run}": v for k, v in view["customers"].items()}
    return view


def _row_tagged(row: Any, run: int) -> Any:
    if isinstance(row, dict) and "customer" in row:
        return {**row, "customer": f"{row['customer']}#{run}"}
    return row


def _untagged(view: Any) -> Any:
    """The view with the ids as the events named them."""
    if isinstance(view, dict) and isinstance(view.get("orders"), dict):
        view["orders"] = {_plain_id(k): {**v, "customer": _plain_id(v["customer"])}
                          if isinstance(v, dict) and "customer" in v else v
                          for k, v in view["orders"].items()}
    if isinstance(view, dict) and isinstance(view.get("customers"), dict):
        view["customers"] = {_plain_id(k): v for k, v in view["customers"].items()}
    return view


def _plain_id(value: Any) -> Any:
    return value.split("#")[0] if isinstance(value, str) else value


def _short(e: dict[str, Any]) -> str:
    return f"{e['order']} v{e['version']} {e['type']}"


def _sequence(events: list[dict[str, Any]]) -> str:
    return ", ".join(_short(e) for e in events)


def _row(view: dict[str, Any], order: str) -> tuple | None:
    return _plain(view)[0].get(order)


def _compare(got: dict[str, Any], events: list[dict[str, Any]], what: str,
             show: bool = True) -> None:
    want_orders, want_customers = _plain(expected_view(events))
    orders, customers = _plain(got)
    if show:
        what = f"{what} ({_sequence(events)})"
    if orders != want_orders:
        wrong = sorted(set(orders) ^ set(want_orders) | {
            k for k in set(orders) & set(want_orders) if orders[k] != want_orders[k]})
        key = wrong[0]
        raise NotYet(f"{what}: view['orders'][{key!r}] should be "
                     f"{_describe(want_orders.get(key))}, yours is {_describe(orders.get(key))}.")
    if customers != want_customers:
        wrong = sorted(k for k in set(customers) | set(want_customers)
                       if customers.get(k) != want_customers.get(k))
        key = wrong[0]
        raise NotYet(f"{what}: the orders are right, but "
                     f"view['customers'][{key!r}] should be {_totals(want_customers.get(key))}, "
                     f"yours is {_totals(customers.get(key))}.")


def _all_totals(customers: dict[str, tuple]) -> str:
    return ", ".join(f"{c} {_totals(t)}" for c, t in sorted(customers.items())) or "none"


def _describe(row: tuple | None) -> str:
    if row is None:
        return "missing"
    return f"{{customer {row[0]}, amount {row[1]:g}, state {row[2]}, version {row[3]}}}"


def _totals(totals: tuple | None) -> str:
    return "{orders 0, amount 0}" if totals is None else \
        f"{{orders {totals[0]}, amount {totals[1]:g}}}"


# ----- the scenarios, each with its own diagnosis -------------------------------------------
def _in_order(apply: Callable[..., Any]) -> None:
    events = [A1, B1, A2, A3]
    view = run_apply(apply, events)
    if not _plain(view)[0]:
        raise NotYet("after four events your view['orders'] is still empty: change the view "
                     "you were given in place (view['orders'][event['order']] = {...}); "
                     "assigning view = ... inside apply only renames a local variable.")
    orders, customers = _plain(view)
    if orders == _plain(expected_view(events))[0] and customers.get("c1", (0, 0))[1] == 75:
        raise NotYet("in order (A v1 OrderPlaced 30, A v2 ItemAdded -> 45): c1's amount is 75, "
                     "it should be 45. Each event carries the order's whole amount after the "
                     "change, not the amount added: move the customer's total by the "
                     "difference between the old row and the new one.")
    if orders == _plain(expected_view(events))[0] and customers.get("c1", (0, 0))[1] == 30:
        raise NotYet("in order (A v1 OrderPlaced 30, A v2 ItemAdded -> 45): c1's amount is "
                     "still 30, it should be 45. When an order's amount changes, move the "
                     "customer's total by the difference between the old row and the new one.")
    _other_keys(view, events, "events in order")
    _compare(view, events, "events in order")


def _duplicates(apply: Callable[..., Any]) -> None:
    events = [A1, A1, B1, A2, A2, A3, A3, B1]
    view = run_apply(apply, events)
    want_orders, want_customers = _plain(expected_view(events))
    orders, customers = _plain(view)
    if orders == want_orders and customers != want_customers:
        if _compares_versions(apply):
            raise NotYet(f"with duplicates ({_sequence(events)}) your customer totals are "
                         f"{_all_totals(customers)}, expected {_all_totals(want_customers)}: an event with the *same* "
                         "version as the stored row is a duplicate and must change nothing. "
                         "Apply only versions newer than the stored one (>, not >=).")
        raise NotYet(f"with duplicates ({_sequence(events)}) your customer totals are "
                     f"{_all_totals(customers)}, expected {_all_totals(want_customers)}: each redelivered event was "
                     "applied again, so the counters grew twice. Kafka delivers at least "
                     "once: ignore an event whose version is not newer than the stored one.")
    _compare(view, events, "with duplicates")


def _compares_versions(apply: Callable[..., Any]) -> bool:
    """True when ``apply`` ends at the right version after A v1, A v3, A v2 (no duplicates)."""
    try:
        return _row(run_apply(apply, [A1, A3, A2]), "A") == _row(expected_view([A3]), "A")
    except (LearnerRaised, NotYet):
        return False


def _gap(apply: Callable[..., Any]) -> None:
    events = [A1, A3]
    view = run_apply(apply, events)
    if _row(view, "A") == _row(expected_view([A1]), "A"):
        raise NotYet("A v1 then A v3 (version 2 never reaches you: a compacted topic keeps "
                     "only the latest event of each order; a projection can start late): your "
                     "view kept version 1 and dropped version 3. Do not wait for version + 1: "
                     "every event carries the whole order, so any newer version can be applied.")
    _compare(view, events, "with a version missing")


def _reordered(apply: Callable[..., Any]) -> None:
    events = [A1, A3, A4, A2]
    view = run_apply(apply, events)
    row = _row(view, "A")
    if row == _row(expected_view([A2]), "A"):
        raise NotYet(f"reordered ({_sequence(events)}): your view ends at version 2, the last "
                     "event to *arrive*, but version 4 is the newest. Two writers can publish "
                     "one order's versions in the wrong order: last writer wins by version, "
                     "not by arrival. Skip an event whose version is not above the stored one.")
    if row is not None and row[3] < 4:
        raise NotYet(f"reordered ({_sequence(events)}): your view ends at version {row[3]} and "
                     "dropped a newer version that came after it. After a late, older event "
                     "is skipped, newer ones must still be applied.")
    _compare(view, events, "reordered within one order")


def _interleaved(apply: Callable[..., Any]) -> None:
    events = [A1, B1, C1, A2, B2, C2, A3]
    view = run_apply(apply, events)
    _other_keys(view, events, "interleaved orders")
    _compare(view, events, "interleaved orders")


def _other_keys(view: dict[str, Any], events: list[dict[str, Any]], what: str) -> None:
    """Order A right but another order wrong: versions kept for the whole view, not per key."""
    orders, want = _plain(view)[0], _plain(expected_view(events))[0]
    missing = sorted(k for k in want if k != "A" and orders.get(k) != want[k])
    if orders.get("A") == want.get("A") and missing:
        raise NotYet(f"{what} ({_sequence(events)}): order A is right but "
                     f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                     f"{_describe(orders.get(missing[0]))}. Versions count per order: keep "
                     "and compare the version of *that* order (view['orders'][id]['version']), "
                     "not one version for the whole view.")


def _cancelled(apply: Callable[..., Any]) -> None:
    events = [B1, B2, B3, B2, B1]
    view = run_apply(apply, events)
    orders, customers = _plain(view)
    if orders.get("B") is None or orders["B"][2] != "CANCELLED":
        raise NotYet(f"a cancellation, then late older events ({_sequence(events)}): order B "
                     f"is {_describe(orders.get('B'))}; it should stay cancelled at version 3. "
                     "Keep a cancelled order as a row with state CANCELLED and its version "
                     "(a tombstone); if you delete it, a late older event brings it back.")
    if "c2" in customers:
        raise NotYet(f"after {_sequence(events)}: c2's totals are {_totals(customers['c2'])}; "
                     "a cancelled order no longer counts for its customer: subtract what the "
                     "order counted for before (1 order and its amount).")
    _compare(view, events, "a cancellation and late events")


def _first_is_not_placed(apply: Callable[..., Any]) -> None:
    events = [A2, A1, A3]
    hint = ("the first event you see for an order need not be OrderPlaced (here A v2 "
            "ItemAdded arrives before A v1): every event carries the whole order, so create "
            "the row from whichever event comes first.")
    try:
        view = run_apply(apply, events)
    except LearnerRaised as raised:
        if isinstance(raised.error, KeyError):
            raise NotYet(f"your apply raised KeyError {raised.error} on "
                         f"{_sequence(events)}: {hint}") from None
        raise
    if _row(view, "A") != _row(expected_view(events), "A"):
        raise NotYet(f"{_sequence(events)}: order A is {_describe(_row(view, 'A'))}, it should "
                     f"be {_describe(_row(expected_view(events), 'A'))}. {hint}")
    _compare(view, events, "first event is not OrderPlaced")


def random_log(seed: int, orders: int = 12) -> list[dict[str, Any]]:
    """A seeded adversarial log: several orders, each version delivered once or twice,
    versions of one order out of order now and then, orders interleaved, some cancelled."""
    rng = random.Random(seed)
    per_order: list[list[dict[str, Any]]] = []
    for n in range(orders):
        order, customer = f"o{n}", f"c{rng.randint(1, 4)}"
        amount, state = float(rng.choice((10, 20, 30))), "PLACED"
        history = [event(order, 1, "OrderPlaced", customer, amount, state)]
        for version in range(2, rng.randint(2, 6)):
            kind = rng.choice(("ItemAdded", "OrderPaid", "OrderShipped", "OrderCancelled"))
            if kind == "ItemAdded":
                amount += 5
            state = {"OrderPaid": "PAID", "OrderShipped": "SHIPPED",
                     "OrderCancelled": "CANCELLED"}.get(kind, state)
            history.append(event(order, version, kind, customer, amount, state))
            if state == "CANCELLED":
                break
        delivered = [e for e in history for _ in range(rng.choice((1, 1, 2)))]
        for i in range(len(delivered) - 1):
            if rng.random() < 0.3:
                delivered[i], delivered[i + 1] = delivered[i + 1], delivered[i]
        per_order.append(delivered)
    log: list[dict[str, Any]] = []
    while any(per_order):
        queue = rng.choice([q for q in per_order if q])
        log.append(queue.pop(0))
    return log


def _random_logs(apply: Callable[..., Any]) -> None:
    for seed in range(5):
        events = random_log(seed)
        view = run_apply(apply, events)
        _compare(view, events, f"the scenarios pass, but on a random log of {len(events)} "
                 f"events (random_log({seed}): duplicates, reordering, interleaving)",
                 show=False)


_MEMORY = ("Your apply keeps state outside the view (a dict, set or counter in its own "
           "memory). A restart loses it while the view, the store, survives; a rebuild "
           "starts from an empty view while it survives. Keep everything in the view: "
           "compare the event's version with view['orders'][id]['version'].")


def _restart(apply: Callable[..., Any], relaunch: Relaunch) -> None:
    """Half the events, a restart (memory as at the start, the view kept), then the last two
    events again (their offsets were not committed) and the rest."""
    events = [A1, B1, A2, B2, A3, C1, B3, C2, A4]
    run = next(_RUNS)
    view = run_apply(relaunch.fresh(), events[:5], run=run)
    view = run_apply(relaunch.fresh(), events[3:], view=view, run=run)
    try:
        _compare(view, events, "after a restart (A v1 .. A v3 applied, the process restarted, "
                 "B v2 and A v3 delivered again, then the rest)", show=False)
    except NotYet as wrong:
        raise NotYet(f"{wrong} {_MEMORY}") from None


def _rebuild(apply: Callable[..., Any], relaunch: Relaunch) -> None:
    """The same log replayed into an empty view by a projection that has already run."""
    events = random_log(11, orders=6)
    running, run = relaunch.fresh(), next(_RUNS)
    run_apply(running, events, run=run)
    view = run_apply(running, events, run=run)   # a new empty view: the rebuild
    try:
        _compare(view, events, f"after a rebuild (the same {len(events)} events replayed into "
                 "an empty view, same process)", show=False)
    except NotYet as wrong:
        raise NotYet(f"{wrong} {_MEMORY}") from None


class _ProjectionStep(Step):
    """The scenarios in order; the first that fails gives its message."""

    did = ""

    def run(self, answer: Any) -> None:
        if not callable(answer):
            raise NotYet(f"`apply` should be a function (def apply(view, event):), got "
                         f"{type(answer).__name__}.")
        try:
            inspect.signature(answer).bind({}, {})
        except (TypeError, ValueError):
            raise NotYet("apply takes two arguments: apply(view, event).") from None
        relaunch = Relaunch(answer)
        for scenario in (_in_order, _duplicates, _gap, _reordered, _interleaved, _cancelled,
                         _first_is_not_placed, _random_logs):
            scenario(answer)
        _restart(answer, relaunch)
        _rebuild(answer, relaunch)
        self.did = _what_it_did(answer)


def _what_it_did(apply: Callable[..., Any]) -> str:
    """The success message, from what this projection did on one adversarial log."""
    events = random_log(0)
    view = run_apply(apply, events)
    orders = _plain(view)[0]
    repeats = len(events) - len({(e["order"], e["version"]) for e in events})
    late = sum(any(x["order"] == e["order"] and x["version"] > e["version"]
                   for x in events[:i]) for i, e in enumerate(events))
    cancelled = sum(row[2] == "CANCELLED" for row in orders.values())
    return (f"on random_log(0), {len(events)} events for {len(orders)} orders, {repeats} of "
            f"them delivered twice and {late} arriving after a newer version, your view ended "
            f"at each order's newest version; {cancelled} cancelled orders stay as rows and "
            "count for no "
            "customer; the customer totals match the rows. It gave the same view after a "
            "restart with redelivered events and after a rebuild from an empty view, so it "
            "keeps its state in the view, where a real projection keeps it.")


class _ApplyQuestion(Question):
    """q1, whose success message says what the learner's projection did."""

    def _evaluate(self, answer: Any) -> tuple[str, str]:
        status, message = super()._evaluate(answer)
        if status == progress.DONE:
            return status, _STEP.did
        return status, message


_STEP = _ProjectionStep()
q1 = _ApplyQuestion(
    id="q1", module=MODULE, title="a projection that survives duplicates and reordering",
    name="apply",
    what="a function apply(view, event) that updates view['orders'] and view['customers'] "
         "in place",
    steps=[_STEP],
    hints=[
        "Look up the stored row of the event's order first. If there is one and the event's "
        "version is not newer (<=), return without changing anything: that handles "
        "duplicates and late older events at once.",
        "Otherwise the event replaces the row (customer, amount, state, version: the event "
        "has them all). For the customer's totals, take away what the old row counted for "
        "(if there was one and it was not cancelled) and add what the new row counts for "
        "(unless it is cancelled): 1 order and its amount.",
        "Never delete a row, not even on OrderCancelled: the row with state CANCELLED and its "
        "version is what stops a late OrderPaid from bringing the order back. Keep versions "
        "per order (in the row), never one for the whole view.",
    ],
    success="",
)


# ----- q2: predict a TTL cache's hit rate ---------------------------------------------------------
TTL_CASE = {"read_rate": 60.0, "customers": 12, "ttl_ms": 500.0, "compute_ms": 100.0}
"""q2's inputs: 60 reads/s spread evenly over 12 customers, a 500 ms TTL, 100 ms to compute."""


def ttl_hit_rate_for(read_rate: float, customers: int, ttl_ms: float,
                     compute_ms: float) -> float:
    """The lesson's prediction: per customer r reads/s; after a miss the reads during the
    compute also miss, the next ttl of reads hit: r*ttl / (1 + r*compute + r*ttl)."""
    r, ttl, compute = read_rate / customers, ttl_ms / 1000, compute_ms / 1000
    return r * ttl / (1 + r * compute + r * ttl)


def _ttl(**changes: float) -> float:
    return ttl_hit_rate_for(**{**TTL_CASE, **changes})


_R = TTL_CASE["read_rate"] / TTL_CASE["customers"]
q2 = Question(
    id="q2", module=MODULE, title="predict a TTL cache's hit rate", name="ttl_hit_rate",
    what="a number between 0 and 1: the share of reads a TTL cache answers without the origin",
    steps=[Value(_ttl(), abs_=0.02, mistakes=[
        Mistake("that is the miss rate. The question asks for the share of reads that hit.",
                like=1 - _ttl()),
        Mistake("give a share between 0 and 1, not a percentage.", like=100 * _ttl()),
        Mistake("that forgets the reads that arrive while the first miss is being computed: "
                "for compute seconds after a miss the entry is not there yet, so those reads "
                "miss too (and each one computes again).", like=_ttl(compute_ms=0)),
        Mistake("that uses all 60 reads/s for one entry. Each customer has an entry of its "
                "own, and it sees only that customer's reads: 60 / 12 a second.",
                like=_ttl(customers=1)),
        Mistake("that is about ttl / (ttl + compute), a share of time (it is also what the "
                "formula gives with the times in ms and the rate per second). Count reads, not "
                "time: after a miss the entry is absent for the compute, present for the TTL, "
                "then absent until the next read of that customer arrives, itself a miss.",
                like=0.5 / 0.6, rel=0.002),
    ])],
    hints=[
        "Follow one customer's entry through a cycle: a miss, the compute, then the TTL. How "
        "many of that customer's reads land in each part of the cycle?",
        "Per customer r = 60 / 12 = 5 reads/s. One cycle: 1 read misses and starts the "
        "compute, r x 0.1 s more reads miss during it, r x 0.5 s reads hit before the entry "
        "expires; the next read misses again.",
        "hit rate = r*ttl / (1 + r*compute + r*ttl), all in seconds. Simulating the reads "
        "(random arrivals, one entry per customer) gives the same within 0.02.",
    ],
    success=f"r·ttl / (1 + r·compute + r·ttl) = 2.5 / 4 = {_ttl():.1%}: a shorter TTL and a "
            "slower compute both cost hits, and only the reads of one customer count for its "
            "entry.",
)


# ----- q3: diagnose a staleness and lag table -----------------------------------------------------
@dataclass(frozen=True)
class Projection:
    """How one projection of :data:`STALENESS_RUN` was built (the run's ground truth)."""

    group: str
    apply_per_s: float            # events it can apply a second
    delay_s: float = 0.03         # from a write to the consumer receiving it
    stall: tuple[float, float] | None = None   # model s when it applied nothing
    commits_first: bool = False   # commits on receipt, applies later (the classic mistake)


@dataclass(frozen=True)
class StalenessRun:
    """Four projections of one topic: 20 writes/s for 5 s, a look every 0.5 s at each
    group's *lag* (end offset minus committed offset, from the broker) and *staleness*
    (writes its view does not show yet, counted from the view). Every event is computed from
    when it was written, received, applied and committed."""

    projections: tuple[Projection, ...]
    write_rate: float = 20.0
    duration: float = 5.0
    looks: tuple[float, ...] = tuple(0.5 * i for i in range(1, 17))

    def times(self, p: Projection) -> tuple[list[float], list[float], list[float]]:
        """(written, applied, committed) model s of every event, for projection ``p``."""
        written = [i / self.write_rate for i in range(int(self.write_rate * self.duration))]
        applied, last = [], 0.0
        for w in written:
            at = max(w + p.delay_s, last + 1 / p.apply_per_s)
            if p.stall and p.stall[0] <= at < p.stall[1]:
                at = p.stall[1]
            applied.append(at)
            last = at
        committed = [w + p.delay_s if p.commits_first else a + 0.05
                     for w, a in zip(written, applied, strict=True)]
        return written, applied, committed

    def row(self, p: Projection, t: float) -> tuple[int, int]:
        """(lag, staleness) in events of projection ``p`` at model time ``t``."""
        written, applied, committed = self.times(p)
        n = sum(w <= t for w in written)
        return n - sum(c <= t for c in committed), n - sum(a <= t for a in applied)

    def table(self) -> str:
        """The run as a monitoring screen shows it: per look, each group's lag and staleness."""
        head = "  t (s) | " + " | ".join(f"{p.group:^19}" for p in self.projections)
        sub = "        | " + " | ".join(f"{'lag':>8} {'stale':>10}" for _ in self.projections)
        lines = [head, sub, "-" * len(head)]
        for t in self.looks:
            cells = [self.row(p, t) for p in self.projections]
            lines.append(f"{t:7.1f} | " + " | ".join(f"{lag:>8} {stale:>10}"
                                                    for lag, stale in cells))
        return "\n".join(lines)

    def hidden(self, p: Projection) -> int:
        """Looks where ``p``'s staleness was above its lag (the lag hid part of it)."""
        return sum(stale > lag for lag, stale in (self.row(p, t) for t in self.looks))

    def truth(self) -> dict[str, str]:
        """What the run's construction says: the commit-first group and the stalled one."""
        return {"commits_first": next(p.group for p in self.projections if p.commits_first),
                "stalled": next(p.group for p in self.projections if p.stall)}


STALENESS_RUN = StalenessRun((
    Projection("order-summary", apply_per_s=200),
    Projection("search-index", apply_per_s=14, commits_first=True),
    Projection("customer-totals", apply_per_s=200, stall=(2.0, 3.5)),
    Projection("audit-feed", apply_per_s=16),
))
"""q3's run: print ``STALENESS_RUN.table()`` and read it."""
_GROUPS = {p.group: p for p in STALENESS_RUN.projections}


def _what_it_shows(group: str) -> str:
    """One group's table in words, from the run: what a learner who named it overlooked."""
    p, run = _GROUPS[group], STALENESS_RUN
    rows = [run.row(p, t) for t in run.looks]
    worst_stale = max(stale for _, stale in rows)
    worst_lag = max(lag for lag, _ in rows)
    if p.commits_first:
        return (f"{group}'s lag is at most {worst_lag} in every look while its view falls up to "
                f"{worst_stale} behind: in {run.hidden(p)} looks its staleness is above its "
                "lag, which only a consumer that commits before it applies can show")
    if p.stall:
        return (f"{group} is up to {worst_stale} events behind, but its lag says so in every "
                f"look (up to {worst_lag}): it climbs at the full write rate from "
                f"{p.stall[0]:g} s and drops at {p.stall[1]:g} s, when it resumes")
    if worst_stale > 5:
        return (f"{group} falls steadily behind, up to {worst_stale} events, and its lag "
                f"(up to {worst_lag}) is never below its staleness: an honest projection that "
                "applies more slowly than the writes arrive, all the run long")
    return (f"{group} stays within {worst_lag} events in every look, lag and staleness "
            "together: healthy")


_STALENESS_DIAGNOSIS = Diagnosis(
    name="diagnosis", noun="group", options=lambda: list(_GROUPS),
    truth=lambda: STALENESS_RUN.truth(), shows=_what_it_shows,
    why={"commits_first": "The group that commits before it applies is the one whose "
                          "staleness is ABOVE its lag (the lag says done while the view is "
                          "behind).",
         "stalled": "A stall shows as lag and staleness both climbing at the full write rate "
                    "(10 events per 0.5 s look) for a while, then dropping fast when it "
                    "resumes."},
    same_for_two="Each of the two symptoms belongs to a different group: compare lag with "
                 "staleness look by look for each one.")


q3 = Question(
    id="q3", module=MODULE, title="diagnose a staleness and lag table", name="diagnosis",
    what='a dict {"commits_first": group, "stalled": group} naming two groups of the table',
    steps=[_STALENESS_DIAGNOSIS],
    hints=[
        "Two numbers per group: lag comes from the broker (committed offsets), staleness from "
        "the view itself. Which of them can be larger when a consumer is honest?",
        "A consumer that applies before it commits always has staleness <= lag. Find the group "
        "where staleness is above lag. For the stall, look for a group that is fine, then "
        "falls behind at the full write rate (20 events/s), then catches up at once.",
        "Compare the two columns per group, look by look: print(STALENESS_RUN.table()), or "
        "count looks with stale > lag for each group (STALENESS_RUN.row(p, t) gives them).",
    ],
    success=f"{_what_it_shows(STALENESS_RUN.truth()['commits_first'])}. And "
            f"{_what_it_shows(STALENESS_RUN.truth()['stalled'])}. Lag is an upper bound on "
            "staleness only for a projection that applies before it commits.",
)



# ----- q4: the stampede fix on a real cache server ------------------------------------------------
STAMPEDE_READERS = 40       # readers that arrive at once on a missing hot key
COMPUTE_S = 0.2             # the checker's expensive compute (wall s)
TTL_MS, LOCK_MS = 5000, 300
"""q4's conditions: ``get_or_compute(cache, key, compute, ttl_ms=5000, lock_ms=300)``."""


@dataclass
class _Backend:
    """The checker's expensive compute: it counts its own calls; the ``hang`` first calls
    never return (a holder that crashed while it held the lock)."""

    value: str
    hang: int = 0
    calls: int = 0

    async def compute(self) -> str:
        self.calls += 1
        if self.calls <= self.hang:
            await asyncio.Event().wait()   # the process died here: no return, no finally
        await asyncio.sleep(COMPUTE_S)
        return self.value


class _Watch:
    """Looks at the run's keys every few ms, as the server holds them: name and PTTL."""

    def __init__(self, cache: Any, pattern: str) -> None:
        self.cache, self.pattern = cache, pattern
        self.seen: dict[str, int] = {}      # key -> lowest PTTL seen (-1: no expiry)
        self.longest: dict[str, int] = {}   # key -> highest PTTL seen
        self._task: asyncio.Task | None = None
        self._running = False

    async def _loop(self) -> None:
        while self._running:
            async for key in self.cache.scan_iter(match=self.pattern, count=100):
                ttl = await self.cache.pttl(key)
                if ttl == -2:
                    continue   # deleted since the scan saw it
                self.seen[key] = min(ttl, self.seen.get(key, ttl))
                self.longest[key] = max(ttl, self.longest.get(key, ttl))
            await asyncio.sleep(0.005)

    def start(self) -> None:
        self._running = True
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Ask the loop to end (a cancelled redis-py command can swallow the cancellation)."""
        self._running = False
        if self._task is not None:
            await asyncio.wait([self._task], timeout=1.0)

    def locks(self, value_key: str) -> dict[str, int]:
        """Keys other than the value's (the learner's lock), with their lowest PTTL."""
        return {k: t for k, t in self.seen.items() if k != value_key}


async def _gather(calls: list[Any], timeout: float) -> tuple[list[Any], int]:
    """Run the learner's calls at once; returns (results, how many were still waiting after
    ``timeout`` s: those are cancelled). A learner's exception comes back as LearnerRaised."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    await _cancel(pending)
    for task in done:
        if task.exception() is not None:
            raise LearnerRaised(task.exception(), "get_or_compute(cache, key, compute, ...)")
    return [t.result() if t in done else None for t in tasks], len(pending)


async def _cancel(tasks: Any, grace: float = 2.0) -> None:
    """Cancel ``tasks`` and give them ``grace`` s to end (one that swallows the cancellation
    is left behind rather than waited for forever)."""
    tasks = [t for t in tasks if not t.done()]
    for task in tasks:
        task.cancel()
        task.add_done_callback(_quiet)
    if tasks:
        await asyncio.wait(tasks, timeout=grace)


def _quiet(task: asyncio.Task) -> None:
    """Retrieve a cancelled call's late error (the checker has already judged it)."""
    if not task.cancelled():
        task.exception()


def _in_a_loop_of_its_own(coro: Any, timeout: float = 30.0) -> Any:
    """Run ``coro`` on a new event loop in a thread (a notebook's own loop is running)."""
    import concurrent.futures

    def run() -> Any:
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(asyncio.wait_for(coro, timeout))
        finally:
            loop.run_until_complete(_cancel(asyncio.all_tasks(loop)))
            loop.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


@dataclass
class _StampedeReport:
    cold_ms: float = 0.0
    computes: int = 0
    readers: int = 0
    stampede_ms: float = 0.0
    lock_ttl: int = 0
    crash_ms: float = 0.0


class _StampedeStep(Step):
    """A cold key, a warm key, 40 readers at once on a missing key, a holder that dies."""

    report = _StampedeReport()

    def run(self, answer: Any) -> None:
        if not inspect.iscoroutinefunction(answer):
            raise NotYet("get_or_compute should be an async function (async def "
                         "get_or_compute(cache, key, compute, ttl_ms, lock_ms):) that awaits "
                         "the cache's commands and compute().")
        from labsupport.runtime import cache_server

        try:
            url = cache_server.url()
        except cache_server.CacheUnavailable as err:
            raise NotYet(f"the checker needs the lab's cache server and found none: "
                         f"{err.problem} Fix: {err.fix}") from None
        self.report = _in_a_loop_of_its_own(self._scenarios(answer, url))

    async def _scenarios(self, answer: Any, url: str) -> _StampedeReport:
        import uuid

        import redis.asyncio as aioredis

        cache = aioredis.from_url(url, decode_responses=True)
        prefix = f"lab07:q4:{uuid.uuid4().hex[:8]}:"
        report = _StampedeReport()
        try:
            await self._cold_and_warm(answer, cache, prefix, report)
            await self._stampede(answer, cache, prefix, report)
            await self._crash(answer, cache, prefix, report)
        finally:
            keys = [k async for k in cache.scan_iter(match=f"*{prefix}*", count=500)]
            if keys:
                await cache.delete(*keys)
            await cache.aclose()
        return report

    @staticmethod
    async def _cold_and_warm(answer: Any, cache: Any, prefix: str,
                             report: _StampedeReport) -> None:
        key, backend = f"{prefix}cold", _Backend("fresh value")
        start = time.perf_counter()
        (got,), waiting = await _gather([answer(cache, key, backend.compute, TTL_MS, LOCK_MS)],
                                        5.0)
        report.cold_ms = (time.perf_counter() - start) * 1000
        if waiting:
            raise NotYet("one reader on a missing key was still waiting after 5 s, with nobody "
                         "else around: the first reader must take the lock and compute.")
        if got != backend.value:
            raise NotYet(f"one reader on a missing key got {got!r}; it should get what compute() "
                         f"returned ({backend.value!r}). Did you forget `return`?")
        stored, ttl = await cache.get(key), await cache.pttl(key)
        if stored != backend.value:
            raise NotYet(f"after a miss, the cache holds {stored!r} under the key: store the "
                         "computed value (SET key value PX ttl_ms), or the next reader misses "
                         "again.")
        if ttl < 0:
            raise NotYet("the value is stored without a TTL (its PTTL is -1): it would never "
                         "be refreshed. Store it with SET key value PX ttl_ms.")
        if ttl > TTL_MS:
            raise NotYet(f"the value's TTL is {ttl} ms, above ttl_ms={TTL_MS}: PX counts "
                         "milliseconds (EX counts seconds).")
        warm, backend = f"{prefix}warm", _Backend("new value")
        await cache.set(warm, "cached value", px=TTL_MS)
        (got,), _ = await _gather([answer(cache, warm, backend.compute, TTL_MS, LOCK_MS)], 5.0)
        if backend.calls or got != "cached value":
            raise NotYet(f"with the key in the cache, your function computed {backend.calls} "
                         f"time(s) and returned {got!r}: a hit returns the cached value "
                         "without computing.")

    @staticmethod
    async def _stampede(answer: Any, cache: Any, prefix: str,
                        report: _StampedeReport) -> None:
        key, backend = f"{prefix}hot", _Backend("hot value")
        watch = _Watch(cache, f"*{prefix}hot*")
        watch.start()
        start = time.perf_counter()
        try:
            results, waiting = await _gather(
                [answer(cache, key, backend.compute, TTL_MS, LOCK_MS)
                 for _ in range(STAMPEDE_READERS)], 5.0)
        finally:
            await watch.stop()
        report.stampede_ms = (time.perf_counter() - start) * 1000
        report.computes, report.readers = backend.calls, STAMPEDE_READERS
        locks = watch.locks(key)
        report.lock_ttl = max((watch.longest[k] for k in locks), default=0)
        n = STAMPEDE_READERS
        if backend.calls > 2 and not locks:
            raise NotYet(f"{n} readers arrived at once on a missing key and the backend "
                         f"computed {backend.calls} times: every reader that misses computes "
                         "(GET, then SET: the stampede). Let one reader take a lock first: "
                         "SET lock token NX PX lock_ms; the others wait for its value.")
        if backend.calls > 2:
            raise NotYet(f"{n} readers at once: you take a lock ({', '.join(locks)}) but the "
                         f"backend still computed {backend.calls} times. SET ... NX returns "
                         "None when another reader holds the lock: then do not compute, wait.")
        if waiting:
            raise NotYet(f"{waiting} of {n} readers were still waiting 5 s after the compute "
                         "(0.2 s) ended: a waiting reader must GET the key again every few ms "
                         "and return the value as soon as it is there.")
        empty = sum(r != backend.value for r in results)
        if empty:
            raise NotYet(f"{empty} of {n} readers got {next(r for r in results if r != backend.value)!r} "
                         "instead of the value: a reader that does not get the lock must wait "
                         "for the value (GET it again after a short sleep), not give up.")

    @staticmethod
    async def _crash(answer: Any, cache: Any, prefix: str, report: _StampedeReport) -> None:
        key, backend = f"{prefix}crash", _Backend("after the crash", hang=1)
        watch = _Watch(cache, f"*{prefix}crash*")
        watch.start()
        holder = asyncio.ensure_future(answer(cache, key, backend.compute, TTL_MS, LOCK_MS))
        try:
            await asyncio.sleep(0.05)   # the holder has the lock and is inside compute()
            start = time.perf_counter()
            results, waiting = await _gather(
                [answer(cache, key, backend.compute, TTL_MS, LOCK_MS) for _ in range(10)],
                LOCK_MS / 1000 + 3.0)
            report.crash_ms = (time.perf_counter() - start) * 1000
        finally:
            await _cancel([holder])
            await watch.stop()
        if waiting:
            locks = watch.locks(key)
            if any(ttl < 0 for ttl in locks.values()):
                raise NotYet("a reader took the lock and died inside compute() (a crashed "
                             "process runs no finally), and the others waited forever: your "
                             "lock has no expiry (PTTL -1). SET lock token NX PX lock_ms, so a "
                             "dead holder's lock goes away after lock_ms.")
            raise NotYet(f"a reader took the lock and died inside compute(); {waiting} of 10 "
                         f"others were still waiting {LOCK_MS / 1000 + 3:g} s later. The lock "
                         "expires after lock_ms, but the waiters only wait for the value: "
                         "while waiting, try SET lock token NX PX lock_ms again, and compute "
                         "if you get it.")
        if any(r != backend.value for r in results):
            raise NotYet("after a holder died, some readers got no value: the reader that takes "
                         "the expired lock must compute and store it, the others wait for it.")


class _StampedeQuestion(Question):
    """q4, whose success message says what the learner's function did."""

    def _evaluate(self, answer: Any) -> tuple[str, str]:
        status, message = super()._evaluate(answer)
        if status != progress.DONE:
            return status, message
        r = _STAMPEDE.report
        lock = (f"its lock (seen with {r.lock_ttl} ms to live) expired" if r.lock_ttl > 0
                else "its lock expired")
        return status, (f"{r.readers} readers arrived at once on a missing key: the backend "
                        f"computed {r.computes} time(s), where a plain GET-then-SET computes "
                        f"once per reader, and every reader got the value within "
                        f"{r.stampede_ms:.0f} ms. When the holder died inside compute(), "
                        f"{lock} and the 10 waiting readers got the value "
                        f"{r.crash_ms:.0f} ms later, instead of never.")


_STAMPEDE = _StampedeStep()
q4 = _StampedeQuestion(
    id="q4", module=MODULE, title="stop the stampede on a hot key", name="get_or_compute",
    what="an async function get_or_compute(cache, key, compute, ttl_ms, lock_ms) that returns "
         "the key's value from the cache server, computing it (await compute()) at most once "
         "while it is missing",
    steps=[_STAMPEDE],
    hints=[
        "Start with plain cache-aside: value = await cache.get(key); if it is not None return "
        "it. The question is what a reader that misses does, when 39 others miss at the same "
        "moment.",
        "Only one reader should compute: `await cache.set(lock, token, nx=True, px=lock_ms)` "
        "returns True for exactly one of them. That one computes, stores the value with "
        "px=ttl_ms, deletes the lock and returns. The others sleep a few ms and loop: GET the "
        "value again.",
        "Loop until you have the value: GET (return it if there); else try SET lock NX PX; if "
        "you got the lock, compute, SET key value PX ttl_ms, delete the lock, return; else "
        "await asyncio.sleep(0.005). Trying the lock on every turn is what lets a waiter take "
        "over when a dead holder's lock expires.",
    ],
    success="",
)

QUESTIONS = [q1, q2, q3, q4]
__all__ = ["q1", "q2", "q3", "q4", "QUESTIONS", "event", "new_view", "expected_view",
           "random_log", "run_apply", "TTL_CASE", "ttl_hit_rate_for", "STALENESS_RUN",
           "StalenessRun", "Projection", "STAMPEDE_READERS", "TTL_MS", "LOCK_MS"]
