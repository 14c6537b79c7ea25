"""Backpressure at a service: an unbounded queue against a bounded one that says "slow down".

Two copies of one service get the same offered load, above what they can serve (ρ > 1):

* ``unbounded`` lets every request wait for a worker: the line grows without limit, so
  latency and the memory the waiting requests hold grow with it, for as long as the
  overload lasts;
* ``bounded`` lets at most ``queue_limit`` wait (the service's ``queue_limit`` knob); the
  rest are turned away at once with **503** and a ``Retry-After`` header.

Each request carries a real body (``body_kb`` KiB) that the service keeps until the request
is served, so "memory held" is counted in bytes, not guessed::

    exp = QueueExperiment(lab, workers=2, work_ms=200, body_kb=16)
    run = exp.run(rho=2.0, queue_limit=4, duration_s=5)
    run["unbounded"].admitted_p(50, last=True)     # seconds of waiting at the end
    run["bounded"].rejection_share()              # about 1 - 1/rho

Rates and times are in model time (see :mod:`labsupport.runtime.settings`).
"""
from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from labsupport.kit.dashboard import PALETTE, Dashboard, LiveView
from labsupport.kit.evidence import Estimate, share
from labsupport.kit.experiment import Experiment
from labsupport.runtime import load, settings
from labsupport.runtime.errors import require
from labsupport.runtime.latency import Constant
from labsupport.runtime.load import arrival_times
from labsupport.runtime.metrics import percentile
from labsupport.runtime.pool import PoolFull
from labsupport.runtime.settings import to_model, to_wall

if TYPE_CHECKING:
    from labsupport.runtime.lab import Lab
    from labsupport.runtime.services import Service

REJECT_STATUSES = (429, 503)


# ----- offered load that records what the client saw ------------------------------------------
@dataclass(frozen=True)
class Shot:
    """One request of an open-loop run: scheduled send time (model s), latency (model ms),
    status (0 timed out, -1 refused), the ``Retry-After`` header and the phase it belongs to."""

    t: float
    ms: float
    status: int
    retry_after: str | None = None
    phase: int = 0

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def rejected(self) -> bool:
        return self.status in REJECT_STATUSES


def schedule(phases: Sequence[tuple[float, float]], seed: int | str = 0,
             poisson: bool = True) -> list[tuple[float, int]]:
    """Send times for ``phases`` of ``(rate per s, duration s)``, back to back:
    ``[(t, phase index), ...]`` (Poisson arrivals by default, seeded)."""
    require(len(phases) >= 1, "give at least one phase (rate, duration_s).", "e.g. [(20, 5)]")
    times, start = [], 0.0
    for index, (rate, duration) in enumerate(phases):
        times += [(start + t, index) for t in arrival_times(rate, duration, poisson,
                                                               f"{seed}:{index}")]
        start += duration
    return times


async def offered_load(session: aiohttp.ClientSession, url: str,
                       phases: Sequence[tuple[float, float]], body_kb: float = 0,
                       seed: int | str = 0, timeout_ms: float = 20_000,
                       stop: threading.Event | None = None,
                       into: list[Shot] | None = None) -> list[Shot]:
    """POST ``url`` on the :func:`schedule` of ``phases`` whatever happens (open loop,
    :func:`labsupport.runtime.load.fire`): latency counts from the *scheduled* send time (no
    coordinated omission). Each request carries ``body_kb`` KiB; ``into`` receives the
    shots as they finish (for live views)."""
    shots = into if into is not None else []
    plan = schedule(phases, seed)

    def seen(shot: load.Shot) -> None:
        shots.append(Shot(shot.t, shot.ms, shot.status, shot.headers.get("Retry-After"),
                          plan[shot.index][1]))

    await load.fire(session, url, [t for t, _ in plan], method="POST",
                    data=b"x" * int(body_kb * 1024) if body_kb else None,
                    timeout_ms=timeout_ms, stop=stop, on_shot=seen)
    return shots


