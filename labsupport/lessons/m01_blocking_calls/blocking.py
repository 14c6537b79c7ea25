"""Module 01 experiments: chains, fan-out, the tail at scale, and availability.

Each experiment builds its services once on a :class:`~labsupport.runtime.lab.Lab` and
changes their knobs between runs, so a dashboard can re-run it as often as the
learner likes without starting new servers.
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any

from labsupport.kit.dashboard import PALETTE, Dashboard, LiveView, latency_histogram
from labsupport.kit.evidence import Estimate, quantile, share
from labsupport.kit.experiment import Experiment
from labsupport.runtime import settings
from labsupport.runtime.errors import require
from labsupport.runtime.faults import Faults
from labsupport.runtime.lab import Lab, LoadRun
from labsupport.runtime.latency import Constant, LatencyModel, LogNormal, Normal, Spikes, as_model
from labsupport.runtime.load import Shot, fire
from labsupport.runtime.metrics import Recorder, percentile
from labsupport.runtime.services import Service, fetch
from labsupport.runtime.settings import to_wall


def latency_model(kind: str, mean_ms: float, spread_ms: float) -> LatencyModel:
    """A model from dashboard controls: ``constant``, ``normal`` or ``lognormal``."""
    require(kind in ("constant", "normal", "lognormal"),
            f"Unknown distribution {kind!r}.", "use 'constant', 'normal' or 'lognormal'")
    if kind == "constant" or spread_ms == 0:
        return Constant(mean_ms)
    if kind == "normal":
        return Normal(mean_ms, spread_ms)
    sigma = math.sqrt(math.log(1 + (spread_ms / max(mean_ms, 1e-9)) ** 2))
    return LogNormal(mean_ms / math.exp(sigma ** 2 / 2), sigma)  # same mean and sd


def expected_ms(model: LatencyModel) -> float:
    """The true mean of what ``model`` draws, in ms.

    A :class:`Normal` draw below 0 becomes 0, so with a large spread its mean is
    E[max(0, X)] = μ·Φ(μ/σ) + σ·φ(μ/σ), above μ (Normal(100, 400) averages 215 ms, not 100).
    Every other model's own ``mean_ms()`` is already exact.
    """
    if isinstance(model, Normal) and model.sd > 0:
        z = model.mean / model.sd
        unit = NormalDist()
        return model.mean * unit.cdf(z) + model.sd * unit.pdf(z)
    return model.mean_ms()


@dataclass
class TwinGaps:
    """What the users of a chain and of two twins waited, round by round (ms).

    The *steady* twin's services always take their true mean; the *one-varied* twin is steady
    except its first service, which draws like the chain's first service.
    """

    chain_ms: list[float]
    steady_ms: list[float]
    one_ms: list[float]
    one_model: LatencyModel

    @property
    def gaps(self) -> list[float]:
        """The chain's wait minus the steady twin's, round by round."""
        return [a - b for a, b in zip(self.chain_ms, self.steady_ms, strict=True)]

    @property
    def one_gaps(self) -> list[float]:
        """The one-varied twin's wait minus the steady twin's: one service's variation."""
        return [a - b for a, b in zip(self.one_ms, self.steady_ms, strict=True)]

    def one_true_ms(self, q: float = 0.99) -> float:
        """What the one-varied gaps' ``q`` quantile would be with no lab noise: the model's."""
        return self.one_model.quantile_ms(q) - expected_ms(self.one_model)

    def noise_ms(self, q: float = 0.99) -> float:
        """How far the lab's noise pushed a known gap quantile up: the upper end of the
        one-varied gaps' ``q`` quantile interval minus its true value (0 when it did not).

        The noise that does not cancel between twins grows with how long one waited longer
        than the other; a narrower spread is pushed at least as far, so this is a safe margin
        for the chain's gaps too, and it grows on a busy machine.
        """
        return max(0.0, quantile(self.one_gaps, q).high - self.one_true_ms(q))

    def extend(self, more: TwinGaps) -> TwinGaps:
        """Pool ``more`` rounds into these (for a claim that asks for more samples)."""
        for mine, theirs in ((self.chain_ms, more.chain_ms), (self.steady_ms, more.steady_ms),
                             (self.one_ms, more.one_ms)):
            mine.extend(theirs)
        return self

    def summary(self, q: float = 0.99) -> str:
        def ms(samples: list[float]) -> str:
            est = quantile(samples, q)
            return f"{est.value:.0f} ms ({est.low:.0f} to {est.high:.0f})"

        p = f"p{q * 100:g}"
        return (f"{len(self.gaps)} rounds. Users waited {p} {ms(self.chain_ms)} on the chain, "
                f"{ms(self.steady_ms)} on the steady twin. Gap chain - steady twin: {p} "
                f"{ms(self.gaps)}. Known gap, one-varied twin - steady twin: {p} "
                f"{ms(self.one_gaps)}, true {self.one_true_ms(q):.0f} ms: the lab's noise "
                f"adds up to {self.noise_ms(q):.0f} ms.")


