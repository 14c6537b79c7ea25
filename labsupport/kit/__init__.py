"""The notebook kit: dashboards (``Dashboard``), claims (``expect``, ``sanity``), the
statistics claims decide from (``evidence``) and the guess boxes (``show_guess``).

It imports the runtime only, never a lesson::

    from labsupport.kit import Dashboard, quantile, show_guess
"""
from __future__ import annotations

from labsupport.kit.claims import expect, expect_at_least, expect_at_most, sanity
from labsupport.kit.dashboard import Dashboard
from labsupport.kit.evidence import difference, mean, quantile, ratio, share
from labsupport.kit.experiment import Experiment
from labsupport.kit.guesses import show_guess

__all__ = [
    "expect", "expect_at_least", "expect_at_most", "sanity", "Dashboard", "Experiment",
    "difference", "mean", "quantile", "ratio", "share", "show_guess",
]
