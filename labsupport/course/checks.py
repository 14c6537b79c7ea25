"""Exercise questions: ``q1.check()``, ``q1.hint()``, ``q1.solution()``.

A :class:`Question` knows the name it looks for in your notebook (a variable
or a function), the checks your answer must pass, three graded hints and the
solution. In a notebook::

    chain_p99_ms = 380        # your answer
    q1.check()                # "Correct: ..." or "Not yet: <what is wrong>"
    q1.hint()                 # hint 1, then 2, then 3 on the next calls; q1.hint(3) directly
    q1.solution()             # the answer, only when you ask

``q1.check(answer)`` checks an object you pass instead of looking the name up.
Every result is saved to your progress record (``python -m labsupport progress``).
"""
from __future__ import annotations

import inspect
import linecache
import math
import numbers
import os
import re
import sys
import sysconfig
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labsupport.course import progress

_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])
MISSING: Any = object()
"""Stands for "no answer given" (``None`` can be a learner's answer)."""
GREEN, RED, YELLOW, RESET = "\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[0m"
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def plain(text: str) -> str:
    """``text`` without terminal colours (a check's verdict in a kernel, a traceback)."""
    return _COLOUR.sub("", text)


# ----- what a step reports --------------------------------------------------------------
class NotYet(Exception):
    """Raised inside a check step: the answer is wrong, and the message says how."""


class LearnerRaised(Exception):
    """The learner's own code raised ``error`` while a step ran it (``call`` names the call)."""

    def __init__(self, error: BaseException, call: str = "") -> None:
        super().__init__(str(error))
        self.error = error
        self.call = call


