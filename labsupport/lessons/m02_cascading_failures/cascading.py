"""Module 02 experiments: how one slow service takes others down, and how to stop it.

Three services call each other, ``a → b → c``, each with a bounded worker pool.
``a`` also has an endpoint that calls nothing, ``/local``. When ``c`` slows down,
every request holds a worker in ``a``, ``b`` and ``c`` for longer; by Little's law
the number in flight is λ·W, and once that exceeds the pool size K the pool is
full and a line forms, in front of ``/local`` too: the cascade.

* :class:`CascadeExperiment` runs open-loop traffic with live gauges of in-flight
  work, slows ``c`` on cue (or with a slider), and measures ``/local``.
* :class:`TimeoutExperiment` sets a timeout at a chosen percentile of the
  downstream latency and counts how many healthy calls it cuts off.
* :func:`measure_protection` runs the exercise's scenario against a protection
  the learner writes (a timeout plus a bulkhead).

All times are model time (see :mod:`labsupport.runtime.settings`).
"""
from __future__ import annotations

import asyncio
import gc
import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

from labsupport.kit.dashboard import PALETTE, Dashboard, LiveView
from labsupport.kit.evidence import Estimate, share
from labsupport.kit.experiment import Experiment
from labsupport.runtime import load
from labsupport.runtime.errors import LabError, require
from labsupport.runtime.lab import Lab
from labsupport.runtime.latency import LatencyModel, LogNormal
from labsupport.runtime.metrics import Recorder, Sample
from labsupport.runtime.services import Service
from labsupport.runtime.settings import to_model, to_wall

#: C's healthy latency: median 50 ms with a long tail (p99 about 322 ms).
HEALTHY_C = LogNormal(50, 0.8)
A_WORK_MS = 20.0   # a's own work, all that /local does
B_WORK_MS = 10.0   # b's own work before it calls c
GAUGE_EVERY_S = 0.025  # model seconds between two readings of the gauges


# ----- C's latency: the healthy distribution, shifted to the right --------------------------
@dataclass(frozen=True)
class Slowed(LatencyModel):
    """``base`` plus a fixed ``extra_ms``: the same service, slowed down by a constant.

    A slow disk, a lock or a garbage-collection pause adds time to every request,
    while the shape of the healthy distribution stays.
    """

    base: LatencyModel
    extra_ms: float

    def __post_init__(self) -> None:
        require(self.extra_ms >= 0, f"extra_ms must be zero or more, got {self.extra_ms}.",
                "give the extra time in ms, e.g. 1000")

    def sample(self, rng: random.Random) -> float:
        return self.base.sample(rng) + self.extra_ms

    def mean_ms(self) -> float:
        return self.base.mean_ms() + self.extra_ms

    def quantile_ms(self, q: float) -> float:
        return self.base.quantile_ms(q) + self.extra_ms


def c_latency(median_ms: float) -> LatencyModel:
    """C's latency when its median is ``median_ms``: healthy at 50, slower above that."""
    require(isinstance(median_ms, (int, float)) and 50 <= median_ms <= 10_000,
            f"C's median must be between 50 and 10000 ms, got {median_ms!r}.",
            "50 is healthy; 1000 is one second per call")
    extra = median_ms - HEALTHY_C.median
    return HEALTHY_C if extra == 0 else Slowed(HEALTHY_C, extra)


def quiet_gc() -> None:
    """Collect garbage now, so that a full collection (which pauses every thread for up to
    a tenth of a second) does not land in the middle of a measurement."""
    gc.collect()


def window(recorder: Recorder, start: float, end: float = math.inf) -> Recorder:
    """The requests of ``recorder`` sent between ``start`` and ``end`` (model s)."""
    part = Recorder(f"{recorder.name} [{start:g}-{end:g} s]")
    for s in recorder.samples:
        if start <= s.t < end:
            part.record(s.t, s.ms, s.status)
    return part


def p99_all(recorder: Recorder) -> float:
    """The p99 latency counting failures too (a timed-out request counts at its timeout)."""
    return recorder.percentile(99, ok_only=False)


# ----- gauges --------------------------------------------------------------------------------
@dataclass(frozen=True)
class GaugeReading:
    """One reading of every service's gauges at model time ``t`` (s since the run began)."""

    t: float
    in_flight: dict[str, int]
    busy: dict[str, int]
    waiting: dict[str, int]
    c_median_ms: float
    calls_to_b: int = 0


