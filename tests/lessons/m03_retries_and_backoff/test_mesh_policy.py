"""labsupport.lessons.m03_retries_and_backoff.retries.istio_policy: an Istio route's timeout and retries as a GatewayPolicy
(attempts counts retries; a per-try timeout is retried only with retryOn 5xx/gateway-error/reset)."""
from __future__ import annotations

import pytest

from labsupport.lessons.m03_retries_and_backoff.retries import ENVOY_BACKOFF_BASE_MS, istio_policy
from labsupport.runtime.errors import BadParameter


def test_attempts_counts_retries_so_three_means_four_tries():
    policy = istio_policy(timeout_ms=None, attempts=3, per_try_ms=1000, retry_on_timeout=True)
    assert policy.attempts == 4
    assert policy.worst_case_ms() == 4 * 1000 + 3 * ENVOY_BACKOFF_BASE_MS
    assert istio_policy(None, 0, 1000, retry_on_timeout=True).attempts == 1


def test_the_briefs_route_against_a_hang():
    as_written = istio_policy(timeout_ms=2000, attempts=3, per_try_ms=1000)
    assert (as_written.attempts, as_written.worst_case_ms(), as_written.attempts_started()) == \
        (1, 1000, 1), "Istio's default retryOn does not retry a per-try timeout"
    with_5xx = istio_policy(timeout_ms=2000, attempts=3, per_try_ms=1000, retry_on_timeout=True)
    assert (with_5xx.worst_case_ms(), with_5xx.attempts_started()) == (2000, 2)


def test_per_try_defaults_to_the_route_timeout_and_bad_values():
    assert istio_policy(timeout_ms=2000, attempts=2, retry_on_timeout=True).per_try_ms == 2000
    for bad in (-1, 1.5, "3"):
        with pytest.raises(BadParameter, match="attempts"):
            istio_policy(2000, bad, 1000)
    with pytest.raises(BadParameter, match="route timeout_ms or a per_try_ms"):
        istio_policy(None, 3, None)