class ChainExperiment(Experiment):
    """Up to ``max_n`` services; the first ``n`` call each other in series.

    Its dashboard has sliders for N and the latency distribution and one mean per service;
    Run sends 3 s of live traffic. ``press_run(n=4, kind="normal", spread=100,
    means=[200, 200])`` moves the controls (``means``: one per service, or fewer) first.
    """

    TITLE = "A chain of synchronous calls"
    BUTTON = "Run 3 s of traffic"
    OTHER_KEYWORDS = ("means",)

    def __init__(self, lab: Lab, n: int = 3, latency: LatencyModel | float = 500,
                 max_n: int = 6, prefix: str = "chain") -> None:
        require(1 <= n <= max_n, f"n must be between 1 and {max_n}, got {n}.")
        self.lab = lab
        self.services = lab.chain(max_n, latency, prefix=prefix)
        self.n = n
        self.configure(n, latency)
        self.recorder = Recorder("chain")
        self.run_handle: LoadRun | None = None

    def configure(self, n: int,
                  latency: LatencyModel | float | Sequence[LatencyModel | float]) -> None:
        """Use the first ``n`` services; ``latency`` is one model for all, or one per service."""
        require(1 <= n <= len(self.services),
                f"n must be between 1 and {len(self.services)}, got {n}.")
        models = list(latency) if isinstance(latency, (list, tuple)) else [latency] * n
        require(len(models) >= n, f"give a latency for each of the {n} services.")
        self.n = n
        for i, svc in enumerate(self.services):
            calls = [self.services[i + 1]] if i + 1 < n else []
            if i < n:
                svc.set(latency=as_model(models[i]), calls=calls)
            else:
                svc.set(calls=calls)

    @property
    def entry(self) -> Service:
        return self.services[0]

    def theory_ms(self) -> float:
        """Sum of the true mean latencies of the services in the chain (see :func:`expected_ms`)."""
        return sum(expected_ms(s.latency) for s in self.services[: self.n])

    def overhead_ms(self) -> float:
        """The lab's own cost of a call through this chain (see :meth:`Lab.overhead_ms`)."""
        return self.lab.overhead_ms(self.entry)

    def side_by_side(self, twins: Sequence[Sequence[LatencyModel | float]],
                     requests: int = 1000, users: int = 4) -> list[list[float]]:
        """``users`` users each send a request to this chain and, at the same moment, one to
        each twin chain (twin ``k``'s ``i``-th service draws ``twins[k][i]``), wait for every
        answer and go again, ``requests`` rounds in all. Returns what the users of each chain
        waited (ms): this chain first, then the twins.

        A round leaves together and meets the same hiccups of the machine, so compare the
        lists request by request. Users who wait for their answers (a closed loop) send less
        when the machine is slow, so the lab never drowns in its own traffic. A failed call
        counts as endless.
        """
        require(isinstance(requests, int) and requests >= 1, "requests must be 1 or more.")
        require(all(len(twin) == self.n for twin in twins),
                f"give each twin one latency per service ({self.n}).")
        entries = [self.entry]
        made: list[Service] = []
        for k, models in enumerate(twins, start=1):
            twin = self.lab.chain(self.n, 0, prefix=f"{self.entry.name}_twin{k}_")
            for svc, model in zip(twin, models, strict=True):
                svc.set(latency=as_model(model))
            entries.append(twin[0])
            made += twin
        rounds: list[list[float]] = []

        async def one(url: str) -> float:
            answer = await fetch(self.lab.session, url, None)
            return answer["ms"] if 200 <= answer["status"] < 300 else math.inf

        async def user() -> None:
            while len(rounds) < requests:
                rounds.append([])  # claim a slot before waiting
                slot = len(rounds) - 1
                rounds[slot] = list(await asyncio.gather(*(one(s.url) for s in entries)))

        async def everyone() -> None:
            await asyncio.gather(*(user() for _ in range(min(users, requests))))

        try:
            self.lab.run(everyone())
        finally:
            for svc in made:
                self.lab.remove(svc.name)
        return [list(column) for column in zip(*rounds, strict=True)]

    def steady_twin_gaps(self, requests: int = 1000, users: int = 4) -> TwinGaps:
        """This chain beside a *steady twin*, whose services always take their true mean, and
        a *one-varied twin*, steady except that its first service draws like this chain's
        first service (see :meth:`side_by_side` and :class:`TwinGaps`).

        Round by round, this chain's wait minus the steady twin's is the chain's own
        variation around the sum of the means: the lab's overhead and a busy machine's
        hiccups slow both alike and mostly cancel. The one-varied twin's gap has a known
        answer (one service's variation), so it shows how much noise did not cancel.
        """
        chain = self.services[: self.n]
        steady = [Constant(expected_ms(s.latency)) for s in chain]
        one = [chain[0].latency, *steady[1:]]
        chain_ms, steady_ms, one_ms = self.side_by_side([steady, one], requests, users)
        return TwinGaps(chain_ms, steady_ms, one_ms, chain[0].latency)

    def start(self, rate: float = 10, duration: float = 3) -> LoadRun:
        """Open-loop traffic into the chain in the background."""
        self.run_handle = self.lab.start_open_loop(self.entry, rate, duration)
        self.recorder = self.run_handle.recorder
        return self.run_handle

    def run(self, requests: int = 20, users: int = 5) -> Recorder:
        """``requests`` calls through the chain, ``users`` at a time; returns the record."""
        self.recorder = self.lab.closed_loop(self.entry, users, requests, progress=False)
        return self.recorder

    def summary(self) -> str:
        return (f"chain of {self.n}: {self.recorder.summary()}; "
                f"theory (sum of means) {self.theory_ms():.0f} ms")

    def draw(self, ax) -> None:
        latency_histogram(ax, self.recorder.latencies(), self.theory_ms(), "sum of the means")

    def make_controls(self) -> dict[str, Any]:
        import ipywidgets as w

        return {
            "n": w.IntSlider(self.n, 1, len(self.services), description="services"),
            "kind": w.Dropdown(options=["constant", "normal", "lognormal"], value="normal",
                               description="latency"),
            "spread": w.IntSlider(100, 0, 400, 25, description="spread ms"),
        }

    def extra_widgets(self) -> list[Any]:
        """One mean per service: make one of them slow and watch the total follow it."""
        import ipywidgets as w

        self.mean_sliders = [w.IntSlider(500, 0, 1000, 50, description=f"{s.name} ms")
                             for s in self.services]
        return list(self.mean_sliders)

    def run_controls(self, n: int, kind: str, spread: int,
                     means: Sequence[int] | None = None) -> LiveView:
        """Run 3 s of live traffic with ``n`` services whose latency is ``kind`` with
        ``spread``; ``means`` (one per service, or fewer) first moves the mean sliders."""
        for slider, mean in zip(self.mean_sliders, means or [], strict=False):
            slider.value = mean
        models = [latency_model(kind, s.value, spread) for s in self.mean_sliders]
        self.configure(n, models)
        run = self.start(rate=10, duration=3)
        return self.board.watch(run.done, self.summary)


