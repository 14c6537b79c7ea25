"""Module 01's experiments: models from controls, chains, fan-out, tail at scale, availability."""
from __future__ import annotations

import math
import random

import pytest

from labsupport.blocking import (
    AvailabilityChain,
    ChainExperiment,
    FanOutExperiment,
    TailAtScale,
    TailPoint,
    expected_ms,
    latency_model,
)
from labsupport.errors import BadParameter
from labsupport.latency import Constant, LogNormal, Normal


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
    overhead = chain.overhead_ms()
    two = chain.run(requests=10).percentile(50)
    chain.configure(4, 100)
    four = chain.run(requests=10).percentile(50)
    slack = 2 * overhead + 30  # the lab's own cost moves with the machine's load
    assert 195 <= two <= 200 + slack, (two, overhead)
    assert 180 <= four - two <= 200 + slack, "two more 100 ms services add about 200 ms"


def test_parallel_fan_out_costs_the_slowest(lab):
    fan = FanOutExperiment(lab, latencies=(50, 100, 200))
    fan.overhead_ms(parallel=False)  # as the notebook does: this also opens the connections
    series = fan.run(parallel=False).percentile(50)
    fan.overhead_ms(parallel=True)
    parallel = fan.run(parallel=True).percentile(50)
    assert series > 330 and parallel < 260, (series, parallel)


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