@dataclass
class CascadeResult:
    """What one run of a :class:`CascadeExperiment` recorded."""

    rate: float
    duration: float
    workers: int
    main: Recorder
    local: Recorder
    burst: Recorder
    gauges: list[GaugeReading] = field(default_factory=list)
    slow_at: float | None = None
    names: tuple[str, str, str] = ("a", "b", "c")
    calls_to_b_at_slow: int | None = None
    inside_before_c: int = 0
    slowed_t: float | None = None  # model s when C really slowed down (slow_at, or a bit later)

    def mean_in_flight(self, name: str, start: float, end: float) -> float:
        """Time-averaged requests inside service ``name`` between ``start`` and ``end``."""
        values = [g.in_flight[name] for g in self.gauges if start <= g.t < end]
        return sum(values) / len(values) if values else math.nan

    def full_at(self, name: str, after: float = 0.0, hold: float = 0.25) -> float | None:
        """The first time (model s) after ``after`` from which every worker of ``name`` stayed
        busy for ``hold`` seconds (a moment's crowd that clears at once does not count)."""
        gauges = [g for g in self.gauges if g.t >= after]
        for i, g in enumerate(gauges):
            if g.busy[name] < self.workers:
                continue
            ahead = [h for h in gauges[i:] if h.t <= g.t + hold]
            if gauges[-1].t >= g.t + hold and all(h.busy[name] >= self.workers for h in ahead):
                return g.t
        return None

    def seconds_to_fill(self, name: str | None = None) -> float:
        """How long after C slowed down the pool of ``name`` (default: a) was full."""
        require(self.slow_at is not None, "this run never slowed C down.",
                "run with slow_at=... and slow_to=...")
        start = self.slowed_t if self.slowed_t is not None else self.slow_at
        full = self.full_at(name or self.names[0], start)
        return math.nan if full is None else full - start

    def requests_to_fill(self, name: str | None = None) -> float:
        """How many new requests reached ``b`` between C's slow-down and ``name`` being full.

        Counting arrivals rather than seconds makes the measurement immune to the
        machine pausing the lab for a moment: a pause delays arrivals and filling alike.
        """
        require(self.calls_to_b_at_slow is not None, "this run never slowed C down.",
                "run with slow_at=... and slow_to=...")
        assert self.slow_at is not None
        full = self.full_at(name or self.names[0], self.slow_at)
        if full is None:
            return math.nan
        reading = next(g for g in self.gauges if g.t == full)
        return reading.calls_to_b - self.calls_to_b_at_slow  # type: ignore[operator]

    def fill_theory_s(self) -> float:
        """K/λ, less the requests already inside ``a`` on their way to C at the slow-down
        (they get stuck too): the seconds of traffic it takes to fill ``a``'s pool."""
        return (self.workers - self.inside_before_c) / self.rate

    def peak(self, name: str) -> int:
        """The most requests ever inside service ``name`` at once (at work plus waiting)."""
        return max((g.in_flight[name] for g in self.gauges), default=0)


class CascadeRun:
    """A cascade run going on in the background: ``done()``, ``wait()``."""

    def __init__(self, future: Any, result: CascadeResult) -> None:
        self.future, self.result = future, result

    def done(self) -> bool:
        return self.future.done()

    def wait(self) -> CascadeResult:
        """Wait until the traffic has ended and the services have drained."""
        self.future.result()
        return self.result


