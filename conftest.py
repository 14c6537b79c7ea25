"""How one pytest run spreads the course's tests over pytest-xdist workers (`make test`).

- nbval's cells of one notebook share one kernel: they go to one worker, in order, as one
  unit (so do the site-page tests, which build the site once); every other test is a unit of
  its own, so the slow ones spread out. The browser stage uses the same scheduler.
- The longest work goes first (each notebook with every cell run twice, then nbval's
  notebooks, then the tests that start services), so no worker is left with a long test at
  the end while the others idle.
- nbval's kernels only print an inconclusive claim: the verdicts are decided, and re-run when
  inconclusive, by tests/test_notebooks.py.
- The test kernels' clients start without the heartbeat channel (see ``no_heartbeat``).

(pytest-xdist's own ``--dist loadgroup`` cannot do the first point on pytest 9: it renames
node ids through an attribute pytest 9 no longer reads.)
"""
from __future__ import annotations

import os

import pytest

try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # pytest-xdist missing: the suite still runs in one process
    LoadScopeScheduling = None


def notebook_of(nodeid: str) -> str:
    """The notebook of an nbval cell's node id ("solutions/05_x.ipynb::Cell 3"), else ""."""
    path, _, rest = nodeid.partition("::")
    return path if path.endswith(".ipynb") and rest.startswith("Cell ") else ""


ONE_UNIT_FILES = ("tests/browser/test_site_pages.py",)
"""Test files whose tests share a costly module fixture (the site, built once): one unit each."""


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
    """0 runs first: notebooks run twice, then nbval's notebooks, then services, then the rest."""
    if item.get_closest_marker("notebooks"):
        return 0
    if notebook_of(item.nodeid):
        return 1
    return 2 if item.get_closest_marker("services") else 3


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    if not notebook_of(item.nodeid):
        return (yield)
    saved = os.environ.get("LAB_INCONCLUSIVE")
    os.environ["LAB_INCONCLUSIVE"] = "warn"  # nbval starts the notebook's kernel in this setup
    try:
        return (yield)
    finally:
        if saved is None:
            os.environ.pop("LAB_INCONCLUSIVE", None)
        else:
            os.environ["LAB_INCONCLUSIVE"] = saved
