"""Your progress through the exercises, kept in a local file that ``git pull`` never touches.

Every ``q.check()`` saves its result here (and, in classroom mode with
``LAB_CLASSROOM=1``, also sends it to the learner's progress topic for the instructor). See the table in a notebook with
``print(labsupport.exercises.progress_table())`` or in a terminal with
``python -m labsupport progress``.

The file is ``.lab/progress.json`` in the course folder (git ignores it);
``LAB_PROGRESS_FILE`` points it elsewhere (the tests use that).
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from labsupport.runtime.settings import state_dir

DONE, TRIED, NOT_ATTEMPTED = "done", "tried", "not attempted"
STATUSES = (DONE, TRIED, NOT_ATTEMPTED)
MARKS = {DONE: "✓", TRIED: "✗", NOT_ATTEMPTED: "·"}


def progress_file() -> Path:
    """Where progress is saved: ``LAB_PROGRESS_FILE``, else ``.lab/progress.json``."""
    override = os.environ.get("LAB_PROGRESS_FILE")
    return Path(override) if override else state_dir() / "progress.json"


def load(path: Path | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """Everything saved so far: ``{module: {question: {"status": ..., ...}}}``.

    ``path`` reads another progress file (the grader reads each learner's).
    """
    path = path or progress_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    modules = data.get("modules", {}) if isinstance(data, dict) else {}
    return modules if isinstance(modules, dict) else {}


def record(module: str, question: str, status: str, message: str = "") -> None:
    """Save the result of one check (``status`` is "done", "tried" or "not attempted")."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    modules = load()
    entry = modules.setdefault(str(module), {}).setdefault(str(question), {"tries": 0})
    if status == NOT_ATTEMPTED and entry.get("status") in (DONE, TRIED):
        return  # an emptied cell does not undo work already checked
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    entry.update(status=status, message=message, updated=now)
    if status != NOT_ATTEMPTED:
        entry["tries"] = int(entry.get("tries", 0)) + 1
    if status == DONE:
        entry.setdefault("first_done", now)
    _save(modules)
    if os.environ.get("LAB_CLASSROOM") == "1":
        from labsupport.course.classroom import publish_progress

        publish_progress({"module": str(module), "question": str(question), **entry})


def _save(modules: dict[str, Any]) -> None:
    path = progress_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"version": 1, "modules": modules}, indent=1, sort_keys=True,
                              ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # atomic: a crash never leaves half a file


def status(module: str, question: str) -> str:
    """The latest status of one question ("not attempted" when never checked)."""
    return load().get(str(module), {}).get(str(question), {}).get("status", NOT_ATTEMPTED)


def table(declared: dict[str, list[str]] | None = None) -> str:
    """A text table: one row per module, one column per question (✓ done, ✗ tried, · not yet).

    ``declared`` (``{module: [question ids]}``) adds the questions never checked yet;
    :func:`labsupport.exercises.progress_table` passes every module's."""
    saved = load()
    modules = {m: list(qs) for m, qs in (declared or {}).items()}
    for module, questions in saved.items():
        known = modules.setdefault(module, [])
        known += [q for q in sorted(questions, key=_question_order) if q not in known]
    if not modules:
        return "No exercises yet."
    width = max(len(qs) for qs in modules.values())
    header = ["module"] + [f"q{i}" for i in range(1, width + 1)] + ["done"]
    rows = [header]
    for module in sorted(modules):
        questions = sorted(modules[module], key=_question_order)
        marks = [MARKS[saved.get(module, {}).get(q, {}).get("status", NOT_ATTEMPTED)]
                 for q in questions]
        done = sum(mark == MARKS[DONE] for mark in marks)
        rows.append([module] + marks + [""] * (width - len(marks))
                    + [f"{done}/{len(questions)}"])
    lines = ["  ".join(cell.ljust(len(h)) for cell, h in zip(row, header, strict=True)).rstrip()
             for row in rows]
    lines.append("✓ done   ✗ tried, not right yet   · not attempted")
    return "\n".join(lines)


def _question_order(question: str) -> tuple[int, str]:
    digits = "".join(ch for ch in question if ch.isdigit())
    return (int(digits) if digits else 0, question)
