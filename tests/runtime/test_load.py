"""labsupport.runtime.load: arrival schedules, open loop and closed loop (time scale 0.1)."""
from __future__ import annotations

import asyncio
import socket
import statistics
import threading
import time

import pytest

from labsupport.runtime import load, settings
from labsupport.runtime.errors import BadParameter
from labsupport.runtime.metrics import Recorder

SCALE = 0.1


@pytest.fixture
def lab(lab_at):
    return lab_at(SCALE, seed=3)


# ----- arrival_times ---------------------------------------------------------------------
@pytest.mark.parametrize("rate, duration, count", [(10, 1, 10), (4, 2.5, 10), (50, 2, 100),
                                                   (3, 0.5, 2), (0.5, 10, 5)])
def test_even_arrivals_count_and_spacing(rate, duration, count):
    times = load.arrival_times(rate, duration)
    assert len(times) == count
    assert times[0] == 0.0
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps == pytest.approx([1 / rate] * (count - 1))
    assert times[-1] < duration


def test_poisson_count_roughly_rate_times_duration():
    times = load.arrival_times(100, 20, poisson=True, seed=1)
    assert len(times) == pytest.approx(2000, rel=0.08)
    assert times == sorted(times)
    assert 0 < times[0] and times[-1] < 20
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(set(gaps)) > len(gaps) * 0.9, "poisson gaps are not evenly spaced"
    assert sum(gaps) / len(gaps) == pytest.approx(0.01, rel=0.08)


def test_poisson_seed_repeatability():
    first = load.arrival_times(50, 4, poisson=True, seed="a")
    assert first == load.arrival_times(50, 4, poisson=True, seed="a")
    assert first != load.arrival_times(50, 4, poisson=True, seed="b")


@pytest.mark.parametrize("rate, duration", [(0, 1), (-1, 1), (10, 0), (10, -2)])
def test_arrival_parameters_checked(rate, duration):
    with pytest.raises(BadParameter):
        load.arrival_times(rate, duration)


def test_timeout_must_be_positive():
    with pytest.raises(BadParameter, match="timeout_ms"):
        load.client_timeout(0)


# ----- open loop ----------------------------------------------------------------------------
def test_open_loop_sends_rate_times_duration(lab):
    svc = lab.service("target", latency=5)
    rec = lab.open_loop(svc, rate=50, duration=2, progress=False)
    assert len(rec) == 100
    assert rec.errors == 0
    assert svc.served == 100
    starts = sorted(s.t for s in rec.samples)
    assert starts[0] == 0.0 and starts[-1] == pytest.approx(1.98)


def test_open_loop_poisson_roughly_rate_times_duration(lab):
    svc = lab.service("target")
    rec = lab.open_loop(svc, rate=50, duration=4, poisson=True, progress=False)
    assert len(rec) == pytest.approx(200, rel=0.2)
    assert len(rec) == len(load.arrival_times(50, 4, poisson=True, seed=lab.seed))


def test_open_loop_keeps_its_schedule_while_the_service_is_slow(lab):
    svc = lab.service("slow", latency=1000)
    started = time.perf_counter()
    rec = lab.open_loop(svc, rate=20, duration=1, progress=False)
    wall = time.perf_counter() - started
    assert len(rec) == 20
    assert wall < settings.to_wall(1.0 + 1.0) + 0.5, "requests overlap; the loop does not wait"
    assert max(s.t for s in rec.samples) == pytest.approx(0.95)


def test_queueing_shows_up_in_open_loop(lab):
    """workers=1 at 100 ms serves 10/s; 20/s for 1 s piles up a queue of ~1 s."""
    svc = lab.service("single", latency=100, workers=1)
    rec = lab.open_loop(svc, rate=20, duration=1, progress=False)
    stats = rec.stats()
    assert stats["count"] == 20 and stats["errors"] == 0
    assert stats["p50"] > 400
    assert stats["p99"] > 800, f"queueing hidden: {rec.summary()}"
    # Arrivals every 50 ms, one done per 100 ms: request i waits ~50*i, so the mean is
    # at least ~575 ms whatever order the pool serves them in.
    assert stats["mean"] > 500


def test_latency_counts_from_the_scheduled_time(lab):
    """If the generator itself is held up, the delay still counts (no coordinated omission)."""
    svc = lab.service("quick", latency=0)
    lab.call(svc)
    rec = Recorder()

    async def run_with_stall() -> None:
        task = asyncio.create_task(load.open_loop(lab.session, svc.url, 20, 2, rec))
        await asyncio.sleep(settings.to_wall(0.5))
        time.sleep(settings.to_wall(0.5))  # block the loop: 0.5 model s of sends are late
        await task

    lab.run(run_with_stall())
    assert len(rec) == 40
    late = [s for s in rec.samples if 0.55 <= s.t <= 0.85]
    assert len(late) >= 5 and min(s.ms for s in late) > 100, "late sends carry their delay"
    assert max(s.ms for s in rec.samples) > 350
    on_time = [s.ms for s in rec.samples if s.t >= 1.5]
    assert statistics.median(on_time) < 250, "the generator caught up after the stall"


