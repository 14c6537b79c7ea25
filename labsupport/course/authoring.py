"""Tools for course authors: keep notebooks clean but with the outputs nbval checks.

Notebooks are stored without outputs, except cells marked ``# NBVAL_CHECK_OUTPUT``:
those are deterministic, and nbval compares their stored output with a fresh run.
``python -m labsupport notebooks store-outputs notebooks/00_start_here.ipynb`` runs a
notebook and keeps exactly those outputs.
"""
from __future__ import annotations

from pathlib import Path

MARK = "# NBVAL_CHECK_OUTPUT"


def store_checked_outputs(path: str | Path, timeout: int = 300) -> int:
    """Execute ``path``, keep outputs only on marked cells, save; returns how many kept."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nb.metadata.pop("widgets", None)  # widget state is live, never stored
    kept = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        if MARK in cell.source:
            kept += 1
        else:
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, path)
    return kept
