"""Module 04 instrumentation: watch a circuit breaker work on real services.

Nothing here *is* a breaker you are meant to copy: the lesson uses pybreaker (the
field's library) through :class:`AsyncPyBreaker`, and the exercise asks you to write
your own. This module only plugs a breaker into a service and records what it does:

* :class:`BreakerWatch`: a service ``guard`` that sends every downstream call through
  a breaker, answers from a cache when the breaker refuses or the call fails, and
  records each call and each state change (the timeline and the lamp);
* :class:`Flapping`: a dependency that goes down and comes back on a schedule;
* :class:`FlappingScenario`: a shop that calls that dependency, under steady traffic;
* :func:`burst`: many concurrent callers at once (to test half-open);
* the defaults of pybreaker, resilience4j and Hystrix (:data:`DEFAULTS`).

Any breaker works if it has ``state`` (``"closed"``, ``"open"`` or ``"half-open"``),
``add_listener(fn)`` with ``fn(old_state, new_state)``, and ``async call(fn)`` that
raises :class:`BreakerOpen` when it refuses to call ``fn``.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pybreaker

from labsupport.kit.dashboard import PALETTE, Dashboard, LiveView
from labsupport.kit.experiment import Experiment
from labsupport.runtime import settings
from labsupport.runtime.errors import LabError, require
from labsupport.runtime.lab import Lab, LoadRun
from labsupport.runtime.latency import Constant
from labsupport.runtime.metrics import percentile
from labsupport.runtime.services import CallResult, Service, fetch
from labsupport.runtime.settings import to_model, to_wall

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
STATES = (CLOSED, OPEN, HALF_OPEN)
STATE_COLOURS = {CLOSED: PALETTE[2], OPEN: PALETTE[3], HALF_OPEN: PALETTE[1]}
Listener = Callable[[str, str], None]


class BreakerOpen(Exception):
    """Raised by a breaker that refuses a call without making it (it is open)."""


class DependencyFailed(Exception):
    """The dependency answered, but not with 200 (``result`` is what it answered)."""

    def __init__(self, result: CallResult) -> None:
        super().__init__(f"{result.get('service', 'dependency')} answered {result['status']}")
        self.result = result


class AsyncBreaker(Protocol):
    """What :class:`BreakerWatch` needs from a breaker (yours or :class:`AsyncPyBreaker`)."""

    @property
    def state(self) -> str: ...

    def add_listener(self, listener: Listener) -> None: ...

    async def call(self, fn: Callable[[], Awaitable[Any]]) -> Any: ...


def model_clock() -> float:
    """Seconds of *model* time on a monotonic clock: give it to a breaker as its ``clock``
    so its ``reset_timeout`` is in model seconds and shrinks with ``LAB_TIME_SCALE``."""
    return settings.model_clock()


# ----- pybreaker from asyncio ----------------------------------------------------------------
class _StateListener(pybreaker.CircuitBreakerListener):
    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self.listener(old_state.name if old_state else CLOSED, new_state.name)


class AsyncPyBreaker:
    """pybreaker's ``CircuitBreaker`` used safely from asyncio code.

    pybreaker is written for threads: ``breaker.call(fn)`` runs ``fn`` and counts an
    exception as a failure. Given an ``async def`` it would only create the coroutine
    and count a success at once. ``breaker.calling()`` (a context manager) does work
    around an ``await``: entering it raises ``CircuitBreakerError`` when the breaker is
    open, leaving it counts a success or (with an exception) a failure.

    What pybreaker does not do with ``calling()`` is keep half-open to *one* trial, from
    threads or from coroutines: its lock guards only the check on the way in and is
    released before the block runs (see :func:`threads_inside`). ``trial_limit`` adds that
    gate: while the breaker is not closed, at most ``trial_limit`` calls are in flight;
    others get :class:`BreakerOpen` at once. ``trial_limit=None`` leaves pybreaker as it is.
    (``breaker.call(fn)`` from threads is the opposite extreme: it holds the lock for the
    whole call, so it lets one thread at a time through even while closed.)
    """

    def __init__(self, fail_max: int = 5, reset_timeout_s: float = 60.0,
                 trial_limit: int | None = 1, name: str = "pybreaker") -> None:
        require(isinstance(fail_max, int) and fail_max >= 1,
                f"fail_max must be a whole number of 1 or more, got {fail_max!r}.",
                "pybreaker's default is 5 consecutive failures")
        require(reset_timeout_s > 0, f"reset_timeout_s must be above 0, got {reset_timeout_s!r}.",
                "give it in model seconds, e.g. 1.5; pybreaker's default is 60")
        require(trial_limit is None or (isinstance(trial_limit, int) and trial_limit >= 1),
                f"trial_limit must be None or 1 or more, got {trial_limit!r}.")
        # pybreaker reads the wall clock, so the model timeout is converted here.
        self.breaker = pybreaker.CircuitBreaker(fail_max=fail_max,
                                                reset_timeout=to_wall(reset_timeout_s),
                                                throw_new_error_on_trip=False, name=name)
        self.fail_max, self.reset_timeout_s, self.trial_limit = fail_max, reset_timeout_s, trial_limit
        self._trials = 0

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` (pybreaker's own names)."""
        return self.breaker.current_state

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(old_state, new_state)`` on every state change."""
        self.breaker.add_listener(_StateListener(listener))

    async def call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Await ``fn()`` through the breaker; :class:`BreakerOpen` if it refuses."""
        trial = self.state != CLOSED
        if trial and self.trial_limit is not None and self._trials >= self.trial_limit:
            raise BreakerOpen("a trial call is already in flight")
        calling = self.breaker.calling()
        try:
            calling.__enter__()
        except pybreaker.CircuitBreakerError as refused:
            raise BreakerOpen(str(refused)) from None
        self._trials += trial
        try:
            with contextlib.ExitStack() as stack:
                stack.push(calling)  # leaving it tells pybreaker how the call went
                return await fn()
        finally:
            self._trials -= trial

    def __repr__(self) -> str:
        return (f"<AsyncPyBreaker {self.state}: fail_max={self.fail_max}, "
                f"reset_timeout={self.reset_timeout_s:g} model s, trial_limit={self.trial_limit}>")


