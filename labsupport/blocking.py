"""Module 01 experiments: chains, fan-out, the tail at scale, and availability.

Each experiment builds its services once on a :class:`~labsupport.lab.Lab` and
changes their knobs between runs, so a dashboard can re-run it as often as the
learner likes without starting new servers.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from .dashboard import PALETTE, Dashboard, LiveView, latency_histogram, set_controls
from .errors import require
from .evidence import Estimate, share
from .faults import Faults
from .lab import Lab, LoadRun
from .latency import Constant, LatencyModel, LogNormal, Normal, as_model
from .metrics import Recorder, percentile
from .services import Service


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


class ChainExperiment:
    """Up to ``max_n`` services; the first ``n`` call each other in series."""

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

    def dashboard(self) -> Dashboard:
        """Sliders for N and the latency distribution; Run sends 3 s of live traffic."""
        import ipywidgets as w

        self.controls = {
            "n": w.IntSlider(self.n, 1, len(self.services), description="services"),
            "kind": w.Dropdown(options=["constant", "normal", "lognormal"], value="normal",
                               description="latency"),
            "spread": w.IntSlider(100, 0, 400, 25, description="spread ms"),
        }
        # One mean per service: make one of them slow and watch the total follow it.
        self.mean_sliders = [w.IntSlider(500, 0, 1000, 50, description=f"{s.name} ms")
                             for s in self.services]
        button = w.Button(description="Run 3 s of traffic", button_style="primary",
                          layout=w.Layout(width="auto"))
        button.on_click(lambda _: self.press_run())
        self.board = Dashboard("A chain of synchronous calls",
                               [*self.controls.values(), *self.mean_sliders, button], self.draw)
        return self.board

    def press_run(self, means: Sequence[int] | None = None, **values: object) -> LiveView:
        """What the Run button does. ``means`` (one per service, or fewer) and ``values``
        (``n``, ``kind``, ``spread``) first move the controls, e.g. ``n=4, kind="normal"``."""
        set_controls(self.controls, values, others=("means",))
        for slider, mean in zip(self.mean_sliders, means or [], strict=False):
            slider.value = mean
        c = {name: control.value for name, control in self.controls.items()}
        models = [latency_model(c["kind"], s.value, c["spread"]) for s in self.mean_sliders]
        self.configure(c["n"], models)
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
    beside it but not used as evidence).
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

    @property
    def measured(self) -> float:
        return self.slow / self.requests

    @property
    def theory(self) -> float:
        return 1 - (1 - self.p_slow) ** self.n

    def share(self) -> Estimate:
        """The measured share of slow requests with its (Wilson) interval."""
        return share(self.slow, self.requests)

    def merged(self, other: TailPoint) -> TailPoint:
        """This point and ``other`` (the same width) as one bigger sample."""
        require(other.n == self.n, "merge points of the same width only.")
        latencies = self.latencies + other.latencies
        return TailPoint(self.n, self.requests + other.requests, self.slow + other.slow,
                         percentile(latencies, 50), percentile(latencies, 99), self.p_slow,
                         self.leaf_slow + other.leaf_slow, self.threshold_ms, latencies)


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
        from .latency import Spikes

        self.lab, self.p_slow, self.fast_ms, self.slow_ms = lab, p_slow, fast_ms, slow_ms
        model = Spikes(Constant(fast_ms), Constant(slow_ms), p=p_slow)
        self.root, self.leaves = lab.fan_out(max_n, model, name="tail")

    def measure(self, n: int, requests: int = 100) -> TailPoint:
        """Send ``requests`` one after another through a fan-out of ``n`` leaves."""
        require(1 <= n <= len(self.leaves), f"n must be between 1 and {len(self.leaves)}.")
        self.root.set(calls=self.leaves[:n])
        threshold = self.slow_ms
        answers = [self.lab.call(self.root) for _ in range(requests)]
        latencies = tuple(a.ms for a in answers)
        leaf_slow = sum(max(map(_work_ms, (a.body or {}).get("calls", [{}]))) >= self.slow_ms
                        for a in answers)
        return TailPoint(n, requests, sum(ms >= threshold for ms in latencies),
                         percentile(latencies, 50), percentile(latencies, 99), self.p_slow,
                         leaf_slow, threshold, latencies)

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
