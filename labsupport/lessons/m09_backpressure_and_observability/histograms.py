"""Latency histograms with prometheus_client, and why percentiles must come from merged ones.

Each service (or each instance of one) observes its request durations into a
``prometheus_client.Histogram`` with fixed buckets, in a registry of the experiment's own
(so a re-run never meets "Duplicated timeseries"). What a monitoring system stores is the
count per bucket, and counts can be **added**: the buckets of all instances summed give the
histogram of all requests, and a percentile read from it (:func:`histogram_quantile`,
the same interpolation as PromQL's ``histogram_quantile``) is close to the exact one.
A percentile per instance cannot be added or averaged: the average of two p99s is not the
p99 of anything::

    exp = InstancesExperiment(lab)
    result = exp.run(busy_requests=800, quiet_requests=4)
    result.averaged_p99(), result.merged_p99(), result.exact_p99()
"""
from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram

from labsupport.kit.dashboard import PALETTE
from labsupport.kit.experiment import Experiment
from labsupport.runtime.errors import require
from labsupport.runtime.latency import Normal
from labsupport.runtime.metrics import percentile
from labsupport.runtime.settings import to_model

if TYPE_CHECKING:
    from labsupport.runtime.lab import Lab
    from labsupport.runtime.services import Service

#: Bucket upper bounds in seconds (model time), finer where most requests land.
BUCKETS_S = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.1, 0.125, 0.15, 0.2,
             0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
METRIC = "lab_request_duration_seconds"

Buckets = list[tuple[float, float]]
"""Cumulative buckets ``[(upper bound s, requests at or below it), ..., (inf, total)]``."""


def new_histogram(registry: CollectorRegistry, label: str = "service",
                  buckets: Sequence[float] = BUCKETS_S) -> Histogram:
    """A request-duration histogram (seconds) with one ``label`` (service or instance)."""
    return Histogram(METRIC, "Request duration in model seconds", [label],
                     buckets=tuple(buckets), registry=registry)


def read_buckets(registry: CollectorRegistry, label: str, value: str) -> Buckets:
    """The cumulative buckets of the series ``{label=value}``, read back from the registry
    (what a Prometheus scrape would see)."""
    rows = []
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == f"{METRIC}_bucket" and sample.labels.get(label) == value:
                rows.append((float(sample.labels["le"]), sample.value))
    require(bool(rows), f"no histogram series {label}={value!r}.",
            "observe some requests first, or check the name")
    return sorted(rows)


def merge(series: Iterable[Buckets]) -> Buckets:
    """Add bucket counts bound by bound (PromQL: ``sum by (le) (...)``). Same buckets only."""
    series = list(series)
    require(bool(series), "give at least one histogram to merge.")
    bounds = [b for b, _ in series[0]]
    for other in series[1:]:
        require([b for b, _ in other] == bounds, "these histograms have different buckets.",
                "merge only histograms declared with the same bucket bounds")
    return [(bound, sum(s[i][1] for s in series)) for i, bound in enumerate(bounds)]


def histogram_quantile(q: float, buckets: Buckets) -> float:
    """The ``q`` quantile (0..1) from cumulative buckets, as PromQL's ``histogram_quantile``:
    find the bucket holding rank q·total, interpolate linearly inside it (the first bucket
    starts at 0); a rank in the +Inf bucket returns the highest finite bound."""
    require(0 <= q <= 1, f"q must be between 0 and 1, got {q!r}.", "the 99th percentile is 0.99")
    total = buckets[-1][1] if buckets else 0
    if total == 0:
        return math.nan
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def bucket_width(value: float, buckets: Buckets) -> float:
    """The width of the bucket ``value`` falls in (the resolution a histogram has there)."""
    lower = 0.0
    for bound, _ in buckets:
        if value <= bound:
            return bound - lower if not math.isinf(bound) else math.inf
        lower = bound
    return math.inf


def counts(buckets: Buckets) -> list[float]:
    """Requests per bucket (not cumulative), in bucket order."""
    return [c - (buckets[i - 1][1] if i else 0) for i, (_, c) in enumerate(buckets)]


# ----- several instances of one service --------------------------------------------------------------
@dataclass
class InstancesResult:
    """Per instance: its buckets (from the registry) and its raw durations (ms)."""

    buckets: dict[str, Buckets] = field(default_factory=dict)
    raw_ms: dict[str, list[float]] = field(default_factory=dict)

    def p99_per_instance(self) -> dict[str, float]:
        """Each instance's own p99 (ms), from its own histogram."""
        return {n: histogram_quantile(0.99, b) * 1000 for n, b in self.buckets.items()}

    def averaged_p99(self) -> float:
        """The wrong way: the mean of the instances' p99s (ms)."""
        values = list(self.p99_per_instance().values())
        return sum(values) / len(values)

    def merged(self) -> Buckets:
        return merge(self.buckets.values())

    def merged_p99(self) -> float:
        """The right way: p99 (ms) of the summed buckets."""
        return histogram_quantile(0.99, self.merged()) * 1000

    def exact_p99(self) -> float:
        """p99 (ms) of every raw duration of every instance together."""
        return percentile([ms for values in self.raw_ms.values() for ms in values], 99)

    def width_at_exact_ms(self) -> float:
        """The width (ms) of the bucket the exact p99 falls in."""
        return bucket_width(self.exact_p99() / 1000, self.merged()) * 1000

    def requests(self) -> dict[str, int]:
        return {n: int(b[-1][1]) for n, b in self.buckets.items()}

    def table(self) -> str:
        rows = [f"{'':<28}{'requests':>9}{'p99 ms':>9}"]
        for name, p99 in self.p99_per_instance().items():
            rows.append(f"{name:<28}{self.requests()[name]:>9}{p99:>9.0f}")
        total = sum(self.requests().values())
        rows.append(f"{'average of the p99s (wrong)':<28}{'':>9}{self.averaged_p99():>9.0f}")
        rows.append(f"{'p99 of merged buckets':<28}{total:>9}{self.merged_p99():>9.0f}")
        rows.append(f"{'exact p99 of all requests':<28}{total:>9}{self.exact_p99():>9.0f}")
        return "\n".join(rows)