class FanOutExperiment:
    """A root that calls its leaves in parallel (or, toggled, in series)."""

    def __init__(self, lab: Lab, latencies: Sequence[float] = (100, 200, 500),
                 name: str = "aggregator") -> None:
        self.lab = lab
        self.root, self.leaves = lab.fan_out(len(latencies), 0, name=name)
        for leaf, ms in zip(self.leaves, latencies, strict=True):
            leaf.set(latency=ms)
        self.recorder = Recorder(name)

    def run(self, parallel: bool = True, requests: int = 10) -> Recorder:
        """Call the root ``requests`` times with the leaves called in parallel or in series."""
        self.root.set(parallel=parallel)
        self.recorder = self.lab.closed_loop(self.root, 5, requests, progress=False)
        return self.recorder

    def overhead_ms(self, parallel: bool = True) -> float:
        """The lab's own cost of one aggregated call (see :meth:`Lab.overhead_ms`)."""
        self.root.set(parallel=parallel)
        return self.lab.overhead_ms(self.root)

    def sum_ms(self) -> float:
        return sum(leaf.latency.mean_ms() for leaf in self.leaves)

    def max_ms(self) -> float:
        return max(leaf.latency.mean_ms() for leaf in self.leaves)


@dataclass(frozen=True)
class TailPoint:
    """One fan-out width: the share of requests whose *user* waited past the slow
    threshold, measured with a clock at the user, against 1 - (1 - p)^n.

    ``slow`` counts the users who waited at least ``threshold_ms``; ``leaf_slow`` counts
    the requests in which some leaf *reported* a slow draw (the leaves' own view, printed
    beside it but not used as evidence). ``overhead_share`` is the share of users who
    waited that long in the control arm, where no leaf is ever slow (see
    :meth:`TailAtScale.control`): the lab's own fan-out cost, 0 on an idle machine.
    """

    n: int
    requests: int
    slow: int
    p50_ms: float
    p99_ms: float
    p_slow: float
    leaf_slow: int = 0
    threshold_ms: float = 0.0
    latencies: tuple[float, ...] = ()
    overhead_share: float = 0.0

    @property
    def measured(self) -> float:
        return self.slow / self.requests

    @property
    def theory(self) -> float:
        """1 - (1 - p)^n: a request is fast only if all n leaves were; with a control arm,
        it must also have escaped the lab's own delay: 1 - (1 - p)^n (1 - overhead_share)."""
        return 1 - (1 - self.p_slow) ** self.n * (1 - self.overhead_share)

    def beside(self, control: TailPoint) -> TailPoint:
        """This point with the control arm's share (same width, no slow leaf) in its theory."""
        require(control.n == self.n, "compare with a control of the same width.")
        return replace(self, overhead_share=control.measured)

    def share(self) -> Estimate:
        """The measured share of slow requests with its (Wilson) interval."""
        return share(self.slow, self.requests)

    def merged(self, other: TailPoint) -> TailPoint:
        """This point and ``other`` (the same width) as one bigger sample."""
        require(other.n == self.n, "merge points of the same width only.")
        latencies = self.latencies + other.latencies
        return TailPoint(self.n, self.requests + other.requests, self.slow + other.slow,
                         percentile(latencies, 50), percentile(latencies, 99), self.p_slow,
                         self.leaf_slow + other.leaf_slow, self.threshold_ms, latencies,
                         self.overhead_share)


