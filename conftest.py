"""How one pytest run spreads the course's tests over pytest-xdist workers, and how it runs
the notebooks (`make test`).

- Every notebook and solution runs once, under nbval (``--nbval-lax``): each code cell is a
  test item, the cells of one notebook share one kernel. Each cell runs twice in a row (the
  learner's re-run), and both runs must pass nbval's check of the stored output
  (``# NBVAL_CHECK_OUTPUT`` cells), raise nothing and print the same verdicts (a worked
  solution's checks must all say Correct); after the last
  cell no lab thread, child process or listening port may be left (see ``NotebookPass``).
  A claim that stays inconclusive makes the cells above it and that cell run again (three
  runs at most), never pass or fail on noise; a FAIL is never retried. Dashboards run in
  static mode (``LAB_STATIC=1``), and each executed notebook is kept in
  ``tests/artifacts/executed`` for the site test.
- nbval's cells of one notebook go to one worker, in order, as one unit (so do the tests of
  each site-test file, which builds the site once); every other test is a unit of its own, so
  the slow ones spread out. The browser stage uses the same scheduler.
- The longest work goes first (the notebooks, then the tests that start services), so no
  worker is left with a long test at the end while the others idle.
- The test kernels' clients start without the heartbeat channel (see ``no_heartbeat``).

(pytest-xdist's own ``--dist loadgroup`` cannot do the scheduling on pytest 9: it renames
node ids through an attribute pytest 9 no longer reads.)
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import nbformat
import pytest
from nbval.plugin import NbCellError

from labsupport.course.checks import plain

try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # pytest-xdist missing: the suite still runs in one process
    LoadScopeScheduling = None


def notebook_of(nodeid: str) -> str:
    """The notebook of an nbval cell's node id ("solutions/05_x.ipynb::Cell 3"), else ""."""
    path, _, rest = nodeid.partition("::")
    return path if path.endswith(".ipynb") and rest.startswith("Cell ") else ""


ONE_UNIT_FILES = ("tests/browser/test_site_pages.py", "tests/course/test_site.py",
                  "tests/test_notebook_pass.py")
"""Test files whose tests share a costly module fixture (the site, built once; the small
notebooks run once): one unit each."""


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its nbval notebook, its file (for ONE_UNIT_FILES),
    or the test itself."""
    path = nodeid.partition("::")[0]
    return notebook_of(nodeid) or (path if path in ONE_UNIT_FILES else nodeid)


if LoadScopeScheduling is not None:
    class NotebookScheduling(LoadScopeScheduling):
        """Units of work: one per nbval notebook or listed file, one per other test, in
        collection order."""

        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    def pytest_xdist_make_scheduler(config: pytest.Config, log):
        config.option.loadscopereorder = False  # keep the order set below: longest first
        return NotebookScheduling(config, log)


def _weight(item: pytest.Item) -> int:
    """0 runs first: the notebooks under nbval, then the tests that start services or kernels,
    then the rest."""
    if notebook_of(item.nodeid):
        return 0
    quick = not (item.get_closest_marker("services") or item.get_closest_marker("notebooks"))
    return 2 if quick else 1


def no_heartbeat() -> None:
    """Start every Jupyter client in this process without its heartbeat thread.

    The kernels here are local processes, so jupyter_client asks their manager whether they
    live and never reads the heartbeat. Beside a CPU hog the heartbeat thread could miss a
    beat, reopen its socket and block in a send; closing the client then joins that thread
    for ever (nbval's teardown of notebook 00 hung 300 s so once).
    """
    try:
        from jupyter_client.client import KernelClient
    except ImportError:
        return
    start = KernelClient.start_channels
    if getattr(start, "without_heartbeat", False):
        return

    def start_channels(self, shell=True, iopub=True, stdin=True, hb=False, control=True):
        start(self, shell=shell, iopub=iopub, stdin=stdin, hb=False, control=control)

    start_channels.without_heartbeat = True
    KernelClient.start_channels = start_channels


def pytest_configure(config: pytest.Config) -> None:
    no_heartbeat()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_weight)  # stable: each notebook's cells keep their order
    for item in items:
        if notebook_of(item.nodeid):
            NotebookPass.take(item)


KERNEL_ENV = {"LAB_STATIC": "1"}
"""Set while nbval starts a notebook's kernel: dashboards leave images (the site test builds
the course site from the executed notebooks)."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    if not notebook_of(item.nodeid):
        return (yield)
    saved = {name: os.environ.get(name) for name in KERNEL_ENV}
    os.environ.update(KERNEL_ENV)  # nbval starts the notebook's kernel in this setup
    try:
        return (yield)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


ROOT = Path(__file__).resolve().parent
EXECUTED = ROOT / "tests" / "artifacts" / "executed"
"""Each notebook as the nbval pass ran it (dashboards as images); the site tests build the
course site from these instead of running every notebook again."""
VERDICTS = ("PASS ", "FAIL ", "INCONCLUSIVE")
CHECKS = ("Correct", "Not yet", "Not attempted yet")
"""What an exercise's ``qN.check()`` prints first (labsupport.course.checks)."""
CELL_RUNS = 3
"""A cell whose claim stays inconclusive runs again, this many runs in all (cells re-run safely)."""
LEAK_PROBE = """
import json, threading
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


REPLAY_TIMEOUT_S = 1200
"""pytest-timeout for one cell item: two runs, and up to two replays of the cells above it."""


def inconclusive(error: Exception) -> bool:
    """True when nbval's cell error is a claim that stayed inconclusive (strict mode)."""
    return "ClaimInconclusive" in (getattr(error, "inner_traceback", None) or "")


