"""Module 10 · A bad day, on a schedule: the same chaos for every design.

A :class:`ChaosSchedule` says what goes wrong and when (model seconds after the first
order): inventory becomes ``slow_factor`` times slower for one window, payment is down
for another. :meth:`ChaosSchedule.play` applies it to any number of designs at the same
moments while their orders run, through three calls each design answers in its own way:

* ``slow_inventory(factor)``: the inventory service's work takes ``factor`` times as long
  (``1``: normal again);
* ``crash_payment()``: synchronous: its HTTP endpoint answers 503 at once; event-driven:
  its consumer process stops (the messages wait in the log);
* ``restore_payment()``: the endpoint answers again / a new consumer joins the group and
  resumes from the committed offset.

:class:`SideBySide` runs both designs at once on the same orders and the same schedule,
and shows the scoreboard and the timelines on one dashboard.
"""
from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from labsupport.kit.dashboard import LiveView
from labsupport.kit.experiment import Experiment
from labsupport.lessons.m10_capstone_checkout.checkout import (
    Scoreboard,
    Sent,
    draw_timeline,
    new_orders,
    order_times,
    scoreboard_table,
    send_orders,
    timeline_image,
)
from labsupport.runtime.errors import BadParameter, require
from labsupport.runtime.settings import to_wall

SLOW, CRASH = "slow inventory", "payment down"


class Target(Protocol):
    """What the schedule needs from a design."""

    def slow_inventory(self, factor: float) -> None: ...

    def crash_payment(self) -> None: ...

    def restore_payment(self) -> None: ...


@dataclass(frozen=True)
class ChaosSchedule:
    """Inventory ``slow_factor`` x slower during ``slow_s`` (start, end), payment down during
    ``crash_s``; ``seconds`` of orders in all (model seconds)."""

    seconds: float = 20.0
    slow_factor: float = 10.0
    slow_s: tuple[float, float] = (4.0, 8.0)
    crash_s: tuple[float, float] = (11.0, 15.0)

    def __post_init__(self) -> None:
        require(isinstance(self.seconds, (int, float)) and 2 <= self.seconds <= 120,
                f"seconds must be from 2 to 120 (model seconds of orders), got {self.seconds!r}.")
        require(isinstance(self.slow_factor, (int, float)) and 1 <= self.slow_factor <= 50,
                f"slow_factor must be from 1 (not slow) to 50, got {self.slow_factor!r}.",
                "e.g. slow_factor=10: inventory takes ten times as long")
        for name in ("slow_s", "crash_s"):
            window = getattr(self, name)
            require(isinstance(window, tuple) and len(window) == 2
                    and 0 <= window[0] <= window[1] <= self.seconds,
                    f"{name} must be (start, end) with 0 <= start <= end <= seconds "
                    f"({self.seconds:g}), got {window!r}.",
                    f"e.g. {name}=(4, 8); start == end means no such trouble")

    @property
    def windows(self) -> list[tuple[str, float, float]]:
        """``(name, start, end)`` of each window that lasts longer than 0 s, in time order."""
        spans = [(SLOW, *self.slow_s)] if self.slow_s[1] > self.slow_s[0] and \
            self.slow_factor > 1 else []
        spans += [(CRASH, *self.crash_s)] if self.crash_s[1] > self.crash_s[0] else []
        return sorted(spans, key=lambda w: w[1])

    @property
    def end_s(self) -> float:
        """When the last trouble ends (0 when there is none)."""
        return max([0.0, *(b for _, _, b in self.windows)])

    def actions(self) -> list[tuple[float, str]]:
        """``(model second, action)`` in time order: slow/normal inventory, crash/restore."""
        steps: list[tuple[float, str]] = []
        for name, a, b in self.windows:
            steps += [(a, "slow"), (b, "normal")] if name == SLOW else \
                [(a, "crash"), (b, "restore")]
        return sorted(steps, key=lambda s: s[0])

    async def play(self, targets: Sequence[Target], start: float) -> list[tuple[float, str]]:
        """Apply the schedule to every target at the same moments (``start``: the loop's
        clock at model second 0); returns what was done when (model s)."""
        loop, done = asyncio.get_running_loop(), []
        for at, action in self.actions():
            await asyncio.sleep(max(0.0, start + to_wall(at) - loop.time()))
            for target in targets:
                if action == "slow":
                    target.slow_inventory(self.slow_factor)
                elif action == "normal":
                    target.slow_inventory(1)
                elif action == "crash":
                    target.crash_payment()
                else:
                    target.restore_payment()
            done.append((at, action))
        return done

    def describe(self) -> str:
        """One line in plain words."""
        parts = [f"{self.seconds:g} s of orders"]
        for name, a, b in self.windows:
            what = f"inventory x{self.slow_factor:g} slower" if name == SLOW else "payment down"
            parts.append(f"{what} from {a:g} s to {b:g} s")
        return "; ".join(parts) if len(parts) > 1 else parts[0] + "; no chaos"


class Design(Target, Protocol):
    """A checkout design :class:`SideBySide` can run."""

    name: str

    @property
    def url(self) -> str: ...

    def scoreboard(self, sent: list[Sent], schedule: ChaosSchedule) -> Scoreboard: ...