def call_learner(fn: Callable[..., Any], *args: Any, call: str = "", **kwargs: Any) -> Any:
    """Call the learner's ``fn``; their exceptions come back as :class:`LearnerRaised`."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # anything the learner's code raises is theirs to see
        raise LearnerRaised(exc, call) from exc


# ----- steps ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Mistake:
    """A plausible wrong answer and the message that explains it.

    ``like`` is the wrong value (a number), or a function computing the wrong
    output from the same inputs; ``when`` is a predicate ``when(got, *args)``.
    """

    message: str
    like: Any = None
    when: Callable[..., bool] | None = None
    rel: float = 0.01

    def matches(self, got: Any, args: tuple = ()) -> bool:
        try:
            if self.when is not None and self.when(got, *args):
                return True
            if self.like is None:
                return False
            wrong = self.like(*args) if callable(self.like) else self.like
            return _close(got, wrong, self.rel, 1e-9)
        except Exception:  # a wrong formula may not apply to this input
            return False


def _mistake_undefined(mistake: Mistake, args: tuple) -> bool:
    """True when the wrong formula itself fails on ``args`` (min of an empty list, say)."""
    if not callable(mistake.like):
        return False
    try:
        mistake.like(*args)
    except Exception:
        return True
    return False


def _close(got: Any, expected: Any, rel: float, abs_: float) -> bool:
    if expected is None or isinstance(expected, (str, bool)):
        return got == expected
    if not isinstance(got, numbers.Real) or isinstance(got, bool):
        return False
    got, expected = float(got), float(expected)
    if math.isnan(got):
        return False
    return abs(got - expected) <= max(rel * abs(expected), abs_)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)) and len(value) > 6:
        inner = ", ".join(_fmt(v) for v in value[:3])
        return f"[{inner}, ... ({len(value)} items)]"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return repr(value)


class Step:
    """One part of a check. ``run(answer)`` returns nothing or raises :class:`NotYet`."""

    def run(self, answer: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class Diagnosis(Step):
    """A "diagnose" question: the answer is a dict naming one item of a run's table (a
    partition, a consumer group, a shop) for each symptom.

    ``why`` maps each key the answer must have to the sentence that says how that symptom
    shows; ``options()`` lists the items of the table; ``truth()`` gives the right item per
    key (from how the run was made); ``shows(item)`` tells what a wrongly named item's rows
    actually show. ``noun`` names an item ("partition"); ``same_for_two`` is said when the
    learner names one item for two symptoms.
    """

    name: str
    why: dict[str, str]
    options: Callable[[], Sequence[Any]]
    truth: Callable[[], dict[str, Any]]
    shows: Callable[[Any], str]
    noun: str
    same_for_two: str

    def run(self, answer: Any) -> None:
        keys = ", ".join(f'"{key}": <{self.noun}>' for key in self.why)
        if not isinstance(answer, dict) or set(answer) != set(self.why):
            raise NotYet(f"{self.name} should be a dict with these keys: {{{keys}}}.")
        options = list(self.options())
        for key, value in answer.items():
            if isinstance(value, bool) or value not in options:
                raise NotYet(f"{key}: {value!r} is not a {self.noun} of the table "
                             f"({', '.join(map(str, options))}).")
        if len(set(answer.values())) < len(answer):
            raise NotYet(f"you named one {self.noun} for two symptoms. {self.same_for_two}")
        truth = self.truth()
        for key, why in self.why.items():  # a fixed order, whatever the learner's order
            if answer[key] != truth[key]:
                raise NotYet(f"{key}: {self.shows(answer[key])}. {why}")


@dataclass
class Value(Step):
    """The answer is a number close to ``expected`` (``rel`` share or ``abs_`` units)."""

    expected: float
    rel: float = 0.0
    abs_: float = 0.0
    unit: str = ""
    mistakes: Sequence[Mistake] = ()

    def run(self, answer: Any) -> None:
        if not isinstance(answer, numbers.Real) or isinstance(answer, bool):
            raise NotYet(f"the answer should be a number{self._unit_words()}, got "
                         f"{type(answer).__name__} {_fmt(answer)}.")
        if _close(answer, self.expected, self.rel, self.abs_):
            return
        for mistake in self.mistakes:
            if mistake.matches(answer):
                raise NotYet(f"you have {_fmt(float(answer))}{self.unit}: {mistake.message}")
        direction = "high" if answer > self.expected else "low"
        raise NotYet(f"{_fmt(float(answer))}{self.unit} is too {direction}. Check your "
                     "formula step by step, or take a hint.")

    def _unit_words(self) -> str:
        return f" (in {self.unit.strip()})" if self.unit else ""


@dataclass
class Case:
    """Call the learner's function with ``args`` (and ``kwargs``); expect ``expected``."""

    args: tuple
    expected: Any
    kwargs: dict = field(default_factory=dict)


@dataclass
class Cases(Step):
    """Run the learner's function on each case; numbers compare within ``rel``/``abs_``."""

    cases: Sequence[Case]
    name: str = "f"
    rel: float = 1e-6
    abs_: float = 1e-9
    mistakes: Sequence[Mistake] = ()
    returns: type | tuple[type, ...] | None = numbers.Real
    mistake_args: Callable[[Case], tuple] | None = None

    def run(self, answer: Any) -> None:
        if not callable(answer):
            raise NotYet(f"`{self.name}` should be a function (def {self.name}(...):), "
                         f"got {type(answer).__name__} {_fmt(answer)}.")
        for case in self.cases:
            self._one(answer, case)

    def _call_text(self, case: Case) -> str:
        parts = [_fmt(a) for a in case.args] + [f"{k}={_fmt(v)}" for k, v in case.kwargs.items()]
        return f"{self.name}({', '.join(parts)})"

    def _one(self, answer: Callable[..., Any], case: Case) -> None:
        call = self._call_text(case)
        got = call_learner(answer, *case.args, call=call, **case.kwargs)
        if self.returns is not None and (not isinstance(got, self.returns)
                                         or isinstance(got, bool)):
            raise NotYet(f"{call} returned {type(got).__name__} {_fmt(got)}; it should "
                         "return a number. Did you forget `return`?" if got is None else
                         f"{call} returned {type(got).__name__} {_fmt(got)}; it should "
                         "return a number.")
        if _close(got, case.expected, self.rel, self.abs_):
            return
        for mistake in self.mistakes:
            if mistake.matches(got, self._args(case)) and self._everywhere(answer, mistake):
                raise NotYet(f"{call} returned {_fmt(got)}, expected {_fmt(case.expected)}: "
                             f"{mistake.message}")
        raise NotYet(f"{call} returned {_fmt(got)}, expected {_fmt(case.expected)}.")

    def _args(self, case: Case) -> tuple:
        return self.mistake_args(case) if self.mistake_args else case.args

    def _everywhere(self, answer: Callable[..., Any], mistake: Mistake) -> bool:
        """True when the answer agrees with the mistake on every case it can be run on,
        so a coincidence on one input never earns the wrong explanation."""
        for case in self.cases:
            try:
                got = answer(*case.args, **case.kwargs)
            except Exception:  # that input breaks the learner's code: no evidence either way
                continue
            if not mistake.matches(got, self._args(case)) and not _mistake_undefined(
                    mistake, self._args(case)):
                return False
        return True


