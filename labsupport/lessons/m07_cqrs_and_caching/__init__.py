"""Module 07 · CQRS and caching: a command side and a query side, projections, caches in process
and on a cache server.
"""
from __future__ import annotations

from labsupport.lessons.m07_cqrs_and_caching.caching import CacheExperiment
from labsupport.lessons.m07_cqrs_and_caching.cqrs import OrderShop, draw_ryw, retention_note
from labsupport.lessons.m07_cqrs_and_caching.projections import (
    differences,
    replay_through_kafka,
    view_rows,
)
from labsupport.lessons.m07_cqrs_and_caching.shared_cache import (
    ServerCaches,
    SharedInstances,
    Stampede,
    connect,
    describe,
)

__all__ = [
    "CacheExperiment", "OrderShop", "draw_ryw", "retention_note", "differences",
    "replay_through_kafka", "view_rows", "ServerCaches", "SharedInstances", "Stampede",
    "connect", "describe",
]
