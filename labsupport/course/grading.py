"""Grading for a class: run learners' exercise notebooks and collect every question's verdict.

``python -m labsupport grade PATH...`` takes one path per learner: an exercise notebook, or a
folder holding that learner's exercise notebooks. Each notebook runs in a fresh kernel, in
its own process, with:

* the learner's own broker namespace (``grade-<learner>``), so learners sharing one broker
  never see each other's topics or consumer groups;
* its own progress file, from which the verdicts are read (every ``q.check()`` writes one);
* a time limit: a notebook that hangs is stopped (its kernel too) and reported as that
  learner's problem, and the other learners are graded all the same.

The result is a score table (text), ``grades.json`` and ``junit.xml`` (for CI autograding);
the command exits non-zero when any question is not done.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

from labsupport.course import progress
from labsupport.runtime.errors import LabError, require
from labsupport.runtime.settings import clean_namespace

IMPORT = re.compile(r"from\s+labsupport\.exercises\.m(\d+)\s+import")


@dataclass
class Verdict:
    """One question of one learner: ``status`` is done, tried or not attempted."""

    module: str
    question: str
    status: str
    message: str = ""


@dataclass
class LearnerGrade:
    """Everything one learner got: verdicts, the notebooks run and any problem met."""

    learner: str
    notebooks: list[str] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def score(self) -> int:
        """Questions done."""
        return sum(v.status == progress.DONE for v in self.verdicts)

    @property
    def total(self) -> int:
        """Questions graded."""
        return len(self.verdicts)


def learners(paths: list[str]) -> list[tuple[str, list[Path]]]:
    """``(learner name, notebooks)`` for each path: a notebook file or a learner's folder."""
    found = []
    for raw in paths:
        path = Path(raw)
        require(path.exists(), f"Nothing to grade at {raw}.", "give a notebook or a folder")
        books = [path] if path.is_file() else sorted(path.glob("*.ipynb"))
        require(all(b.suffix == ".ipynb" for b in books), f"{raw} is not a notebook (.ipynb).")
        require(bool(books), f"No notebooks in {raw}.", "give a folder of .ipynb files")
        found.append((path.stem if path.is_file() else path.name, books))
    names = [name for name, _ in found]
    require(len(set(names)) == len(names), "Two paths have the same learner name.",
            "give each learner's work its own file or folder name")
    return found


def module_of(notebook: Path) -> str:
    """The exercise module a notebook checks (from its import line, else its file name)."""
    text = notebook.read_text(encoding="utf-8")
    match = IMPORT.search(text) or re.match(r"(\d+)", notebook.name)
    require(match is not None, f"{notebook} is not an exercise notebook of the course.",
            "grade the notebooks in exercises/ (or learners' copies of them)")
    return f"{int(match.group(1)):02d}"


def grade(paths: list[str], limit_s: float = 900.0) -> list[LearnerGrade]:
    """Run every learner's notebooks (``limit_s`` seconds each at most) and collect verdicts."""
    require(limit_s > 0, f"The time limit must be above 0 s, got {limit_s}.")
    grades = []
    for learner, books in learners(paths):
        grades.append(grade_learner(learner, books, limit_s))
    return grades


def grade_learner(learner: str, books: list[Path], limit_s: float) -> LearnerGrade:
    """One learner: each notebook in a fresh kernel, under the learner's own namespace."""
    from labsupport.exercises import declared_questions

    result = LearnerGrade(learner, [str(b) for b in books])
    declared = declared_questions()
    start = time.monotonic()
    for book in books:
        module = module_of(book)
        saved, problem = run_notebook(book, learner, limit_s)
        if problem:
            result.problems.append(f"{book.name}: {problem}")
        for question in declared.get(module, []):
            entry = saved.get(module, {}).get(question, {})
            result.verdicts.append(Verdict(module, question,
                                           entry.get("status", progress.NOT_ATTEMPTED),
                                           entry.get("message", "")))
    result.seconds = round(time.monotonic() - start, 1)
    return result


