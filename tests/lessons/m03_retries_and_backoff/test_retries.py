"""Module 03's experiments: backoff policies, the retry guard, amplification, contention,
the retry budget and the retry storm (real services at time scale 0.2)."""
from __future__ import annotations

import random

import pytest

from labsupport.lessons.m03_retries_and_backoff.retries import (
    Amplification,
    ContentionExperiment,
    Custom,
    Decorrelated,
    Exponential,
    Fixed,
    FullJitter,
    NoRetry,
    compare_with_tenacity,
    expect_more,
    exponential_ms,
    five_policies,
    retry_guard,
    tenacity_delays_ms,
)
from labsupport.lessons.m03_retries_and_backoff.retry_storm import RetryBudget, RetryStorm
from labsupport.runtime.errors import BadParameter


@pytest.fixture
def lab(lab_at):
    return lab_at(0.2, seed=3)


# ----- policies ------------------------------------------------------------------------------
def test_exponential_window_counts_retries_from_one_and_caps():
    assert [exponential_ms(r, 100, 1000) for r in range(1, 7)] == [100, 200, 400, 800, 1000, 1000]
    assert exponential_ms(5000, 100, 1000) == 1000  # no overflow far past the cap
    with pytest.raises(BadParameter, match="the first retry is retry=1"):
        exponential_ms(0, 100, 1000)


def test_schedules_of_the_five_policies():
    assert NoRetry().schedule(3) == []
    assert Fixed(20, 500).schedule(4) == [20, 20, 20, 20]
    assert Exponential(20, 500).schedule(6) == [20, 40, 80, 160, 320, 500]
    full = FullJitter(20, 500).schedule(8, seed=1)
    assert all(0 <= w <= exponential_ms(i, 20, 500) for i, w in enumerate(full, start=1))
    assert full == FullJitter(20, 500).schedule(8, seed=1), "seeded: the same waits again"
    assert full != FullJitter(20, 500).schedule(8, seed=2)
    decorrelated = Decorrelated(20, 500).schedule(30, seed=1)
    assert all(20 <= w <= 500 for w in decorrelated)
    previous = 20.0
    for w in decorrelated:
        assert w <= 3 * previous + 1e-9
        previous = w
    assert [p.name for p in five_policies()] == ["no retry", "fixed", "exponential",
                                                 "full jitter", "decorrelated"]


def test_full_jitter_fills_its_window_uniformly():
    rng = random.Random(4)
    waits = [FullJitter(100, 2000).delay_ms(3, 0, rng) for _ in range(5000)]
    assert max(waits) <= 400 and min(waits) >= 0
    assert sum(waits) / len(waits) == pytest.approx(200, rel=0.03)


def test_policy_parameters_are_checked():
    with pytest.raises(BadParameter, match="cap_ms .* must be at least base_ms"):
        FullJitter(base_ms=100, cap_ms=50)
    with pytest.raises(BadParameter, match="base_ms must be 0 or more"):
        Fixed(base_ms=-1, cap_ms=10)
    with pytest.raises(BadParameter, match="delay must be a function"):
        Custom(5)
    custom = Custom(lambda retry, rng: 7.0 * retry)
    assert custom.schedule(3) == [7.0, 14.0, 21.0]


def test_expect_more_passes_and_fails(capsys, monkeypatch):
    monkeypatch.delenv("LAB_STRICT", raising=False)
    assert expect_more("a vs b", 300, 100, 2, meaning="a is bigger").passed
    assert not expect_more("a vs b", 150, 100, 2, meaning="a is bigger").passed
    out = capsys.readouterr().out
    assert "PASS  a vs b (300 vs 100), ratio: measured 3, claim at least 2" in out
    assert "FAIL  a vs b (150 vs 100), ratio: measured 1.5, claim at least 2" in out


def test_expect_more_on_runs_decides_from_the_interval(capsys, monkeypatch):
    monkeypatch.delenv("LAB_STRICT", raising=False)
    assert expect_more("runs", [300, 320], [100, 110, 105], 2, meaning="clearly").passed
    overlap = expect_more("runs", [300, 120], [100, 110, 105], 2, meaning="overlap")
    assert overlap.inconclusive
    assert not expect_more("runs", [150, 160], [100, 110, 105], 2, meaning="no").passed
    assert "ratio of the medians of 2 and 3 runs" in capsys.readouterr().out


def test_tenacity_schedules_match_ours():
    import tenacity

    exact = [tenacity_delays_ms(tenacity.wait_exponential(multiplier=0.1, max=2.0), r, n=1)[0]
             for r in range(1, 8)]
    assert exact == pytest.approx(Exponential(100, 2000).schedule(7))
    mine, theirs = compare_with_tenacity(100, 2000, retries=6, n=3000, seed=1)
    for m, t in zip(mine, theirs, strict=True):
        assert t.high <= t.window_ms and m.high <= m.window_ms
        assert t.mean == pytest.approx(m.window_ms / 2, rel=0.06)
        assert m.mean == pytest.approx(m.window_ms / 2, rel=0.06)
    state = random.getstate()
    tenacity_delays_ms(tenacity.wait_random_exponential(multiplier=0.1, max=2.0), 2, n=5)
    assert random.getstate() == state, "the global generator is restored"


