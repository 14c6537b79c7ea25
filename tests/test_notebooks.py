"""Notebook 00 fails well with no broker. (Every cell of every notebook running twice in a
row, with the same verdicts and nothing left behind, is checked by the nbval pass: see the
root conftest.py.)"""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from labsupport.broker import net

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.notebooks


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
