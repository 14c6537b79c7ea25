"""Module 01's experiments: models from controls, chains, fan-out, tail at scale, availability."""
from __future__ import annotations

import math
import random
import statistics

import pytest

from labsupport.kit.guesses import guess_line
from labsupport.lessons.m01_blocking_calls.blocking import (
    AvailabilityChain,
    ChainExperiment,
    FanOutExperiment,
    HedgeExperiment,
    TailAtScale,
    TailPoint,
    expected_ms,
    latency_model,
)
from labsupport.runtime.errors import BadParameter
from labsupport.runtime.latency import Constant, LogNormal, Normal


@pytest.fixture
def lab(lab_at):
    return lab_at(0.2, seed=3)


def test_latency_model_from_controls():
    assert latency_model("constant", 200, 50) == Constant(200)
    assert latency_model("normal", 200, 50) == Normal(200, 50)
    assert latency_model("normal", 200, 0) == Constant(200)
    model = latency_model("lognormal", 200, 150)
    assert isinstance(model, LogNormal)
    assert model.mean_ms() == pytest.approx(200)
    rng = random.Random(1)
    draws = [model.sample(rng) for _ in range(20000)]
    mean = sum(draws) / len(draws)
    sd = math.sqrt(sum((d - mean) ** 2 for d in draws) / len(draws))
    assert sd == pytest.approx(150, rel=0.08), "lognormal must keep the requested spread"
    with pytest.raises(BadParameter, match="Unknown distribution"):
        latency_model("uniform", 1, 1)


def test_tail_point_theory():
    point = TailPoint(n=100, requests=200, slow=126, p50_ms=1, p99_ms=2, p_slow=0.01)
    assert point.measured == 0.63
    assert point.theory == pytest.approx(0.634, abs=5e-4)


def test_chain_length_changes_live_and_latencies_add(lab):
    chain = ChainExperiment(lab, n=2, latency=100, max_n=4)
    assert chain.theory_ms() == 200
    two_overhead = chain.overhead_ms()
    two = chain.run(requests=10).percentile(50)
    chain.configure(4, 100)
    four_overhead = chain.overhead_ms()
    four = chain.run(requests=10).percentile(50)
    # The lab's own cost per hop grows with the machine's load: compare each length with
    # the same chain at 0 ms, measured just before it.
    assert 195 <= two <= 1.25 * (200 + two_overhead) + 30, (two, two_overhead)
    added = 1.25 * (200 + max(0.0, four_overhead - two_overhead)) + 30
    assert 180 <= four - two <= added, ("two more 100 ms services add about 200 ms",
                                        two, four, two_overhead, four_overhead)


def test_parallel_fan_out_costs_the_slowest(lab):
    fan = FanOutExperiment(lab, latencies=(50, 100, 200))
    fan.overhead_ms(parallel=False)  # as the notebook does: this also opens the connections
    series = fan.run(parallel=False, requests=20).percentile(50)
    fan.overhead_ms(parallel=True)
    parallel = fan.run(parallel=True, requests=20).percentile(50)
    # The lab's overhead (large on a busy machine) slows both; the gap stays about the sum
    # minus the slowest, 150 ms. Leaves called in series by mistake would close it.
    assert parallel >= 200 and series - parallel > 100, (series, parallel)


def test_tail_counts_the_requests_whose_user_waited_for_a_slow_leaf(lab):
    tail = TailAtScale(lab, max_n=20, p_slow=0.2, fast_ms=1, slow_ms=200)
    point = tail.measure(n=20, requests=30)
    assert point.theory == pytest.approx(1 - 0.8 ** 20)
    assert point.measured >= 0.9 and point.leaf_slow >= 27
    assert point.threshold_ms > 100
    one = tail.measure(n=1, requests=30)
    assert one.measured < 0.5
    both = point.merged(point)
    assert (both.requests, both.slow) == (60, 2 * point.slow)
    assert both.share().low < both.measured < both.share().high or both.measured == 1


def test_the_tail_is_measured_at_the_user_not_from_the_leaves_reports(lab):
    """An aggregator that stops waiting after 50 ms: the leaves still report slow draws,
    but no user waits for them, and the user-side count says so."""
    tail = TailAtScale(lab, max_n=20, p_slow=0.2, fast_ms=1, slow_ms=200)
    tail.root.set(call_timeout_ms=50)
    point = tail.measure(n=20, requests=20)
    assert point.leaf_slow >= 15
    assert point.measured <= 0.1


def test_expected_ms_is_the_mean_of_a_clipped_normal():
    rng = random.Random(2)
    for model in (Normal(100, 400), Normal(50, 50), Normal(500, 100)):
        draws = [model.sample(rng) for _ in range(40000)]
        assert expected_ms(model) == pytest.approx(sum(draws) / len(draws), rel=0.03), model
    assert expected_ms(Normal(100, 400)) > 200
    assert expected_ms(LogNormal(50, 0.8)) == LogNormal(50, 0.8).mean_ms()
    assert expected_ms(Constant(7)) == 7


def test_availability_chain_validates_and_measures(lab):
    chain = AvailabilityChain(lab, availabilities=(0.9, 0.8))
    assert chain.product() == pytest.approx(0.72)
    assert chain.measure(requests=400) == pytest.approx(0.72, abs=0.07)
    assert chain.success().n == 400
    pooled = chain.measure_more(requests=200)
    assert pooled.n == 600 and pooled.low < 0.72 < pooled.high
    with pytest.raises(BadParameter, match="give 2 availabilities"):
        chain.set([0.9])
    with pytest.raises(BadParameter, match="between 0 and 1"):
        chain.set([0.9, 1.5])


