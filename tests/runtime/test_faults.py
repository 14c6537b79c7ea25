"""labsupport.runtime.faults: outcome shares, outages, validation and the one-line description."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from labsupport.runtime import faults as fk
from labsupport.runtime.errors import BadParameter
from labsupport.runtime.faults import HEALTHY, Faults

N = 20_000


def shares(model: Faults, seed: int = 3) -> dict[str, float]:
    rng = random.Random(seed)
    counts = Counter(model.decide(rng) for _ in range(N))
    return {kind: counts[kind] / N for kind in (fk.OK, fk.ERROR, fk.OUTAGE, fk.HANG)}


def test_healthy_always_ok():
    assert shares(HEALTHY)[fk.OK] == 1.0
    assert str(HEALTHY) == "no faults"


@pytest.mark.parametrize("error_rate, hang_rate", [(0.1, 0.0), (0.0, 0.05), (0.2, 0.1),
                                                   (0.5, 0.3)])
def test_shares_match_rates(error_rate, hang_rate):
    got = shares(Faults(error_rate=error_rate, hang_rate=hang_rate))
    assert got[fk.ERROR] == pytest.approx(error_rate, abs=0.01)
    assert got[fk.HANG] == pytest.approx(hang_rate, abs=0.01)
    assert got[fk.OK] == pytest.approx(1 - error_rate - hang_rate, abs=0.01)
    assert got[fk.OUTAGE] == 0


def test_rate_one_is_certain():
    assert shares(Faults(error_rate=1.0))[fk.ERROR] == 1.0
    assert shares(Faults(hang_rate=1.0))[fk.HANG] == 1.0


def test_outage_always_wins():
    got = shares(Faults(outage=True, error_rate=0.5, hang_rate=0.5))
    assert got[fk.OUTAGE] == 1.0


def test_outage_draws_nothing_from_the_generator():
    rng, twin = random.Random(1), random.Random(1)
    for _ in range(10):
        assert Faults(outage=True).decide(rng) == fk.OUTAGE
    assert rng.random() == twin.random()


def test_same_seed_same_fates():
    model = Faults(error_rate=0.3, hang_rate=0.2)
    a, b = random.Random(9), random.Random(9)
    assert [model.decide(a) for _ in range(300)] == [model.decide(b) for _ in range(300)]


@pytest.mark.parametrize("kwargs, name", [
    ({"error_rate": -0.1}, "error_rate"),
    ({"error_rate": 1.5}, "error_rate"),
    ({"hang_rate": 2}, "hang_rate"),
    ({"hang_rate": -1}, "hang_rate"),
    ({"hang_ms": -5}, "hang_ms"),
])
def test_invalid_parameters_raise(kwargs, name):
    with pytest.raises(BadParameter, match=name):
        Faults(**kwargs)


def test_rates_adding_up_to_more_than_one_are_rejected():
    with pytest.raises(BadParameter):
        Faults(error_rate=0.7, hang_rate=0.5)


def test_faults_are_frozen():
    with pytest.raises(AttributeError):
        Faults().error_rate = 0.5  # type: ignore[misc]


@pytest.mark.parametrize("model, text", [
    (Faults(), "no faults"),
    (Faults(error_rate=0.05), "errors 5%"),
    (Faults(outage=True), "outage"),
    (Faults(hang_rate=0.1, hang_ms=2000), "hangs 10% for 2000 ms"),
    (Faults(error_rate=0.25, outage=True, hang_rate=0.5, hang_ms=300),
     "errors 25%, outage, hangs 50% for 300 ms"),
])
def test_str(model, text):
    assert str(model) == text