def _work_ms(call: dict) -> float:
    """How long a leaf said it worked; a call that never answered counts as endless."""
    body = call.get("body") or {}
    return float(body.get("work_ms", math.inf))


class TailAtScale:
    """Fan-out to ``n`` leaves, each slow with probability ``p_slow`` (a spike mixture).

    A request waits for all its leaves, so it is slow when at least one leaf was slow.
    The share of slow requests is measured where it matters, at the user: a request
    counts as slow when its user waited at least ``slow_ms``, as long as one slow leaf
    takes. A user who waited for a slow leaf cannot have waited less; a request that met
    only fast leaves (``fast_ms``) waits that plus the lab's own cost of the fan-out, which
    stays well under ``slow_ms`` even for 100 leaves at a small time scale.
    """

    def __init__(self, lab: Lab, max_n: int = 100, p_slow: float = 0.01,
                 fast_ms: float = 5, slow_ms: float = 300) -> None:
        self.lab, self.p_slow, self.fast_ms, self.slow_ms = lab, p_slow, fast_ms, slow_ms
        model = Spikes(Constant(fast_ms), Constant(slow_ms), p=p_slow)
        self.root, self.leaves = lab.fan_out(max_n, model, name="tail")

    MIN_SCALE = 0.5
    """The smallest time scale a measurement uses: a fan-out of 100 HTTP calls costs a machine
    whose lab serves 2,400 requests a second about 60 ms of wall time, 300 model ms at scale
    0.2, as long as a slow leaf (measured there: half of the requests with no slow leaf
    counted as slow), 120 at 0.5."""

    def measure(self, n: int, requests: int = 100) -> TailPoint:
        """Send ``requests`` one after another through a fan-out of ``n`` leaves (at a time
        scale of at least :attr:`MIN_SCALE`)."""
        require(1 <= n <= len(self.leaves), f"n must be between 1 and {len(self.leaves)}.")
        self.root.set(calls=self.leaves[:n])
        threshold = self.slow_ms
        with settings.scale_at_least(self.MIN_SCALE):
            answers = [self.lab.call(self.root) for _ in range(requests)]
        latencies = tuple(a.ms for a in answers)
        leaf_slow = sum(max(map(_work_ms, (a.body or {}).get("calls", [{}]))) >= self.slow_ms
                        for a in answers)
        return TailPoint(n, requests, sum(ms >= threshold for ms in latencies),
                         percentile(latencies, 50), percentile(latencies, 99), self.p_slow,
                         leaf_slow, threshold, latencies)

    def control(self, n: int, requests: int = 100) -> TailPoint:
        """The control arm: the same fan-out of ``n`` with no leaf ever slow.

        A user who still waited ``slow_ms`` or more waited for the lab itself (a hundred
        HTTP calls cost a busy machine tens of milliseconds, five times that in model time
        at time scale 0.2), not for a slow leaf. Its share enters the prediction through
        :meth:`TailPoint.beside`.
        """
        leaves = self.leaves[:n]
        spikes = leaves[0].latency
        for leaf in leaves:
            leaf.set(latency=Constant(self.fast_ms))
        try:
            return replace(self.measure(n, requests), p_slow=0.0)
        finally:
            for leaf in leaves:
                leaf.set(latency=spikes)

    def sweep(self, ns: Sequence[int] = (1, 10, 30, 100), requests: int = 100,
              progress: bool = True) -> list[TailPoint]:
        """:meth:`measure` for each width in ``ns`` (a progress bar shows the way)."""
        from tqdm.auto import tqdm

        return [self.measure(n, requests) for n in tqdm(ns, desc="fan-out widths",
                                                        disable=not progress, leave=False)]

    @staticmethod
    def draw(points: Sequence[TailPoint], ax) -> None:
        """Measured shares as dots over the theory curve 1 - (1 - p)^n."""
        if not points:
            return
        top, p = max(pt.n for pt in points), points[0].p_slow
        xs = list(range(1, top + 1))
        ax.plot(xs, [1 - (1 - p) ** x for x in xs], color=PALETTE[1], linewidth=2,
                label=f"theory 1-(1-{p:g})^N")
        ax.plot([pt.n for pt in points], [pt.measured for pt in points], "o",
                color=PALETTE[0], markersize=8, label="measured")
        ax.set_xlabel("N leaves per request")
        ax.set_ylabel("share of slow requests")
        ax.set_ylim(0, 1)
        ax.legend(loc="lower right", fontsize=8)