# ----- a service that holds each request's body until it is served ---------------------------
class QueueService:
    """A lab service whose ``POST /order`` keeps the request body until a worker served it.

    ``queue_limit=None`` lets the line grow without bound; a number turns away anyone who
    would find that many already waiting, with 503 and ``Retry-After`` (seconds).
    """

    def __init__(self, lab: Lab, name: str, workers: int = 2, work_ms: float = 200.0,
                 queue_limit: int | None = None) -> None:
        require(isinstance(work_ms, (int, float)) and work_ms > 0,
                f"work_ms must be a number of ms above 0, got {work_ms!r}.", "e.g. 200")
        self.svc: Service = lab.service(name, Constant(work_ms), workers=workers,
                                        queue_limit=queue_limit, routes={"/order": self._order})
        self.work_ms = float(work_ms)
        self.bytes_held = 0
        self.rejected = 0

    @property
    def workers(self) -> int:
        return self.svc.pool.capacity

    @property
    def queue_limit(self) -> int | None:
        return self.svc.queue_limit

    @property
    def capacity_per_s(self) -> float:
        """μ: requests per model second the workers can serve (workers / work time)."""
        return self.workers / (self.work_ms / 1000)

    @property
    def url(self) -> str:
        return self.svc.url + "order"

    def retry_after_s(self) -> int:
        """What to tell a turned-away client: the time to work off a full line (≥ 1 s)."""
        inside = (self.queue_limit or 0) + self.workers
        return max(1, math.ceil(inside / self.capacity_per_s))

    async def _order(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bytes_held += len(body)
        try:
            await self.svc.work()
        except PoolFull:
            self.rejected += 1
            return web.json_response({"error": "busy, try later"}, status=503,
                                     headers={"Retry-After": str(self.retry_after_s())})
        finally:
            self.bytes_held -= len(body)
        return web.json_response({"ok": True})


# ----- what a run recorded --------------------------------------------------------------------
@dataclass(frozen=True)
class Gauge:
    """One sample of a service's insides: model time, waiting, at work, bytes held, rejected
    so far, and the whole process's resident memory (MiB; shown, never claimed on)."""

    t: float
    waiting: int
    busy: int
    bytes_held: int
    rejected: int
    rss_mib: float


@dataclass
class QueueRun:
    """One service's record of one run: the client's shots and the service's gauges."""

    name: str
    rate: float
    capacity: float
    duration_s: float
    workers: int
    queue_limit: int | None
    work_ms: float
    body_bytes: int
    shots: list[Shot] = field(default_factory=list)
    gauges: list[Gauge] = field(default_factory=list)
    stall_ms: float = 0.0

    @property
    def rho(self) -> float:
        """Offered load over capacity, λ/μ."""
        return self.rate / self.capacity

    def admitted(self) -> list[Shot]:
        return [s for s in self.shots if s.ok]

    def rejection_share(self) -> float:
        """Share of requests turned away (429/503)."""
        return sum(s.rejected for s in self.shots) / len(self.shots) if self.shots else math.nan

    def rejection_estimate(self) -> Estimate:
        """:meth:`rejection_share` with Wilson's interval."""
        return share(sum(s.rejected for s in self.shots), len(self.shots))

    def slower_than(self, ms: float) -> int:
        """How many served requests took longer than ``ms`` (a count from this run)."""
        return sum(s.ms > ms for s in self.admitted())

    def predicted_rejection_share(self) -> float:
        """1 − 1/ρ: in the long run the service can take only μ of the λ offered."""
        return max(0.0, 1 - 1 / self.rho)

    def admitted_ms(self, first: bool = False, last: bool = False,
                    part: float = 0.25) -> list[float]:
        """Latencies (model ms) of served requests; ``first``/``last``: only those sent in
        the first/last ``part`` of the run."""
        lo, hi = 0.0, self.duration_s
        if first:
            hi = part * self.duration_s
        if last:
            lo = (1 - part) * self.duration_s
        return [s.ms for s in self.admitted() if lo <= s.t < hi]

    def admitted_p(self, p: float, first: bool = False, last: bool = False,
                   part: float = 0.25) -> float:
        """``p``-th percentile of :meth:`admitted_ms`."""
        return percentile(self.admitted_ms(first, last, part), p)

    def theory_wait_ms(self, t: float, capacity: float | None = None) -> float:
        """Unbounded line: a request sent at ``t`` finds (λ−μ)·t waiting and waits
        (λ−μ)·t/μ, plus its own work. ``capacity``: a measured μ instead of the nominal one
        (see :meth:`served_rate`)."""
        mu = capacity or self.capacity
        backlog = max(0.0, self.rate - mu) * t
        return backlog / mu * 1000 + self.work_ms

    def served_rate(self) -> float:
        """μ as measured: requests served per model second while the service was busy (from
        the first request sent to the last answer). On a loaded laptop, at a small time
        scale, it is below the nominal μ: every timer fires a little late."""
        done = [s.t + s.ms / 1000 for s in self.admitted()]
        span = max(done, default=0.0) - min((s.t for s in self.shots), default=0.0)
        return len(done) / span if span > 0 else math.nan

    def bound_ms(self, mu: float | None = None) -> float:
        """Bounded line: at most ``queue_limit`` ahead, so (queue_limit + workers)/μ, with the
        nominal μ or the one given (say :meth:`served_rate`: a loaded laptop serves fewer a
        second than nominal, and each place in the line then takes longer). The lab's own
        pauses, ``stall_ms``, come on top."""
        require(self.queue_limit is not None, "an unbounded line has no bound.")
        rate = self.capacity if mu is None or not mu > 0 else min(mu, self.capacity)
        return (self.queue_limit + self.workers) / rate * 1000

    def peak_bytes(self) -> int:
        return max((g.bytes_held for g in self.gauges), default=0)

    def bytes_cap(self) -> int | None:
        """The most a bounded line can hold: (queue_limit + workers) bodies."""
        if self.queue_limit is None:
            return None
        return (self.queue_limit + self.workers) * self.body_bytes

    def theory_peak_bytes(self) -> float:
        """Unbounded: (λ−μ)·duration bodies are still inside when the overload ends."""
        return (max(0.0, self.rate - self.capacity) * self.duration_s + self.workers) \
            * self.body_bytes

    def retry_after_present(self) -> float:
        """Share of rejections that carried a Retry-After header."""
        rejected = [s for s in self.shots if s.rejected]
        return sum(s.retry_after is not None for s in rejected) / len(rejected) \
            if rejected else math.nan

    def summary(self) -> str:
        served, share = len(self.admitted()), self.rejection_share()
        return (f"{self.name}: {len(self.shots)} sent, {served} served, "
                f"{0 if math.isnan(share) else share:.0%} turned away; served p50 "
                f"{_ms(self.admitted_p(50))}, p99 {_ms(self.admitted_p(99))}; peak "
                f"{self.peak_bytes() / 1024:.0f} KiB held")


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f} ms"