def test_open_loop_timeouts_are_recorded(lab):
    svc = lab.service("sluggish", latency=5000)
    rec = lab.open_loop(svc, rate=20, duration=0.5, timeout_ms=200, progress=False)
    assert len(rec) == 10
    assert rec.timeouts == 10 and rec.errors == 10
    assert all(200 <= s.ms < 3000 for s in rec.samples)


def test_open_loop_to_closed_port_records_refused(lab):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    rec = Recorder()
    lab.run(load.open_loop(lab.session, f"http://127.0.0.1:{port}/", 50, 0.2, rec))
    assert len(rec) == 10
    assert {s.status for s in rec.samples} == {-1}


def test_open_loop_stop_event_ends_early(lab):
    svc = lab.service("target")
    rec = Recorder()
    stop = threading.Event()

    async def stop_soon() -> None:
        task = asyncio.create_task(load.open_loop(lab.session, svc.url, 50, 100, rec, stop=stop))
        await asyncio.sleep(settings.to_wall(1.0))
        stop.set()
        await task

    started = time.perf_counter()
    lab.run(stop_soon())
    assert time.perf_counter() - started < 2
    assert 30 <= len(rec) <= 80, "about one second of a 100 s run"


# ----- closed loop ---------------------------------------------------------------------------
@pytest.mark.parametrize("users, requests", [(1, 5), (3, 10), (4, 4), (8, 3)])
def test_closed_loop_sends_exactly_requests(lab, users, requests):
    svc = lab.service("target", latency=10)
    rec = lab.closed_loop(svc, users=users, requests=requests, progress=False)
    assert len(rec) == requests
    assert svc.served == requests
    assert rec.errors == 0


def test_closed_loop_keeps_users_outstanding(lab):
    svc = lab.service("target", latency=200)
    rec = lab.closed_loop(svc, users=3, requests=9, progress=False)
    starts = sorted(s.t for s in rec.samples)
    # Three waves of three: each user waits for its answer (>= 200 ms) before sending again.
    assert starts[2] < 0.2, "the three users start at once"
    assert starts[3] >= 0.2 and starts[6] >= 0.4
    assert all(s.ms >= 200 for s in rec.samples)
    assert max(s.ms for s in rec.samples) < 400, "a closed loop never builds a queue"


@pytest.mark.parametrize("users, requests", [(0, 5), (2, 0), (1.5, 5), (2, 2.5)])
def test_closed_loop_parameters_checked(lab, users, requests):
    svc = lab.service("target")
    with pytest.raises(BadParameter):
        lab.closed_loop(svc, users=users, requests=requests, progress=False)


def test_fire_sends_bodies_on_schedule_and_returns_what_users_saw(lab_at):
    from aiohttp import web

    from labsupport.runtime.load import fire
    from labsupport.runtime.services import json_body

    lab = lab_at(1.0)

    async def echo(request):
        seen = await json_body(request)
        return web.json_response({"got": seen}, status=202, headers={"X-Seen": str(seen["n"])})

    svc = lab.service("echo", routes={"/echo": echo})
    seen = []
    shots = lab.run(fire(lab.session, svc.url + "echo", [0.0, 0.05, 0.1], method="POST",
                         body=lambda i, t: {"n": i, "t": t}, on_shot=seen.append))
    assert [s.status for s in shots] == [202] * 3 and len(seen) == 3
    assert [s.body["got"]["n"] for s in shots] == [0, 1, 2]
    assert [s.headers["X-Seen"] for s in shots] == ["0", "1", "2"]
    assert [s.sent for s in shots] == [{"n": i, "t": t} for i, t in enumerate([0, 0.05, 0.1])]


def test_fire_measures_from_the_scheduled_send_when_the_sender_falls_behind(lab_at):
    """Coordinated omission: a generator held up for 300 ms must not hide that wait."""
    import asyncio
    import time

    from labsupport.runtime.load import fire

    lab = lab_at(1.0)
    svc = lab.service("quick")

    async def late_start():
        start = asyncio.get_running_loop().time()
        time.sleep(0.3)  # the sender's loop is blocked: every request leaves late
        return await fire(lab.session, svc.url, [0.0, 0.01, 0.02], start=start)

    shots = lab.run(late_start())
    assert all(s.ms >= 280 for s in shots), [s.ms for s in shots]
