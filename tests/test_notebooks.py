"""Every code cell of every notebook runs twice in a row (re-runnable) with the same verdicts
and nothing left behind; notebook 00 fails well with no broker."""
from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from labsupport.broker import net

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.notebooks

LEAK_PROBE = """
import json, os, threading
import psutil
me = psutil.Process()
print(json.dumps({
    "threads": sorted(t.name for t in threading.enumerate() if t.name.startswith("labsupport")),
    "processes": sorted(f"{c.pid} {c.name()}" for c in me.children(recursive=True)
                        if c.is_running() and c.status() != psutil.STATUS_ZOMBIE),
    "ports": sorted(c.laddr.port for c in me.net_connections("inet")
                    if c.status == psutil.CONN_LISTEN),
}))
"""

VERDICTS = ("PASS ", "FAIL ", "INCONCLUSIVE")
EXECUTED = ROOT / "tests" / "artifacts" / "executed"
"""Each notebook as this test ran it (dashboards as images: LAB_STATIC=1); the site test
builds the course site from these instead of running every notebook again."""


def course_notebooks() -> list[Path]:
    """Every notebook the course ships: the modules and the worked solutions."""
    return sorted(ROOT.glob("notebooks/*.ipynb")) + sorted(ROOT.glob("solutions/*.ipynb"))


def error_outputs(cell) -> list[str]:
    return [f"{o.ename}: {o.evalue}" for o in cell.get("outputs", []) if o.output_type == "error"]


def verdicts(cell) -> list[str]:
    """The claims a cell printed, as "PASS name" / "FAIL name" (the measured numbers vary)."""
    text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")
    return [line.split(": measured")[0] for line in text.splitlines() if line.startswith(VERDICTS)]


def execute_every_cell_twice(path, env_extra: dict[str, str] | None = None):
    """Run each code cell twice in a row, in order, as a learner re-running cells does.

    Dashboards run in static mode (each run's plot kept as an image); the browser test and
    nbval run them as live widgets.

    Returns the notebook, the cells whose two runs printed different verdicts, and the leak
    probe's findings (lab threads, child processes, listening ports after the last cell)."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    env = {**os.environ, "LAB_STATIC": "1", **(env_extra or {})}
    changed = []
    with client.setup_kernel(env=env):
        before = run_probe(client, nb)  # the kernel's own ports
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            client.execute_cell(cell, index)
            first = verdicts(cell)
            client.execute_cell(cell, index)
            if verdicts(cell) != first:
                changed.append((index, first, verdicts(cell)))
        after = run_probe(client, nb)
    leaks = {key: sorted(set(after[key]) - set(before[key])) for key in after}
    EXECUTED.mkdir(parents=True, exist_ok=True)
    target = EXECUTED / f"{path.parent.name}__{path.name}"
    partial = target.with_suffix(".partial")
    nbformat.write(nb, partial)
    partial.replace(target)  # the site test may read it from another worker meanwhile
    return nb, changed, leaks


def run_probe(client: NotebookClient, nb) -> dict[str, list]:
    """Lab threads, live child processes and listening ports of the kernel, right now."""
    probe = nbformat.v4.new_code_cell(LEAK_PROBE)
    nb.cells.append(probe)
    client.execute_cell(probe, len(nb.cells) - 1)
    nb.cells.pop()
    return json.loads("".join(o.get("text", "") for o in probe.outputs).strip())


def execute_until_decided(path, attempts: int = 3):
    """Run every cell twice; when a claim was inconclusive (its interval straddled the line
    even after more samples), run the notebook again rather than pass or fail on noise.
    A FAIL is never retried."""
    for attempt in range(1, attempts + 1):
        try:
            return execute_every_cell_twice(path)
        except CellExecutionError as err:
            if err.ename != "ClaimInconclusive" or attempt == attempts:
                raise
            print(f"{path.name}: inconclusive claim on attempt {attempt}, running again: "
                  f"{err.evalue}")
    raise AssertionError("unreachable")


@pytest.mark.parametrize("path", course_notebooks(), ids=lambda p: p.name)
def test_every_cell_runs_twice_in_a_row_with_the_same_verdicts_and_no_leaks(path, lab_broker,
                                                                          lab_cache):
    nb, changed, leaks = execute_until_decided(path)
    errors = [e for cell in nb.cells for e in error_outputs(cell)]
    assert not errors, f"{path.name}: {errors}"
    assert not changed, f"{path.name}: cells whose second run changed a verdict: {changed}"
    assert leaks == {"threads": [], "processes": [], "ports": []}, (
        f"{path.name} leaves lab threads, processes or ports behind after its last cell: {leaks}")


def cell_seconds(cell) -> float:
    timing = cell.metadata.get("execution", {})
    start = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


def test_start_here_with_broker_down_fails_fast_and_names_the_fix():
    """The doctor cell and the first Kafka cell each fail within 10 s, naming address and fix,
    without a traceback from inside labsupport."""
    address = f"127.0.0.1:{net.free_port()}"
    path = ROOT / "notebooks" / "00_start_here.ipynb"
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel(env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": address}):
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                client.execute_cell(cell, index)
    code = [c for c in nb.cells if c.cell_type == "code"]
    doctor = next(c for c in code if "doctor.run()" in c.source)
    kafka = next(c for c in code if "broker.bootstrap()" in c.source)
    for name, cell in (("doctor", doctor), ("first Kafka", kafka)):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors, f"the {name} cell should fail when no broker answers"
        shown = "\n".join(errors[0].traceback) + "".join(
            o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        assert address in shown or "broker" in shown, shown
        assert "Fix" in shown or "fix" in shown, f"{name} cell does not name the fix: {shown}"
        assert "labsupport/" not in shown, f"{name} cell shows labsupport internals: {shown}"
        assert cell_seconds(cell) < 10, f"the {name} cell took {cell_seconds(cell):.1f} s"
    kafka_error = next(o for o in kafka.outputs if o.output_type == "error")
    assert kafka_error.ename == "BrokerUnavailable"
    assert address in kafka_error.evalue