# ----- the retry budget ---------------------------------------------------------------------
def test_retry_budget_caps_retries_at_ratio_plus_reserve():
    budget = RetryBudget(ratio=0.1, max_tokens=10)
    assert sum(budget.can_retry() for _ in range(50)) == 10, "starts full"
    allowed = 0
    for _ in range(1000):
        budget.on_request()
        allowed += sum(budget.can_retry() for _ in range(3))
    assert allowed == 100
    for _ in range(10_000):
        budget.on_request()
    assert sum(budget.can_retry() for _ in range(100)) == 10, "never holds more than 10"
    assert "100 requests" not in repr(budget) and "RetryBudget 10%" in repr(budget)
    with pytest.raises(BadParameter, match="ratio must be between 0 and 1"):
        RetryBudget(ratio=1.5)
    with pytest.raises(BadParameter, match="max_tokens must be at least 1"):
        RetryBudget(max_tokens=0)


# ----- real services --------------------------------------------------------------------------
def test_amplification_is_attempts_to_the_depth(lab):
    layers = Amplification(lab, max_layers=4)
    assert layers.run(attempts=3, layers=4).received == [1, 3, 9, 27, 81]
    assert layers.run(attempts=2, layers=2).received == [1, 2, 4]
    top = layers.run(attempts=3, layers=4, everywhere=False)
    assert top.received == top.theory() == [1, 3, 3, 3, 3]
    assert "received 3 calls" in layers.summary()
    with pytest.raises(BadParameter, match="layers must be between 1 and 4"):
        layers.run(layers=5)
    with pytest.raises(BadParameter, match="attempts must be between 1 and 6"):
        layers.run(attempts=0, layers=2)
    layers.dashboard()
    assert layers.press_run(attempts=2, layers=3).bottom == 8
    with pytest.raises(BadParameter, match="No control 'depth'"):
        layers.press_run(depth=3)


def test_retry_guard_retries_with_backoff_within_a_budget(lab):
    bottom = lab.service("g_bottom", 0, outage=True)
    top = lab.service("g_top", 0, calls=[bottom])
    top.set(guard=retry_guard(4, policy=Fixed(10, 10)))
    assert not lab.call(top).ok
    assert bottom.received == 4
    budget = RetryBudget(ratio=0.1, max_tokens=2)
    top.set(guard=retry_guard(4, budget=budget))
    bottom.reset_counts()
    for _ in range(3):
        lab.call(top)
    assert bottom.received == 3 + 2, "3 first tries and the 2 retries the reserve allows"
    with pytest.raises(BadParameter, match="3 retries means attempts=4"):
        retry_guard(0)


def test_contention_no_retry_serves_only_the_workers_and_jitter_serves_all(lab):
    contention = ContentionExperiment(lab, workers=2, latency=40)
    contention.warm_up(clients=10)
    once = contention.run(NoRetry(), clients=10)
    assert (once.calls, once.succeeded) == (10, 2)
    jitter = contention.run(FullJitter(20, 300), clients=10)
    assert jitter.succeeded == 10 and jitter.calls > 10
    assert jitter.completion_ms >= contention.ideal_ms(10) * 0.9
    assert contention.result("full jitter") is jitter
    with pytest.raises(LookupError):
        contention.result("fixed")
    with pytest.raises(BadParameter, match="clients must be 1 or more"):
        contention.run(NoRetry(), clients=0)


def test_contention_dashboard_runs_all_five_policies(lab):
    contention = ContentionExperiment(lab, workers=2, latency=20)
    contention.dashboard()
    view = contention.press_run(clients=10, base_ms=20, cap_ms=200)
    view.join(timeout=60)
    assert [r.policy for r in contention.results] == [p.name for p in five_policies()]
    assert "no retry: 10 calls, 2/10 served" in contention.summary()
    with pytest.raises(BadParameter, match="No control 'colour'"):
        contention.press_run(colour="red")


def test_storm_outlasts_its_trigger_and_a_budget_recovers(lab):
    storm = RetryStorm(lab, workers=4, latency=200, timeout_ms=1000, attempts=4)
    lab.overhead_ms(storm.api, requests=10, users=5)
    with pytest.raises(BadParameter, match="the trigger must lie inside the run"):
        storm.start(trigger=(5, 12), duration=10)
    stormy = storm.run(None, duration=8, trigger=(1, 3))
    assert stormy.success_after(5) < 0.2
    assert stormy.load_after(5) > 1.5 * storm.capacity
    calm = storm.run(RetryBudget(), duration=8, trigger=(1, 3))
    assert calm.success_after(5) > 0.9
    assert calm.retries <= 0.1 * calm.requests + 10
    assert calm.extra_at_db <= 0.1 * calm.requests + 10 < stormy.extra_at_db
    assert calm.success_share(5).n == len([s for s in calm.recorder.samples if s.t >= 5])
    assert storm.db.in_flight == 0, "the db's abandoned work is drained after each run"
    assert "no budget" in storm.summary() and "retry budget 10%" in storm.summary()
