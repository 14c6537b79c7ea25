"""How long each stage of `make test` took, against its budget.

``tests/run_all.sh`` appends one line per stage to ``tests/artifacts/stage_times.tsv``
(name, seconds, budget in seconds); ``python -m labsupport.course.stage_times FILE`` prints the table
and exits with status 1 when a stage took longer than its budget, so a suite that slowly
grows fails loudly instead of quietly costing everyone minutes. ``make bench`` puts the same
figures in BENCHMARKS.md.

Budgets are set for one machine (2 cores; :data:`REFERENCE_S`). A slower machine gets
proportionally more: ``--speed`` times a fixed pure-Python loop and prints the factor, in
percent, that ``tests/run_all.sh`` applies to every budget, so a slow CPU does not fail the
run while a suite that grows still does.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

REFERENCE_S = 0.40
"""Seconds :func:`loop_s` took on the machine the budgets in tests/run_all.sh were set on
(2 cores, 2026-12-02; on it the pytest stage took about 860 s and the browser stage 490 s)."""
SPEED_RANGE = (1.0, 3.0)
"""The factor stays within these. A faster machine keeps the budgets as they are (much of the
suite waits on model time, which a faster CPU does not shorten), and a budget never grows
without bound (a machine three times slower than the reference is not timed fairly)."""


@dataclass(frozen=True)
class StageTime:
    """One stage of the suite: its name, how long it took and its budget (seconds)."""

    name: str
    seconds: float
    budget: float

    @property
    def over(self) -> bool:
        """True when the stage took longer than its budget."""
        return self.seconds > self.budget


def read(path: Path) -> list[StageTime]:
    """The stages recorded in ``path`` (tab-separated: name, seconds, budget).

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "t.tsv"
    >>> _ = f.write_text("lint\\t3\\t30\\npytest\\t400\\t420\\n")
    >>> [(s.name, s.seconds, s.over) for s in read(f)]
    [('lint', 3.0, False), ('pytest', 400.0, False)]
    """
    stages = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            name, seconds, budget = line.split("\t")
            stages.append(StageTime(name, float(seconds), float(budget)))
    return stages


def table(stages: list[StageTime]) -> str:
    """A plain-text table of the stages, their times, budgets and the total."""
    width = max([len(s.name) for s in stages] + [5])
    rows = [f"{'stage':<{width}}  {'time':>6}  {'budget':>6}"]
    for s in stages:
        flag = "  OVER BUDGET" if s.over else ""
        rows.append(f"{s.name:<{width}}  {s.seconds:>5.0f}s  {s.budget:>5.0f}s{flag}")
    total = sum(s.seconds for s in stages)
    rows.append(f"{'total':<{width}}  {total:>5.0f}s  {sum(s.budget for s in stages):>5.0f}s")
    return "\n".join(rows)


def loop_s(n: int = 3_000_000) -> float:
    """Best of three runs of a fixed pure-Python loop, in seconds: how fast one core runs
    Python here (most of the suite's work is Python in kernels, services and pytest)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        sum(i * i for i in range(n))
        best = min(best, time.perf_counter() - start)
    return best


def speed_factor(seconds: float) -> float:
    """How much longer than on the reference machine the suite may take, given :func:`loop_s`.

    >>> speed_factor(0.40), speed_factor(0.60), speed_factor(0.10), speed_factor(9.0)
    (1.0, 1.5, 1.0, 3.0)
    """
    low, high = SPEED_RANGE
    return round(min(max(seconds / REFERENCE_S, low), high), 2)


def main(argv: list[str]) -> int:
    """Print the table of ``argv[0]``; 1 when a stage went over its budget. ``--speed``
    prints this machine's budget factor in percent (and what it measured, on stderr)."""
    if argv == ["--speed"]:
        seconds = loop_s()
        factor = speed_factor(seconds)
        print(f"this machine ran the calibration loop in {seconds:.2f} s (the budgets' machine: "
              f"{REFERENCE_S:.2f} s): budgets x {factor:.2f}", file=sys.stderr)
        print(round(factor * 100))
        return 0
    if len(argv) != 1 or not Path(argv[0]).is_file():
        print("usage: python -m labsupport.course.stage_times tests/artifacts/stage_times.tsv"
              "\n       python -m labsupport.course.stage_times --speed")
        return 2
    stages = read(Path(argv[0]))
    print("== stage times\n" + table(stages))
    over = [s for s in stages if s.over]
    for s in over:
        print(f"FAIL: '{s.name}' took {s.seconds:.0f} s, over its budget of {s.budget:.0f} s. "
              "Find what grew (pytest --durations=20) before raising the budget in "
              "tests/run_all.sh.")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