# ----- the watch: a guard that records -----------------------------------------------------------
@dataclass(frozen=True)
class CallEvent:
    """One downstream call through the breaker (times in model s / ms)."""

    t: float
    state: str
    outcome: str   # "ok", "failed" (reached the dependency, failed) or "refused"
    ms: float
    fallback: bool


@dataclass(frozen=True)
class Transition:
    """One state change at model time ``t``; ``streak`` is how many calls in a row had
    failed when it happened (counted by the watch, not by the breaker)."""

    t: float
    old: str
    new: str
    streak: int = 0


@dataclass
class BreakerWatch:
    """Plug a breaker into a service: ``shop.set(guard=watch.guard)``.

    Every downstream call goes through ``breaker.call``; a non-200 answer counts as a
    failure. With ``fallback=True`` a refused or failed call is answered from the last
    good answer (a cache), marked ``"fallback": True``.
    """

    breaker: Any
    fallback: bool = True
    events: list[CallEvent] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    cache: Any = None
    started: float = field(default_factory=time.perf_counter)
    streak: int = 0

    def __post_init__(self) -> None:
        for name in ("state", "add_listener", "call"):
            require(hasattr(self.breaker, name),
                    f"the breaker has no `{name}`; a breaker needs state, add_listener and "
                    "async call(fn).", "see labsupport.lessons.m04_circuit_breakers.breakers.AsyncBreaker")
        self.breaker.add_listener(self._on_change)

    def now(self) -> float:
        """Model seconds since the watch started (or was last reset)."""
        return to_model(time.perf_counter() - self.started)

    def reset(self) -> None:
        """Forget the record and restart the clock (the breaker keeps its state)."""
        self.events, self.transitions, self.started = [], [], time.perf_counter()
        self.streak = 0

    def _on_change(self, old: str, new: str) -> None:
        self.transitions.append(Transition(self.now(), old, new, self.streak))

    async def _must_succeed(self, call: Callable[[], Awaitable[CallResult]]) -> CallResult:
        # Between the answer and the breaker hearing of it there is no await, so the
        # streak the watch counts is the one the breaker sees when it decides.
        result = await call()
        if result["status"] != 200:
            self.streak += 1
            raise DependencyFailed(result)
        self.streak = 0
        return result

    async def guard(self, child: Service, call: Callable[[], Awaitable[CallResult]]) -> CallResult:
        """The service guard: one downstream call through the breaker, with fallback."""
        t, state, start = self.now(), self.breaker.state, time.perf_counter()
        result: CallResult | None = None
        try:
            result = await self.breaker.call(lambda: self._must_succeed(call))
            outcome, self.cache = "ok", result["body"]
        except BreakerOpen:
            outcome = "refused"
        except DependencyFailed as failed:
            outcome, result = "failed", failed.result
        ms = to_model(time.perf_counter() - start) * 1000
        use_cache = outcome != "ok" and self.fallback and self.cache is not None
        self.events.append(CallEvent(t, state, outcome, ms, use_cache))
        if use_cache:
            return {"service": child.name, "status": 200, "ms": ms, "body": self.cache,
                    "fallback": True}
        return result or {"service": child.name, "status": 503, "ms": ms,
                          "body": {"outcome": "circuit open"}}

    # ----- what the record says --------------------------------------------------------
    def count(self, outcome: str) -> int:
        """How many calls had ``outcome`` (``ok``, ``failed`` or ``refused``)."""
        return sum(e.outcome == outcome for e in self.events)

    @property
    def reached(self) -> int:
        """Calls the breaker let through to the dependency (``ok`` + ``failed``)."""
        return self.count("ok") + self.count("failed")

    def refused_ms(self, p: float = 50) -> float:
        """The ``p``-th percentile time (model ms) a refused call spent in the guard."""
        return percentile(self.refused_times(), p)

    def refused_times(self) -> list[float]:
        """The time (model ms) each refused call spent in the guard."""
        return [e.ms for e in self.events if e.outcome == "refused"]

    def path(self) -> list[str]:
        """The states in the order the breaker went through them, from closed."""
        return [CLOSED] + [tr.new for tr in self.transitions]

    def streak_at_first_open(self) -> int:
        """Failures in a row the dependency had given when the breaker first opened
        (0 if it never opened): the threshold at work."""
        return next((tr.streak for tr in self.transitions if tr.new == OPEN), 0)

    def reached_between(self, start: float, end: float) -> int:
        """Calls that reached the dependency (not refused) starting in ``[start, end)``."""
        return sum(start <= e.t < end and e.outcome != "refused" for e in self.events)

    def reached_while_open(self, start: float, end: float) -> int:
        """Calls starting in ``[start, end)`` that found the breaker open (or half-open) and
        still reached the dependency: the trial calls, and nothing else."""
        return sum(start <= e.t < end and e.state != CLOSED and e.outcome != "refused"
                   for e in self.events)

    def failed_between(self, start: float, end: float) -> int:
        """Calls that reached the dependency and failed, starting in ``[start, end)``: during
        an outage, the calls that reached it while it was down."""
        return sum(start <= e.t < end and e.outcome == "failed" for e in self.events)

    def trials_between(self, start: float, end: float) -> int:
        """Times the breaker went half-open (a trial) in ``[start, end)`` model seconds."""
        return sum(start <= tr.t < end and tr.new == HALF_OPEN for tr in self.transitions)

    def summary(self) -> str:
        """One line: state now, calls through, refused, fallbacks, state changes."""
        return (f"breaker {self.breaker.state.upper()}: {self.reached} calls reached the "
                f"dependency ({self.count('failed')} failed), {self.count('refused')} refused "
                f"at once (median {_fmt_ms(self.refused_ms())}), {sum(e.fallback for e in self.events)}"
                f" answered from the cache; {len(self.transitions)} state changes")


