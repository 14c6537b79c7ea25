"""labsupport.runtime.latency: each model draws what it promises (20k seeded samples)."""
from __future__ import annotations

import random
import statistics

import pytest

from labsupport.runtime.errors import BadParameter
from labsupport.runtime.latency import Constant, LatencyModel, LogNormal, Normal, Spikes, as_model
from labsupport.runtime.metrics import percentile

N = 20_000


def draws(model: LatencyModel, seed: int = 42, n: int = N) -> list[float]:
    rng = random.Random(seed)
    return [model.sample(rng) for _ in range(n)]


# ----- Constant --------------------------------------------------------------------------
def test_constant_always_the_same():
    values = draws(Constant(75), n=1000)
    assert set(values) == {75.0}
    assert Constant(75).mean_ms() == 75.0
    assert Constant(75).quantile_ms(0.99) == 75.0


def test_constant_zero_is_allowed():
    assert draws(Constant(0), n=10) == [0.0] * 10


# ----- Normal ----------------------------------------------------------------------------
@pytest.mark.parametrize("mean, sd", [(100, 20), (500, 50), (40, 4)])
def test_normal_mean_and_sd_within_2_percent(mean, sd):
    values = draws(Normal(mean, sd))
    assert statistics.fmean(values) == pytest.approx(mean, rel=0.02)
    assert statistics.stdev(values) == pytest.approx(sd, rel=0.02)
    assert Normal(mean, sd).mean_ms() == mean


def test_normal_quantiles_match_samples():
    model = Normal(200, 30)
    values = draws(model)
    for q in (0.5, 0.9, 0.99):
        assert percentile(values, q * 100) == pytest.approx(model.quantile_ms(q), rel=0.02)


def test_normal_never_negative():
    values = draws(Normal(5, 20), n=5000)
    assert min(values) == 0.0, "draws below zero become zero"
    assert all(v >= 0 for v in values)
    assert Normal(5, 20).quantile_ms(0.01) == 0.0


def test_normal_without_spread_is_constant():
    assert set(draws(Normal(30, 0), n=100)) == {30.0}
    assert Normal(30, 0).quantile_ms(0.99) == 30.0


# ----- LogNormal -------------------------------------------------------------------------
@pytest.mark.parametrize("median, sigma", [(50, 0.5), (200, 0.3), (20, 0.7)])
def test_lognormal_median_and_p99_within_5_percent(median, sigma):
    model = LogNormal(median, sigma)
    values = draws(model)
    assert model.quantile_ms(0.5) == pytest.approx(median)
    assert percentile(values, 50) == pytest.approx(model.quantile_ms(0.5), rel=0.05)
    assert percentile(values, 99) == pytest.approx(model.quantile_ms(0.99), rel=0.05)


def test_lognormal_mean_and_long_tail():
    model = LogNormal(50, 0.5)
    values = draws(model)
    assert statistics.fmean(values) == pytest.approx(model.mean_ms(), rel=0.02)
    assert model.mean_ms() > 50, "a long tail pulls the mean above the median"
    assert model.quantile_ms(0.99) > 2 * model.quantile_ms(0.5)
    assert min(values) > 0


# ----- Spikes ----------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.01, 0.02])
def test_spikes_share_within_0_3_percentage_points(p):
    values = draws(Spikes(Constant(20), Constant(1000), p=p))
    share = sum(v == 1000.0 for v in values) / len(values)
    assert abs(share - p) < 0.003, f"spike share {share:.4f} vs p={p}"
    assert set(values) == {20.0, 1000.0}


def test_spikes_mean_ms_formula_and_samples():
    model = Spikes(Constant(20), Constant(1000), p=0.01)
    assert model.mean_ms() == pytest.approx(29.8)
    model = Spikes(Normal(20, 5), Constant(200), p=0.05)
    assert model.mean_ms() == pytest.approx(0.95 * 20 + 0.05 * 200)
    assert statistics.fmean(draws(model)) == pytest.approx(model.mean_ms(), rel=0.03)


def test_spikes_edge_probabilities():
    assert set(draws(Spikes(Constant(1), Constant(9), p=0), n=2000)) == {1.0}
    assert set(draws(Spikes(Constant(1), Constant(9), p=1), n=2000)) == {9.0}


# ----- repeatability -----------------------------------------------------------------------
@pytest.mark.parametrize("model", [
    Normal(100, 20), LogNormal(50, 0.8), Spikes(Normal(20, 5), LogNormal(500, 0.5), p=0.1),
], ids=["normal", "lognormal", "spikes"])
def test_same_seed_same_sequence(model):
    first, again, other = draws(model, 7, 500), draws(model, 7, 500), draws(model, 8, 500)
    assert first == again
    assert first != other


# ----- parameters ---------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: Constant(-1),
    lambda: Normal(-5, 1),
    lambda: Normal(5, -1),
    lambda: LogNormal(0),
    lambda: LogNormal(-10, 0.5),
    lambda: LogNormal(10, -0.1),
    lambda: Spikes(Constant(1), Constant(2), p=1.5),
    lambda: Spikes(Constant(1), Constant(2), p=-0.01),
], ids=["const-neg", "normal-mean", "normal-sd", "lognorm-zero", "lognorm-neg",
        "lognorm-sigma", "spikes-p-high", "spikes-p-low"])
def test_bad_parameters_raise_bad_parameter(make):
    with pytest.raises(BadParameter) as info:
        make()
    assert info.value.fix or "must" in str(info.value)


def test_bad_parameter_message_names_the_field():
    with pytest.raises(BadParameter, match="sd"):
        Normal(10, -1)
    with pytest.raises(BadParameter, match="median"):
        LogNormal(0)
    with pytest.raises(BadParameter, match="p must be between 0 and 1"):
        Spikes(Constant(1), Constant(2), p=2)


def test_as_model_turns_numbers_into_constants():
    assert as_model(50) == Constant(50.0)
    assert as_model(12.5).mean_ms() == 12.5
    model = Normal(10, 1)
    assert as_model(model) is model


@pytest.mark.parametrize("bad", ["50", None, True, [50]])
def test_as_model_rejects_non_numbers(bad):
    with pytest.raises(BadParameter, match="latency must be a number"):
        as_model(bad)