def rss_mib() -> float:
    """This process's resident memory in MiB (psutil): noisy, shown for context only."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


async def sample_gauges(service: QueueService, run: QueueRun, every_s: float,
                        done: Callable[[], bool]) -> None:
    """Every ``every_s`` model seconds, record the service's insides into ``run.gauges``
    until ``done()``; ``run.stall_ms`` keeps the longest the loop woke up late (model ms):
    the lab's own pauses (a plot redraw, the garbage collector) that every request felt."""
    loop = asyncio.get_running_loop()
    start, rss, n = loop.time(), rss_mib(), 0
    while not done():
        if n % 5 == 0:
            rss = rss_mib()
        pool = service.svc.pool
        run.gauges.append(Gauge(to_model(loop.time() - start), pool.waiting, pool.busy,
                                service.bytes_held, service.rejected, rss))
        n += 1
        before = loop.time()
        await asyncio.sleep(to_wall(every_s))
        late = to_model(loop.time() - before - to_wall(every_s)) * 1000
        run.stall_ms = max(run.stall_ms, late)


# ----- the experiment -----------------------------------------------------------------------------
class QueueExperiment(Experiment):
    """The same overload offered to an unbounded and a bounded copy of one service, at once.

    ``exp.dashboard()`` shows a ρ slider, a queue-limit slider, a duration and Run, with
    four live panels; ``exp.press_run(rho=2.0, queue_limit=4, duration_s=5)`` is what Run
    does (it returns a live view: ``view.join()`` waits for the end)."""

    TITLE = "Unbounded vs bounded queue under the same load"
    BUTTON = "Run"

    def __init__(self, lab: Lab, workers: int = 2, work_ms: float = 200.0,
                 body_kb: float = 16, prefix: str = "") -> None:
        require(isinstance(body_kb, (int, float)) and 0 <= body_kb <= 256,
                f"body_kb must be a number of KiB from 0 to 256, got {body_kb!r}.", "e.g. 16")
        self.lab, self.body_kb = lab, body_kb
        self.services = {"unbounded": QueueService(lab, f"{prefix}unbounded", workers, work_ms),
                         "bounded": QueueService(lab, f"{prefix}bounded", workers, work_ms, 4)}
        self.runs: dict[str, QueueRun] = {}
        self._future: Any = None

    @property
    def capacity_per_s(self) -> float:
        """μ of each copy (both have the same workers and work time)."""
        return self.services["unbounded"].capacity_per_s

    def start(self, rho: float = 2.0, queue_limit: int = 4, duration_s: float = 5.0,
              seed: int = 9) -> dict[str, QueueRun]:
        """Offer λ = ρ·μ for ``duration_s`` to both copies; returns the live records."""
        require(isinstance(rho, (int, float)) and 0.1 <= rho <= 4,
                f"rho must be a load from 0.1 to 4 (offered / capacity), got {rho!r}.",
                "e.g. rho=2.0: twice what the service can serve")
        require(isinstance(duration_s, (int, float)) and 0.5 <= duration_s <= 30,
                f"duration_s must be 0.5 to 30 model seconds, got {duration_s!r}.", "e.g. 5")
        self.services["bounded"].svc.set(queue_limit=queue_limit)
        rate = rho * self.capacity_per_s
        self.runs = {}
        for name, service in self.services.items():
            service.rejected = 0
            self.runs[name] = QueueRun(name, rate, service.capacity_per_s, duration_s,
                                       service.workers, service.queue_limit, service.work_ms,
                                       int(self.body_kb * 1024))
        self._future = self.lab.submit(self._both(rate, duration_s, seed))
        return self.runs

    MIN_SCALE = 0.5
    """The smallest time scale a run uses: at 0.2 a busy machine's late timers and pauses,
    times five in model time, pushed 29% of the bounded line's answers past (queue_limit +
    workers)/μ plus the measured pauses (beside a second test process); the lesson is about
    the line, not about the laptop's timers."""

    async def _both(self, rate: float, duration_s: float, seed: int) -> None:
        with settings.scale_at_least(self.MIN_SCALE):
            await self._offer_both(rate, duration_s, seed)

    async def _offer_both(self, rate: float, duration_s: float, seed: int) -> None:
        finished = asyncio.Event()
        gauges = [asyncio.create_task(sample_gauges(self.services[n], self.runs[n],
                                                    duration_s / 100, finished.is_set))
                  for n in self.services]
        await asyncio.gather(*(offered_load(self.lab.session, self.services[n].url,
                                            [(rate, duration_s)], self.body_kb, seed,
                                            into=self.runs[n].shots)
                               for n in self.services))
        finished.set()
        await asyncio.gather(*gauges)

    def done(self) -> bool:
        return self._future is not None and self._future.done()

    def wait(self) -> dict[str, QueueRun]:
        """Wait until every request has its answer; returns ``{"unbounded": .., "bounded": ..}``."""
        require(self._future is not None, "nothing is running.", "call exp.start() first")
        self._future.result()
        return self.runs

    def run(self, rho: float = 2.0, queue_limit: int = 4, duration_s: float = 5.0,
            seed: int = 9) -> dict[str, QueueRun]:
        """:meth:`start` then :meth:`wait`."""
        self.start(rho, queue_limit, duration_s, seed)
        return self.wait()

    # ----- the dashboard ------------------------------------------------------------------------
    def summary(self) -> str:
        if not self.runs:
            return "press Run"
        gauges = self.runs["bounded"].gauges
        rss = f" | process RSS {gauges[-1].rss_mib:.0f} MiB (psutil)" if gauges else ""
        return " | ".join(r.summary() for r in self.runs.values()) + rss

    def draw(self, axes: Sequence[Any]) -> None:
        """Four panels over time: served latency, line length, rejections/s, KiB held."""
        draw_queue_panels(axes, self.runs)

    def make_controls(self) -> dict[str, Any]:
        """A ρ slider, a queue-limit slider and a duration slider."""
        import ipywidgets as w

        return {
            "rho": w.FloatSlider(2.0, min=0.5, max=3.0, step=0.25, description="load ρ"),
            "queue_limit": w.IntSlider(4, 0, 20, description="queue limit"),
            "duration_s": w.FloatSlider(5.0, min=2, max=10, step=1, description="seconds"),
        }

    def make_board(self, widgets: list[Any]) -> Dashboard:
        """Four live panels (2 x 2), drawn once now: the first drawing is the slow one."""
        board = PanelDashboard(self.TITLE, widgets, self.draw, (2, 2))
        board.refresh(self.summary())   # the first drawing is the slow one: not mid-run
        return board

    def run_controls(self, rho: float, queue_limit: int, duration_s: float) -> LiveView:
        """What Run does: ``press_run(rho=, queue_limit=, duration_s=)`` moves those sliders
        first, starts the run and returns its :class:`LiveView` (``view.join()`` waits)."""
        self.start(rho, queue_limit, duration_s)
        return self.board.watch_model(self.done, self.summary)


