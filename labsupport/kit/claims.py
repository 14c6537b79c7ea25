"""Claim checks: compare what an experiment measured with what theory says.

>>> expect("3 x 500 ms in series", measured=1508, theory=1500, tolerance=0.05,
...        meaning="latencies add up along a chain").passed
PASS  3 x 500 ms in series: measured 1,508, theory 1,500 (within 5%): latencies add up along a chain.
True

A measurement that comes from a sample (a percentile, a share, a ratio of two designs) is
passed as an :class:`~labsupport.kit.evidence.Estimate`, with its interval. The claim then says
PASS only when the whole interval agrees, FAIL only when the whole interval disagrees, and
INCONCLUSIVE when the interval straddles the line: the noise on this machine is as large as
the effect. Give ``more=`` a function that gathers more samples and returns a new estimate,
and the claim asks for more (``rounds`` times at most) before it settles for inconclusive.

>>> from labsupport.kit.evidence import quantile
>>> expect_at_most("p50 ms", quantile(range(100, 300), 0.5), 250, "fast enough").verdict
PASS  p50 ms: measured 200 (95% interval 185 to 214, 200 samples, order statistics), claim at most 250: fast enough.
'PASS'

A claim that fails right after the machine paused the kernel (the lab's watchdog, see
:mod:`labsupport.runtime.watchdog`, saw it wake up 50 ms or more late in the last minute) is
INCONCLUSIVE, not FAIL: during a pause every request in flight looks slower and every timer
fires late, so the failure may be the machine's, not the design's; run the cell again. A
pass is kept: the lab's claims are set so that a wrong design fails them in a quiet run.

With ``LAB_STRICT=1`` (set by the test suite) a failed claim raises :class:`ClaimFailed`
and an inconclusive one raises :class:`ClaimInconclusive`, so that the test can run the
experiment again rather than pass or fail on noise (``LAB_INCONCLUSIVE=warn`` only prints).
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

from labsupport.kit.evidence import Estimate
from labsupport.runtime.errors import LabError, require
from labsupport.runtime.watchdog import PAUSE_MS, worst_pause

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
Measured = float | Estimate


class ClaimFailed(LabError):
    """A measured value disagreed with the lesson's claim (raised only when strict)."""


class ClaimInconclusive(LabError):
    """The interval straddled the claim even after more samples (raised only when strict)."""


@dataclass(frozen=True)
class Claim:
    """The result of one :func:`expect`, :func:`expect_at_least` or :func:`expect_at_most`."""

    name: str
    measured: float
    theory: float
    tolerance: float
    meaning: str
    passed: bool
    absolute: float = 0.0
    bound: str = ""  # "at least" / "at most" for a one-sided claim; "" for theory ± margin
    verdict: str = ""
    estimate: Estimate | None = None
    paused_ms: float = 0.0   # a failure made inconclusive by a pause of the machine

    def __post_init__(self) -> None:
        if not self.verdict:
            object.__setattr__(self, "verdict", PASS if self.passed else FAIL)

    @property
    def inconclusive(self) -> bool:
        """True when the interval straddled the claim: neither shown nor refuted."""
        return self.verdict == INCONCLUSIVE

    def __repr__(self) -> str:
        return f"<Claim {self.verdict}: {self.name}>"

    def _margin(self) -> str:
        parts = [f"{self.tolerance:.0%}"] if self.tolerance else []
        parts += [f"±{_num(self.absolute)}"] if self.absolute else []
        return " + ".join(parts) or "exactly"

    def _tail(self) -> str:
        if self.verdict == PASS:
            return f": {self.meaning}."
        if self.verdict == INCONCLUSIVE and self.paused_ms:
            return (f". Inconclusive: it failed, but this kernel could not run for "
                    f"{self.paused_ms:,.0f} ms in the last minute (the lab's watchdog saw it: "
                    "another program had the CPU, memory ran short, or one long step held "
                    "the interpreter), so the failure may be the machine's, not the "
                    "design's. Run the cell again.")
        if self.verdict == INCONCLUSIVE:
            return (f". Inconclusive: the interval straddles the line, so this run can neither "
                    f"show nor refute that {self.meaning or 'claim'}. The machine's noise is as "
                    "large as the effect: run the experiment again, with more requests or "
                    "fewer programs running beside it.")
        return (f". The claim was: {self.meaning}. Look at the experiment's settings "
                "(time scale, load, seed) and run it again.")

    def sentence(self) -> str:
        """The one line printed for this claim."""
        verdict = f"{self.verdict} " if self.verdict != INCONCLUSIVE else self.verdict
        shown = self.estimate.describe() if self.estimate else _num(self.measured)
        if self.bound:
            return (f"{verdict} {self.name}: measured {shown}, claim "
                    f"{self.bound} {_num(self.theory)}{self._tail()}")
        margin = self._margin()
        relation = {PASS: f"within {margin}", FAIL: f"off by more than {margin}",
                    INCONCLUSIVE: f"the interval straddles the {margin} margin"}[
            FAIL if self.paused_ms else self.verdict]
        return (f"{verdict} {self.name}: measured {shown}, theory "
                f"{_num(self.theory)} ({relation}){self._tail()}")


