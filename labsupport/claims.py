"""Claim checks: compare what an experiment measured with what theory says.

>>> expect("3 x 500 ms in series", measured=1508, theory=1500, tolerance=0.05,
...        meaning="latencies add up along a chain").passed
PASS  3 x 500 ms in series: measured 1,508, theory 1,500 (within 5%): latencies add up along a chain.
True

With ``LAB_STRICT=1`` (set by the test suite) a failed claim raises
:class:`ClaimFailed`, so CI notices when a lesson stops being true.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .errors import LabError, require


class ClaimFailed(LabError):
    """A measured value disagreed with the lesson's claim (raised only when strict)."""


@dataclass(frozen=True)
class Claim:
    """The result of one :func:`expect`."""

    name: str
    measured: float
    theory: float
    tolerance: float
    meaning: str
    passed: bool
    absolute: float = 0.0
    bound: str = ""  # "at least" / "at most" for a one-sided claim; "" for theory ± margin

    def __repr__(self) -> str:
        return f"<Claim {'PASS' if self.passed else 'FAIL'}: {self.name}>"

    def _margin(self) -> str:
        parts = [f"{self.tolerance:.0%}"] if self.tolerance else []
        parts += [f"±{_num(self.absolute)}"] if self.absolute else []
        return " + ".join(parts) or "exactly"

    def sentence(self) -> str:
        verdict = "PASS " if self.passed else "FAIL "
        tail = (f": {self.meaning}." if self.passed else
                f". The claim was: {self.meaning}. Look at the experiment's settings "
                "(time scale, load, seed) and run it again.")
        if self.bound:
            return (f"{verdict} {self.name}: measured {_num(self.measured)}, claim "
                    f"{self.bound} {_num(self.theory)}{tail}")
        margin = self._margin()
        relation = f"within {margin}" if self.passed else f"off by more than {margin}"
        return (f"{verdict} {self.name}: measured {_num(self.measured)}, theory "
                f"{_num(self.theory)} ({relation}){tail}")


def strict() -> bool:
    """True when failed claims should raise (``LAB_STRICT`` set to 1/true/yes)."""
    return os.environ.get("LAB_STRICT", "").lower() in ("1", "true", "yes")


def expect(name: str, measured: float, theory: float, tolerance: float = 0.1,
           meaning: str = "", absolute: float = 0.0) -> Claim:
    """Check ``measured`` is within ``tolerance`` (a share of ``theory``) plus ``absolute``.

    Prints one PASS/FAIL sentence and returns the :class:`Claim`; raises
    :class:`ClaimFailed` on failure when strict.
    """
    require(tolerance >= 0 and absolute >= 0, "tolerance and absolute must be zero or more.")
    ok = not math.isnan(measured) and abs(measured - theory) <= tolerance * abs(theory) + absolute
    return _report(Claim(name, measured, theory, tolerance, meaning, ok, absolute))


def expect_at_least(name: str, measured: float, floor: float, meaning: str = "") -> Claim:
    """A one-sided claim: ``measured >= floor`` (e.g. "no jitter makes at least 1.1x the calls").

    >>> expect_at_least("speed-up", 3.2, 2, "parallel calls are faster").passed
    PASS  speed-up: measured 3.2, claim at least 2: parallel calls are faster.
    True
    """
    return _report(Claim(name, measured, floor, 0.0, meaning,
                         not math.isnan(measured) and measured >= floor, bound="at least"))


def expect_at_most(name: str, measured: float, ceiling: float, meaning: str = "") -> Claim:
    """A one-sided claim: ``measured <= ceiling`` (e.g. "p99 stays under 300 ms")."""
    return _report(Claim(name, measured, ceiling, 0.0, meaning,
                         not math.isnan(measured) and measured <= ceiling, bound="at most"))


def _report(claim: Claim) -> Claim:
    print(claim.sentence())
    if not claim.passed and strict():
        raise ClaimFailed(claim.sentence())
    return claim


def _num(value: float) -> str:
    if math.isnan(value):
        return "nothing"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
