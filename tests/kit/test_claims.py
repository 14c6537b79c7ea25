"""labsupport.kit.claims: two-sided and one-sided claims, their sentences, strict mode."""
from __future__ import annotations

import math

import pytest

from labsupport.kit.claims import ClaimFailed, expect, expect_at_least, expect_at_most


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


# --- intervals: PASS / FAIL / INCONCLUSIVE from an Estimate ---------------------------------

from labsupport.kit.claims import ClaimInconclusive, sanity  # noqa: E402
from labsupport.kit.evidence import Estimate, quantile, ratio, share  # noqa: E402


def test_an_interval_inside_the_claim_passes_outside_fails_across_is_inconclusive(lenient):
    assert expect_at_most("p", Estimate(10, 8, 12, 50, "t"), 20).verdict == "PASS"
    assert expect_at_most("p", Estimate(30, 25, 40, 50, "t"), 20).verdict == "FAIL"
    assert expect_at_most("p", Estimate(15, 8, 25, 50, "t"), 20).verdict == "INCONCLUSIVE"
    assert expect_at_least("r", Estimate(3, 2.5, 3.5, 50, "t"), 2).verdict == "PASS"
    assert expect_at_least("r", Estimate(1.5, 1.2, 1.8, 50, "t"), 2).verdict == "FAIL"
    assert expect("x", Estimate(100, 98, 103, 50, "t"), 100, tolerance=0.05).verdict == "PASS"
    assert expect("x", Estimate(100, 90, 103, 50, "t"), 100, tolerance=0.05).inconclusive
    assert expect("x", Estimate(120, 110, 130, 50, "t"), 100, tolerance=0.05).verdict == "FAIL"


def test_a_p99_of_twenty_requests_cannot_pass_or_fail_a_ceiling_it_sits_under(lenient, capsys):
    claim = expect_at_most("p99", quantile(range(20), 0.99), 250, "the tail is short")
    assert claim.inconclusive and not claim.passed
    out = capsys.readouterr().out
    assert out.startswith("INCONCLUSIVE p99") and "unbounded" in out


def test_more_samples_settle_an_inconclusive_claim(lenient):
    batches = [list(range(100, 300))]

    def more():
        batches.append(list(range(100, 300)))
        return quantile([x for b in batches for x in b], 0.99)

    claim = expect_at_most("p99", quantile(batches[0][:20], 0.99), 400, "bounded", more=more)
    assert claim.verdict == "PASS" and len(batches) == 2


def test_more_is_asked_a_bounded_number_of_times(lenient):
    calls = []

    def more():
        calls.append(1)
        return Estimate(15, 8, 25, 50, "t")

    claim = expect_at_most("p", Estimate(15, 8, 25, 50, "t"), 20, more=more, rounds=3)
    assert claim.inconclusive and len(calls) == 3


def test_strict_raises_on_inconclusive_unless_told_to_warn(monkeypatch):
    monkeypatch.setenv("LAB_STRICT", "1")
    with pytest.raises(ClaimInconclusive, match="straddles"):
        expect_at_most("p", Estimate(15, 8, 25, 50, "t"), 20)
    monkeypatch.setenv("LAB_INCONCLUSIVE", "warn")
    assert expect_at_most("p", Estimate(15, 8, 25, 50, "t"), 20).inconclusive


def test_quantile_interval_covers_the_true_quantile_about_95_percent_of_the_time():
    import numpy as np
    rng = np.random.default_rng(1)
    covered = sum(q.low <= 1.0 <= q.high for q in
                  (quantile(rng.exponential(1 / np.log(2), 200), 0.5) for _ in range(400)))
    assert 0.92 <= covered / 400 <= 0.99


def test_share_and_ratio_intervals():
    s = share(0, 40)
    assert s.value == 0 and 0.05 < s.high < 0.12
    slow = [200 + i % 7 for i in range(60)]
    fast = [100 + i % 5 for i in range(60)]
    r = ratio(slow, fast, paired=True)
    assert r.low > 1.8 and r.high < 2.2 and "paired" in r.method
    assert ratio(slow, fast).value == r.value


def test_sanity_checks_say_they_are_not_findings(lenient, capsys):
    assert sanity("money conserved", 0, 0, "every transaction balances").passed
    assert "sanity check, not a finding" in capsys.readouterr().out


def test_an_estimate_moves_with_its_interval():
    moved = Estimate(100, 90, 120, 40, "t").shifted(-30)
    assert (moved.value, moved.low, moved.high, moved.n) == (70, 60, 90, 40)


# ----- pauses of the machine ----------------------------------------------------------------
def test_a_failure_right_after_a_pause_is_inconclusive_and_says_why(lenient, capsys):
    from labsupport.runtime.watchdog import note_pause

    assert expect_at_most("p50 ms", 120, 100, "fast").verdict == "FAIL"   # no pause: it fails
    note_pause(640)
    claim = expect_at_most("p50 ms", 120, 100, "fast")
    assert claim.verdict == "INCONCLUSIVE" and claim.paused_ms == 640 and not claim.passed
    assert expect("x", 109, 100, tolerance=0.05).inconclusive
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("INCONCLUSIVE p50 ms: measured 120, claim at most 100. "
                             "Inconclusive: it failed, but this kernel could not run for 640 ms")
    assert "(off by more than 5%)" in out[2]


def test_a_pass_is_kept_and_an_old_or_short_pause_changes_nothing(lenient):
    import time

    from labsupport.runtime.watchdog import PAUSE_MS, WINDOW_S, note_pause

    note_pause(PAUSE_MS - 1)
    assert expect_at_most("p50 ms", 120, 100, "fast").verdict == "FAIL"
    note_pause(900, at=time.perf_counter() - WINDOW_S - 1)
    assert expect_at_most("p50 ms", 120, 100, "fast").verdict == "FAIL"
    note_pause(900)
    assert expect_at_most("p50 ms", 90, 100, "fast").verdict == "PASS"


def test_strict_raises_inconclusive_not_failed_after_a_pause(monkeypatch):
    from labsupport.kit.claims import ClaimInconclusive
    from labsupport.runtime.watchdog import note_pause

    monkeypatch.setenv("LAB_STRICT", "1")
    note_pause(300)
    with pytest.raises(ClaimInconclusive, match="could not run for 300 ms"):
        expect_at_least("ratio", 1.0, 2.0)


def test_the_watchdog_sees_the_interpreter_held_and_nothing_when_idle():
    import time

    from labsupport.runtime.watchdog import Watchdog, forget_pauses, worst_pause

    dog = Watchdog(every_s=0.005, pause_ms=40)
    try:
        time.sleep(0.2)   # the control: idle, the thread wakes on time
        idle = worst_pause(window_s=1)
        start = time.perf_counter()
        sum(range(10_000_000))   # one C loop that keeps the interpreter for itself
        took_ms = (time.perf_counter() - start) * 1000
        time.sleep(0.05)
        held = worst_pause(window_s=1)
    finally:
        dog.stop()
        forget_pauses()
    assert idle < 40 <= held and held == pytest.approx(took_ms, abs=40), (idle, held, took_ms)
