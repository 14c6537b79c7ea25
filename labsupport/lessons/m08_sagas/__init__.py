"""Module 08 · Sagas: the same order saga as choreography and as orchestration."""
from __future__ import annotations

from labsupport.lessons.m08_sagas.choreography import REACTIONS
from labsupport.lessons.m08_sagas.orchestration import STEPS, Orchestration, isolation_run
from labsupport.lessons.m08_sagas.saga_bench import SagaBench
from labsupport.lessons.m08_sagas.sagas import (
    SagaFaults,
    draw_swimlanes,
    duplicate_run,
    durations_ms,
    reverse_compensated,
)

__all__ = [
    "REACTIONS", "STEPS", "Orchestration", "isolation_run", "SagaBench", "SagaFaults",
    "draw_swimlanes", "duplicate_run", "durations_ms", "reverse_compensated",
]
