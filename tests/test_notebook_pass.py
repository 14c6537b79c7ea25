"""The nbval pass of the root conftest.py catches what it is there for.

Small notebooks, each with one mistake a lesson's cell could make, run through the same pytest
options as `make test`; each must fail, the good ones must pass: a cell that raises when run
a second time, a cell whose verdict changes on the second run, a thread left behind, a
stored output that differs, a claim that stays inconclusive, a FAIL (never run again), a worked
solution whose check says "Not yet". A claim inconclusive once runs again and passes, and so
does one that judges an earlier cell's measurement (the cells above it run again first)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "tests" / "artifacts" / f"notebook_pass_{os.getpid()}"
"""Under the repository, so that the root conftest.py applies (``tests/artifacts`` is not
collected by the suite itself); one folder per process, so that two never share one."""

pytestmark = pytest.mark.notebooks

COUNT = "n = globals().get('n', 0) + 1\n"
CASES: dict[str, tuple[list[str], bool]] = {
    "good": ([COUNT + "print('PASS the sum: measured 3', n > 0)"], True),
    "raises_when_run_again": ([COUNT + "assert n == 1, 'this cell only works once'"], False),
    "verdict_changes": ([COUNT + "print('PASS x: measured 1' if n == 1 else 'FAIL x: measured 2')"],
                        False),
    "thread_left": (["import threading, time\n"
                     "threading.Thread(target=time.sleep, args=(30,), name='labsupport-left',"
                     " daemon=True).start()"], False),
    "inconclusive_once": ([COUNT + "from labsupport.kit.claims import ClaimInconclusive\n"
                           "if n == 1:\n    raise ClaimInconclusive('interval straddles')\n"
                           "print('PASS x: measured 1')"], True),
    "inconclusive_until_measured_again": ([
        "sample = globals().get('sample', 0) + 1  # the experiment",
        "from labsupport.kit.claims import ClaimInconclusive\n"
        "first = globals().setdefault('first', sample)\n"
        "if sample == first:  # judging the same sample again cannot decide\n"
        "    raise ClaimInconclusive('interval straddles')\n"
        "print('PASS judged: measured 1')"], True),
    "inconclusive_always": (["from labsupport.kit.claims import ClaimInconclusive\n"
                             "raise ClaimInconclusive('interval straddles')"], False),
    "failed_once": ([COUNT + "from labsupport.kit.claims import ClaimFailed\n"
                     "if n == 1:\n    raise ClaimFailed('measured 2, theory 1')"], False),
}
PREDICT = ("from labsupport.exercises.m10 import OUTAGE, q2\n"
           "backlog = OUTAGE.rate_per_s * (OUTAGE.down_s + OUTAGE.join_s)\n")
SOLUTIONS: dict[str, tuple[list[str], bool]] = {
    "solution_checks_correct": ([PREDICT + "caught_up_s = OUTAGE.join_s + backlog / "
                                 "(OUTAGE.drain_per_s - OUTAGE.rate_per_s)", "q2.check()"], True),
    "solution_checks_not_yet": ([PREDICT + "caught_up_s = OUTAGE.join_s", "q2.check()"], False),
}
"""Notebooks in a ``solutions`` folder: each check a worked solution runs must say Correct
(the real checker, whose verdict is coloured in a kernel)."""


def write(name: str, sources: list[str], folder: Path = HERE) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def checked_output_differs() -> Path:
    """A ``# NBVAL_CHECK_OUTPUT`` cell whose stored output is not what it prints."""
    path = write("stored_output_differs", ["# NBVAL_CHECK_OUTPUT\nprint(1 + 1)"])
    nb = nbformat.read(path, as_version=4)
    nb.cells[0].execution_count = 1
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="3\n")]
    nbformat.write(nb, path)
    return path


def outcomes(report: Path) -> dict[str, str]:
    """Each notebook's outcome in a junit report: "failed" if one of its cells failed."""
    found: dict[str, str] = {}
    for case in ET.parse(report).iter("testcase"):
        notebook = case.get("classname", "").rsplit(".", 1)[0].rsplit(".", 1)[-1]
        failed = any(child.tag in ("failure", "error") for child in case)
        if failed or notebook not in found:
            found[notebook] = "failed" if failed else "passed"
    return found


@pytest.fixture(scope="module")
def results() -> dict[str, str]:
    shutil.rmtree(HERE, ignore_errors=True)
    HERE.mkdir(parents=True)
    paths = [write(name, sources) for name, (sources, _) in CASES.items()]
    paths.append(checked_output_differs())
    paths += [write(name, sources, HERE / "solutions") for name, (sources, _) in SOLUTIONS.items()]
    report = HERE / "report.xml"
    env = {**os.environ, "LAB_STRICT": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "0",
                    "--nbval-lax", "--nbval-sanitize-with", "tests/nbval_sanitize.cfg",
                    f"--junitxml={report}", *map(str, paths)],
                   cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    yield outcomes(report)
    shutil.rmtree(HERE, ignore_errors=True)
    for path in paths:
        (ROOT / "tests" / "artifacts" / "executed" / f"{path.parent.name}__{path.name}").unlink(
            missing_ok=True)


@pytest.mark.parametrize("name", [*CASES, *SOLUTIONS, "stored_output_differs"])
def test_each_mistake_fails_and_the_good_cells_pass(results, name):
    cases = {**CASES, **SOLUTIONS}
    passes = cases[name][1] if name in cases else False
    assert results.get(name) == ("passed" if passes else "failed"), results
