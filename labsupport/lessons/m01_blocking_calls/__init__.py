"""Module 01 · Blocking calls: chains, fan-out, the tail at scale, availability, hedging."""
from __future__ import annotations

from labsupport.lessons.m01_blocking_calls.blocking import (
    BUSY_LEAF,
    AvailabilityChain,
    ChainExperiment,
    FanOutExperiment,
    HedgeExperiment,
    TailAtScale,
)

__all__ = [
    "BUSY_LEAF", "AvailabilityChain", "ChainExperiment", "FanOutExperiment",
    "HedgeExperiment", "TailAtScale",
]
