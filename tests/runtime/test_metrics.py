"""labsupport.runtime.metrics: percentile() and the Recorder."""
from __future__ import annotations

import math
import threading

import pytest

from labsupport.runtime.metrics import Recorder, Sample, percentile


# ----- percentile ------------------------------------------------------------------------
def test_empty_is_nan():
    assert math.isnan(percentile([], 50))
    assert math.isnan(percentile([], 0))


@pytest.mark.parametrize("p", [0, 1, 50, 99, 100])
def test_single_value_is_every_percentile(p):
    assert percentile([42.0], p) == 42.0


@pytest.mark.parametrize("p, expected", [
    (0, 1.0), (25, 1.75), (50, 2.5), (75, 3.25), (100, 4.0), (90, 3.7),
])
def test_interpolates_between_ranks(p, expected):
    assert percentile([4.0, 1.0, 3.0, 2.0], p) == pytest.approx(expected)


def test_one_to_hundred():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0


def test_odd_count_median_is_middle_value():
    assert percentile([5.0, 1.0, 9.0, 3.0, 7.0], 50) == 5.0


def test_input_is_not_reordered():
    values = [3.0, 1.0, 2.0]
    percentile(values, 50)
    assert values == [3.0, 1.0, 2.0]


def test_tail_percentile_sees_the_outlier():
    values = [10.0] * 99 + [1000.0]
    assert percentile(values, 50) == 10.0
    assert percentile(values, 99.5) > 500


# ----- Sample ------------------------------------------------------------------------------
@pytest.mark.parametrize("status, ok", [(200, True), (204, True), (299, True), (300, False),
                                        (500, False), (503, False), (0, False), (-1, False)])
def test_sample_ok(status, ok):
    assert Sample(0.0, 1.0, status).ok is ok


# ----- Recorder ----------------------------------------------------------------------------
def filled() -> Recorder:
    r = Recorder("svc")
    for i, ms in enumerate([10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]):
        r.record(i * 0.1, ms, 200)
    r.record(0.7, 999.0, 500)
    r.record(0.8, 5000.0, 0)
    r.record(0.9, 1.0, -1)
    return r


def test_errors_and_timeouts_counting():
    r = filled()
    assert len(r) == 10
    assert r.errors == 3, "500, timeout (0) and refused (-1) all count as failed"
    assert r.timeouts == 1, "only status 0 is a timeout"
    assert r.error_rate() == pytest.approx(0.3)


def test_latencies_ok_only_by_default():
    r = filled()
    assert r.latencies() == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]
    assert sorted(r.latencies(ok_only=False)) == sorted(
        [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 999.0, 5000.0, 1.0])


def test_stats_of_successful_requests():
    s = filled().stats()
    assert s["count"] == 10
    assert s["errors"] == 3
    assert s["error_rate"] == pytest.approx(0.3)
    assert s["p50"] == pytest.approx(40.0)
    assert s["p95"] == pytest.approx(67.0)
    assert s["p99"] == pytest.approx(69.4)
    assert s["max"] == 70.0, "a failed request's latency is not the max"
    assert s["mean"] == pytest.approx(40.0)


def test_percentile_with_and_without_failures():
    r = filled()
    assert r.percentile(100) == 70.0
    assert r.percentile(100, ok_only=False) == 5000.0


def test_empty_recorder():
    r = Recorder("idle")
    s = r.stats()
    assert s["count"] == 0 and s["errors"] == 0 and s["error_rate"] == 0.0
    assert all(math.isnan(s[k]) for k in ("p50", "p95", "p99", "max", "mean"))
    assert r.summary() == "idle: no requests yet"
    assert r.series() == []


def test_all_failed_recorder_has_nan_latency():
    r = Recorder()
    r.record(0.0, 10.0, 503)
    s = r.stats()
    assert s["errors"] == 1 and s["error_rate"] == 1.0
    assert math.isnan(s["p50"])
    assert "n/a" in r.summary()


def test_summary_text():
    text = filled().summary()
    assert text.startswith("svc: 10 requests, 3 failed (30.0%)")
    assert "p50 40 ms" in text
    assert "p95 67 ms" in text
    assert "p99 69 ms" in text
    assert "max 70 ms" in text
    assert "svc: 10 requests" in repr(filled())


def test_summary_shows_decimals_below_10_ms():
    r = Recorder("fast")
    r.record(0.0, 2.34, 200)
    assert "p50 2.3 ms" in r.summary()


def test_series_buckets():
    r = Recorder()
    for t, ms, status in [(0.1, 10, 200), (0.5, 30, 200), (0.9, 20, 500),
                          (1.2, 100, 200), (1.7, 300, 200),
                          (3.05, 50, 0)]:
        r.record(t, float(ms), status)
    rows = r.series(1.0)
    assert [row["t"] for row in rows] == [0.0, 1.0, 3.0], "empty buckets are skipped"
    assert [row["requests"] for row in rows] == [3, 2, 1]
    assert [row["errors"] for row in rows] == [1, 0, 1]
    assert rows[0]["p50"] == pytest.approx(20.0)
    assert rows[1]["p50"] == pytest.approx(200.0)
    assert rows[1]["p99"] == pytest.approx(298.0)
    assert math.isnan(rows[2]["p50"])


def test_series_bucket_width():
    r = Recorder()
    for i in range(10):
        r.record(i * 0.1, 1.0, 200)
    rows = r.series(0.25)
    assert [row["requests"] for row in rows] == [3, 2, 3, 2]
    assert [row["t"] for row in rows] == pytest.approx([0.0, 0.25, 0.5, 0.75])


def test_samples_is_a_copy():
    r = filled()
    copy = r.samples
    copy.clear()
    assert len(r) == 10


def test_record_from_four_threads():
    r = Recorder()
    per_thread = 5000
    start = threading.Barrier(5)
    stats_seen: list[int] = []

    def writer(k: int) -> None:
        start.wait()
        for i in range(per_thread):
            r.record(i / 1000, float(k), 200 if i % 10 else 500)

    def reader() -> None:
        start.wait()
        for _ in range(50):
            stats_seen.append(r.stats()["count"])

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(r) == 4 * per_thread
    assert r.errors == 4 * per_thread // 10
    assert sorted({s.ms for s in r.samples}) == [0.0, 1.0, 2.0, 3.0]
    assert stats_seen == sorted(stats_seen), "counts seen while writing only grow"