def run_designs(lab: Any, designs: Sequence[Design], schedule: ChaosSchedule,
                rate: float, seed: int, run: str) -> list[Scoreboard]:
    """Send the same seeded orders to every design at once, play ``schedule`` on all of
    them, then let each design finish (drain) and score itself."""
    times = order_times(rate, schedule.seconds, seed)
    orders = new_orders(run, len(times), seed)
    gc.collect()   # no collector pause in the middle of the measurement

    async def together() -> list[list[Sent]]:
        start = asyncio.get_running_loop().time() + 0.05
        loads = [send_orders(lab, d.url, times, orders, start) for d in designs]
        *sent, _ = await asyncio.gather(*loads, schedule.play(designs, start))
        return sent

    sent = lab.run(together(), timeout=to_wall(schedule.seconds) + 60)
    return [d.scoreboard(s, schedule) for d, s in zip(designs, sent, strict=True)]


class SideBySide(Experiment):
    """Both designs, the same orders, the same chaos; a dashboard to change the chaos:
    how much slower inventory gets, how long payment is down, which design the plot shows.
    Run plays the bad day on both designs at once."""

    TITLE = "One checkout, two designs, the same bad day"
    BUTTON = "Run the bad day"
    OTHER_KEYWORDS = ("wait",)

    def __init__(self, lab: Any, designs: Sequence[Design], rate: float = 5.0,
                 seed: int = 10) -> None:
        require(len(designs) >= 1, "give at least one design.")
        self.lab, self.designs, self.rate, self.seed = lab, list(designs), rate, seed
        self.boards: list[Scoreboard] = []
        self.schedule = ChaosSchedule()
        self.runs = 0
        self.shown = 0   # which design the plot shows
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def run(self, schedule: ChaosSchedule | None = None) -> list[Scoreboard]:
        """One run of every design under ``schedule`` (the default bad day if None)."""
        self.schedule = schedule or ChaosSchedule()
        self.runs += 1
        self.boards = run_designs(self.lab, self.designs, self.schedule, self.rate,
                                  self.seed, f"r{self.runs}")
        return self.boards

    def scoreboard(self, name: str) -> Scoreboard:
        """The scoreboard of the design called ``name`` in the last run."""
        for b in self.boards:
            if b.design == name:
                return b
        raise BadParameter(f"no design called {name!r} in the last run.",
                           f"use one of: {', '.join(b.design for b in self.boards) or 'run first'}")

    def table(self) -> str:
        """The scoreboards side by side."""
        return scoreboard_table(self.boards)

    def summary(self) -> str:
        if self.error is not None:
            return f"the run failed: {self.error}"
        if not self.boards:
            return "running: orders and chaos under way" if self._thread else "press Run"
        return f"{self.schedule.describe()}. " + " | ".join(b.summary() for b in self.boards)

    def draw(self, ax: Any) -> None:
        board = self.boards[self.shown] if len(self.boards) > self.shown else None
        draw_timeline(ax, board)

    def figure(self) -> Any:
        """One timeline per design, one above the other (an image for the notebook)."""
        return timeline_image(self.boards)

    def make_controls(self) -> dict[str, Any]:
        import ipywidgets as w

        controls = {
            "slow_factor": w.IntSlider(10, 1, 20, description="inventory x"),
            "crash_s": w.FloatSlider(4, min=0, max=6, step=0.5, description="payment down s"),
            "show": w.ToggleButtons(options=[(d.name, i) for i, d in enumerate(self.designs)],
                                    value=0, description="plot"),
        }
        controls["show"].observe(lambda change: self._show(change["new"]), names="value")
        return controls

    def _show(self, index: int) -> None:
        self.shown = index
        if self.board is not None:
            self.board.refresh(self.summary())

    def schedule_for(self, slow_factor: float, crash_s: float) -> ChaosSchedule:
        """The default bad day with inventory ``slow_factor`` x slower and payment down for
        ``crash_s`` seconds from second 11."""
        return ChaosSchedule(slow_factor=float(slow_factor),
                             crash_s=(11.0, 11.0 + float(crash_s)))

    def click(self) -> LiveView:
        """The button runs the bad day in the background and redraws once a second."""
        return self.press_run(wait=False)

    def run_controls(self, slow_factor: float, crash_s: float, show: int,
                     wait: bool = True) -> LiveView | list[Scoreboard]:
        """``press_run(slow_factor=, crash_s=, show=, wait=)``: ``wait=True`` runs in this
        thread and redraws once at the end (a plot redrawn during the run would hold the
        interpreter and add its own latency to the measurement)."""
        self.shown = show
        schedule = self.schedule_for(slow_factor, crash_s)
        self.boards, self.error = [], None
        if wait:
            return self.show(self.run(schedule))

        def work() -> None:
            try:
                self.run(schedule)
            except BaseException as exc:  # shown in the summary line
                self.error = exc

        self._thread = threading.Thread(target=work, daemon=True, name="labsupport-bad-day")
        self._thread.start()
        return self.board.watch(lambda: not self._thread.is_alive(), self.summary, hz=1)
