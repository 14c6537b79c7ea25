"""Authoring: write ``exercises/`` from the worked answers in ``solutions/`` (one source of truth).

In a solution notebook, the answer sits between markers::

    def slow_share(n, p_slow=0.01):
        ### BEGIN SOLUTION
        return 1 - (1 - p_slow) ** n
        ### END SOLUTION

and the exercise notebook gets, at the same indentation::

    def slow_share(n, p_slow=0.01):
        # YOUR CODE HERE
        raise NotImplementedError("Your turn: ...")

Markdown answers sit between ``<!-- BEGIN SOLUTION -->`` and ``<!-- END SOLUTION -->``.
``python -m labsupport exercises build`` writes the exercises; ``... exercises check``
exits 1 when they are out of date.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from labsupport.runtime.errors import LabError
from labsupport.runtime.settings import course_root

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
MD_BEGIN, MD_END = "<!-- BEGIN SOLUTION -->", "<!-- END SOLUTION -->"
PLACEHOLDER = ("# YOUR CODE HERE",
               'raise NotImplementedError("Your turn: replace this line with your code, '
               'then run the check below.")')
MD_PLACEHOLDER = "*Your answer here.*"
FIX = "run python -m labsupport exercises build"


def strip_code(source: str, where: str = "a cell") -> str:
    """``source`` with every BEGIN/END SOLUTION block replaced by the placeholder."""
    out: list[str] = []
    inside = False
    for line in source.split("\n"):
        mark = line.strip()
        if mark == BEGIN:
            if inside:
                raise LabError(f"{where}: a second {BEGIN} before {END}.", f"close it with {END}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out += [indent + text for text in PLACEHOLDER]
        elif mark == END:
            if not inside:
                raise LabError(f"{where}: {END} without {BEGIN}.", f"add {BEGIN} above it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise LabError(f"{where}: {BEGIN} without {END}.", f"add {END} after the answer")
    return "\n".join(out)


_MD_BLOCK = re.compile(re.escape(MD_BEGIN) + r".*?" + re.escape(MD_END), re.DOTALL)


def strip_markdown(source: str, where: str = "a cell") -> str:
    """``source`` with every markdown solution block replaced by *Your answer here.*"""
    stripped = _MD_BLOCK.sub(MD_PLACEHOLDER, source)
    if MD_BEGIN in stripped or MD_END in stripped:
        raise LabError(f"{where}: unbalanced {MD_BEGIN} / {MD_END}.",
                       "give every BEGIN its END in the same cell")
    return stripped


def exercise_notebook(nb: Any, name: str = "notebook") -> Any:
    """A copy of the solution notebook ``nb`` as the learner's exercise notebook."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for index, cell in enumerate(nb.cells, start=1):
        where = f"{name}, cell {index}"
        if cell.cell_type == "code":
            cell.source = strip_code(cell.source, where)
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
        elif cell.cell_type == "markdown":
            cell.source = strip_markdown(cell.source, where)
    return nb


def render(solution_path: Path) -> str:
    """The exact text ``build`` writes for one solution notebook (byte-stable)."""
    import nbformat

    nb = nbformat.read(solution_path, as_version=4)
    text = nbformat.writes(exercise_notebook(nb, solution_path.name))
    return text if text.endswith("\n") else text + "\n"


def _dirs(solutions_dir: Path | str | None,
          exercises_dir: Path | str | None) -> tuple[Path, Path]:
    root = course_root()
    return (Path(solutions_dir) if solutions_dir else root / "solutions",
            Path(exercises_dir) if exercises_dir else root / "exercises")


def build(solutions_dir: Path | str | None = None,
          exercises_dir: Path | str | None = None) -> list[Path]:
    """Write ``exercises/X.ipynb`` for every ``solutions/X.ipynb``; returns the files written."""
    solutions, exercises = _dirs(solutions_dir, exercises_dir)
    exercises.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted(solutions.glob("*.ipynb")):
        target = exercises / source.name
        text = render(source)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def check_in_sync(solutions_dir: Path | str | None = None,
                  exercises_dir: Path | str | None = None) -> list[str]:
    """What differs from what :func:`build` would write: one line per file (empty: in sync)."""
    solutions, exercises = _dirs(solutions_dir, exercises_dir)
    problems = []
    expected = {p.name: p for p in sorted(solutions.glob("*.ipynb"))}
    for name, source in expected.items():
        target = exercises / name
        if not target.exists():
            problems.append(f"{target}: missing")
        elif target.read_text(encoding="utf-8") != render(source):
            problems.append(f"{target}: differs from {source}")
    for extra in sorted(exercises.glob("*.ipynb")) if exercises.is_dir() else []:
        if extra.name not in expected:
            problems.append(f"{extra}: has no solution notebook in {solutions}")
    return problems


def solution_source(module: str, name: str, solutions_dir: Path | str | None = None) -> str:
    """The worked answer that defines ``name`` in ``solutions/<module>_*.ipynb``.

    This is what ``q.solution()`` shows: the solution notebook is the only copy.
    Returns the whole cell with the BEGIN/END markers removed.
    """
    import nbformat

    solutions, _ = _dirs(solutions_dir, None)
    for path in sorted(solutions.glob(f"{module}_*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code" and BEGIN in cell.source and _defines(cell.source, name):
                return "\n".join(line for line in cell.source.splitlines()
                                 if line.strip() not in (BEGIN, END))
    raise LabError(f"No worked answer for {name!r} in {solutions}/{module}_*.ipynb.",
                   "the course checkout is incomplete: run `git status` / `git pull`")


def _defines(source: str, name: str) -> bool:
    pattern = rf"^\s*(async\s+def|def|class)\s+{re.escape(name)}\b|^\s*{re.escape(name)}\s*="
    return re.search(pattern, source, flags=re.M) is not None
