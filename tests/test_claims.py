"""labsupport.claims: two-sided and one-sided claims, their sentences, strict mode."""
from __future__ import annotations

import math

import pytest

from labsupport.claims import ClaimFailed, expect, expect_at_least, expect_at_most


@pytest.fixture
def lenient(monkeypatch):
    monkeypatch.delenv("LAB_STRICT", raising=False)


def test_expect_passes_inside_relative_plus_absolute_margin(lenient, capsys):
    assert expect("x", 108, 100, tolerance=0.05, absolute=3).passed
    assert not expect("x", 109, 100, tolerance=0.05, absolute=3).passed
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" in out and "off by more than 5% + ±3" in out


def test_at_least_and_at_most_are_one_sided(lenient, capsys):
    assert expect_at_least("ratio", 1.3, 1.1, "no jitter does more work").passed
    assert not expect_at_least("ratio", 1.05, 1.1, "no jitter does more work").passed
    assert expect_at_most("p99 ms", 250, 300, "bounded").passed
    assert not expect_at_most("p99 ms", 301, 300, "bounded").passed
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "PASS  ratio: measured 1.3, claim at least 1.1: no jitter does more work."
    assert out[1].startswith("FAIL  ratio: measured 1.05, claim at least 1.1. The claim was")
    assert "claim at most 300" in out[2]


def test_nothing_measured_never_passes(lenient):
    assert not expect_at_least("calls", math.nan, 1).passed
    assert not expect_at_most("calls", math.nan, 1).passed
    assert not expect("calls", math.nan, 1).passed


def test_strict_mode_raises_with_the_sentence(monkeypatch):
    monkeypatch.setenv("LAB_STRICT", "1")
    with pytest.raises(ClaimFailed, match="claim at most 300"):
        expect_at_most("p99 ms", 400, 300, "bounded")
    with pytest.raises(ClaimFailed, match="theory 100"):
        expect("x", 200, 100)
