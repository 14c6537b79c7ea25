"""How long each stage of `make test` took, against its budget.

``tests/run_all.sh`` appends one line per stage to ``tests/artifacts/stage_times.tsv``
(name, seconds, budget in seconds); ``python -m labsupport.course.stage_times FILE`` prints the table
and exits with status 1 when a stage took longer than its budget, so a suite that slowly
grows fails loudly instead of quietly costing everyone minutes. ``make bench`` puts the same
figures in BENCHMARKS.md.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


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


def main(argv: list[str]) -> int:
    """Print the table of ``argv[0]``; 1 when a stage went over its budget."""
    if len(argv) != 1 or not Path(argv[0]).is_file():
        print("usage: python -m labsupport.course.stage_times tests/artifacts/stage_times.tsv")
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
