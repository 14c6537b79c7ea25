"""Module 03: a retry storm that outlasts its trigger, and a retry budget that stops it.

An ``api`` service calls a ``db`` service with a timeout and immediate retries.
Users arrive at a steady rate well under the db's capacity. For a short while
the db slows down (the *trigger*): calls time out, and every timeout is retried
at once. The db does not know the caller gave up, so it still does the
abandoned work; its line grows faster than it drains. When the trigger ends,
the line is still long, so new calls time out too and are retried again: the
extra load keeps the db overloaded although nothing is wrong with it any more
(a *metastable* failure). A :class:`RetryBudget` that lets retries add at most
10% to the load (Google SRE book, "Handling Overload") lets it recover.
"""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from labsupport.kit.dashboard import PALETTE, LiveView
from labsupport.kit.evidence import Estimate, share
from labsupport.kit.experiment import Experiment
from labsupport.lessons.m03_retries_and_backoff.retries import retry_guard
from labsupport.runtime.errors import require
from labsupport.runtime.lab import Lab
from labsupport.runtime.latency import Constant
from labsupport.runtime.load import open_loop
from labsupport.runtime.metrics import Recorder
from labsupport.runtime.settings import to_wall


class RetryBudget:
    """Retries may add at most ``ratio`` (10%) to the requests, plus a small reserve.

    Every request deposits ``ratio`` of a token (:meth:`on_request`); a retry
    spends a whole one (:meth:`can_retry`). The balance starts full and never
    exceeds ``max_tokens``, so a quiet hour cannot save up for a storm. This is
    the idea of Finagle's RetryBudget and of gRPC's retry throttling.
    """

    def __init__(self, ratio: float = 0.1, max_tokens: float = 10.0) -> None:
        require(0 <= ratio <= 1, f"ratio must be between 0 and 1, got {ratio!r}.",
                "0.1 lets retries add at most 10% to the load")
        require(max_tokens >= 1, f"max_tokens must be at least 1, got {max_tokens!r}.",
                "it is how many retries may go at once after a quiet spell, e.g. 10")
        self.ratio, self.max_tokens = ratio, float(max_tokens)
        self.tokens = float(max_tokens)
        self.requests = self.retries = self.refused = 0

    def on_request(self) -> None:
        """A new request (not a retry): earn ``ratio`` of a token, up to ``max_tokens``."""
        self.requests += 1
        self.tokens = min(self.max_tokens, self.tokens + self.ratio)

    def can_retry(self) -> bool:
        """True (and one token spent) when a retry is allowed now; False: give up."""
        if self.tokens >= 1 - 1e-9:
            self.tokens -= 1
            self.retries += 1
            return True
        self.refused += 1
        return False

    def __repr__(self) -> str:
        return (f"<RetryBudget {self.ratio:.0%} of requests, {self.tokens:.1f}/"
                f"{self.max_tokens:g} tokens; {self.retries} retries allowed, "
                f"{self.refused} refused, {self.requests} requests>")


@dataclass
class StormRun:
    """One run: user requests (``recorder``) and the db's load over time (``load``)."""

    label: str
    rate: float
    duration: float
    trigger: tuple[float, float]
    capacity: float
    recorder: Recorder
    load: list[tuple[float, float]] = field(default_factory=list)
    requests: int = 0
    db_calls: int = 0
    db_received: int = 0
    budget: RetryBudget | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def retries(self) -> int:
        """Calls the api made to the db beyond one per request."""
        return max(0, self.db_calls - self.requests)

    @property
    def extra_at_db(self) -> int:
        """Calls the db itself counted beyond one per user request (its own counter, not
        the api's): the load retries added."""
        return max(0, self.db_received - self.requests)

    def success_after(self, start: float) -> float:
        """Share of requests sent from ``start`` (model s) on that succeeded."""
        late = [s for s in self.recorder.samples if s.t >= start]
        return sum(s.ok for s in late) / len(late) if late else float("nan")

    def success_share(self, start: float) -> Estimate:
        """:meth:`success_after` with its (Wilson) interval: few requests, wide interval."""
        late = [s for s in self.recorder.samples if s.t >= start]
        return share(sum(s.ok for s in late), len(late))

    def load_after(self, start: float) -> float:
        """Mean calls per second reaching the db from ``start`` (model s) to the end."""
        rates = [r for t, r in self.load if start <= t < self.duration]
        return sum(rates) / len(rates) if rates else float("nan")

    def summary(self) -> str:
        recovered = self.trigger[1] + 2
        return (f"{self.label}: {self.success_after(recovered):.0%} of requests succeeded "
                f"after t = {recovered:g} s (the slowdown ended at {self.trigger[1]:g} s); "
                f"db load then {self.load_after(recovered):.0f} calls/s (capacity "
                f"{self.capacity:.0f}/s); retries {self.retries} on {self.requests} requests")