class AvailabilityChain:
    """A chain whose services fail independently; success needs every one to succeed."""

    def __init__(self, lab: Lab, availabilities: Sequence[float] = (0.99, 0.95, 0.98),
                 prefix: str = "avail") -> None:
        self.lab = lab
        self.services = lab.chain(len(availabilities), 0, prefix=prefix)
        self.set(availabilities)

    def set(self, availabilities: Sequence[float]) -> None:
        """Give each service its availability (the share of requests it answers well)."""
        require(len(availabilities) == len(self.services),
                f"give {len(self.services)} availabilities, got {len(availabilities)}.")
        for svc, a in zip(self.services, availabilities, strict=True):
            require(0 <= a <= 1, f"an availability must be between 0 and 1, got {a}.")
            svc.set(faults=Faults(error_rate=round(1 - a, 6)))
        self.availabilities = list(availabilities)
        self.tally = (0, 0)  # (successes, requests) under these availabilities

    def product(self) -> float:
        return math.prod(self.availabilities)

    def measure(self, requests: int = 2000) -> float:
        """The measured end-to-end success rate over ``requests`` calls."""
        rec = self.lab.closed_loop(self.services[0], 10, requests, progress=False)
        self.tally = (self.tally[0] + len(rec) - rec.errors, self.tally[1] + len(rec))
        return 1 - rec.error_rate()

    def success(self) -> Estimate:
        """Every success counted since the availabilities were last set, with its interval."""
        return share(*self.tally)

    def measure_more(self, requests: int = 2000) -> Estimate:
        """``requests`` more calls, pooled with the ones before (for a claim's ``more=``)."""
        self.measure(requests)
        return self.success()

    def dashboard(self) -> Dashboard:
        """A slider per service's availability; Measure sends 2000 requests."""
        import ipywidgets as w

        self.sliders = [w.FloatSlider(a, min=0.8, max=1.0, step=0.005, readout_format=".3f",
                                      description=svc.name)
                        for svc, a in zip(self.services, self.availabilities, strict=True)]
        button = w.Button(description="Measure 2000 requests", button_style="primary",
                          layout=w.Layout(width="auto"))
        button.on_click(lambda _: self.press_measure())
        self.board = Dashboard("Availability multiplies", [*self.sliders, button], self.draw)
        return self.board

    def press_measure(self, requests: int = 2000) -> float:
        """What the Measure button does; returns the measured success rate."""
        self.set([s.value for s in self.sliders])
        self.measured = self.measure(requests)
        self.board.refresh(f"measured end-to-end success {self.measured:.1%} over {requests} "
                           f"requests; product of availabilities {self.product():.1%}")
        return self.measured

    def draw(self, ax) -> None:
        names = [s.name for s in self.services] + ["product", "measured"]
        values = self.availabilities + [self.product(), getattr(self, "measured", 0.0)]
        colors = [PALETTE[4]] * len(self.services) + [PALETTE[1], PALETTE[0]]
        ax.bar(names, values, color=colors)
        ax.set_ylim(min(values + [0.8]) - 0.02, 1.0)
        ax.set_ylabel("share of requests that succeed")


