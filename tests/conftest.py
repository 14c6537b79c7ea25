"""Shared fixtures (a broker, a cache server, a lab at a time scale); each pytest-xdist worker
keeps its own progress file; tests that start services are marked so `make check` can skip
them. How the notebooks are spread over workers is in the root conftest.py."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SERVICE_FIXTURES = {"lab", "lab_at", "lab_broker", "lab_cache", "precise_lab", "shop_lab",
                    "checker_time_scale", "classroom", "class_of_two", "system", "projection"}
"""Fixtures that start real services, the broker or a kernel: their tests are not quick."""


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and "LAB_PROGRESS_FILE" not in os.environ:
        # Kernels that check exercises record progress; workers must not share one file.
        artifacts = Path(__file__).resolve().parent / "artifacts"
        artifacts.mkdir(exist_ok=True)
        os.environ["LAB_PROGRESS_FILE"] = str(artifacts / f"progress.{worker}.json")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start services get the ``services`` mark (``make check`` skips them)."""
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


@pytest.fixture
def lab_at():
    """``lab_at(scale, seed)``: a Lab at that time scale; closed, and the scale restored, after."""
    from labsupport.runtime import settings
    from labsupport.runtime.lab import Lab

    saved, labs = settings.time_scale_override(), []

    def make(scale: float, seed: int = 0) -> Lab:
        settings.set_time_scale(scale)
        labs.append(Lab(seed=seed))
        return labs[-1]

    yield make
    for lab in labs:
        lab.close()
    settings.set_time_scale(saved)


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
    from labsupport.runtime import cache_server

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
    from labsupport.runtime import settings

    settings.set_time_scale(0.2)
    yield
    settings.set_time_scale(None)


PAUSED_RUNS = 3
"""A test that fails right after the machine paused this process (the
lab's watchdog, running while a lab is open, saw it wake 50 ms or more late) runs again, this
many times in all: the pause, not the code, may have failed it. A failure without a pause is
never retried (a test that opens no lab never sees one)."""


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    if item.get_closest_marker("notebooks"):
        return None   # notebook 00 with no broker: a kernel, no lab
    from _pytest.runner import runtestprotocol

    from labsupport.runtime.watchdog import PAUSE_MS, forget_pauses, worst_pause

    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    notes: list[str] = []
    for run in range(1, PAUSED_RUNS + 1):
        forget_pauses()
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
        paused = worst_pause(window_s=24 * 3600)
        call_failed = any(r.failed and r.when == "call" for r in reports)
        if not call_failed or paused < PAUSE_MS or run == PAUSED_RUNS:
            break
        notes.append(f"failed on run {run} after the machine paused this process for "
                     f"{paused:,.0f} ms; ran it again")
    for report in reports:
        if notes:
            report.sections.append(("pauses of the machine", "\n".join(notes)))
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


@pytest.fixture(autouse=True)
def fresh_pause_record():
    """Each test sees only the pauses of the machine during its own run."""
    from labsupport.runtime.watchdog import forget_pauses

    forget_pauses()