def strict() -> bool:
    """True when failed claims should raise (``LAB_STRICT`` set to 1/true/yes)."""
    return os.environ.get("LAB_STRICT", "").lower() in ("1", "true", "yes")


def expect(name: str, measured: Measured, theory: float, tolerance: float = 0.1,
           meaning: str = "", absolute: float = 0.0,
           more: Callable[[], Estimate] | None = None, rounds: int = 2) -> Claim:
    """Check ``measured`` is within ``tolerance`` (a share of ``theory``) plus ``absolute``.

    With an :class:`Estimate`, PASS needs the whole interval inside the margin and FAIL
    the whole interval outside it. Prints one sentence and returns the :class:`Claim`.
    """
    require(tolerance >= 0 and absolute >= 0, "tolerance and absolute must be zero or more.")
    margin = tolerance * abs(theory) + absolute
    judge = _judge(theory - margin, theory + margin)
    return _settle(name, measured, theory, meaning, judge, more, rounds,
                   tolerance=tolerance, absolute=absolute)


def expect_at_least(name: str, measured: Measured, floor: float, meaning: str = "",
                    more: Callable[[], Estimate] | None = None, rounds: int = 2) -> Claim:
    """A one-sided claim: ``measured >= floor`` (e.g. "no jitter makes at least 1.1x the calls").

    >>> expect_at_least("speed-up", 3.2, 2, "parallel calls are faster").passed
    PASS  speed-up: measured 3.2, claim at least 2: parallel calls are faster.
    True
    """
    return _settle(name, measured, floor, meaning, _judge(floor, math.inf), more, rounds,
                   bound="at least")


def expect_at_most(name: str, measured: Measured, ceiling: float, meaning: str = "",
                   more: Callable[[], Estimate] | None = None, rounds: int = 2) -> Claim:
    """A one-sided claim: ``measured <= ceiling`` (e.g. "p99 stays under 300 ms")."""
    return _settle(name, measured, ceiling, meaning, _judge(-math.inf, ceiling), more, rounds,
                   bound="at most")


def sanity(name: str, measured: float, expected: float, meaning: str = "") -> Claim:
    """A sanity check, not a finding: something the lab's own code keeps true.

    Printed as ``SANITY``-prefixed so that nobody mistakes it for evidence; it fails
    (and raises when strict) only when the lab itself is broken.
    """
    claim = Claim(f"sanity check, not a finding: {name}", measured, expected, 0.0, meaning,
                  not math.isnan(measured) and measured == expected)
    return _report(claim)


def _judge(low_ok: float, high_ok: float) -> Callable[[float, float, float], str]:
    """A verdict from (value, low, high) against the accepted range [low_ok, high_ok]."""
    def verdict(value: float, low: float, high: float) -> str:
        if math.isnan(value):
            return FAIL
        if low >= low_ok and high <= high_ok:
            return PASS
        if high < low_ok or low > high_ok:
            return FAIL
        return INCONCLUSIVE
    return verdict


def _settle(name: str, measured: Measured, theory: float, meaning: str,
            judge: Callable[[float, float, float], str],
            more: Callable[[], Estimate] | None, rounds: int, **fields) -> Claim:
    require(rounds >= 0, "rounds must be zero or more.")
    for round_ in range(rounds + 1):
        estimate = measured if isinstance(measured, Estimate) else None
        value = float(measured)
        low, high = (estimate.low, estimate.high) if estimate else (value, value)
        verdict = judge(value, low, high)
        if verdict != INCONCLUSIVE or more is None or round_ == rounds:
            break
        measured = more()
    paused = worst_pause() if verdict == FAIL else 0.0
    if paused >= PAUSE_MS:
        verdict = INCONCLUSIVE
    claim = Claim(name, value, theory, fields.pop("tolerance", 0.0), meaning,
                  verdict == PASS, verdict=verdict, estimate=estimate,
                  paused_ms=paused if verdict == INCONCLUSIVE else 0.0, **fields)
    return _report(claim)


def _report(claim: Claim) -> Claim:
    print(claim.sentence())
    if strict() and claim.verdict == FAIL:
        raise ClaimFailed(claim.sentence())
    if strict() and claim.inconclusive and os.environ.get("LAB_INCONCLUSIVE") != "warn":
        raise ClaimInconclusive(claim.sentence())
    return claim


def _num(value: float) -> str:
    if math.isnan(value):
        return "nothing"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
