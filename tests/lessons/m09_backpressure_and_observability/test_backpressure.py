"""Module 09, backpressure: the unbounded and bounded queue, and the Kafka consumer that
pauses, on real services and the lab's broker at time scale 0.2."""
from __future__ import annotations

import math

import pytest
from matplotlib.figure import Figure

from labsupport.kit.evidence import ratio
from labsupport.lessons.m09_backpressure_and_observability.backpressure import (
    QueueExperiment,
    QueueRun,
    QueueService,
    Shot,
    draw_queue_panels,
    schedule,
)
from labsupport.lessons.m09_backpressure_and_observability.consumer_backpressure import (
    BufferedConsumer,
    ConsumerBackpressure,
    Tick,
    draw_buffer_vs_lag,
    paused_buffer_bound,
)
from labsupport.runtime.errors import BadParameter


@pytest.fixture
def lab(lab_at):
    return lab_at(0.2, seed=9)


def test_schedule_is_seeded_and_phases_follow_each_other():
    a = schedule([(20, 2), (5, 2)], seed=1)
    assert a == schedule([(20, 2), (5, 2)], seed=1)
    assert all(t < 2 for t, phase in a if phase == 0)
    assert all(2 <= t < 4 for t, phase in a if phase == 1)
    even = schedule([(10, 1)], poisson=False)
    assert [t for t, _ in even] == [i / 10 for i in range(10)]
    with pytest.raises(BadParameter):
        schedule([])


def test_queue_run_theory():
    run = QueueRun("u", rate=20, capacity=10, duration_s=5, workers=2, queue_limit=None,
                   work_ms=200, body_bytes=1024)
    assert run.rho == 2
    assert run.predicted_rejection_share() == pytest.approx(0.5)
    assert run.theory_wait_ms(5) == pytest.approx(5200)        # (20-10)*5/10 s + 200 ms
    assert run.theory_peak_bytes() == pytest.approx(52 * 1024)
    assert run.bytes_cap() is None
    with pytest.raises(BadParameter):
        run.bound_ms()
    bounded = QueueRun("b", 20, 10, 5, 2, 4, 200, 1024)
    assert bounded.bound_ms() == pytest.approx(600)
    assert bounded.bytes_cap() == 6 * 1024
    bounded.shots = [Shot(0.1, 10, 200), Shot(0.2, 1, 503, "1"), Shot(4.9, 900, 200)]
    assert bounded.rejection_share() == pytest.approx(1 / 3)
    assert bounded.retry_after_present() == 1.0
    assert bounded.admitted_p(50, last=True) == 900
    assert bounded.admitted_p(50, first=True) == 10
    assert math.isnan(QueueRun("e", 1, 1, 1, 1, 1, 1, 1).rejection_share())


def test_unbounded_latency_diverges_and_bounded_stays_under_its_bound(lab):
    exp = QueueExperiment(lab)
    runs = exp.run(rho=2.0, queue_limit=4, duration_s=5)
    u, b = runs["unbounded"], runs["bounded"]
    assert len(u.shots) == len(b.shots) > 60
    assert u.rejection_share() == 0
    assert ratio(u.admitted_ms(last=True), u.admitted_ms(first=True)).low >= 3
    assert u.admitted_p(50, last=True) == pytest.approx(
        u.theory_wait_ms(0.875 * 5, u.served_rate()), rel=0.25)
    assert 0.7 * u.capacity <= u.served_rate() <= 1.05 * u.capacity
    bound = 1.5 * b.bound_ms() + b.stall_ms
    assert b.slower_than(bound) <= 0.1 * len(b.admitted())   # a busy machine may push a few
    assert u.slower_than(bound) > len(u.admitted()) / 2
    turned_away, predicted = b.rejection_estimate(), b.predicted_rejection_share()
    assert predicted - 0.2 <= turned_away.low and turned_away.high <= predicted + 0.2
    assert b.retry_after_present() == 1.0
    assert b.peak_bytes() <= b.bytes_cap()
    assert u.peak_bytes() == pytest.approx(u.theory_peak_bytes(), rel=0.25)
    assert "turned away" in exp.summary()
    figure = Figure()
    draw_queue_panels(figure.subplots(2, 2).flat, runs)


def test_queue_bad_parameters(lab, monkeypatch):
    monkeypatch.setenv("LAB_HEADLESS", "1")
    exp = QueueExperiment(lab)
    with pytest.raises(BadParameter, match="rho"):
        exp.start(rho=0)
    with pytest.raises(BadParameter, match="queue_limit"):
        exp.start(queue_limit=-1)
    with pytest.raises(BadParameter, match="duration_s"):
        exp.start(duration_s=100)
    with pytest.raises(BadParameter, match="body_kb"):
        QueueExperiment(lab, body_kb=-1, prefix="x")
    with pytest.raises(BadParameter, match="work_ms"):
        QueueService(lab, "y", work_ms=0)
    with pytest.raises(BadParameter, match="No control"):
        exp.press_run(colour="red")   # builds the dashboard, then refuses before any run
    assert exp.board is not None and exp.runs == {}


def test_tick_lag_and_bound():
    tick = Tick(1.0, produced=100, fetched=60, processed=20, buffer=40, buffer_bytes=4000,
                paused=False)
    assert tick.lag == 80 and tick.on_broker == 40
    assert paused_buffer_bound(20) == 21


def test_buffered_consumer_bad_watermarks(lab):
    svc = lab.service("sink", 0)
    with pytest.raises(BadParameter, match="high"):
        BufferedConsumer(lab, "t", "g", svc, high=0)
    with pytest.raises(BadParameter, match="low"):
        BufferedConsumer(lab, "t", "g", svc, high=10, low=10)


def test_pausing_keeps_the_buffer_bounded_and_loses_nothing(lab, lab_broker):
    exp = ConsumerBackpressure(lab)
    runs = exp.run(rate=100, duration_s=2)
    keep, pause = runs["keep fetching"], runs["pause/resume"]
    for run in runs.values():
        assert len(run.produced_ids) == 200
        assert run.lost() == 0 and run.duplicated() == 0
        assert run.end_offset == 200 and run.broker_lag == 0
    assert pause.max_buffer() <= paused_buffer_bound(exp.high)
    assert pause.pauses >= 1
    peak = keep.at_end_of_production()
    assert peak.buffer >= 0.6 * peak.lag
    paused_peak = pause.at_end_of_production()
    assert paused_peak.on_broker >= paused_peak.lag - paused_buffer_bound(exp.high)
    assert keep.max_buffer() > 3 * pause.max_buffer()
    figure = Figure()
    draw_buffer_vs_lag(figure.subplots(1, 2), runs, exp.high)
    again = exp.run(rate=50, duration_s=1)   # a second run uses fresh topics
    assert all(r.lost() == 0 and r.end_offset == 50 for r in again.values())
    with pytest.raises(BadParameter, match="rate"):
        exp.start(rate=0)