# ----- hedged requests (The Tail at Scale's remedy) -------------------------------------------
HEDGE_LEAF = Spikes(LogNormal(30, 0.3), Constant(1000), p=0.03)
"""A leaf with a slow tail: usually about 30 ms, 3% of the time 1 s (a GC pause, a cold
cache, a busy neighbour: independent of the request, so a second copy is usually fast)."""
BUSY_LEAF = LogNormal(50, 0.3)
"""A leaf with no slow tail, for the run near capacity (one worker: about 19 calls/s)."""


@dataclass
class HedgeRun:
    """One schedule sent to both designs at the same moments (model ms from the send).

    ``hedges`` counts the second copies the caller sent; ``leaf_calls`` counts the calls the
    hedged design's leaf received (its own counter), ``plain_leaf_ms`` what each plain call
    to the leaf took as the caller saw it.
    """

    hedge_after_ms: float
    plain_ms: list[float]
    hedged_ms: list[float]
    plain_leaf_ms: list[float]
    hedges: int
    leaf_calls: int

    @property
    def requests(self) -> int:
        return len(self.hedged_ms)

    def extra_calls(self) -> Estimate:
        """The share of extra calls the hedged design's leaf received (its own count)."""
        return share(self.leaf_calls - self.requests, self.requests)

    def slower_than_hedge(self) -> Estimate:
        """The share of plain leaf calls slower than the hedge delay: the predicted hedges."""
        return share(sum(ms > self.hedge_after_ms for ms in self.plain_leaf_ms),
                     len(self.plain_leaf_ms))

    def summary(self) -> str:
        def tail(samples: list[float]) -> str:
            return (f"p50 {quantile(samples, 0.5).value:.0f}, p99 {quantile(samples, 0.99).value:.0f}"
                    f", p99.9 {quantile(samples, 0.999).value:.0f} ms")

        return (f"{self.requests} requests, hedge after {self.hedge_after_ms:.0f} ms. Plain: "
                f"{tail(self.plain_ms)}. Hedged: {tail(self.hedged_ms)}; {self.hedges} second "
                f"copies sent, the leaf received {self.leaf_calls} calls "
                f"({self.extra_calls().value:.1%} extra).")

    def draw(self, ax) -> None:
        """Both designs' latencies as the share of requests slower than x (log scales): the
        tail is where the curves part."""
        for samples, label, color in ((self.plain_ms, "plain", PALETTE[1]),
                                      (self.hedged_ms, "hedged", PALETTE[0])):
            ordered = sorted(samples)
            n = len(ordered)
            ax.step(ordered, [1 - (i + 1) / n + 1 / (2 * n) for i in range(n)], where="post",
                    color=color, label=f"{label}: p99 {quantile(samples, 0.99).value:.0f} ms")
        ax.axvline(self.hedge_after_ms, color=PALETTE[4], linestyle="--",
                   label=f"hedge after {self.hedge_after_ms:.0f} ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("latency (model ms)")
        ax.set_ylabel("share of requests slower")
        ax.legend(loc="lower left", fontsize=8)


class HedgeExperiment(Experiment):
    """A caller that reaches one slow-tailed leaf two ways, side by side.

    ``/plain`` calls its leaf once. ``/hedged`` calls its own twin leaf and, if no answer
    came within ``hedge_after_ms``, sends a second copy and takes whichever answers first;
    the loser's request is cancelled on the caller's side. (The leaf does not notice: an
    aiohttp server keeps running a handler whose client went away, its default
    ``handler_cancellation=False``, so the loser's work still holds a worker until it ends.)

    Its dashboard chooses when to hedge (the plain leaf's quantile), the rate and the
    requests; Run measures the delay, then sends the same schedule to both designs.
    ``press_run(hedge_at=0.5, rate=12, requests=300)`` moves the controls first.
    """

    TITLE = "Hedged requests: a second copy after a delay"
    BUTTON = "Run"

    def __init__(self, lab: Lab, latency: LatencyModel = HEDGE_LEAF, workers: int = 100,
                 name: str = "hedge") -> None:
        from aiohttp import web

        self.lab, self.hedge_after_ms, self.hedges = lab, 0.0, 0
        self.last: HedgeRun | None = None
        self.plain_leaf = lab.service(f"{name}_leaf_plain", latency, workers=workers)
        self.hedged_leaf = lab.service(f"{name}_leaf_hedged", latency, workers=workers)
        self._web = web
        self.caller = lab.service(f"{name}_caller", 0, routes={"/plain": self._plain,
                                                                "/hedged": self._hedged})

    def set_workers(self, workers: int) -> None:
        """Give both leaves a pool of ``workers`` (few workers: the leaves near capacity)."""
        for leaf in (self.plain_leaf, self.hedged_leaf):
            leaf.set(workers=workers)

    async def _plain(self, request):
        answer = await fetch(self.lab.session, self.plain_leaf.url, None)
        return self._web.json_response({"leaf_ms": answer["ms"]},
                                       status=answer["status"] if answer["status"] > 0 else 504)

    async def _hedged(self, request):
        first = asyncio.create_task(fetch(self.lab.session, self.hedged_leaf.url, None))
        done, _ = await asyncio.wait({first}, timeout=to_wall(self.hedge_after_ms / 1000))
        if not done:
            self.hedges += 1
            second = asyncio.create_task(fetch(self.lab.session, self.hedged_leaf.url, None))
            done, pending = await asyncio.wait({first, second},
                                               return_when=asyncio.FIRST_COMPLETED)
            for loser in pending:
                loser.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        status = next(iter(done)).result()["status"]
        return self._web.json_response({}, status=status if status > 0 else 504)

    def calibrate(self, requests: int = 200, q: float = 0.95, users: int = 4) -> float:
        """Measure the plain leaf's ``q`` quantile as the caller sees it (a few users at a
        time, so no line forms) and hedge after that; returns it in ms."""
        record = self.lab.closed_loop(self.caller, users, requests, path="plain",
                                      progress=False)
        self.hedge_after_ms = record.percentile(q * 100)
        return self.hedge_after_ms

    def make_controls(self) -> dict[str, Any]:
        import ipywidgets as w

        return {
            "hedge_at": w.Dropdown(options=[0.5, 0.9, 0.95, 0.99], value=0.95,
                                   description="hedge at q"),
            "rate": w.IntSlider(12, 2, 30, description="requests/s"),
            "requests": w.IntSlider(300, 100, 1000, 100, description="requests"),
        }

    def run_controls(self, hedge_at: float, rate: int, requests: int) -> HedgeRun:
        """Measure the hedge delay at the plain leaf's ``hedge_at`` quantile, then send the
        same schedule of ``requests`` at ``rate``/s to both designs; returns the
        :class:`HedgeRun` (``hedge_at=0.5`` hedges half of all requests)."""
        self.calibrate(q=hedge_at)
        return self.show(self.run(rate=rate, requests=requests))

    def summary(self) -> str:
        """The last run's summary (see :meth:`HedgeRun.summary`)."""
        return self.last.summary() if self.last is not None else "press Run"

    def draw(self, ax) -> None:
        if self.last is None:
            ax.text(0.5, 0.5, "press Run", ha="center", va="center", transform=ax.transAxes)
            return
        self.last.draw(ax)

    def run(self, rate: float = 15, requests: int = 1000) -> HedgeRun:
        """The same open-loop schedule to ``/plain`` and ``/hedged`` at the same moments."""
        require(self.hedge_after_ms > 0, "measure the hedge delay first: calibrate()")
        times = [i / rate for i in range(requests)]
        self.hedges = 0
        self.hedged_leaf.reset_counts()

        async def both() -> list[list[Shot]]:
            start = asyncio.get_running_loop().time()
            return list(await asyncio.gather(
                *(fire(self.lab.session, self.caller.url + path, times, start=start)
                  for path in ("plain", "hedged"))))

        plain, hedged = self.lab.run(both())

        def waited(shots: list[Shot]) -> list[float]:
            return [s.ms for s in shots]  # a failure counts at the time it took

        leaf_ms = [(s.body or {}).get("leaf_ms", math.inf) for s in plain]
        self.last = HedgeRun(self.hedge_after_ms, waited(plain), waited(hedged), leaf_ms,
                             self.hedges, self.hedged_leaf.received)
        return self.last
