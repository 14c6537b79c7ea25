"""labsupport.lessons.m02_cascading_failures.connection_pools: aiohttp's default pool caps the concurrency a service sees,
the rest wait in the client (module 02, Experiment 5)."""
from __future__ import annotations

import aiohttp
import pytest

from labsupport.lessons.m02_cascading_failures.connection_pools import (
    ConnectionPoolExperiment,
    connector_defaults,
    fd_limit,
)
from labsupport.runtime.errors import BadParameter


@pytest.fixture
def lab(lab_at):
    return lab_at(0.2, seed=2)


def test_the_declared_defaults_are_what_a_session_without_connector_gets(lab):
    async def session_limits() -> tuple[int, int]:
        async with aiohttp.ClientSession() as session:
            return session.connector.limit, session.connector.limit_per_host

    assert lab.run(session_limits()) == (connector_defaults()["limit"],
                                         connector_defaults()["limit_per_host"])


def test_a_small_pool_caps_the_service_and_queues_the_rest_in_the_client(lab):
    pools = ConnectionPoolExperiment(lab, hold_ms=500)
    small = pools.run(requests=30, limit=10)
    assert small.peak_at_service == 10
    assert small.queued == 20 and small.late_at_service == 20
    assert min(small.queued_ms) >= 0.9 * 500, "a waiting request gets a connection one hold later"
    assert max(small.latencies_ms) >= 2.5 * 500, "the last ten waited for two earlier holds"
    unlimited = pools.run(requests=30, limit=0)
    assert unlimited.peak_at_service == 30 and unlimited.queued == 0
    assert unlimited.late_at_service == 0
    assert max(unlimited.latencies_ms) < 2 * 500


def test_the_default_session_lets_exactly_its_limit_through(lab):
    limit = connector_defaults()["limit"]
    run = ConnectionPoolExperiment(lab, hold_ms=1000).run(requests=limit + 5)
    assert run.limit is None and run.peak_at_service == limit and run.queued == 5
    if run.extra_fds() is not None:
        assert run.extra_fds() >= limit, "every open connection holds a file descriptor"
    assert "ClientSession() default" in run.summary() and "5 waited" in run.summary()


def test_fd_limit_and_bad_parameters(lab):
    limits = fd_limit()
    if limits is not None:
        soft, hard = limits
        assert soft > 0 and (hard == -1 or hard >= soft)
    pools = ConnectionPoolExperiment(lab, hold_ms=100)
    for bad in ({"requests": 0}, {"requests": 2.5}, {"limit": -1}, {"limit": "big"}):
        with pytest.raises(BadParameter):
            pools.run(**bad)
    with pytest.raises(BadParameter, match="hold_ms"):
        ConnectionPoolExperiment(lab, hold_ms=0)
