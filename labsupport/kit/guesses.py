"""Your prediction beside the measurement, and how far off it was.

Each lesson's "Predict" cell stores a few guesses; after the experiment the lesson prints
them next to what it measured::

    >>> print(guess_line("a chain of 3 x 500 ms", 1000, 1512.4, " ms"))
    a chain of 3 x 500 ms: you guessed 1,000 ms, measured 1,512 ms: 512 ms too low (34% below)
    >>> print(guess_line("share of slow requests", 0.01, 0.63, share=True))
    share of slow requests: you guessed 1%, measured 63%: 62 points too low
    >>> print(guess_line("calls at the bottom", None, 243))
    calls at the bottom: measured 243 (no guess written down: set it in the Predict cell)
"""
from __future__ import annotations

import math


def _num(value: float, unit: str, share: bool) -> str:
    if share:
        return f"{value:.0%}"
    text = f"{value:,.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.2g}"
    return f"{text}{unit}"


def _how_far(guess: float, measured: float, unit: str, share: bool) -> str:
    gap = guess - measured
    side = "too high" if gap > 0 else "too low"
    if share:
        points = abs(gap) * 100
        return "spot on" if points < 0.5 else f"{points:.0f} points {side}"
    if math.isclose(guess, measured, rel_tol=0.005, abs_tol=1e-9):
        return "spot on"
    text = f"{_num(abs(gap), unit, False)} {side}"
    if measured != 0:
        text += f" ({abs(gap) / abs(measured):.0%} {'above' if gap > 0 else 'below'})"
    return text


def guess_line(what: str, guess: float | str | None, measured: float | str, unit: str = "",
               share: bool = False) -> str:
    """One line: the guess, the measured value and how far apart they are.

    ``share=True`` prints both as percentages and the gap in percentage points. A measured
    word (``"refund"``) is compared with the guess as it is: right or not.

    >>> print(guess_line("first compensation", "cancel", "refund"))
    first compensation: you guessed 'cancel', measured 'refund' (not what happened)
    """
    if isinstance(measured, str):
        if guess is None:
            return f"{what}: measured {measured!r} (no guess written down: set it in the Predict cell)"
        verdict = "right" if guess == measured else "not what happened"
        return f"{what}: you guessed {guess!r}, measured {measured!r} ({verdict})"
    seen = _num(float(measured), unit, share)
    if guess is None:
        return f"{what}: measured {seen} (no guess written down: set it in the Predict cell)"
    try:
        value = float(guess)
    except (TypeError, ValueError):
        return f"{what}: measured {seen}; your guess {guess!r} is not a number"
    return (f"{what}: you guessed {_num(value, unit, share)}, measured {seen}: "
            f"{_how_far(value, float(measured), unit, share)}")


def show_guess(what: str, guess: float | str | None, measured: float | str, unit: str = "",
               share: bool = False) -> None:
    """Print :func:`guess_line` (use it after the experiment that measured ``what``)."""
    print(guess_line(what, guess, measured, unit, share))
