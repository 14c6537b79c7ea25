"""Shared fixtures: a broker for the tests that need one."""
from __future__ import annotations

import os
import pytest


@pytest.fixture(scope="session")
def lab_broker():
    """The lab's broker: reuse the running one, or start one and stop it afterwards."""
    from labsupport import broker

    record, answers = broker.status()
    started = False
    if not answers and not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        record, started = broker.up(prefer="embedded"), True
    yield broker.ensure()
    if started:
        broker.down()
