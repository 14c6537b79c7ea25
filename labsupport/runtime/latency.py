"""Latency models: how long a simulated service works on one request.

Every model takes milliseconds of *model time* and draws from a random
generator the service owns (seeded, so a run repeats exactly). The lab
multiplies what it draws by ``LAB_TIME_SCALE`` before sleeping.

>>> Constant(500).mean_ms()
500.0
>>> Spikes(Constant(20), Constant(1000), p=0.01).mean_ms()
29.8
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from statistics import NormalDist

from labsupport.runtime.errors import require


class LatencyModel:
    """Base class: ``sample(rng)`` draws one latency in ms; ``mean_ms()`` is its expectation."""

    def sample(self, rng: random.Random) -> float:
        raise NotImplementedError

    def mean_ms(self) -> float:
        raise NotImplementedError

    def quantile_ms(self, q: float) -> float:
        """The ``q`` quantile (0 < q < 1) of this distribution, in ms."""
        raise NotImplementedError


def _non_negative(name: str, value: float) -> None:
    require(value >= 0, f"{name} must be zero or more, got {value}.",
            f"give {name} in milliseconds, e.g. 50")


@dataclass(frozen=True)
class Constant(LatencyModel):
    """Always ``ms`` milliseconds."""

    ms: float

    def __post_init__(self) -> None:
        _non_negative("ms", self.ms)

    def sample(self, rng: random.Random) -> float:
        return float(self.ms)

    def mean_ms(self) -> float:
        return float(self.ms)

    def quantile_ms(self, q: float) -> float:
        return float(self.ms)


@dataclass(frozen=True)
class Normal(LatencyModel):
    """Normal around ``mean`` ms with spread ``sd`` ms (draws below 0 become 0)."""

    mean: float
    sd: float

    def __post_init__(self) -> None:
        _non_negative("mean", self.mean)
        _non_negative("sd", self.sd)

    def sample(self, rng: random.Random) -> float:
        return max(0.0, rng.gauss(self.mean, self.sd))

    def mean_ms(self) -> float:
        return float(self.mean)  # exact when sd is small against mean

    def quantile_ms(self, q: float) -> float:
        if self.sd == 0:
            return float(self.mean)
        return max(0.0, NormalDist(self.mean, self.sd).inv_cdf(q))


@dataclass(frozen=True)
class LogNormal(LatencyModel):
    """Long-tailed: median ``median`` ms, shape ``sigma`` (0.5 mild tail, 1.0 heavy)."""

    median: float
    sigma: float = 0.5

    def __post_init__(self) -> None:
        require(self.median > 0, f"median must be above 0, got {self.median}.",
                "give the median latency in ms, e.g. 50")
        _non_negative("sigma", self.sigma)

    def sample(self, rng: random.Random) -> float:
        return rng.lognormvariate(math.log(self.median), self.sigma)

    def mean_ms(self) -> float:
        return self.median * math.exp(self.sigma ** 2 / 2)

    def quantile_ms(self, q: float) -> float:
        return self.median * math.exp(self.sigma * NormalDist().inv_cdf(q))


@dataclass(frozen=True)
class Spikes(LatencyModel):
    """Usually ``base``; with probability ``p`` a spike drawn from ``spike`` instead."""

    base: LatencyModel
    spike: LatencyModel
    p: float = 0.01

    def __post_init__(self) -> None:
        require(0 <= self.p <= 1, f"p must be between 0 and 1, got {self.p}.",
                "give the share of slow requests, e.g. 0.01 for 1%")

    def sample(self, rng: random.Random) -> float:
        chosen = self.spike if rng.random() < self.p else self.base
        return chosen.sample(rng)

    def mean_ms(self) -> float:
        return (1 - self.p) * self.base.mean_ms() + self.p * self.spike.mean_ms()


def as_model(latency: LatencyModel | float | int) -> LatencyModel:
    """A number means :class:`Constant` milliseconds; a model is returned as it is."""
    if isinstance(latency, LatencyModel):
        return latency
    require(isinstance(latency, (int, float)) and not isinstance(latency, bool),
            f"latency must be a number of ms or a latency model, got {latency!r}.",
            "use e.g. 50, Constant(50), Normal(50, 10), LogNormal(50, 0.5)")
    return Constant(float(latency))
