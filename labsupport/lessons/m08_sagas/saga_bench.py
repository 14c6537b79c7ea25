"""Module 08 · the saga dashboard: both styles on one lab, side by side.

:mod:`labsupport.lessons.m08_sagas.sagas` is the shop both styles share; :mod:`labsupport.lessons.m08_sagas.choreography` and
:mod:`labsupport.lessons.m08_sagas.orchestration` wire it to the broker; this module starts one of each and
lets you choose what goes wrong (where the saga fails, duplicates, a crash), then shows the
invariants and one order's swimlane.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from labsupport.broker import identity
from labsupport.kit.experiment import Experiment
from labsupport.lessons.m08_sagas.choreography import Choreography
from labsupport.lessons.m08_sagas.orchestration import Orchestration
from labsupport.lessons.m08_sagas.sagas import (
    CRASHABLE,
    CUSTOMERS,
    FAIL_POINTS,
    ORDER_AMOUNT,
    SHELVES,
    Invariants,
    Mark,
    SagaFaults,
    SagaSystem,
    draw_swimlanes,
)
from labsupport.runtime.errors import require

if TYPE_CHECKING:
    from labsupport.runtime.lab import Lab


class SagaBench(Experiment):
    """Both styles side by side on one lab, with a dashboard: choose the style, where the
    saga fails and for which orders, duplicates and a crash; see the invariants and one
    order's swimlane. ``bench.dashboard()`` shows it; ``bench.press_run(style=..., fail=...,
    every=..., duplicates=..., crash=..., orders=...)`` is what its Run button does."""

    TITLE = "An order saga: choose what goes wrong"
    BUTTON = "Run"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.systems: dict[str, SagaSystem] = {"choreography": Choreography(lab),
                                               "orchestration": Orchestration(lab)}
        for system in self.systems.values():
            system.shop.open_accounts(CUSTOMERS)
            system.shop.stock_items(SHELVES)
        for system in self.systems.values():
            system.ready()
        self.last: Invariants | None = None
        self.orders: list[dict[str, Any]] = []
        self.shown: str | None = None
        self.style = "orchestration"
        self.controls: dict[str, Any] = {}

    def system(self, style: str) -> SagaSystem:
        require(style in self.systems, f"style must be one of {tuple(self.systems)}, got "
                f"{style!r}.", "style='choreography' or style='orchestration'")
        return self.systems[style]

    def run(self, style: str = "orchestration", orders: int = 6, faults: SagaFaults | None = None,
            show: int | None = None) -> Invariants:
        """Place ``orders`` orders through ``style`` with ``faults``; returns the invariants.
        ``show`` picks the order (1 = the first of this run) whose swimlane the plot draws."""
        require(isinstance(orders, int) and 1 <= orders <= 40,
                f"orders must be 1 to 40, got {orders!r}.")
        system = self.system(style)
        system.faults = faults or SagaFaults()
        shop = system.shop
        placed = [shop.new_order(f"c{k % len(CUSTOMERS)}", "book", ORDER_AMOUNT)
                  for k in range(orders)]
        self.last = system.run(placed)
        self.orders = placed
        self.style = style
        pick = show if show is not None else self._interesting(placed, system.faults)
        require(1 <= pick <= orders, f"show must be 1 to {orders}, got {pick!r}.")
        self.shown = placed[pick - 1]["id"]
        return self.last

    @staticmethod
    def _interesting(placed: Sequence[dict[str, Any]], faults: SagaFaults) -> int:
        for index, order in enumerate(placed, start=1):
            if faults.fail != "none" and faults.fails(order, faults.fail):
                return index
        return 1

    def marks(self, order_id: str | None = None) -> list[Mark]:
        """The swimlane marks of ``order_id`` (the shown order by default)."""
        order_id = order_id or self.shown
        return self.system(self.style).shop.trace.of(order_id) if order_id else []

    def summary(self) -> str:
        if self.last is None:
            return "no run yet"
        inv = self.last
        verdict = "all invariants hold" if inv.ok else "BROKEN: " + "; ".join(inv.problems)
        return (f"{self.style}: {inv.orders} orders, {inv.confirmed} confirmed, {inv.cancelled}"
                f" cancelled, {len(inv.pending)} pending; money {inv.money_now:,} of "
                f"{inv.money_in:,}; stock {inv.stock_now} of {inv.stock_in}; {verdict}. "
                f"Plot: order {self.shown}.")

    def draw(self, ax: Any) -> None:
        draw_swimlanes(ax, self.marks(), f"{self.style}: order {self.shown} "
                       f"({identity().kind} broker)")

    def make_controls(self) -> dict[str, Any]:
        """Style, where the saga fails and for which orders, duplicates, a crash, how many
        orders."""
        import ipywidgets as w

        return {
            "style": w.ToggleButtons(options=list(self.systems), value="orchestration",
                                     description="style"),
            "fail": w.Dropdown(options=list(FAIL_POINTS), value="stock",
                               description="fails at"),
            "every": w.IntSlider(value=2, min=1, max=4, description="every nth"),
            "duplicates": w.FloatSlider(value=0.0, min=0, max=0.5, step=0.1,
                                        description="duplicates"),
            "crash": w.Dropdown(options=list(CRASHABLE), value="none", description="crash"),
            "orders": w.IntSlider(value=6, min=2, max=12, description="orders"),
        }

    def run_controls(self, style: str, fail: str, every: int, duplicates: float, crash: str,
                     orders: int) -> Invariants:
        """What Run does: ``press_run(style=, fail=, every=, duplicates=, crash=, orders=)``
        moves those controls first; returns the invariants, the plot shows one order."""
        faults = SagaFaults(fail=fail, every=every, duplicates=duplicates, crash=crash)
        return self.show(self.run(style, orders, faults))

    def close(self) -> None:
        for system in self.systems.values():
            system.stop()
