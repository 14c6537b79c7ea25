"""Shared fixtures: a broker for the tests that need one."""
from __future__ import annotations

import os

import pytest


@pytest.fixture
def lab_at():
    """``lab_at(scale, seed)``: a Lab at that time scale; closed, and the scale restored, after."""
    from labsupport import settings
    from labsupport.lab import Lab

    saved, labs = settings._scale_override, []

    def make(scale: float, seed: int = 0) -> Lab:
        settings.set_time_scale(scale)
        labs.append(Lab(seed=seed))
        return labs[-1]

    yield make
    for lab in labs:
        lab.close()
    settings._scale_override = saved


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


@pytest.fixture(scope="session")
def lab_cache():
    """The lab's cache server: reuse the running one, or start one and stop it afterwards."""
    from labsupport import cache_server

    _, answers = cache_server.status()
    record = cache_server.up()
    yield record
    if not answers and record.kind != "env":
        cache_server.down()


@pytest.fixture
def isolated_progress(tmp_path, monkeypatch):
    """Exercise checks write progress to a temporary file and print without colour."""
    monkeypatch.setenv("LAB_PROGRESS_FILE", str(tmp_path / "progress.json"))
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture(scope="module")
def checker_time_scale():
    """Checkers that run real services do so at time scale 0.2 for the whole test module."""
    from labsupport import settings

    settings.set_time_scale(0.2)
    yield
    settings.set_time_scale(None)
