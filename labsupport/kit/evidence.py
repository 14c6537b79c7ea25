"""Estimates with intervals: what a sample of measurements says, and how sure it is.

A claim decided from one percentile of twenty requests is one unlucky answer on a busy
laptop. The functions here turn raw measurements into an :class:`Estimate`: the value, and
an interval that holds the true value with the stated confidence. :mod:`labsupport.kit.claims`
then decides PASS only when the whole interval agrees with the claim, FAIL only when the
whole interval disagrees, and says INCONCLUSIVE in between.

>>> e = quantile(range(1, 1001), 0.5)
>>> round(e.value), e.low < e.value < e.high, e.n
(500, True, 1000)
>>> share(3, 100).high < 0.1
True

Every interval is distribution-free (no normal curve assumed): order statistics for one
quantile, Wilson's interval for a share, and a seeded bootstrap (the same data always give
the same interval) for ratios and differences of two designs.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from labsupport.runtime.errors import require

LEVEL = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A measured value, the interval ``[low, high]`` around it, and how it was made.

    ``low`` may be ``-inf`` and ``high`` ``inf`` when the sample is too small to bound
    that side (the p99 of 20 requests has no upper bound: the next request could be slower
    than all twenty).
    """

    value: float
    low: float
    high: float
    n: int
    method: str
    level: float = LEVEL

    def __float__(self) -> float:
        return float(self.value)

    def describe(self) -> str:
        """``12.3 (95% interval 10.1 to 14.2, 400 samples, order statistics)``."""
        return (f"{_num(self.value)} ({self.level:.0%} interval {_num(self.low)} to "
                f"{_num(self.high)}, {self.n} samples, {self.method})")

    def shifted(self, by: float) -> Estimate:
        """The same estimate moved by ``by`` (e.g. less a cost measured apart from it)."""
        return Estimate(self.value + by, self.low + by, self.high + by, self.n, self.method,
                        self.level)

    def scaled(self, factor: float) -> Estimate:
        """The same estimate in other units (``factor`` > 0), e.g. seconds to ms."""
        require(factor > 0, "scaled() takes a positive factor.")
        return Estimate(self.value * factor, self.low * factor, self.high * factor, self.n,
                        self.method, self.level)


def quantile(samples: Sequence[float], q: float, level: float = LEVEL) -> Estimate:
    """The ``q``-quantile (0 < q < 1) of ``samples`` with an exact distribution-free interval.

    The interval runs between two order statistics chosen from the binomial distribution,
    so it assumes nothing about the shape of the latencies. With too few samples one side
    is unbounded (``inf``), and a claim on that side comes out INCONCLUSIVE, as it should.
    """
    require(0 < q < 1, f"quantile q must be between 0 and 1, not {q}.")
    data = np.sort(np.asarray(list(samples), dtype=float))
    n = len(data)
    if n == 0:
        return Estimate(math.nan, -math.inf, math.inf, 0, "no samples", level)
    value = float(np.quantile(data, q))
    tail = (1 - level) / 2
    lo_rank, hi_rank = _order_ranks(n, q, tail)
    low = float(data[lo_rank - 1]) if lo_rank >= 1 else -math.inf
    high = float(data[hi_rank - 1]) if hi_rank <= n else math.inf
    return Estimate(value, low, high, n, "order statistics", level)


def share(hits: int, n: int, level: float = LEVEL) -> Estimate:
    """The share ``hits / n`` with Wilson's score interval (good at 0% and 100% too)."""
    require(0 <= hits <= n, f"share needs 0 <= hits <= n, got {hits} of {n}.")
    if n == 0:
        return Estimate(math.nan, 0.0, 1.0, 0, "no samples", level)
    z = _z(level)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n, "Wilson", level)


def mean(samples: Sequence[float], level: float = LEVEL) -> Estimate:
    """The mean of ``samples`` with a bootstrap interval."""
    return bootstrap(np.mean, samples, level=level, method="bootstrap of the mean")


