"""Module 09 · Backpressure and observability: bounded queues, a pausing consumer, merged
histograms, traces.
"""
from __future__ import annotations

from labsupport.lessons.m09_backpressure_and_observability.backpressure import QueueExperiment
from labsupport.lessons.m09_backpressure_and_observability.consumer_backpressure import (
    ConsumerBackpressure,
    paused_buffer_bound,
    retention_note,
)
from labsupport.lessons.m09_backpressure_and_observability.histograms import InstancesExperiment
from labsupport.lessons.m09_backpressure_and_observability.tracing import TracedChain

__all__ = [
    "QueueExperiment", "ConsumerBackpressure", "paused_buffer_bound", "retention_note",
    "InstancesExperiment", "TracedChain",
]