def test_each_service_in_a_chain_has_its_own_latency(lab):
    chain = ChainExperiment(lab, n=3, latency=0, max_n=4)
    chain.configure(3, [100, 0, 300])
    assert chain.theory_ms() == 400
    assert [s.latency.mean_ms() for s in chain.services[:3]] == [100, 0, 300]
    assert chain.services[2].calls == [] and chain.services[1].calls == [chain.services[2]]
    with pytest.raises(BadParameter, match="a latency for each"):
        chain.configure(3, [100])
    chain.dashboard()
    with pytest.raises(BadParameter, match="No control 'colour'"):
        chain.press_run(colour="red")


def _robust_sigma(values: list[float]) -> float:
    q1, _, q3 = statistics.quantiles(values, n=4)
    return (q3 - q1) / 1.349


def test_twin_gaps_cancel_the_lab_and_keep_the_chain_s_own_spread(lab):
    """Against a steady twin, a chain of three Normal(100, 20) varies by about 20·√3 ms
    around its mean, more than one such service (the one-varied twin) and far less than
    three times one service's spread."""
    chain = ChainExperiment(lab, n=3, latency=Normal(100, 20), max_n=3)
    twins = chain.steady_twin_gaps(requests=300, users=6)
    assert len(twins.gaps) == len(twins.one_gaps) == 300
    assert abs(statistics.median(twins.gaps)) < 15  # the overhead cancels
    # Robust spreads (IQR / 1.349 estimates σ for a normal): a scheduling pause on a busy
    # machine adds a few huge gaps that inflate a standard deviation but barely move quartiles.
    spread, one = _robust_sigma(twins.gaps), _robust_sigma(twins.one_gaps)
    assert 25 < spread and spread > one, (spread, one)
    # What the chain varies beyond the one-varied twin: its two other services. The lab's own
    # noise widens both gaps alike, so it cancels in the difference of variances: about
    # √(2·20²) = 28 ms for independent services, √(60² - 20²) = 57 ms if their delays moved
    # together (three times one service's spread). (A fixed 25-50 ms window on the chain's own
    # spread failed once at 55 ms with three test workers and a CPU hog on two cores.)
    extra = math.sqrt(max(0.0, spread**2 - one**2))
    assert 15 < extra < 45, (spread, one, extra)
    assert twins.one_true_ms() == pytest.approx(46.5, abs=0.1)
    assert twins.noise_ms() >= 0 and "rounds" in twins.summary()
    assert not [name for name in lab.services if "twin" in name]  # the twins are gone


def test_a_guess_is_printed_beside_the_measurement_with_how_far_off():
    assert guess_line("chain", 1000, 1500, " ms").endswith("500 ms too low (33% below)")
    assert guess_line("share", 0.9, 0.63, share=True).endswith("27 points too high")
    assert "no guess written down" in guess_line("chain", None, 1500)
    assert "not a number" in guess_line("chain", "lots", 1500)


def test_a_hedge_after_the_p95_cuts_the_slow_tail_for_a_few_extra_calls(lab):
    hedge = HedgeExperiment(lab)
    assert 30 < hedge.calibrate(requests=100) < 900
    run = hedge.run(rate=12, requests=300)
    plain_slow = sum(ms > 500 for ms in run.plain_ms)
    hedged_slow = sum(ms > 500 for ms in run.hedged_ms)
    # a busy machine makes a few hedged requests slow too, never as many as without hedging
    assert plain_slow >= 3 and hedged_slow <= plain_slow / 2, (plain_slow, hedged_slow)
    assert 0 < run.hedges < 0.2 * run.requests
    assert run.requests <= run.leaf_calls <= run.requests + run.hedges
    assert "hedge after" in run.summary()


def test_with_no_hedge_in_time_the_hedged_design_is_the_plain_one(lab):
    """The control: a hedge delay longer than any call sends no second copy."""
    hedge = HedgeExperiment(lab)
    hedge.hedge_after_ms = 5_000
    run = hedge.run(rate=12, requests=60)
    assert run.hedges == 0 and run.leaf_calls == run.requests


def test_the_hedging_dashboard_runs_what_its_controls_say(lab):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hedge = HedgeExperiment(lab)
    board = hedge.dashboard()
    run = hedge.press_run(hedge_at=0.5, requests=100, rate=20)
    assert run is hedge.last and run.requests == 100
    # hedging at the median sends a second copy for about half (21 of 100 seen beside a busy
    # neighbour, whose stalls inflate the calibrated median); the default p95, about 5
    assert run.hedges >= 12
    fig, ax = plt.subplots()
    hedge.draw(ax)
    assert len(ax.lines) == 3 and "hedge after" in ax.get_legend().get_texts()[2].get_text()
    plt.close(fig)
    assert board is hedge.board
    with pytest.raises(BadParameter, match="No control 'colour'"):
        hedge.press_run(colour="red")


def test_the_control_arm_has_no_slow_leaf_and_enters_the_prediction(lab):
    """With every leaf fast, no leaf reports a slow draw and the spikes come back after; the
    control's share of slow users raises the prediction: 1 - (1-p)^n (1 - c)."""
    tail = TailAtScale(lab, max_n=20, p_slow=0.2, fast_ms=1, slow_ms=200)
    control = tail.control(20, requests=20)
    assert control.leaf_slow == 0 and control.theory == 0
    assert control.measured <= 0.2
    point = tail.measure(20, requests=10)
    assert point.leaf_slow >= 7  # the spikes are back
    half = TailPoint(20, 10, 5, 0, 0, 0.2, overhead_share=0.0).beside(
        TailPoint(20, 10, 5, 0, 0, 0.0))
    assert half.theory == pytest.approx(1 - 0.8 ** 20 * 0.5)