class RetryStorm(Experiment):
    """An ``api`` calling a ``db`` with ``timeout_ms`` per call and ``attempts`` tries.

    The db has ``workers`` workers and ``latency`` ms of work, so its capacity is
    ``workers / latency`` calls per second; the line in front of it is unbounded.
    Its dashboard toggles the budget and sets the slowdown; Run plays 10 s of traffic
    live. ``press_run(budget=True, slow_ms=1000, trigger_s=2.0)`` moves the controls first.
    """

    TITLE = "A retry storm, and a budget"
    BUTTON = "Run 10 s of traffic"

    def __init__(self, lab: Lab, workers: int = 4, latency: float = 200,
                 timeout_ms: float = 1000, attempts: int = 4, name: str = "storm") -> None:
        self.lab, self.latency, self.attempts = lab, latency, attempts
        self.db = lab.service(f"{name}_db", latency, workers=workers)
        self.api = lab.service(f"{name}_api", 0, workers=10_000, calls=[self.db],
                               call_timeout_ms=timeout_ms, attempts=attempts)
        self.runs: dict[str, StormRun] = {}
        self.current: StormRun | None = None

    @property
    def capacity(self) -> float:
        """Calls per (model) second the db can serve."""
        return self.db.pool.capacity * 1000 / self.latency

    def start(self, budget: RetryBudget | None = None, rate: float = 10, duration: float = 10,
              trigger: tuple[float, float] = (2, 4), slow_ms: float = 1000,
              label: str | None = None) -> StormRun:
        """Start a run in the background: ``rate`` users/s for ``duration`` s, the db slow
        (``slow_ms``) from ``trigger[0]`` to ``trigger[1]`` s; with ``budget``, retries
        only while the budget allows. Returns the live :class:`StormRun`."""
        require(rate > 0 and duration > 0, "rate and duration must be above 0.")
        start, end = trigger
        require(0 <= start < end <= duration,
                f"the trigger must lie inside the run, got {trigger} for {duration} s.",
                "e.g. trigger=(2, 4) in a 10 s run")
        require(slow_ms > 0, f"slow_ms must be above 0, got {slow_ms}.")
        require(self.current is None or self.current.done.is_set(),
                "A storm run is still going on.", "wait for it: storm.current.done.wait()")
        if budget is None:
            self.api.set(attempts=self.attempts, guard=None)
        else:
            self.api.set(attempts=1, guard=retry_guard(self.attempts, budget=budget))
        label = label or ("retry budget 10%" if budget is not None else "no budget")
        run = StormRun(label, rate, duration, trigger, self.capacity,
                       Recorder(label), budget=budget)
        self.runs[label] = self.current = run
        self.lab.submit(self._scenario(run, slow_ms))
        return run

    def run(self, budget: RetryBudget | None = None, **kwargs: object) -> StormRun:
        """Like :meth:`start`, but waits for the end of the run."""
        result = self.start(budget, **kwargs)  # type: ignore[arg-type]
        result.done.wait(timeout=to_wall(result.duration) + 120)
        return result

    async def _scenario(self, run: StormRun, slow_ms: float) -> None:
        try:
            for svc in (self.db, self.api):
                svc.reset_counts()
            sampler = asyncio.create_task(self._sample(run))
            trigger = asyncio.create_task(self._trigger(run, slow_ms))
            await open_loop(self.lab.session, self.api.url, run.rate, run.duration,
                            run.recorder, timeout_ms=20_000, seed=self.lab.seed)
            trigger.cancel()
            sampler.cancel()
            await asyncio.gather(trigger, sampler, return_exceptions=True)
            run.requests, run.db_calls = self.api.received, self.api.downstream_calls
            run.db_received = self.db.received
            await self._drain()
        finally:
            self.db.set(latency=self.latency)
            run.done.set()

    async def _trigger(self, run: StormRun, slow_ms: float) -> None:
        start, end = run.trigger
        try:
            await asyncio.sleep(to_wall(start))
            self.db.set(latency=slow_ms)
            await asyncio.sleep(to_wall(end - start))
        finally:
            self.db.set(latency=self.latency)

    async def _sample(self, run: StormRun, every: float = 1.0) -> None:
        """Every ``every`` model seconds: calls per second that reached the db."""
        loop = asyncio.get_running_loop()
        t0, last, t = loop.time(), 0, 0.0
        while True:
            t += every
            await asyncio.sleep(max(0.0, t0 + to_wall(t) - loop.time()))
            now = self.db.received
            run.load.append((t - every, (now - last) / every))
            last = now

    async def _drain(self) -> None:
        """Let the db finish its abandoned work at once, so the next run starts clean."""
        self.db.latency = Constant(0)
        for _ in range(2000):
            if self.db.in_flight == 0:
                break
            await asyncio.sleep(0.005)

    # ----- dashboard ---------------------------------------------------------------------
    def summary(self) -> str:
        """One sentence per run so far."""
        return " | ".join(run.summary() for run in self.runs.values()) or "no runs yet"

    def draw(self, ax) -> None:
        """Calls per second reaching the db for each run, the capacity and the offered load."""
        colors = {"no budget": PALETTE[3], "retry budget 10%": PALETTE[2]}
        shown, top = None, 0.0
        for i, (label, run) in enumerate(self.runs.items()):
            top = max([top, *(r for _, r in run.load)])
            points = list(run.load)
            if points:
                ax.step([t for t, _ in points], [r for _, r in points], where="post",
                        color=colors.get(label, PALETTE[i % len(PALETTE)]), linewidth=2,
                        label=f"{label}: calls/s at the db")
            shown = run
        if shown is None:
            return
        ax.axvspan(*shown.trigger, color=PALETTE[6], alpha=0.3, label="db slow (trigger)")
        ax.axhline(shown.capacity, color=PALETTE[0], linestyle="--", label="db capacity")
        ax.axhline(shown.rate, color=PALETTE[5], linestyle=":", label="users' requests/s")
        ax.set_xlim(0, shown.duration)
        ax.set_ylim(0, max(top, shown.capacity) * 1.5)  # room for the legend
        ax.set_xlabel("time (model s)")
        ax.set_ylabel("calls per second")
        ax.legend(loc="upper left", fontsize=7)

    def make_controls(self) -> dict[str, Any]:
        import ipywidgets as w

        return {
            "budget": w.ToggleButtons(options=[("no budget", False), ("budget 10%", True)],
                                      description="retries"),
            "slow_ms": w.IntSlider(1000, 200, 2000, 100, description="slow db ms"),
            "trigger_s": w.FloatSlider(value=2.0, min=0.5, max=4.0, step=0.5,
                                     description="slow for s"),
        }

    def run_controls(self, budget: bool, slow_ms: int, trigger_s: float) -> LiveView:
        """Play 10 s of traffic live, the db slowed to ``slow_ms`` for ``trigger_s`` s from
        t = 2 s, with a 10% retry budget when ``budget`` is True."""
        run = self.start(RetryBudget() if budget else None, trigger=(2.0, 2.0 + trigger_s),
                         slow_ms=slow_ms)
        return self.board.watch(run.done.is_set, self.summary)