def ratio(a: Sequence[float], b: Sequence[float], q: float = 0.5, paired: bool = False,
          level: float = LEVEL) -> Estimate:
    """``quantile(a, q) / quantile(b, q)`` with a bootstrap interval.

    ``paired=True`` when ``a[i]`` and ``b[i]`` belong together (the same request sent to
    two designs at the same moment): pairs are resampled together, which cancels the
    noise both share (a hiccup of the machine slows both).
    """
    def stat(x: np.ndarray, y: np.ndarray) -> float:
        bottom = float(np.quantile(y, q))
        return float(np.quantile(x, q)) / bottom if bottom > 0 else math.inf
    return _two(stat, a, b, paired, level, f"bootstrap of the p{_pct(q)} ratio")


def difference(a: Sequence[float], b: Sequence[float], q: float = 0.5, paired: bool = False,
               level: float = LEVEL) -> Estimate:
    """``quantile(a, q) - quantile(b, q)`` with a bootstrap interval (see :func:`ratio`)."""
    def stat(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.quantile(x, q)) - float(np.quantile(y, q))
    return _two(stat, a, b, paired, level, f"bootstrap of the p{_pct(q)} difference")


def bootstrap(statistic: Callable[..., float], *samples: Sequence[float],
              level: float = LEVEL, paired: bool = False, method: str = "bootstrap",
              resamples: int = RESAMPLES, seed: int = 0) -> Estimate:
    """Any ``statistic(*arrays)`` with a percentile-bootstrap interval.

    Each sample is resampled with replacement (together, by index, when ``paired``); the
    seed is fixed so that the same data always give the same interval and verdict.
    """
    arrays = [np.asarray(list(s), dtype=float) for s in samples]
    sizes = [len(a) for a in arrays]
    if not arrays or min(sizes) == 0:
        return Estimate(math.nan, -math.inf, math.inf, 0, "no samples", level)
    require(not paired or len(set(sizes)) == 1, "paired samples must have the same length.")
    value = float(statistic(*arrays))
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for i in range(resamples):
        if paired:
            index = rng.integers(0, sizes[0], sizes[0])
            stats[i] = statistic(*(a[index] for a in arrays))
        else:
            stats[i] = statistic(*(a[rng.integers(0, len(a), len(a))] for a in arrays))
    stats = stats[~np.isnan(stats)]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail]) if len(stats) else (-math.inf, math.inf)
    return Estimate(value, float(low), float(high), min(sizes), method, level)


def _two(stat: Callable[[np.ndarray, np.ndarray], float], a: Sequence[float],
         b: Sequence[float], paired: bool, level: float, method: str) -> Estimate:
    name = f"paired {method}" if paired else method
    return bootstrap(stat, a, b, level=level, paired=paired, method=name)


def _order_ranks(n: int, q: float, tail: float) -> tuple[int, int]:
    """1-based ranks (l, u) with P(X_(l) <= true quantile <= X_(u)) >= 1 - 2 * tail."""
    cdf = _binomial_cdf(n, q)
    lo = 0
    while lo + 1 <= n and cdf[lo] <= tail:  # P(B <= lo) <= tail: X_(lo+1) is still safe
        lo += 1
    hi = n + 1
    while hi - 1 >= 1 and 1 - cdf[hi - 2] <= tail:  # P(B >= hi-1) <= tail
        hi -= 1
    return lo, hi


def _binomial_cdf(n: int, p: float) -> list[float]:
    """P(B <= k) for k = 0..n, B ~ Binomial(n, p), computed in log space."""
    logs = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            + k * math.log(p) + (n - k) * math.log1p(-p) for k in range(n + 1)]
    top = max(logs)
    weights = [math.exp(v - top) for v in logs]
    total = sum(weights)
    out, running = [], 0.0
    for w in weights:
        running += w
        out.append(running / total)
    return out


def _z(level: float) -> float:
    """The standard normal quantile for a two-sided ``level`` (bisection, no SciPy)."""
    target = 1 - (1 - level) / 2
    lo, hi = 0.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _pct(q: float) -> str:
    return f"{q * 100:g}"


def _num(value: float) -> str:
    if math.isnan(value):
        return "nothing"
    if math.isinf(value):
        return "unbounded" if value > 0 else "-unbounded"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
