"""Module 09, observability: spans across real HTTP hops, histograms read back from
prometheus_client, and percentiles from merged buckets against averaged ones."""
from __future__ import annotations

import math

import pytest
from matplotlib.figure import Figure
from prometheus_client import CollectorRegistry

from labsupport.lessons.m09_backpressure_and_observability.histograms import (
    BUCKETS_S,
    InstancesExperiment,
    bucket_width,
    counts,
    histogram_quantile,
    merge,
    new_histogram,
    read_buckets,
)
from labsupport.lessons.m09_backpressure_and_observability.tracing import (
    Hop,
    Trace,
    TracedChain,
    draw_histograms,
    draw_waterfall,
)
from labsupport.runtime.errors import BadParameter
from labsupport.runtime.metrics import percentile


@pytest.fixture
def lab(lab_at):
    return lab_at(0.2, seed=9)


def test_histogram_quantile_matches_promql_interpolation():
    buckets = [(0.1, 50.0), (0.2, 90.0), (0.5, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.15)    # 20 of 40 into (0.1, 0.2]
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)   # first bucket from 0
    assert histogram_quantile(1.0, [(0.1, 1.0), (math.inf, 2.0)]) == 0.1   # +Inf: last bound
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))
    assert bucket_width(0.15, buckets) == pytest.approx(0.1)
    assert counts(buckets) == [50, 40, 10, 0]
    with pytest.raises(BadParameter):
        histogram_quantile(1.5, buckets)


def test_merge_adds_counts_and_refuses_different_buckets():
    a = [(0.1, 1.0), (math.inf, 2.0)]
    b = [(0.1, 3.0), (math.inf, 3.0)]
    assert merge([a, b]) == [(0.1, 4.0), (math.inf, 5.0)]
    with pytest.raises(BadParameter):
        merge([a, [(0.2, 1.0), (math.inf, 1.0)]])


def test_read_back_from_a_registry_of_our_own():
    registry = CollectorRegistry()
    hist = new_histogram(registry, "service")
    for ms in (3, 15, 15, 900):
        hist.labels("a").observe(ms / 1000)
    buckets = read_buckets(registry, "service", "a")
    assert buckets[-1] == (math.inf, 4.0)
    assert len(buckets) == len(BUCKETS_S) + 1
    new_histogram(CollectorRegistry())            # a second registry: no duplicate error
    with pytest.raises(BadParameter):
        read_buckets(registry, "service", "missing")


def test_merged_p99_is_close_and_averaged_is_far(lab):
    exp = InstancesExperiment(lab)
    r = exp.run(busy_requests=600, quiet_requests=3)
    assert r.requests() == {"orders_busy": 600, "orders_quiet": 3}
    exact = percentile([ms for v in r.raw_ms.values() for ms in v], 99)
    assert r.exact_p99() == pytest.approx(exact)
    assert abs(r.merged_p99() - r.exact_p99()) <= r.width_at_exact_ms()
    assert r.averaged_p99() - r.exact_p99() >= 200   # (800 - 40) / 2 in theory
    assert "average of the p99s" in r.table()
    exp.draw(Figure().add_subplot())
    with pytest.raises(BadParameter):
        exp.run(busy_requests=0)


def test_trace_links_own_time_and_slowest_hop():
    hops = (Hop("a", 1, None, 0, 100), Hop("b", 2, 1, 10, 90), Hop("c", 3, 2, 20, 30))
    tr = Trace(7, hops)
    assert tr.ms == 100 and tr.own_ms(hops[1]) == 70 and tr.slowest_hop() == "b"
    assert tr.broken_links(["a", "b", "c"]) == 0
    assert tr.broken_links(["a", "c", "b"]) == 2


def test_spans_cross_real_http_hops_and_blame_the_slow_one(lab):
    chain = TracedChain(lab, slow_hop="payment")
    traces = chain.run(requests=40)
    assert len(traces) == 40 and all(len(t.hops) == 4 for t in traces)
    assert chain.broken_links() == 0
    slow = chain.slow_traces()
    assert slow and chain.blame("payment", slow).value >= 0.6
    assert {n: b[-1][1] for n, b in chain.histograms().items()} == {
        "gateway": 40, "orders": 40, "payment": 40, "inventory": 40}
    chain.set_slow("inventory", share=0.3)
    chain.run(requests=40)
    slow = chain.slow_traces()
    assert chain.blame("inventory", slow).value >= 0.6
    assert chain.blame("payment", slow).value <= 0.4   # the control: payment is fast now
    figure = Figure()
    left, right = figure.subplots(1, 2)
    fast, slowest = chain.examples()
    draw_waterfall(left, [("slowest", slowest), ("typical", fast)], chain.hop_names)
    draw_histograms(right, chain.histograms())
    with pytest.raises(BadParameter, match="hop"):
        chain.set_slow("nowhere")
    chain.close()
