"""Module 02 · Cascading failures: a slow service takes others down; timeouts, bulkheads,
connection pools.
"""
from __future__ import annotations

from labsupport.lessons.m02_cascading_failures.cascading import (
    GAUGE_EVERY_S,
    HEALTHY_C,
    BulkheadComparison,
    CascadeExperiment,
    TimeoutExperiment,
    downstream_p99_ms,
    p99_all,
    table,
    window,
)
from labsupport.lessons.m02_cascading_failures.connection_pools import (
    ConnectionPoolExperiment,
    connector_defaults,
    fd_limit,
)

__all__ = [
    "GAUGE_EVERY_S", "HEALTHY_C", "BulkheadComparison", "CascadeExperiment",
    "TimeoutExperiment", "downstream_p99_ms", "p99_all", "table", "window",
    "ConnectionPoolExperiment", "connector_defaults", "fd_limit",
]
