"""Failure models: how a simulated service misbehaves.

* ``error_rate``: share of requests answered 500 after doing the work.
* ``outage``: the service refuses everything at once with 503 (it is down).
* ``hang_rate``: share of requests that hold a worker for ``hang_ms`` and then
  answer 504: a slow dependency, which is worse than a dead one.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from labsupport.runtime.errors import require

OK, ERROR, OUTAGE, HANG = "ok", "error", "outage", "hang"


@dataclass(frozen=True)
class Faults:
    """What goes wrong, and how often (all draws come from the service's seeded generator)."""

    error_rate: float = 0.0
    outage: bool = False
    hang_rate: float = 0.0
    hang_ms: float = 30_000.0

    def __post_init__(self) -> None:
        for name in ("error_rate", "hang_rate"):
            value = getattr(self, name)
            require(0 <= value <= 1, f"{name} must be between 0 and 1, got {value}.",
                    f"give {name} as a share, e.g. 0.05 for 5%")
        total = self.error_rate + self.hang_rate
        require(total <= 1, f"error_rate + hang_rate must be at most 1, got {total:g}.",
                "lower one of them: together they are the share of requests that go wrong")
        require(self.hang_ms >= 0, f"hang_ms must be zero or more, got {self.hang_ms}.")

    def __str__(self) -> str:
        parts = [f"errors {self.error_rate:.0%}"] if self.error_rate else []
        parts += ["outage"] if self.outage else []
        parts += [f"hangs {self.hang_rate:.0%} for {self.hang_ms:.0f} ms"] if self.hang_rate else []
        return ", ".join(parts) or "no faults"

    def decide(self, rng: random.Random) -> str:
        """The fate of one request: ``ok``, ``error``, ``outage`` or ``hang``."""
        if self.outage:
            return OUTAGE
        draw = rng.random()
        if draw < self.hang_rate:
            return HANG
        if draw < self.hang_rate + self.error_rate:
            return ERROR
        return OK


HEALTHY = Faults()