def _fmt_ms(value: float) -> str:
    return "n/a" if value != value else f"{value:.2f} ms"


# ----- a dependency that flaps -------------------------------------------------------------------
@dataclass(frozen=True)
class Flapping:
    """A schedule of up and down phases in model seconds, e.g. ``((up, 2), (down, 4))``."""

    phases: tuple[tuple[str, float], ...] = (("up", 2.0), ("down", 4.0), ("up", 3.0),
                                             ("down", 2.5), ("up", 2.5))

    def __post_init__(self) -> None:
        require(len(self.phases) >= 1, "a flapping schedule needs at least one phase.",
                "e.g. Flapping((('up', 2), ('down', 3), ('up', 2)))")
        for kind, seconds in self.phases:
            require(kind in ("up", "down"), f"a phase is 'up' or 'down', got {kind!r}.")
            require(seconds > 0, f"a phase lasts more than 0 s, got {seconds!r}.")

    @property
    def duration(self) -> float:
        """Total model seconds of the schedule."""
        return sum(seconds for _, seconds in self.phases)

    def outages(self) -> list[tuple[float, float]]:
        """``(start, end)`` of every down phase, in model seconds."""
        spans, t = [], 0.0
        for kind, seconds in self.phases:
            if kind == "down":
                spans.append((t, t + seconds))
            t += seconds
        return spans

    def is_down(self, t: float) -> bool:
        """True when model second ``t`` falls in a down phase."""
        return any(start <= t < end for start, end in self.outages())

    async def drive(self, service: Service) -> None:
        """Toggle ``service``'s outage on schedule (runs on the lab's loop); up at the end."""
        loop = asyncio.get_running_loop()
        start, t = loop.time(), 0.0
        try:
            for kind, seconds in self.phases:
                service.set(outage=kind == "down")
                t += seconds
                await asyncio.sleep(max(0.0, start + to_wall(t) - loop.time()))
        finally:
            service.set(outage=False)