class InstancesExperiment(Experiment):
    """Two instances of one service behind a load balancer that is anything but fair:
    ``busy`` is fast and gets most requests, ``quiet`` is slow and gets a handful.

    ``exp.dashboard()`` shows a slider for each instance's requests and Run;
    ``exp.press_run(busy_requests=800, quiet_requests=4)`` is what Run does."""

    TITLE = "p99 of two instances: averaged or merged?"
    BUTTON = "Run"

    def __init__(self, lab: Lab, fast_ms: float = 40.0, slow_ms: float = 800.0,
                 prefix: str = "") -> None:
        self.lab = lab
        self.registry = CollectorRegistry()
        self.histogram = new_histogram(self.registry, "instance")
        self.raw: dict[str, list[float]] = {}
        self.instances: dict[str, Service] = {}
        for name, model in (("busy", Normal(fast_ms, fast_ms / 4)),
                            ("quiet", Normal(slow_ms, slow_ms / 8))):
            full = f"{prefix}orders_{name}"
            self.instances[full] = lab.service(full, model, routes={"/orders": self._route(full)})
        self.result: InstancesResult | None = None

    def _route(self, name: str) -> Any:
        svc_of = self.instances

        async def orders(request: web.Request) -> web.Response:
            start = time.perf_counter()
            await svc_of[name].work()
            seconds = to_model(time.perf_counter() - start)
            self.histogram.labels(name).observe(seconds)
            self.raw.setdefault(name, []).append(seconds * 1000)
            return web.json_response({"ok": True})

        return orders

    def run(self, busy_requests: int = 800, quiet_requests: int = 4) -> InstancesResult:
        """Send the requests (20 at a time to busy, one at a time to quiet); read back the
        histograms. The registry is fresh for each run."""
        require(isinstance(busy_requests, int) and 10 <= busy_requests <= 5000,
                f"busy_requests must be a whole number from 10 to 5000, got {busy_requests!r}.")
        require(isinstance(quiet_requests, int) and 1 <= quiet_requests <= 200,
                f"quiet_requests must be a whole number from 1 to 200, got {quiet_requests!r}.")
        self.registry = CollectorRegistry()
        self.histogram = new_histogram(self.registry, "instance")
        self.raw = {}
        busy, quiet = self.instances.values()

        async def both() -> None:
            await asyncio.gather(
                *(self._send(busy, busy_requests // 20 + (i < busy_requests % 20))
                  for i in range(20)), self._send(quiet, quiet_requests))

        self.lab.run(both(), timeout=120)
        self.result = InstancesResult(
            {n: read_buckets(self.registry, "instance", n) for n in self.instances},
            {n: list(self.raw.get(n, [])) for n in self.instances})
        return self.result

    async def _send(self, svc: Service, n: int) -> None:
        from labsupport.runtime.services import fetch

        for _ in range(n):
            await fetch(self.lab.session, svc.url + "orders", None, svc.name)

    # ----- the picture ------------------------------------------------------------------------
    def draw(self, ax: Any) -> None:
        """Bars: each instance's p99, their average, the merged p99 and the exact one."""
        if self.result is None:
            return
        r = self.result
        labels = [*(n.rsplit("_", 1)[-1] + " p99" for n in r.buckets), "average\n(wrong)",
                  "merged\nbuckets", "exact"]
        values = [*r.p99_per_instance().values(), r.averaged_p99(), r.merged_p99(),
                  r.exact_p99()]
        colours = [PALETTE[4]] * len(r.buckets) + [PALETTE[3], PALETTE[0], PALETTE[2]]
        ax.bar(range(len(values)), values, color=colours)
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(values)), labels, fontsize=8)
        ax.set_ylabel("p99 (model ms)")

    def summary(self) -> str:
        if self.result is None:
            return "press Run"
        r = self.result
        return (f"requests {r.requests()}; average of p99s {r.averaged_p99():.0f} ms, merged "
                f"{r.merged_p99():.0f} ms, exact {r.exact_p99():.0f} ms")

    def make_controls(self) -> dict[str, Any]:
        """Sliders for how many requests each instance gets."""
        import ipywidgets as w

        return {
            "busy_requests": w.IntSlider(800, 100, 2000, step=100, description="busy"),
            "quiet_requests": w.IntSlider(4, 1, 60, description="quiet"),
        }

    def run_controls(self, busy_requests: int, quiet_requests: int) -> InstancesResult:
        """What Run does: ``press_run(busy_requests=, quiet_requests=)`` moves those sliders
        first; returns the result (``result.table()``)."""
        return self.show(self.run(busy_requests, quiet_requests))
