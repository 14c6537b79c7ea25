"""Module 04 · Circuit breakers on real services, and a gateway's call policy."""
from __future__ import annotations

from labsupport.lessons.m04_circuit_breakers.breakers import (
    AsyncPyBreaker,
    BreakerOpen,
    FlappingScenario,
    HalfOpenBurst,
    calls_through_outage,
    calls_until_open,
    defaults_table,
    draw_lanes,
    expected_calls_to_open,
    mismatches,
    model_clock,
    threads_inside,
    trials_in_outage,
)
from labsupport.lessons.m04_circuit_breakers.gateway import GatewayExperiment, GatewayPolicy

__all__ = [
    "AsyncPyBreaker", "BreakerOpen", "FlappingScenario", "HalfOpenBurst",
    "calls_through_outage", "calls_until_open", "defaults_table", "draw_lanes",
    "expected_calls_to_open", "mismatches", "model_clock", "threads_inside",
    "trials_in_outage", "GatewayExperiment", "GatewayPolicy",
]