def run_notebook(book: Path, learner: str, limit_s: float) -> tuple[dict, str]:
    """Execute ``book`` in a child process; returns (saved progress, problem or "")."""
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        record = Path(tmp) / "progress.json"
        env = {**os.environ, "LAB_PROGRESS_FILE": str(record), "LAB_HEADLESS": "1",
               "NO_COLOR": "1", "LAB_NAMESPACE": clean_namespace(f"grade-{learner}", "a learner")}
        for name in ("LAB_STRICT", "LAB_CLASSROOM"):
            env.pop(name, None)
        child = subprocess.Popen([sys.executable, "-m", "labsupport.course.grading", str(book.resolve())],
                                 cwd=book.resolve().parent, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = child.communicate(timeout=limit_s)
            problem = "" if child.returncode == 0 else _last_line(out) or "the kernel died"
        except subprocess.TimeoutExpired:
            _kill_tree(child.pid)
            child.communicate()
            problem = f"stopped after the {limit_s:g} s time limit (a hang?)"
        saved = progress.load(record)
    return saved, problem


def _kill_tree(pid: int) -> None:
    """Kill a process and everything it started (the notebook's kernel)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        family = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for proc in family:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def execute(book: Path) -> None:
    """Run every cell of ``book`` in a fresh kernel, going on past errors (the child side)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(book, as_version=4)
    NotebookClient(nb, kernel_name="python3", allow_errors=True, timeout=None,
                   resources={"metadata": {"path": str(book.parent)}}).execute()


# ----- reports ------------------------------------------------------------------------------
def table(grades: list[LearnerGrade]) -> str:
    """A plain-text score table: one row per learner, one column per question."""
    if not grades:
        return "Nobody to grade."
    columns = sorted({(v.module, v.question) for g in grades for v in g.verdicts})
    header = ["learner"] + [f"{m}.{q}" for m, q in columns] + ["score", "problems"]
    rows = [header]
    for g in grades:
        marks = {(v.module, v.question): progress.MARKS[v.status] for v in g.verdicts}
        rows.append([g.learner] + [marks.get(c, "") for c in columns]
                    + [f"{g.score}/{g.total}", "; ".join(g.problems) or "-"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    return "\n".join(lines + ["✓ done   ✗ tried, not right yet   · not attempted"])


def to_json(grades: list[LearnerGrade]) -> str:
    """Every verdict and problem, as JSON."""
    return json.dumps([{**asdict(g), "score": g.score, "total": g.total} for g in grades],
                      indent=1, ensure_ascii=False)


def to_junit(grades: list[LearnerGrade]) -> str:
    """JUnit XML: a test suite per learner, a test case per question (CI autograders read it)."""
    suites = ET.Element("testsuites", name="Latency Lab exercises")
    for g in grades:
        failures = g.total - g.score
        suite = ET.SubElement(suites, "testsuite", name=g.learner, tests=str(g.total),
                              failures=str(failures), errors=str(len(g.problems)),
                              time=f"{g.seconds:.1f}")
        for v in g.verdicts:
            case = ET.SubElement(suite, "testcase", classname=f"{g.learner}.m{v.module}",
                                 name=v.question)
            if v.status != progress.DONE:
                ET.SubElement(case, "failure", type=v.status.replace(" ", "-"),
                              message=v.message or v.status)
        for problem in g.problems:
            ET.SubElement(ET.SubElement(suite, "testcase", classname=f"{g.learner}.run",
                                        name="notebook ran to the end"),
                          "error", message=problem)
    return ET.tostring(suites, encoding="unicode")


def write_reports(grades: list[LearnerGrade], folder: Path) -> list[Path]:
    """Write ``grades.txt``, ``grades.json`` and ``junit.xml`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("grades.txt", table(grades)), ("grades.json", to_json(grades)),
                       ("junit.xml", to_junit(grades))):
        (folder / name).write_text(text + "\n", encoding="utf-8")
        written.append(folder / name)
    return written


def main(paths: list[str], limit_s: float, out: str) -> int:
    """The ``grade`` command: grade, print the table, write the reports; 0 only if all done."""
    grades = grade(paths, limit_s)
    print(table(grades))
    for path in write_reports(grades, Path(out)):
        print(f"wrote {path}")
    return 0 if all(g.score == g.total and not g.problems for g in grades) else 1


if __name__ == "__main__":  # the child process of run_notebook
    try:
        execute(Path(sys.argv[1]))
    except LabError as exc:
        print(f"error: {exc}")
        sys.exit(1)
