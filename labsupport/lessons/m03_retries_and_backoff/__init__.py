"""Module 03 · Retries and backoff: policies, jitter, amplification, a retry storm and its budget."""
from __future__ import annotations

from labsupport.lessons.m03_retries_and_backoff.retries import (
    Amplification,
    ContentionExperiment,
    Custom,
    Decorrelated,
    Exponential,
    Fixed,
    FullJitter,
    compare_with_tenacity,
    draw_wait_comparison,
    expect_more,
    istio_policy,
    tenacity_delays_ms,
)
from labsupport.lessons.m03_retries_and_backoff.retry_storm import RetryStorm

__all__ = [
    "Amplification", "ContentionExperiment", "Custom", "Decorrelated", "Exponential",
    "Fixed", "FullJitter", "compare_with_tenacity", "draw_wait_comparison", "expect_more",
    "istio_policy", "tenacity_delays_ms", "RetryStorm",
]
