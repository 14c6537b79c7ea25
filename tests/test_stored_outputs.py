"""Notebooks are stored clean: only cells marked ``# NBVAL_CHECK_OUTPUT`` keep an output, and
those keep the execution count nbval needs (else it reports "Unrun reference cell has
outputs"). Fix a failure with ``python -m labsupport notebooks store-outputs PATH``."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from labsupport.course.authoring import MARK

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(ROOT.glob("notebooks/*.ipynb")) + sorted(ROOT.glob("solutions/*.ipynb")) + \
    sorted(ROOT.glob("exercises/*.ipynb"))


def stored_problems(path: Path) -> list[str]:
    problems = []
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type != "code":
            continue
        checked = MARK in cell.source
        if checked and (not cell.outputs or cell.execution_count is None):
            problems.append(f"cell {index} is checked by nbval but has no stored run")
        if not checked and (cell.outputs or cell.execution_count is not None):
            problems.append(f"cell {index} keeps an output nbval does not check")
    return problems


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_only_checked_cells_keep_a_stored_run(path):
    assert stored_problems(path) == [], (
        f"{path.name}: {stored_problems(path)}; run `python -m labsupport notebooks "
        f"store-outputs {path.relative_to(ROOT)}`")


def test_the_check_sees_both_mistakes(tmp_path):
    nb = nbformat.v4.new_notebook()
    unrun = nbformat.v4.new_code_cell(f"{MARK}\nprint(1)")
    unrun.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    left = nbformat.v4.new_code_cell("print(2)", execution_count=3)
    nb.cells = [unrun, left]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    assert stored_problems(path) == ["cell 0 is checked by nbval but has no stored run",
                                     "cell 1 keeps an output nbval does not check"]
