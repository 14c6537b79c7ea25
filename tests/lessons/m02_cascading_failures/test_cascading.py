"""Module 02's experiments: Little's law, the cascade, timeouts, bulkheads, the protection scenario.

Every test runs real services at time scale 0.2 and checks the physics with wide margins.
"""
from __future__ import annotations

import random

import pytest

from labsupport.lessons.m02_cascading_failures.cascading import (
    HEALTHY_C,
    BulkheadComparison,
    CascadeExperiment,
    Slowed,
    TimeoutExperiment,
    TimeoutPoint,
    c_latency,
    compare,
    downstream_p99_ms,
    measure_protection,
    p99_all,
    table,
    window,
)
from labsupport.runtime.errors import BadParameter
from labsupport.runtime.metrics import Recorder


@pytest.fixture
def lab(lab_at):
    return lab_at(0.2, seed=2)


def test_slowed_shifts_the_healthy_distribution():
    model = Slowed(HEALTHY_C, 950)
    assert model.mean_ms() == pytest.approx(HEALTHY_C.mean_ms() + 950)
    assert model.quantile_ms(0.5) == pytest.approx(1000)
    rng = random.Random(1)
    assert min(model.sample(rng) for _ in range(500)) >= 950
    with pytest.raises(BadParameter, match="extra_ms must be zero or more"):
        Slowed(HEALTHY_C, -1)


def test_c_latency_from_the_slider():
    assert c_latency(50) is HEALTHY_C
    assert c_latency(1000).quantile_ms(0.5) == pytest.approx(1000)
    assert HEALTHY_C.quantile_ms(0.99) == pytest.approx(321.5, abs=0.5)
    assert downstream_p99_ms() == pytest.approx(331.5, abs=0.5)
    for bad in (10, 20_000, "fast"):
        with pytest.raises(BadParameter, match="C's median must be between 50 and 10000"):
            c_latency(bad)


def test_window_and_p99_all_count_failures_at_their_time():
    rec = Recorder("r")
    for i in range(10):
        rec.record(i * 0.5, 20.0, 200)
    rec.record(4.9, 1000.0, 0)
    part = window(rec, 2.0, 5.0)
    assert len(part) == 7 and part.errors == 1
    assert p99_all(part) > 900 and part.percentile(99) == 20.0


def test_timeout_point_theory():
    point = TimeoutPoint(99, 330, 1000, 12)
    assert point.measured == 0.012 and point.theory == pytest.approx(0.01)
    both = point.merged(TimeoutPoint(99, 330, 1000, 8))
    assert (both.requests, both.timeouts) == (2000, 20)
    assert both.share().low < 0.01 < both.share().high
    with pytest.raises(BadParameter):
        point.merged(TimeoutPoint(90, 100, 10, 1))


def test_littles_law_holds_at_a(lab):
    cascade = CascadeExperiment(lab, workers=10)
    cascade.overhead_ms()
    point = cascade.little(rate=20, c_median_ms=150, duration=4)
    assert point.in_flight == pytest.approx(point.lambda_w, rel=0.2)
    assert 2.5 < point.in_flight < 7, "about 20/s x 0.2 s"


def test_slow_c_fills_the_pool_and_takes_local_down(lab):
    cascade = CascadeExperiment(lab, workers=10)
    cascade.overhead_ms()
    result = cascade.run(rate=20, duration=5, slow_at=1, slow_to=1000)
    assert 7 <= result.requests_to_fill() + result.inside_before_c <= 13, "K = 10 stuck: full"
    assert result.slowed_t is not None and result.slowed_t >= 1
    assert result.seconds_to_fill() == pytest.approx(result.fill_theory_s(), rel=0.3, abs=0.05)
    assert result.peak("a") > 20, "a line forms in front of a's pool"
    assert window(result.local, 0, 1).error_rate() == 0
    assert window(result.local, 3, 5).error_rate() > 0.9
    assert not any(s.in_flight for s in cascade.services), "the run drains before it returns"
    assert cascade.c.latency is HEALTHY_C, "C is healthy again after the run"