# ----- the scenario: a shop over a flapping dependency ------------------------------------------
class FlappingScenario(Experiment):
    """``shop`` calls ``prices`` (which flaps) through a breaker, under steady traffic.

    Its dashboard (``scenario.dashboard(make_breaker)``) has sliders for the threshold and
    reset timeout, a fallback switch and a lamp; Run plays the schedule live.
    ``press_run(fail_max=5, reset_timeout_s=1.5, fallback=True)`` moves the controls first.
    """

    TITLE = "A breaker over a flapping dependency"

    def __init__(self, lab: Lab, schedule: Flapping | None = None, rate: float = 20.0,
                 latency_ms: float = 50.0, prefix: str = "") -> None:
        require(rate > 0, f"rate must be above 0 requests/s, got {rate!r}.")
        self.lab, self.schedule, self.rate = lab, schedule or Flapping(), rate
        self.prices = lab.service(f"{prefix}prices", Constant(latency_ms))
        self.shop = lab.service(f"{prefix}shop", 0, calls=[self.prices])
        self.watch: BreakerWatch | None = None
        self.load: LoadRun | None = None
        self._flaps: Any = None
        self.make_breaker: Callable[[int, float], Any] | None = None

    def start(self, breaker: Any, fallback: bool = True) -> BreakerWatch:
        """Put ``breaker`` in front of ``prices``, start the schedule and the traffic."""
        self.prices.set(outage=False)
        self.warm()
        self.prices.reset_counts()
        self.watch = BreakerWatch(breaker, fallback=fallback)
        self.shop.set(guard=self.watch.guard)
        self._flaps = self.lab.submit(self.schedule.drive(self.prices))
        self.load = self.lab.start_open_loop(self.shop, self.rate, self.schedule.duration)
        return self.watch

    def warm(self) -> None:
        """A few calls without a breaker: connections open, nothing is counted later."""
        self.shop.set(guard=None)
        self.lab.closed_loop(self.shop, 3, 6, progress=False)

    def done(self) -> bool:
        """True when the traffic and the schedule have both finished."""
        return bool(self.load and self.load.done() and self._flaps and self._flaps.done())

    def wait(self) -> BreakerWatch:
        """Wait for the run to end; returns the watch (its record)."""
        require(self.watch is not None and self.load is not None,
                "nothing is running.", "call scenario.start(breaker) first")
        self.load.wait(progress=False)
        self._flaps.result()
        return self.watch

    def run(self, breaker: Any, fallback: bool = True) -> BreakerWatch:
        """:meth:`start` then :meth:`wait`."""
        self.start(breaker, fallback)
        return self.wait()

    def user_success(self) -> float:
        """Share of the shop's users who got a 200 in the last run."""
        return 1 - self.load.recorder.error_rate() if self.load else float("nan")

    def summary(self) -> str:
        if self.watch is None:
            return "press Run"
        users = self.load.recorder if self.load else None
        answered = f"; users: {1 - users.error_rate():.0%} answered 200" if users and len(users) else ""
        return self.watch.summary() + answered

    # ----- the picture --------------------------------------------------------------
    def draw(self, ax: Any) -> None:
        """Timeline: outages shaded, the breaker's state as a band, each call as a dot."""
        draw_timeline(ax, self.watch, self.schedule)

    @property
    def BUTTON(self) -> str:  # the base's name, a property: the label shows the duration
        return f"Run {self.schedule.duration:g} s of traffic"

    def dashboard(self, make_breaker: Callable[[int, float], Any] | None = None) -> Dashboard:
        """Sliders for the threshold and reset timeout, a fallback switch, a lamp, Run.

        ``make_breaker(fail_max, reset_timeout_s)`` builds a fresh breaker for each run
        (needed the first time; later dashboards keep the last one given).
        """
        if make_breaker is not None:
            self.make_breaker = make_breaker
        require(self.make_breaker is not None, "The dashboard needs a way to make a breaker.",
                "give it one: scenario.dashboard(make_breaker), with "
                "make_breaker(fail_max, reset_timeout_s) returning a fresh breaker")
        return super().dashboard()

    def make_controls(self) -> dict[str, Any]:
        import ipywidgets as w

        return {
            "fail_max": w.IntSlider(5, 1, 10, description="fail_max"),
            "reset_timeout_s": w.FloatSlider(1.5, min=0.5, max=4, step=0.25,
                                             description="reset s"),
            "fallback": w.Checkbox(True, description="fallback to cache"),
        }

    def extra_widgets(self) -> list[Any]:
        """The lamp: the breaker's state, in colour and in words."""
        import ipywidgets as w

        self.lamp = w.HTML(lamp_html(CLOSED))
        return [self.lamp]

    def run_controls(self, fail_max: int, reset_timeout_s: float, fallback: bool) -> LiveView:
        """Start the schedule and the traffic through a fresh breaker
        ``make_breaker(fail_max, reset_timeout_s)``, answering from the cache when
        ``fallback``; the plot and the lamp follow the run."""
        self.start(self.make_breaker(fail_max, reset_timeout_s), fallback)
        # 4 redraws a second: each one holds the interpreter for tens of milliseconds.
        return self.board.watch(self.done, self._live_summary, hz=4)

    def _live_summary(self) -> str:
        if self.watch is not None:
            self.lamp.value = lamp_html(self.watch.breaker.state)
        return self.summary()