def draw_queue_panels(axes: Sequence[Any], runs: dict[str, QueueRun]) -> None:
    """Served latency, line length, rejections per second and KiB held, against model time."""
    lat, depth, rej, mem = axes
    colours = {"unbounded": PALETTE[3], "bounded": PALETTE[0]}
    for name, run in runs.items():
        colour = colours.get(name, PALETTE[2])
        served = [(s.t, s.ms / 1000) for s in list(run.shots) if s.ok]
        if served:
            lat.plot(*zip(*served, strict=True), ".", color=colour, markersize=3, label=name)
        gauges = list(run.gauges)
        if gauges:
            ts = [g.t for g in gauges]
            depth.plot(ts, [g.waiting for g in gauges], color=colour)
            mem.plot(ts, [g.bytes_held / 1024 for g in gauges], color=colour)
            rate = [(b.t, (b.rejected - a.rejected) / max(b.t - a.t, 1e-9))
                    for a, b in zip(gauges[::5], gauges[5::5], strict=False)]
            if rate:
                rej.plot(*zip(*rate, strict=True), color=colour)
    for ax, title in ((lat, "served latency (s) by send time"), (depth, "waiting in line"),
                      (rej, "turned away per s"), (mem, "KiB of bodies held")):
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
    if runs:
        lat.legend(fontsize=7, loc="upper left")
    mem.set_xlabel("model seconds", fontsize=7)
    rej.set_xlabel("model seconds", fontsize=7)


