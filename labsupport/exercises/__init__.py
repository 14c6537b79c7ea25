"""The exercise questions of each module, declared once and used by the notebooks.

In module 01's exercise notebook::

    from labsupport.exercises.m01 import q1, q2, q3, q4
    q1            # tells you what to define and how to check it

Each ``q`` has ``check()``, ``hint()`` and ``solution()``; see :mod:`labsupport.course.checks`.
"""
from __future__ import annotations

import importlib
import pkgutil

from labsupport.course import progress
from labsupport.course.checks import Question

MODULES = {info.name[1:]: f"{__name__}.{info.name}"
           for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name)
           if info.name[0] == "m" and info.name[1:].isdigit()}
"""``{"01": "labsupport.exercises.m01", ...}``: every ``mNN`` module in this package."""


def questions(module: str) -> list[Question]:
    """The questions of ``module`` (e.g. "01"), in order."""
    mod = importlib.import_module(MODULES[module])
    return list(mod.QUESTIONS)


def declared_questions() -> dict[str, list[str]]:
    """``{module: [question ids]}`` for every module that has exercises."""
    return {module: [q.id for q in questions(module)] for module in MODULES}


def progress_table() -> str:
    """Your progress as a table: every module's questions, ✓ done, ✗ tried, · not yet."""
    return progress.table(declared_questions())


__all__ = ["MODULES", "questions", "declared_questions", "progress_table"]