def lamp_html(state: str) -> str:
    """A coloured lamp with the state in words (colour is never the only signal)."""
    colour = STATE_COLOURS.get(state, "#999999")
    return (f'<div style="display:flex;align-items:center;gap:8px;margin:6px 0">'
            f'<span style="display:inline-block;width:22px;height:22px;border-radius:50%;'
            f'background:{colour};border:2px solid #333"></span>'
            f'<b>breaker {state.upper()}</b></div>')


def draw_timeline(ax: Any, watch: BreakerWatch | None, schedule: Flapping) -> None:
    """The state band on top, outages shaded, each call a dot at its time and cost."""
    for start, end in schedule.outages():
        ax.axvspan(start, end, color="#bbbbbb", alpha=0.35, lw=0)
    ax.set_xlim(0, schedule.duration)
    ax.set_xlabel("model seconds (grey: dependency down)")
    ax.set_ylabel("time in the breaker (model ms)")
    if watch is None or not watch.events:
        return
    top = max(10.0, max(e.ms for e in watch.events) * 1.25)
    _state_band(ax, watch, schedule.duration, top)
    for outcome, colour, marker in (("ok", PALETTE[0], "o"), ("failed", PALETTE[3], "x"),
                                    ("refused", PALETTE[5], ".")):
        points = [(e.t, e.ms) for e in watch.events if e.outcome == outcome]
        if points:
            ax.plot(*zip(*points, strict=True), marker, color=colour, markersize=5,
                    linestyle="none", label=f"{outcome} ({len(points)})")
    ax.set_ylim(0, top * 1.5)   # room above the dots for the state band and the legend
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.89), fontsize=7, ncol=3)


def _state_band(ax: Any, watch: BreakerWatch, end: float, top: float) -> None:
    changes = [(0.0, CLOSED)] + [(tr.t, tr.new) for tr in watch.transitions]
    for (t0, state), (t1, _) in zip(changes, changes[1:] + [(end, "")], strict=True):
        ax.axvspan(t0, max(t1, t0 + 0.02), ymin=0.9, ymax=1.0, color=STATE_COLOURS[state],
                   lw=0)
    ax.text(0.99, 0.955, "state: green closed, orange half-open, red open",
            transform=ax.transAxes, ha="right", va="center", fontsize=7)