def test_bulkhead_keeps_local_healthy_while_main_path_drowns(lab):
    cascade = CascadeExperiment(lab, workers=10)
    cascade.overhead_ms()
    comparison = BulkheadComparison(cascade, slow_at=1, slow_to=1000)
    runs = comparison.run(local_workers=2)
    rows = {r["run"]: r for r in comparison.rows()}
    shared, isolated = rows["shared pool"], rows["bulkhead (2 workers)"]
    assert shared["local_failed"] > 0.9 and isolated["local_failed"] == 0
    assert isolated["local_p99"] < 300
    assert isolated["main_failed"] > 0.5, "the bulkhead does not save the main path"
    assert cascade.a.local_pool is None, "the comparison leaves a unprotected"
    assert "shared pool" in table(compare(runs, 3.0))
    with pytest.raises(BadParameter, match="local_workers must be a whole number"):
        comparison.run(local_workers=0)


def test_a_timeout_frees_as_workers(lab):
    cascade = CascadeExperiment(lab, workers=10)
    cascade.overhead_ms()
    cascade.protect(timeout_ms=400)
    result = cascade.run(rate=20, duration=4, slow_at=1, slow_to=1000)
    waiting = max(g.waiting["a"] for g in result.gauges)
    assert waiting <= 3, "20/s x 0.42 s = 8.4 < 10 workers: no line grows in front of a"
    main = window(result.main, 2, 4)
    assert main.error_rate() == 1.0 and p99_all(main) < 1000, "fails fast, after the timeout"
    assert window(result.local, 2, 4).error_rate() == 0


def test_timeout_at_a_percentile_costs_its_tail(lab):
    timeouts = TimeoutExperiment(lab)
    p90 = timeouts.measure(90, requests=300)
    assert p90.timeout_ms == pytest.approx(HEALTHY_C.quantile_ms(0.9), abs=40)
    assert p90.measured == pytest.approx(0.10, abs=0.05)
    assert timeouts.b.call_timeout_ms is None, "measure() removes the timeout again"
    with pytest.raises(BadParameter, match="percentile must be between 0 and 100"):
        timeouts.measure(100)
    with pytest.raises(BadParameter, match="requests must be a whole number"):
        timeouts.measure(99, requests=5)


def test_bad_parameters_name_the_fix(lab):
    cascade = CascadeExperiment(lab, workers=3)
    with pytest.raises(BadParameter, match="slow_at must be between 0 and the duration"):
        cascade.start(duration=2, slow_at=5)
    with pytest.raises(BadParameter, match="rate and local_rate must be above 0"):
        cascade.start(rate=0)
    with pytest.raises(BadParameter, match="No control 'colour'"):
        cascade.press_run(colour="red")
    assert cascade.board is not None, "press_run builds the dashboard when there is none"


def test_dashboards_draw_and_summarise(lab, monkeypatch):
    monkeypatch.delenv("LAB_HEADLESS", raising=False)
    cascade = CascadeExperiment(lab, workers=10)
    board = cascade.dashboard()
    assert cascade.summary() == "no traffic yet: press Run"
    result = cascade.press_run(slow_at=1, slow_to=800, live=False, rate=10)
    assert result.slow_at == 1 and bytes(board.plot.value).startswith(b"\x89PNG")
    assert "a's pool" in board.summary_text and "/local" in board.summary_text
    timeouts = TimeoutExperiment(lab)
    tboard = timeouts.dashboard()
    point = timeouts.press_measure(50, requests=40)
    assert point.percentile == 50 and "timeout at the p50" in tboard.summary_text


def test_measure_protection_cleans_up_after_itself(lab):
    mine = lab.service("mine", 5)
    report = measure_protection(lambda a, p99: a.set(call_timeout_ms=20), slow=True)
    assert report.timeout_ms == 20 and report.healthy_failed() > 0.5
    assert report.slow is None, "a protection that breaks the healthy case is not run slow"
    assert list(lab.services) == ["mine"] and lab.call(mine).ok