def printed(outputs) -> list[str]:
    """The lines a cell printed (colours removed)."""
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    return plain(text).splitlines()


def verdicts(outputs) -> list[str]:
    """The claims a cell printed, as "PASS name" / "FAIL name" (the measured numbers vary),
    and its checks' verdicts ("Correct", "Not yet", ...; their messages name measurements)."""
    found = []
    for line in printed(outputs):
        if line.startswith(VERDICTS):
            found.append(line.split(": measured")[0])
        found.extend(label for label in CHECKS if line.startswith(f"{label}:"))
    return found


def unsolved(outputs) -> list[str]:
    """The lines where a cell's checks say anything but "Correct"."""
    return [line for line in printed(outputs)
            if line.startswith(tuple(f"{label}:" for label in CHECKS[1:]))]


class NotebookPass:
    """One nbval cell item, run the way a learner re-runs cells: twice in a row.

    nbval's own run (output check included) happens twice. A run that raised
    ``ClaimInconclusive`` is repeated after the cells above it ran again, in order, in the same
    kernel (a claim cell often judges what an earlier cell measured, so the experiment must
    run again, as after Run All Above): ``CELL_RUNS`` runs in all. The two runs must print the
    same verdicts (claims and checks); in a worked solution every check must say Correct.
    Before the first cell and after the last, a probe lists the kernel's lab
    threads, child processes and listening ports: the last cell fails if the notebook left
    any behind. The executed notebook is written to ``EXECUTED``."""

    def __init__(self, item: pytest.Item):
        self.item, self.file, self.run_once = item, item.parent, item.runtest
        self.solution = Path(str(self.file.fspath)).parent.name == "solutions"

    @classmethod
    def take(cls, item: pytest.Item) -> None:
        """Make ``item`` (an nbval cell) run through a NotebookPass."""
        cell = cls(item)
        item.runtest = cell.run
        item.add_marker(pytest.mark.timeout(REPLAY_TIMEOUT_S))
        passes = item.parent.__dict__.setdefault("lab_passes", [])
        passes.append(cell)

    def run(self) -> None:
        if self.item.cell_num == 0:
            self.file.lab_before = self.probe()
        try:
            first = self.run_decided()
            self.solved()
            second = self.run_decided()
            self.solved()
            assert first == second, (
                f"Cell {self.item.cell_num} printed other verdicts when run again: "
                f"{first} then {second}")
        finally:
            self.keep_outputs()
            if self.item.cell_num == self.last_cell():
                self.finish()

    def solved(self) -> None:
        """In a worked solution (``solutions/``), every check the cell ran must say Correct."""
        wrong = unsolved(self.item.test_outputs or []) if self.solution else []
        assert not wrong, (f"Cell {self.item.cell_num} of a worked solution: its check does "
                           f"not pass: {wrong[0]}")

    def run_decided(self) -> list[str]:
        """nbval's run of the cell, repeated while a claim is inconclusive; its verdicts."""
        for attempt in range(1, CELL_RUNS + 1):
            try:
                self.run_once()
                return verdicts(self.item.test_outputs or [])
            except NbCellError as err:
                if not inconclusive(err) or attempt == CELL_RUNS:
                    raise
                print(f"Cell {self.item.cell_num}: a claim was inconclusive on run {attempt}; "
                      "running the cells above it and the cell again")
                self.replay_above()
        raise AssertionError("unreachable")

    def replay_above(self) -> None:
        """Run every cell above this one again, in order (their verdicts were decided)."""
        for cell in self.file.lab_passes:
            if cell.item.cell_num >= self.item.cell_num:
                break
            try:
                cell.run_once()
            except pytest.skip.Exception:
                continue  # a cell nbval skips stays skipped
            except NbCellError as err:
                if not inconclusive(err):
                    raise

    def last_cell(self) -> int:
        """The number of the notebook's last code cell (nbval counts code cells only)."""
        if not hasattr(self.file, "lab_last_cell"):
            self.file.lab_last_cell = sum(c.cell_type == "code" for c in self.file.nb.cells) - 1
        return self.file.lab_last_cell

    def probe(self) -> dict[str, list]:
        """Lab threads, live child processes and listening ports of the kernel, right now."""
        texts: list[str] = []

        def keep(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                texts.append(msg["content"]["text"])

        self.file.kernel.kc.execute_interactive(LEAK_PROBE, timeout=60, output_hook=keep,
                                                allow_stdin=False)
        return json.loads("".join(texts))

    def keep_outputs(self) -> None:
        """Store this cell's last outputs in the notebook's executed copy."""
        if not hasattr(self.file, "lab_executed"):
            self.file.lab_executed = copy.deepcopy(self.file.nb)
        index = next(i for i, cell in enumerate(self.file.nb.cells) if cell is self.item.cell)
        self.file.lab_executed.cells[index].outputs = list(self.item.test_outputs or [])

    def finish(self) -> None:
        """Write the executed copy; fail when the notebook left threads, processes or ports."""
        path = Path(str(self.file.fspath))
        EXECUTED.mkdir(parents=True, exist_ok=True)
        target = EXECUTED / f"{path.parent.name}__{path.name}"
        partial = target.with_suffix(".partial")
        nbformat.write(self.file.lab_executed, partial)
        partial.replace(target)  # the site test may read it from another worker meanwhile
        before, after = getattr(self.file, "lab_before", None), self.probe()
        if before is None:
            return
        leaks = {key: sorted(set(after[key]) - set(before[key])) for key in after}
        assert leaks == {"threads": [], "processes": [], "ports": []}, (
            f"{path.name} leaves lab threads, processes or ports behind after its last cell: "
            f"{leaks}")
