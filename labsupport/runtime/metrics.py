"""Recording latencies and summarising them: percentiles, errors, time series.

All times are in *model* milliseconds (wall time divided by ``LAB_TIME_SCALE``).

>>> r = Recorder("demo")
>>> for ms in range(1, 101):
...     r.record(ms / 1000, float(ms), 200)
>>> r.percentile(50), r.percentile(99)
(50.5, 99.01)
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0..100) of ``values``, interpolated between ranks.

    Returns ``nan`` for an empty list.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Sample:
    """One request: when it started (model s since the run began), how long, its status.

    ``status`` is the HTTP status, or 0 when the client gave up (timeout) and
    -1 when no connection could be made.
    """

    t: float
    ms: float
    status: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Recorder:
    """Collects :class:`Sample` s from any thread and summarises them."""

    def __init__(self, name: str = "requests") -> None:
        self.name = name
        self._samples: list[Sample] = []
        self._lock = threading.Lock()

    def record(self, t: float, ms: float, status: int) -> None:
        """Add one request's start time (model s), latency (model ms) and status."""
        with self._lock:
            self._samples.append(Sample(t, ms, status))

    @property
    def samples(self) -> list[Sample]:
        """A copy of everything recorded so far."""
        with self._lock:
            return list(self._samples)

    def __len__(self) -> int:
        return len(self._samples)

    def latencies(self, ok_only: bool = True) -> list[float]:
        """Latencies in ms (of successful requests only, by default)."""
        return [s.ms for s in self.samples if s.ok or not ok_only]

    @property
    def errors(self) -> int:
        """How many requests did not succeed (error status, timeout or refused)."""
        return sum(not s.ok for s in self.samples)

    @property
    def timeouts(self) -> int:
        """How many requests the client gave up on."""
        return sum(s.status == 0 for s in self.samples)

    def error_rate(self) -> float:
        """Share of requests that did not succeed (0 when there were none)."""
        total = len(self)
        return self.errors / total if total else 0.0

    def percentile(self, p: float, ok_only: bool = True) -> float:
        """The ``p``-th percentile latency in ms (``nan`` when nothing was recorded)."""
        return percentile(self.latencies(ok_only), p)

    def stats(self) -> dict[str, float]:
        """Count, errors, error rate and p50/p95/p99/max/mean of successful requests."""
        lat = self.latencies()
        return {
            "count": len(self), "errors": self.errors, "error_rate": self.error_rate(),
            "p50": percentile(lat, 50), "p95": percentile(lat, 95),
            "p99": percentile(lat, 99), "max": max(lat) if lat else math.nan,
            "mean": sum(lat) / len(lat) if lat else math.nan,
        }

    def summary(self) -> str:
        """One line a person (or a screen reader, or CI) can read."""
        s = self.stats()
        if not s["count"]:
            return f"{self.name}: no requests yet"
        return (f"{self.name}: {s['count']} requests, {s['errors']} failed "
                f"({s['error_rate']:.1%}); p50 {_ms(s['p50'])}, p95 {_ms(s['p95'])}, "
                f"p99 {_ms(s['p99'])}, max {_ms(s['max'])}")

    def series(self, bucket_s: float = 1.0) -> list[dict[str, float]]:
        """Per time bucket (model s): start, requests, errors, p50 and p99 of successes."""
        buckets: dict[int, list[Sample]] = {}
        for s in self.samples:
            buckets.setdefault(int(s.t // bucket_s), []).append(s)
        rows = []
        for index in sorted(buckets):
            group = buckets[index]
            ok = [s.ms for s in group if s.ok]
            rows.append({"t": index * bucket_s, "requests": len(group),
                         "errors": sum(not s.ok for s in group),
                         "p50": percentile(ok, 50), "p99": percentile(ok, 99)})
        return rows

    def __repr__(self) -> str:
        return f"<Recorder {self.summary()}>"


def _ms(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"
