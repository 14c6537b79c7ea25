"""Module 05 · Asynchronous messaging: one endpoint three ways, Kafka's vocabulary, polling or
callbacks, the hybrid, push or pull, request-reply.
"""
from __future__ import annotations

from labsupport.lessons.m05_async_messaging.async_orders import (
    Burst,
    OrderSystem,
    Outage,
    ThreeWays,
    fetch_wait_ms,
    status_reads,
    status_right_after_202,
)
from labsupport.lessons.m05_async_messaging.callbacks import CallbackRace
from labsupport.lessons.m05_async_messaging.hybrid import HybridExperiment
from labsupport.lessons.m05_async_messaging.kafka_basics import (
    GroupsDemo,
    KeysExperiment,
    customer_keys,
)
from labsupport.lessons.m05_async_messaging.pushpull import PushPull, push_and_pull_services

__all__ = [
    "Burst", "OrderSystem", "Outage", "ThreeWays", "fetch_wait_ms", "status_reads",
    "status_right_after_202", "CallbackRace", "HybridExperiment", "GroupsDemo",
    "KeysExperiment", "customer_keys", "PushPull", "push_and_pull_services",
]
