"""Shared fixtures: a broker for the tests that need one."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def lab_broker():
    """The lab's broker: reuse the running one, or start one and stop it afterwards."""
    from labsupport import broker

    _, answers = broker.status()
    started = not answers and not os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if started:
        broker.up(prefer="embedded")
    yield broker.ensure()
    if started:
        broker.down()