@dataclass
class Property(Step):
    """A property of the answer: ``check(answer)`` returns ``None`` or a failure message."""

    check: Callable[[Any], str | None]
    description: str = ""

    def run(self, answer: Any) -> None:
        message = self.check(answer)
        if message:
            raise NotYet(message)


# ----- the learner's exception, shown as theirs --------------------------------------------
def _library_dirs() -> tuple[str, ...]:
    paths = {sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib",
                                                          "platlib")}
    paths |= {sys.prefix, sys.base_prefix}
    return tuple(sorted(p for p in paths if p))


def _is_learner_file(filename: str) -> bool:
    if filename.startswith("<frozen") or not filename:
        return False
    resolved = str(Path(filename).resolve()) if not filename.startswith("<") else filename
    return not resolved.startswith(_PACKAGE_DIR) and not resolved.startswith(_library_dirs())


def learner_frame(error: BaseException) -> traceback.FrameSummary | None:
    """The innermost frame of ``error`` in the learner's code (not labsupport, not a library)."""
    frames = traceback.extract_tb(error.__traceback__)
    for frame in reversed(frames):
        if _is_learner_file(frame.filename):
            return frame
    outside = [f for f in frames if not str(Path(f.filename).resolve()).startswith(_PACKAGE_DIR)]
    return outside[-1] if outside else None


def describe_error(error: BaseException, call: str = "") -> str:
    """One plain sentence: what the learner's code raised, and where in their cell."""
    what = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    text = f"Your code raised {what}"
    if call:
        text += f" when called as {call}"
    frame = learner_frame(error)
    if frame is not None:
        line = (frame.line or linecache.getline(frame.filename, frame.lineno or 0)).strip()
        place = "your cell" if _is_cell(frame.filename) else Path(frame.filename).name
        inside = f" (in {frame.name})" if frame.name not in ("<module>", "") else ""
        text += f", at line {frame.lineno} of {place}{inside}"
        text += f": {line}" if line else "."
        return text
    return text + "."


def _is_cell(filename: str) -> bool:
    return filename.startswith("<ipython-input") or "ipykernel_" in filename