# ----- many callers at once ----------------------------------------------------------------------
@dataclass(frozen=True)
class BurstResult:
    """What happened to ``callers`` concurrent calls: how many reached the dependency."""

    callers: int
    reached: int
    refused: int
    ok: int
    state_after: str


async def _burst(lab: Lab, breaker: Any, target: Service, callers: int) -> BurstResult:
    reached = [0]

    async def one_call() -> CallResult:
        reached[0] += 1
        result = await fetch(lab.session, target.url, None, target.name)
        if result["status"] != 200:
            raise DependencyFailed(result)
        return result

    async def caller() -> str:
        try:
            await breaker.call(one_call)
            return "ok"
        except BreakerOpen:
            return "refused"
        except DependencyFailed:
            return "failed"

    outcomes = await asyncio.gather(*(caller() for _ in range(callers)))
    return BurstResult(callers, reached[0], outcomes.count("refused"), outcomes.count("ok"),
                       breaker.state)


def burst(lab: Lab, breaker: Any, target: Service, callers: int = 20) -> BurstResult:
    """``callers`` coroutines call ``target`` through ``breaker`` at the same moment."""
    require(isinstance(callers, int) and callers >= 1,
            f"callers must be a whole number of 1 or more, got {callers!r}.")
    return lab.run(_burst(lab, breaker, target, callers), timeout=60)


def trip(lab: Lab, breaker: Any, target: Service, max_calls: int = 50) -> int:
    """Call ``target`` (which should be failing) one at a time until ``breaker`` opens;
    returns how many calls it took."""
    for n in range(1, max_calls + 1):
        lab.run(_burst(lab, breaker, target, 1), timeout=60)
        if breaker.state == OPEN:
            return n
    raise LabError(f"the breaker did not open within {max_calls} failing calls.",
                   f"make {target.name} fail first, e.g. {target.name}.set(outage=True)")


def sleep_model(seconds: float) -> None:
    """Sleep ``seconds`` of model time (wall time scaled by ``LAB_TIME_SCALE``)."""
    require(seconds >= 0, f"seconds must be 0 or more, got {seconds!r}.")
    time.sleep(to_wall(seconds))


# ----- the field's defaults -----------------------------------------------------------------------
@dataclass(frozen=True)
class Defaults:
    """How a library decides to open, how long it stays open, how it tests recovery."""

    library: str
    window: str
    opens_when: str
    open_for: str
    half_open: str


DEFAULTS: Sequence[Defaults] = (
    Defaults("pybreaker 1.4", "consecutive calls", "5 failures in a row", "60 s", "no limit"),
    Defaults("resilience4j 2", "last 100 calls", ">= 50% failed, >= 100 calls", "60 s",
             "10 trials"),
    Defaults("Hystrix 1.5", "rolling 10 s", ">= 50% failed, >= 20 requests", "5 s",
             "1 trial"),
)
"""The defaults, with the settings behind them: pybreaker ``fail_max``, ``reset_timeout``;
resilience4j ``slidingWindowType``/``slidingWindowSize``, ``failureRateThreshold``,
``minimumNumberOfCalls``, ``waitDurationInOpenState``,
``permittedNumberOfCallsInHalfOpenState``; Hystrix ``metrics.rollingStats.timeInMilliseconds``,
``errorThresholdPercentage``, ``requestVolumeThreshold``, ``sleepWindowInMilliseconds``."""


def defaults_table() -> str:
    """:data:`DEFAULTS` as a fixed-width text table."""
    rows = [("library", "window", "opens when", "stays open", "half-open")]
    rows += [(d.library, d.window, d.opens_when, d.open_for, d.half_open) for d in DEFAULTS]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ----- pybreaker's lock and its consecutive count, measured ---------------------------------
@dataclass(frozen=True)
class ThreadedRun:
    """Threads that went through one pybreaker at the same moment."""

    how: str            # "call" or "calling"
    threads: int
    peak_inside: int    # the most threads inside the protected block at once
    elapsed_s: float    # wall seconds until every thread was done