# ----- a dashboard with several panels --------------------------------------------------------------
class PanelDashboard(Dashboard):
    """A :class:`Dashboard` whose plot has ``shape`` = (rows, columns) panels;
    ``draw(axes)`` gets the list of axes."""

    def __init__(self, title: str, controls: Sequence[Any],
                 draw: Callable[[Sequence[Any]], None], shape: tuple[int, int] = (1, 2),
                 size: tuple[float, float] = (7.0, 4.6), left: float = 0.08) -> None:
        super().__init__(title, controls, draw)
        self.shape, self.size, self.left = shape, size, left
        self.plot.layout.max_width = "680px"

    def render_png(self) -> bytes:
        from io import BytesIO

        from matplotlib.figure import Figure

        with self._render_lock:
            if self._figure is None:
                self._figure = Figure(figsize=self.size)
                grid = self._figure.subplots(*self.shape)
                self._axes = list(getattr(grid, "flat", [grid]))
                self._figure.subplots_adjust(left=self.left, right=0.98,
                                             bottom=0.1 if self.shape[0] > 1 else 0.17,
                                             top=0.92, hspace=0.45, wspace=0.3)
            for ax in self._axes:
                ax.clear()
            self.draw(self._axes)
            buffer = BytesIO()
            self._figure.savefig(buffer, format="png", dpi=80, facecolor="white")
            return buffer.getvalue()

    def watch_model(self, done: Callable[[], bool], summarize: Callable[[], str],
                    every_model_s: float = 1.0) -> LiveView:
        """Like :meth:`Dashboard.watch`, paced in model time (see :class:`ModelTimeView`)."""
        view = ModelTimeView(self, done, summarize, every_model_s)
        view.start()
        return view


class ModelTimeView(LiveView):
    """A :class:`LiveView` that redraws once every ``every_model_s`` of *model* time.

    A redraw holds the interpreter for about 0.1 s of wall time, and the services share it:
    pacing redraws in model time keeps that disturbance the same share of every request's
    time at any ``LAB_TIME_SCALE`` (at 0.2 it redraws every 5 s, so mostly at the end).
    """

    def __init__(self, dashboard: Dashboard, done: Callable[[], bool],
                 summarize: Callable[[], str], every_model_s: float) -> None:
        super().__init__(dashboard, done, summarize, hz=1 / to_wall(every_model_s))

    def _loop(self) -> None:
        from labsupport.kit.dashboard import headless

        start = last = time.monotonic()
        live = not headless()
        while not self.done():
            if live and time.monotonic() - last >= 1 / self.hz:
                self.dashboard.refresh(self.summarize())
                self.frames += 1
                last = time.monotonic()
            time.sleep(0.02)
        self.seconds = time.monotonic() - start
        self.dashboard.refresh(self.summarize())