# ----- the question ---------------------------------------------------------------------
class Question:
    """One exercise question: ``check()``, ``hint()``, ``solution()``.

    ``name`` is what the question looks for in your notebook: a variable or a
    function you define. ``check(answer)`` checks ``answer`` instead.
    """

    def __init__(self, id: str, module: str, title: str, name: str,
                 steps: Sequence[Step], hints: Sequence[str], solution: str | None = None,
                 what: str = "", success: str = "") -> None:
        self.id, self.module, self.title, self.name = id, module, title, name
        self.steps = list(steps)
        self.hints = list(hints)
        self._given_solution = solution
        self.what = what or title
        self.success = success
        self._next_hint = 1

    @property
    def _solution(self) -> str:
        """The worked answer: read from the solution notebook unless given explicitly."""
        if self._given_solution is None:
            from labsupport.course.exercises_build import solution_source

            self._given_solution = solution_source(self.module, self.name)
        return self._given_solution.strip("\n")

    # ----- check --------------------------------------------------------------------
    def check(self, answer: Any = MISSING) -> bool:
        """Check your answer: prints what is right or wrong, returns True when correct."""
        if answer is MISSING:
            answer = self._lookup()
        status, message = self._evaluate(answer)
        _say(status, message)
        progress.record(self.module, self.id, status, message)
        return status == progress.DONE

    def _evaluate(self, answer: Any) -> tuple[str, str]:
        if answer is MISSING or answer is None or answer is Ellipsis:
            return progress.NOT_ATTEMPTED, self._not_attempted()
        try:
            for step in self.steps:
                step.run(answer)
        except NotYet as wrong:
            return progress.TRIED, str(wrong).strip()
        except LearnerRaised as raised:
            if isinstance(raised.error, NotImplementedError):
                return progress.NOT_ATTEMPTED, self._not_attempted()
            return progress.TRIED, describe_error(raised.error, raised.call)
        return progress.DONE, self.success or f"{self.title}."

    def _not_attempted(self) -> str:
        return (f"define `{self.name}` ({self.what}), run that cell, then run "
                f"{self.id}.check() again.")

    def _lookup(self) -> Any:
        namespace = notebook_namespace()
        if namespace is None:
            namespace = caller_namespace()
        return namespace.get(self.name, MISSING)

    # ----- hints and solution ---------------------------------------------------------
    def hint(self, n: int | None = None) -> None:
        """Print hint ``n`` (1, 2 or 3); without ``n``, the next hint each time."""
        count = len(self.hints)
        if n is None and self._next_hint > count:
            print(f"You have seen all {count} hints for {self.id}: {self.id}.hint(1) shows the "
                  f"first again, {self.id}.solution() shows the answer.")
            return
        if n is None:
            n = self._next_hint
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= count:
            print(f"{self.id} has hints 1 to {count}: try {self.id}.hint(1). "
                  f"{self.id}.solution() shows the answer.")
            return
        self._next_hint = min(n + 1, count + 1)
        print(f"Hint {n} of {count} for {self.id}: {self.hints[n - 1]}")
        if n == count:
            print(f"(That was the last hint. {self.id}.solution() shows the answer.)")

    def solution(self) -> None:
        """Show the answer (only when you ask for it)."""
        if _in_ipython():
            from IPython.display import Markdown, display

            display(Markdown(f"**Solution to {self.id}: {self.title}**\n\n"
                             f"```python\n{self._solution}\n```"))
        else:
            print(f"Solution to {self.id} ({self.title}):\n{self._solution}")

    def __repr__(self) -> str:
        return (f"<Question {self.id} (module {self.module}): {self.title}. Define "
                f"`{self.name}`, then run {self.id}.check(); {self.id}.hint() for a hint, "
                f"{self.id}.solution() for the answer.>")


def _say(status: str, message: str) -> None:
    label, colour = {progress.DONE: ("Correct", GREEN), progress.TRIED: ("Not yet", RED),
                     progress.NOT_ATTEMPTED: ("Not attempted yet", YELLOW)}[status]
    line = f"{label}: {message}"
    print(f"{colour}{line}{RESET}" if _colour() else line)


def _colour() -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    return _in_ipython() or (hasattr(sys.stdout, "isatty") and sys.stdout.isatty())


def _in_ipython() -> bool:
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    return get_ipython() is not None


def notebook_namespace() -> dict[str, Any] | None:
    """The running notebook's variables, or None outside IPython."""
    if not _in_ipython():
        return None
    from IPython import get_ipython

    return get_ipython().user_ns


def caller_namespace() -> dict[str, Any]:
    """Locals and globals of the first frame outside labsupport (a script or a test)."""
    frame = inspect.currentframe()
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(
            _PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:  # pragma: no cover - always called from somewhere
        return {}
    return {**frame.f_globals, **frame.f_locals}