def threads_inside(how: str, threads: int = 10, work_s: float = 0.05,
                   half_open: bool = False) -> ThreadedRun:
    """Send ``threads`` threads at once through a real ``pybreaker.CircuitBreaker``, each
    doing ``work_s`` seconds of (sleeping) work, and count how many are inside at once.

    ``how="call"`` uses ``breaker.call(work)``; ``how="calling"`` uses
    ``with breaker.calling(): work()``. With ``half_open=True`` the breaker is first
    opened by one failure and its reset timeout waited out, so the burst arrives when the
    next call is the trial.
    """
    require(how in ("call", "calling"), f"how must be 'call' or 'calling', not {how!r}.")
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=0.05,
                                       throw_new_error_on_trip=False)
    if half_open:
        with contextlib.suppress(ConnectionError), breaker.calling():
            raise ConnectionError("down")
        time.sleep(0.06)
    inside, peak, count = threading.Lock(), [0], [0]

    def work() -> None:
        with inside:
            count[0] += 1
            peak[0] = max(peak[0], count[0])
        time.sleep(work_s)
        with inside:
            count[0] -= 1

    def one() -> None:
        gate.wait()
        with contextlib.suppress(pybreaker.CircuitBreakerError):
            if how == "call":
                breaker.call(work)
            else:
                with breaker.calling():
                    work()

    gate = threading.Barrier(threads)
    workers = [threading.Thread(target=one, name=f"pybreaker-{how}-{i}") for i in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return ThreadedRun(how, threads, peak[0], time.perf_counter() - started)


def expected_calls_to_open(p_fail: float, fail_max: int) -> float:
    """The mean number of calls until ``fail_max`` failures in a row, when each call fails
    with probability ``p_fail`` independently: (1 − p^k) / ((1 − p) · p^k).

    >>> round(expected_calls_to_open(0.3, 5))
    586
    """
    require(0 < p_fail < 1, f"p_fail must be between 0 and 1, got {p_fail}.")
    require(isinstance(fail_max, int) and fail_max >= 1, "fail_max must be 1 or more.")
    run = p_fail ** fail_max
    return (1 - run) / ((1 - p_fail) * run)


def calls_until_open(p_fail: float, fail_max: int = 5, runs: int = 1000,
                     seed: int = 4) -> list[int]:
    """For each of ``runs`` fresh ``pybreaker.CircuitBreaker(fail_max)``, the calls made
    (each failing with probability ``p_fail``, seeded) until the breaker opened."""
    rng, counts = random.Random(seed), []
    for _ in range(runs):
        breaker = pybreaker.CircuitBreaker(fail_max=fail_max, reset_timeout=60,
                                           throw_new_error_on_trip=False)
        calls = 0
        while breaker.current_state == CLOSED:
            calls += 1
            with contextlib.suppress(ConnectionError), breaker.calling():
                if rng.random() < p_fail:
                    raise ConnectionError("a random failure")
        counts.append(calls)
    return counts


def trials_in_outage(outage_s: float, rate: float, fail_max: int, reset_s: float) -> int:
    """Trial calls a consecutive-count breaker makes during an outage of ``outage_s`` (model
    s) at ``rate`` calls/s: it opens after ``fail_max / rate`` s, then tries once every
    ``reset_s``. (It ignores the wait for the next call after each timeout, at most 1/rate.)"""
    require(outage_s > 0 and rate > 0 and reset_s > 0,
            "outage_s, rate and reset_s must be above 0.")
    require(isinstance(fail_max, int) and fail_max >= 1, "fail_max must be 1 or more.")
    to_open = fail_max / rate
    return 0 if to_open >= outage_s else int((outage_s - to_open) // reset_s)


def calls_through_outage(outage_s: float, rate: float, fail_max: int, reset_s: float) -> int:
    """About how many calls reach a dependency that is down for ``outage_s``: the
    ``fail_max`` failures that open the breaker plus its trials (see :func:`trials_in_outage`)."""
    if fail_max / rate >= outage_s > 0:
        return int(outage_s * rate)
    return fail_max + trials_in_outage(outage_s, rate, fail_max, reset_s)


class HalfOpenBurst(Experiment):
    """Open a breaker on a failing dependency, heal it, wait out the reset timeout, then
    send ``callers`` concurrent calls: how many reach the dependency?

    Its dashboard sets the callers and the trial limit; Run trips, heals, waits and bursts.
    ``press_run(callers=20, trial_limit=1)`` moves the controls first (``trial_limit=0``:
    pybreaker as it is) and returns the :class:`BurstResult`.
    """

    TITLE = "A burst while half-open"
    BUTTON = "Trip, heal, burst"

    def __init__(self, lab: Lab, latency_ms: float = 100.0, name: str = "inventory") -> None:
        self.lab = lab
        self.dependency = lab.service(name, Constant(latency_ms))
        self.results: dict[str, BurstResult] = {}

    def run(self, breaker: Any, callers: int = 20, label: str = "breaker") -> BurstResult:
        """Trip ``breaker``, heal the dependency, wait its reset timeout, burst; the
        result's ``reached`` is counted by the dependency itself (``received``)."""
        reset_s = _reset_timeout_s(breaker)
        self.dependency.set(outage=True)
        trip(self.lab, breaker, self.dependency)
        self.dependency.set(outage=False)
        sleep_model(reset_s * 1.2 + 0.05)
        self.dependency.reset_counts()
        result = burst(self.lab, breaker, self.dependency, callers)
        measured = BurstResult(callers, self.dependency.received, result.refused, result.ok,
                               result.state_after)
        self.results[label] = measured
        return measured

    def summary(self) -> str:
        return "; ".join(f"{label}: {r.reached} of {r.callers} callers reached "
                         f"{self.dependency.name}, {r.refused} refused at once"
                         for label, r in self.results.items()) or "press Run"

    def draw(self, ax: Any) -> None:
        labels = list(self.results)
        reached = [self.results[k].reached for k in labels]
        refused = [self.results[k].refused for k in labels]
        ax.bar(labels, reached, color=PALETTE[0], label="reached the dependency")
        ax.bar(labels, refused, bottom=reached, color=PALETTE[5], label="refused at once")
        ax.set_ylabel("concurrent callers while half-open")
        ax.legend(loc="upper right", fontsize=8)

    def make_controls(self) -> dict[str, Any]:
        import ipywidgets as w

        return {
            "callers": w.IntSlider(20, 2, 50, description="callers"),
            "trial_limit": w.Dropdown(options=[("pybreaker as it is", 0), ("1 trial", 1),
                                               ("3 trials", 3)], value=1,
                                      description="half-open"),
        }

    def run_controls(self, callers: int, trial_limit: int) -> BurstResult:
        """:meth:`run` with pybreaker (``fail_max=3``, reset 1 s), ``callers`` at once and
        half-open gated to ``trial_limit`` trials (0: no gate, pybreaker as it is)."""
        label = "no gate" if not trial_limit else f"{trial_limit} trial{'s' * (trial_limit > 1)}"
        breaker = AsyncPyBreaker(fail_max=3, reset_timeout_s=1.0, trial_limit=trial_limit or None)
        return self.show(self.run(breaker, callers, label))


def _reset_timeout_s(breaker: Any) -> float:
    """A breaker's reset timeout in model seconds (ours, or one with ``reset_timeout``)."""
    if isinstance(breaker, AsyncPyBreaker):
        return breaker.reset_timeout_s
    timeout = getattr(breaker, "reset_timeout", None)
    require(isinstance(timeout, (int, float)) and timeout > 0,
            "the breaker has no reset_timeout in seconds.",
            "give it reset_timeout= in model seconds and clock=model_clock")
    return float(timeout)


def draw_lanes(ax: Any, watches: dict[str, BreakerWatch], schedule: Flapping) -> None:
    """One lane per breaker: its state over time, over the same shaded outages."""
    for start, end in schedule.outages():
        ax.axvspan(start, end, color="#bbbbbb", alpha=0.35, lw=0)
    for row, watch in enumerate(watches.values()):
        changes = [(0.0, CLOSED)] + [(tr.t, tr.new) for tr in watch.transitions]
        ends = [t for t, _ in changes[1:]] + [schedule.duration]
        for (t0, state), t1 in zip(changes, ends, strict=True):
            ax.barh(row, max(t1 - t0, 0.03), left=t0, height=0.6,
                    color=STATE_COLOURS[state], edgecolor="none")
    ax.set_yticks(range(len(watches)), list(watches))
    ax.set_xlim(0, schedule.duration)
    ax.set_xlabel("model seconds (grey: dependency down; green closed, orange half-open, "
                  "red open)", fontsize=8)


def mismatches(a: Sequence[str], b: Sequence[str]) -> int:
    """How many positions differ between two state paths (a missing step counts too)."""
    return sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b))
