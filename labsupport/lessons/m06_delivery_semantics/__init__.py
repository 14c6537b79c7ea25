"""Module 06 · Delivery semantics: crashes under each commit strategy, idempotent consumers,
ordering, dead letters, the outbox.
"""
from __future__ import annotations

from labsupport.lessons.m06_delivery_semantics.dead_letters import PoisonExperiment, missing_headers
from labsupport.lessons.m06_delivery_semantics.dedup import apply_once
from labsupport.lessons.m06_delivery_semantics.delivery import (
    CrashMatrix,
    container_note,
    defaults_table,
    delivery_reports,
    matrix_dashboard,
    producer_exit,
)
from labsupport.lessons.m06_delivery_semantics.ordering import RebalanceExperiment
from labsupport.lessons.m06_delivery_semantics.outbox import OutboxExperiment

__all__ = [
    "PoisonExperiment", "missing_headers", "apply_once", "CrashMatrix", "container_note",
    "defaults_table", "delivery_reports", "matrix_dashboard", "producer_exit",
    "RebalanceExperiment", "OutboxExperiment",
]