# ----- the experiment ------------------------------------------------------------------------
class CascadeExperiment(Experiment):
    """``a → b → c`` with ``workers`` each; ``a`` does 20 ms of work, ``b`` 10 ms, ``c`` is
    LogNormal(50 ms, 0.8) when healthy. ``a``'s ``/local`` does only ``a``'s 20 ms.

    Its dashboard has rate, workers and protection on the left; C's median is live while
    traffic runs. Run sends 8 s of traffic. ``press_run(rate=20, workers=10, timeout_ms=0,
    bulkhead=0, slow_at=2, slow_to=1000, live=False)`` moves the controls first; see
    :meth:`run_controls`.
    """

    TITLE = "Cascading failure: a → b → c"
    BUTTON = "Run 8 s of traffic"
    OTHER_KEYWORDS = ("slow_at", "slow_to", "live")

    def __init__(self, lab: Lab, workers: int = 10, prefix: str = "") -> None:
        self.lab, self.workers = lab, workers
        self.c = lab.service(f"{prefix}c", HEALTHY_C, workers=workers)
        self.b = lab.service(f"{prefix}b", B_WORK_MS, workers=workers, calls=[self.c])
        self.a = lab.service(f"{prefix}a", A_WORK_MS, workers=workers, calls=[self.b])
        self.services = (self.a, self.b, self.c)
        self.result: CascadeResult | None = None

    # ----- knobs -----------------------------------------------------------------------
    def set_workers(self, workers: int) -> None:
        """Give every service a pool of ``workers``."""
        for svc in self.services:
            svc.set(workers=workers)
        self.workers = workers

    def protect(self, timeout_ms: float | None = None, local_workers: int | None = None) -> None:
        """Protect ``a``: a timeout on its call to ``b``, and/or a bulkhead for ``/local``.

        ``None`` removes the protection.
        """
        self.a.set(call_timeout_ms=timeout_ms, local_workers=local_workers)

    def theory_w_ms(self, c_median_ms: float = 50) -> float:
        """Mean time a request spends in ``a`` (its work plus ``b`` plus ``c``), in ms."""
        return A_WORK_MS + B_WORK_MS + c_latency(c_median_ms).mean_ms()

    def overhead_ms(self) -> float:
        """The lab's own cost of a call through the chain (also warms the connections)."""
        return self.lab.overhead_ms(self.a)

    # ----- running ---------------------------------------------------------------------
    def start(self, rate: float = 20, duration: float = 8, local_rate: float = 10,
              slow_at: float | None = None, slow_to: float = 1000, c_median_ms: float = 50,
              burst_at: float | None = None, main_timeout_ms: float = 3000,
              local_timeout_ms: float = 1000) -> CascadeRun:
        """Start open-loop traffic: ``rate``/s to ``a`` and ``local_rate``/s to ``a/local``.

        C starts at ``c_median_ms``; at ``slow_at`` s its median becomes ``slow_to`` ms.
        From ``burst_at`` s a second generator doubles the traffic to ``a``. Users give
        up after ``main_timeout_ms`` (``local_timeout_ms`` on ``/local``). Once the last user
        has given up, C is healthy again and the run waits until every service has drained.
        """
        require(rate > 0 and local_rate > 0, "rate and local_rate must be above 0 requests/s.",
                "e.g. rate=20, local_rate=10")
        require(duration > 0, f"duration must be above 0 s, got {duration}.")
        require(slow_at is None or 0 <= slow_at < duration,
                f"slow_at must be between 0 and the duration ({duration} s), got {slow_at}.",
                "or None to keep C as it is")
        require(burst_at is None or 0 <= burst_at < duration,
                f"burst_at must be between 0 and the duration ({duration} s), got {burst_at}.")
        slow_model = c_latency(slow_to)
        self.c.set(latency=c_latency(c_median_ms))
        quiet_gc()
        names = tuple(s.name for s in self.services)
        result = CascadeResult(rate, duration, self.workers, Recorder(f"{names[0]} /"),
                               Recorder(f"{names[0]} /local"), Recorder("burst"),
                               slow_at=slow_at, names=names)  # type: ignore[arg-type]
        self.result = result
        coro = self._scenario(result, local_rate, slow_model, burst_at, main_timeout_ms,
                              local_timeout_ms)
        return CascadeRun(self.lab.submit(coro), result)

    def run(self, **kwargs: Any) -> CascadeResult:
        """:meth:`start` and wait for the end; returns the :class:`CascadeResult`."""
        return self.start(**kwargs).wait()

    async def _scenario(self, result: CascadeResult, local_rate: float,
                        slow_model: LatencyModel, burst_at: float | None,
                        main_timeout_ms: float, local_timeout_ms: float) -> None:
        session, seed = self.lab.session, self.lab.seed
        stop_gauges = asyncio.Event()
        origin = asyncio.get_running_loop().time()
        sampler = asyncio.create_task(self._sample(result, origin, stop_gauges))
        jobs = [load.open_loop(session, self.a.url, result.rate, result.duration, result.main,
                               main_timeout_ms, seed=seed),
                load.open_loop(session, self.a.url + "local", local_rate, result.duration,
                               result.local, local_timeout_ms, seed=seed)]
        if result.slow_at is not None:
            jobs.append(self._later(result.slow_at,
                                    lambda: self._slow_down(result, slow_model, origin)))
        if burst_at is not None:
            jobs.append(self._burst(result, burst_at, main_timeout_ms))
        over = result.duration + max(main_timeout_ms, local_timeout_ms) / 1000
        jobs.append(self._later(over, lambda: self.c.set(latency=HEALTHY_C)))
        try:
            await asyncio.gather(*jobs)
            await self._drain()
        finally:
            stop_gauges.set()
            await sampler

    def _slow_down(self, result: CascadeResult, model: LatencyModel, origin: float) -> None:
        result.slowed_t = to_model(asyncio.get_running_loop().time() - origin)
        result.calls_to_b_at_slow = self.b.received
        result.inside_before_c = max(0, self.a.pool.busy - self.c.pool.busy - self.c.pool.waiting)
        self.c.set(latency=model)

    async def _burst(self, result: CascadeResult, at: float, timeout_ms: float) -> None:
        await asyncio.sleep(to_wall(at))
        await load.open_loop(self.lab.session, self.a.url, result.rate, result.duration - at,
                             result.burst, timeout_ms, seed=f"{self.lab.seed}:burst")

    @staticmethod
    async def _later(at: float, action: Callable[[], Any]) -> None:
        await asyncio.sleep(to_wall(at))
        action()

    async def _sample(self, result: CascadeResult, origin: float, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            result.gauges.append(self.reading(to_model(loop.time() - origin)))
            try:
                await asyncio.wait_for(stop.wait(), to_wall(GAUGE_EVERY_S))
            except asyncio.TimeoutError:
                pass

    def reading(self, t: float) -> GaugeReading:
        """The gauges of every service now (call it on the lab's loop)."""
        median = self.c.latency.quantile_ms(0.5)
        return GaugeReading(t, {s.name: s.in_flight for s in self.services},
                            {s.name: s.pool.busy for s in self.services},
                            {s.name: s.pool.waiting for s in self.services}, median,
                            self.b.received)

    async def _drain(self, limit_s: float = 30.0) -> None:
        """Wait until no request is left inside any service (abandoned work included)."""
        deadline = asyncio.get_running_loop().time() + to_wall(limit_s)
        while any(s.in_flight for s in self.services):
            if asyncio.get_running_loop().time() > deadline:
                raise LabError(f"the services still had work {limit_s:g} s after the traffic "
                               "ended.", "create a new lab: lab = Lab()")
            await asyncio.sleep(to_wall(GAUGE_EVERY_S))

    # ----- Little's law ------------------------------------------------------------------
    def little(self, rate: float = 20, c_median_ms: float = 150,
               duration: float = 5) -> LittlePoint:
        """Steady traffic with C at ``c_median_ms``: in flight at ``a`` against λ·W."""
        result = self.run(rate=rate, duration=duration, c_median_ms=c_median_ms,
                          local_rate=1)
        start = min(1.0, duration / 4)  # skip the first second: the pipeline is filling
        steady = window(result.main, start, duration)
        return LittlePoint(rate, steady.stats()["mean"],
                           result.mean_in_flight(self.a.name, start, duration),
                           self.theory_w_ms(c_median_ms), self.workers)

    # ----- the dashboard ----------------------------------------------------------------
    def make_controls(self) -> dict[str, Any]:
        import ipywidgets as w

        return {
            "rate": w.IntSlider(20, 5, 60, 5, description="rate /s"),
            "workers": w.IntSlider(self.workers, 2, 40, 1, description="workers K"),
            "timeout_ms": w.IntSlider(0, 0, 3000, 50, description="a timeout"),
            "bulkhead": w.IntSlider(0, 0, 10, 1, description="/local own"),
        }

    def extra_widgets(self) -> list[Any]:
        """C's median: live, it slows C down while traffic runs."""
        import ipywidgets as w

        self.c_slider = w.IntSlider(50, 50, 3000, 50, description="C median",
                                    continuous_update=True)
        self.c_slider.observe(lambda change: self.c.set(latency=c_latency(change["new"])),
                              names="value")
        return [self.c_slider]

    def make_board(self, widgets: list[Any]) -> Dashboard:
        """The plain dashboard, with a note on the controls under the button."""
        import ipywidgets as w

        note = w.HTML("<small>timeout 0 = none; '/local own' 0 = shared pool. "
                      "Drag <b>C median</b> while traffic runs.</small>")
        return Dashboard(self.TITLE, [*widgets, note], self.draw)

    def run_controls(self, rate: int, workers: int, timeout_ms: int, bulkhead: int,
                     slow_at: float | None = None, slow_to: float = 1000,
                     live: bool = True) -> LiveView | CascadeResult:
        """8 s of traffic at ``rate``/s with ``workers`` per service, a's ``timeout_ms``
        (0: none) and ``bulkhead`` workers of /local's own (0: shared pool); C healthy until
        you move its slider, or ``slow_at``/``slow_to`` slow it on cue. With ``live=False``
        the run is measured without redrawing (drawing competes for the CPU, which matters
        at small time scales), drawn once at the end, and its result returned."""
        self.set_workers(workers)
        self.protect(timeout_ms or None, bulkhead or None)
        self.c_slider.value = 50
        run = self.start(rate=rate, duration=8, slow_at=slow_at, slow_to=slow_to)
        if live:
            return self.board.watch(run.done, self.summary, hz=4)
        return self.show(run.wait())

    def summary(self) -> str:
        """One line: the gauges now (or at the end) and how /local did in the last second."""
        r = self.result
        if r is None or not r.gauges:
            return "no traffic yet: press Run"
        g = r.gauges[-1]
        parts = [f"{n} {g.busy[n]}/{r.workers} busy +{g.waiting[n]} waiting" for n in r.names]
        end = min(g.t, r.duration)
        recent = window(r.local, max(0.0, end - 1.0), end)
        local = (f"/local in the last second of traffic: p99 {p99_all(recent):.0f} ms, "
                 f"{recent.error_rate():.0%} failed" if len(recent) else "/local: no calls yet")
        full = ""
        if r.slow_at is not None and g.t > r.slow_at:
            fill = r.seconds_to_fill()
            full = ("; a's pool not full" if math.isnan(fill)
                    else f"; a's pool full {fill:.2f} s after C slowed down")
        return (f"t={g.t:.1f} s, C median {g.c_median_ms:.0f} ms; " + ", ".join(parts)
                + f"{full}; {local}; main path {r.main.error_rate():.0%} failed so far")

    def draw(self, ax: Any) -> None:
        """In flight per service over time (left axis); /local latency dots (right axis)."""
        r = self.result
        if r is None:
            return
        draw_gauges(ax, r)
        twin = getattr(self, "_twin", None)
        if twin is None or twin.figure is not ax.figure:
            twin = self._twin = ax.twinx()
        twin.clear()
        draw_local(twin, r.local.samples)


@dataclass(frozen=True)
class LittlePoint:
    """Little's law at ``a``: time-averaged in flight against λ·W (W measured)."""

    rate: float
    w_ms: float
    in_flight: float
    theory_w_ms: float
    workers: int

    @property
    def lambda_w(self) -> float:
        """λ·W with the measured W: what Little's law says is in flight."""
        return self.rate * self.w_ms / 1000


def draw_gauges(ax: Any, result: CascadeResult) -> None:
    """Lines of requests in flight in each service over time, the pool size K dashed."""
    gauges = list(result.gauges)
    ts = [g.t for g in gauges]
    for name, colour in zip(result.names, PALETTE, strict=False):
        ax.plot(ts, [g.in_flight[name] for g in gauges], color=colour, label=f"{name} in flight")
    ax.axhline(result.workers, color="black", linestyle="--", linewidth=1,
               label=f"K = {result.workers} workers")
    if result.slow_at is not None:
        ax.axvline(result.slow_at, color=PALETTE[3], linestyle=":", label="C slows down")
    ax.set_xlim(0, max([result.duration + 1, *ts]))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("time (model s)")
    ax.set_ylabel("requests in flight")
    ax.legend(loc="upper left", fontsize=7)


def draw_local(ax: Any, samples: Sequence[Sample], colour: str = PALETTE[2],
               label: str = "/local") -> None:
    """/local latencies in seconds as dots (ok) and crosses (failed) on a right-hand axis."""
    ok = [s for s in samples if s.ok]
    bad = [s for s in samples if not s.ok]
    ax.plot([s.t for s in ok], [s.ms / 1000 for s in ok], ".", color=colour, markersize=4,
            label=f"{label} ok (s, right)")
    ax.plot([s.t for s in bad], [s.ms / 1000 for s in bad], "x", color=PALETTE[5],
            markersize=4, label=f"{label} failed")
    ax.set_ylim(bottom=0, top=max([1.1, *(s.ms / 1000 * 1.1 for s in samples)]))
    ax.yaxis.tick_right()
    # Labels inside the plot: the shared figure leaves no margin on the right.
    ax.tick_params(axis="y", direction="in", pad=-22, labelsize=7, colors=PALETTE[2])
    ax.legend(loc="upper right", fontsize=7)


def draw_side_by_side(ax: Any, runs: dict[str, CascadeResult]) -> None:
    """/local latency over time for each labelled run (failures count at their timeout)."""
    for (label, result), colour in zip(runs.items(), (PALETTE[3], PALETTE[0], PALETTE[2]),
                                       strict=False):
        samples = result.local.samples
        ax.plot([s.t for s in samples], [s.ms for s in samples], ".", color=colour,
                markersize=4, label=label)
        if result.slow_at is not None:
            ax.axvline(result.slow_at, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("time (model s); dotted: C slows down")
    ax.set_ylabel("/local latency (ms)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize=8)


def compare(results: dict[str, CascadeResult], start: float) -> list[dict[str, Any]]:
    """One row per run: /local and main-path figures for requests sent after ``start``."""
    rows = []
    for label, r in results.items():
        local, main = window(r.local, start, r.duration), window(r.main, start, r.duration)
        rows.append({"run": label, "local_p99": p99_all(local), "local_failed": local.error_rate(),
                     "main_p99": p99_all(main), "main_failed": main.error_rate(),
                     "a_peak": r.peak(r.names[0])})
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`compare` as aligned text."""
    lines = [f"{'':28} {'/local p99':>10} {'failed':>7} {'main p99':>9} {'failed':>7} "
             f"{'a peak':>7}"]
    for r in rows:
        lines.append(f"{r['run']:28} {r['local_p99']:8.0f}ms {r['local_failed']:7.0%} "
                     f"{r['main_p99']:7.0f}ms {r['main_failed']:7.0%} {r['a_peak']:7d}")
    return "\n".join(lines)


# ----- timeouts: what a timeout at a percentile costs on healthy calls ----------------------
@dataclass(frozen=True)
class TimeoutPoint:
    """A timeout at ``percentile`` of the healthy downstream latency, and what it cut off."""

    percentile: float
    timeout_ms: float
    requests: int
    timeouts: int

    @property
    def measured(self) -> float:
        return self.timeouts / self.requests

    @property
    def theory(self) -> float:
        return 1 - self.percentile / 100

    def share(self) -> Estimate:
        """The measured share of healthy calls cut off, with its (Wilson) interval."""
        return share(self.timeouts, self.requests)

    def merged(self, other: TimeoutPoint) -> TimeoutPoint:
        """This point and ``other`` (the same percentile) as one bigger sample."""
        require(other.percentile == self.percentile, "merge points of the same percentile.")
        return TimeoutPoint(self.percentile, self.timeout_ms, self.requests + other.requests,
                            self.timeouts + other.timeouts)


class TimeoutExperiment:
    """``b → c`` as in the cascade, healthy, with large pools so only the timeout matters.

    ``b``'s timeout on its call to ``c`` is set at a percentile of C's healthy
    latency, LogNormal(50, 0.8), plus the lab's own overhead for one hop (measured
    first). Every call that C answers later than that fails at ``b``.
    """

    def __init__(self, lab: Lab, prefix: str = "t_", workers: int = 50) -> None:
        self.lab = lab
        self.c = lab.service(f"{prefix}c", HEALTHY_C, workers=workers)
        self.b = lab.service(f"{prefix}b", B_WORK_MS, workers=workers, calls=[self.c])
        self.points: list[TimeoutPoint] = []
        self.hop_overhead_ms: float | None = None

    @staticmethod
    def c_ms(percentile: float) -> float:
        """The ``percentile`` of C's healthy latency in ms (no overhead)."""
        require(isinstance(percentile, (int, float)) and 0 < percentile < 100,
                f"percentile must be between 0 and 100, got {percentile!r}.",
                "e.g. 99 for the p99, 99.9 for the p99.9")
        return HEALTHY_C.quantile_ms(percentile / 100)

    def timeout_for(self, percentile: float) -> float:
        """The timeout in ms at that percentile, with the lab's one-hop overhead added."""
        if self.hop_overhead_ms is None:
            self.hop_overhead_ms = self.lab.overhead_ms(self.c)
        return self.c_ms(percentile) + self.hop_overhead_ms

    def measure(self, percentile: float = 99, requests: int = 1000,
                users: int = 10) -> TimeoutPoint:
        """``requests`` healthy calls through ``b`` with its timeout at C's ``percentile``.

        Few users at a time keep the lab's own CPU use, and so its overhead, low.
        """
        require(isinstance(requests, int) and requests >= 10,
                f"requests must be a whole number of at least 10, got {requests!r}.",
                "a 1% effect needs about 1000 requests to show")
        timeout = self.timeout_for(percentile)
        self.b.set(call_timeout_ms=timeout)
        quiet_gc()
        try:
            record = self.lab.closed_loop(self.b, users, requests, progress=False)
        finally:
            self.b.set(call_timeout_ms=None)
        point = TimeoutPoint(percentile, timeout, requests, record.errors)
        self.points.append(point)
        return point

    def dashboard(self) -> Dashboard:
        """A percentile slider and a Measure button; bars of measured against 1 − p."""
        import ipywidgets as w

        self.slider = w.SelectionSlider(options=[50, 75, 90, 95, 99, 99.9], value=99,
                                        description="timeout at p",
                                        style={"description_width": "initial"})
        button = w.Button(description="Measure 1000 calls", button_style="primary",
                          layout=w.Layout(width="auto"))
        button.on_click(lambda _: self.press_measure())
        self.board = Dashboard("The price of a timeout on healthy calls", [self.slider, button],
                               self.draw)
        return self.board

    def press_measure(self, percentile: float | None = None, requests: int = 1000) -> TimeoutPoint:
        """What the Measure button does (``percentile`` moves the slider first)."""
        if percentile is not None:
            self.slider.value = percentile
        point = self.measure(self.slider.value, requests)
        self.board.refresh(self.summary(point))
        return point

    @staticmethod
    def summary(point: TimeoutPoint) -> str:
        return (f"timeout at the p{point.percentile:g} = {point.timeout_ms:.0f} ms: "
                f"{point.timeouts} of {point.requests} healthy calls timed out "
                f"({point.measured:.1%}); theory 1 - p = {point.theory:.1%}")

    def draw(self, ax: Any) -> None:
        """Measured share of healthy calls cut off, next to the theory 1 − p."""
        latest: dict[float, TimeoutPoint] = {p.percentile: p for p in self.points}
        points = [latest[k] for k in sorted(latest)]
        xs = range(len(points))
        ax.bar([x - 0.2 for x in xs], [p.theory for p in points], 0.4, color=PALETTE[1],
               label="theory 1 - p")
        ax.bar([x + 0.2 for x in xs], [p.measured for p in points], 0.4, color=PALETTE[0],
               label="measured")
        ax.set_xticks(list(xs), [f"p{p.percentile:g}\n{p.timeout_ms:.0f} ms" for p in points])
        ax.set_ylim(0.0005, 1)
        ax.set_yscale("log")
        ax.set_ylabel("share of healthy calls timed out")
        ax.legend(loc="upper right", fontsize=8)


# ----- bulkheads, side by side ---------------------------------------------------------------
class BulkheadComparison:
    """The same bad day twice on a :class:`CascadeExperiment`: shared pool, then a bulkhead."""

    def __init__(self, cascade: CascadeExperiment, slow_at: float = 2, slow_to: float = 1000,
                 rate: float = 20) -> None:
        self.cascade, self.slow_at, self.slow_to, self.rate = cascade, slow_at, slow_to, rate
        self.results: dict[str, CascadeResult] = {}

    def run(self, local_workers: int = 2,
            without: CascadeResult | None = None) -> dict[str, CascadeResult]:
        """Run without a bulkhead (or reuse ``without``), then with ``local_workers`` for /local."""
        require(isinstance(local_workers, int) and local_workers >= 1,
                f"local_workers must be a whole number of at least 1, got {local_workers!r}.",
                "/local needs few workers: e.g. 2")
        settings = {"rate": self.rate, "duration": 8, "slow_at": self.slow_at,
                    "slow_to": self.slow_to}
        cascade = self.cascade
        cascade.protect()
        if without is None:
            without = cascade.run(**settings)
        cascade.protect(local_workers=local_workers)
        try:
            with_bulkhead = cascade.run(**settings)
        finally:
            cascade.protect()
        self.results = {"shared pool": without,
                        f"bulkhead ({local_workers} workers)": with_bulkhead}
        return self.results

    def collapse_start(self) -> float:
        """From when to compare: 1.5 s after the shared pool was full."""
        shared = next(iter(self.results.values()))
        fill = shared.seconds_to_fill()
        return self.slow_at + (0.5 if math.isnan(fill) else fill) + 1.5

    def rows(self) -> list[dict[str, Any]]:
        """:func:`compare` of the runs, for requests sent after :meth:`collapse_start`."""
        return compare(self.results, self.collapse_start())

    def summary(self) -> str:
        rows = self.rows()
        return "; ".join(f"{r['run']}: /local p99 {r['local_p99']:.0f} ms, "
                         f"{r['local_failed']:.0%} failed, main {r['main_failed']:.0%} failed"
                         for r in rows) + " (C slow, A's pool full)"

    def dashboard(self) -> Dashboard:
        """A slider for /local's own workers and a Compare button (two 8 s runs)."""
        import ipywidgets as w

        self.slider = w.IntSlider(2, 1, 10, description="/local own")
        button = w.Button(description="Compare (2 x 8 s)", button_style="primary",
                          layout=w.Layout(width="auto"))
        button.on_click(lambda _: self.press_compare())
        self.board = Dashboard("Bulkhead: /local without vs with its own workers",
                               [self.slider, button], self.draw)
        return self.board

    def press_compare(self, local_workers: int | None = None,
                      without: CascadeResult | None = None) -> dict[str, CascadeResult]:
        """What the Compare button does; ``without`` reuses a run you already have."""
        if local_workers is not None:
            self.slider.value = local_workers
        self.run(self.slider.value, without)
        self.board.refresh(self.summary())
        return self.results

    def draw(self, ax: Any) -> None:
        if self.results:
            draw_side_by_side(ax, self.results)


def downstream_p99_ms() -> float:
    """The p99 of a healthy call from ``a`` to ``b``: b's 10 ms plus C's p99 (about 332 ms)."""
    return B_WORK_MS + HEALTHY_C.quantile_ms(0.99)


# ----- the exercise's scenario ---------------------------------------------------------------
PROTECT_RATE = 20.0          # requests/s to a's main endpoint
PROTECT_LOCAL_RATE = 20.0    # requests/s to a/local
PROTECT_SLOW_MS = 1000.0     # C's median while slow
PROTECT_USER_TIMEOUT_MS = 2000.0  # users of the main endpoint give up after this
PROTECT_HEALTHY_CALLS = 300
PROTECT_HEALTHY_FAIL_MAX = 0.03  # a timeout may cost at most 3% of healthy calls
PROTECT_PHASES = {"normal": (1.0, 3.0), "burst": (4.0, 6.0)}
_COUNTER = itertools.count(1)


@dataclass
class ProtectionReport:
    """What the exercise scenario measured for one protection of ``a``."""

    timeout_ms: float | None
    local_workers: int | None
    workers: int
    downstream_p99_ms: float
    healthy: Recorder
    slow: CascadeResult | None = None

    def healthy_failed(self) -> float:
        return self.healthy.error_rate()

    def timeout_loss(self) -> float:
        """The share of healthy calls the timeout cuts off by C's own distribution (no lab
        overhead): P(b's work + C > timeout). 0 with no timeout."""
        if self.timeout_ms is None:
            return 0.0
        room = self.timeout_ms - B_WORK_MS
        if room <= 0:
            return 1.0
        return 1 - NormalDist().cdf(math.log(room / HEALTHY_C.median) / HEALTHY_C.sigma)

    def healthy_too_lossy(self) -> bool:
        """True when the protection surely costs more than 3% of healthy calls: the whole
        (Wilson) interval of the measured lost share is above 3%, and the timeout itself
        cuts off more than half of that by C's distribution. A timeout set sensibly is never
        blamed for the extra calls a busy machine pushes past it."""
        measured = share(self.healthy.errors, len(self.healthy))
        return (measured.low > PROTECT_HEALTHY_FAIL_MAX
                and self.timeout_loss() > PROTECT_HEALTHY_FAIL_MAX / 2)

    def local(self, phase: str) -> Recorder:
        """/local requests sent in ``phase`` (``normal`` or ``burst``) while C was slow."""
        assert self.slow is not None
        return window(self.slow.local, *PROTECT_PHASES[phase])

    def main(self, phase: str) -> Recorder:
        """Main-endpoint requests (first generator) sent in ``phase`` while C was slow."""
        assert self.slow is not None
        return window(self.slow.main, *PROTECT_PHASES[phase])


@contextmanager
def scratch_cascade(workers: int = 10) -> Iterator[CascadeExperiment]:
    """A fresh ``a → b → c`` in the learner's current lab (or a private one), removed after.

    C's random draws are seeded the same way every time, so a check repeats.
    """
    from labsupport.runtime import lab as lab_module

    current = lab_module.current()
    own = current is None or current.closed
    lab = Lab(seed=2) if own else current
    exp = CascadeExperiment(lab, workers, prefix=f"chk_m02_{next(_COUNTER)}_")
    exp.c.rng.seed("m02-protection:c")
    try:
        yield exp
    finally:
        if own:
            lab.close()
        else:
            for svc in exp.services:
                lab.remove(svc.name)


def measure_protection(protect: Callable[[Service, float], Any],
                       slow: bool = True) -> ProtectionReport:
    """Run the exercise's scenario on real services with ``protect(a, downstream_p99_ms)``.

    1. Healthy: 300 calls (10 users) through ``a`` with C healthy.
    2. (``slow=True``) C slow (median 1 s) from the start for 6 s: 20 requests/s to
       ``a`` and 20/s to ``a/local``; from 3 s a burst doubles the traffic to ``a``.
    """
    with scratch_cascade() as exp:
        p99 = downstream_p99_ms()
        exp.overhead_ms()  # warms the connections; its value is not needed
        protect(exp.a, p99)
        report = ProtectionReport(exp.a.call_timeout_ms,
                                  exp.a.local_pool.capacity if exp.a.local_pool else None,
                                  exp.a.pool.capacity, p99, Recorder("healthy"))
        quiet_gc()
        report.healthy = exp.lab.closed_loop(exp.a, 10, PROTECT_HEALTHY_CALLS, progress=False)
        if slow and not report.healthy_too_lossy():
            report.slow = exp.run(rate=PROTECT_RATE, duration=6, local_rate=PROTECT_LOCAL_RATE,
                                  slow_at=0, slow_to=PROTECT_SLOW_MS, burst_at=3.0,
                                  main_timeout_ms=PROTECT_USER_TIMEOUT_MS)
        return report
