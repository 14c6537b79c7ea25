"""labsupport.runtime.services: simulated HTTP services, their faults, pools and live knobs.

Times are model ms. Most tests run at time scale 0.1; the ones that check a latency
to within 10% + 5 ms run at 0.5 so HTTP overhead (wall ms) stays small in model ms.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from labsupport.runtime import settings
from labsupport.runtime.errors import BadParameter, LabError
from labsupport.runtime.faults import Faults
from labsupport.runtime.lab import Lab
from labsupport.runtime.latency import Constant, Normal
from labsupport.runtime.services import fetch

FAST, PRECISE = 0.1, 0.5


@pytest.fixture
def scale():
    """Sets the time scale for the test (FAST unless the test changes it); restores it."""
    saved = settings.time_scale_override()
    settings.set_time_scale(FAST)
    yield settings.set_time_scale
    settings.set_time_scale(saved)


@pytest.fixture
def lab(lab_at):
    return lab_at(FAST, seed=11)


@pytest.fixture
def precise_lab(lab_at):
    return lab_at(PRECISE, seed=11)


def near(measured: float, expected: float) -> bool:
    """Within 10% + 5 ms of the expected model time (and never faster than it)."""
    return expected * 0.98 <= measured <= expected * 1.1 + 5


def best_ms(lab: Lab, svc, n: int = 5, path: str = "") -> float:
    """Fastest of ``n`` calls after a warm-up call (which opens the connections).

    No call can be faster than the work it waits for, so the minimum is a fair
    measure, and it ignores a call slowed by other processes on a busy machine.
    """
    lab.call(svc, path)
    return min(lab.call(svc, path).ms for _ in range(n))


# ----- plain answers ---------------------------------------------------------------------
def test_zero_ms_service_answers_200(lab):
    svc = lab.service("hello")
    lab.call(svc, "health")  # opens the connection
    answer = lab.call(svc)
    assert answer.status == 200 and answer.ok
    assert answer.body["service"] == "hello"
    assert answer.body["outcome"] == "ok"
    assert answer.body["calls"] == []
    assert answer.ms < 500
    assert svc.served == 1


def test_health_answers_without_work(lab):
    svc = lab.service("slowpoke", latency=2000)
    lab.call(svc, "health")
    answer = lab.call(svc, "health")
    assert answer.status == 200
    assert answer.body == {"service": "slowpoke", "ok": True}
    assert answer.ms < 1000
    assert svc.served == 0, "health checks are not counted as work"


def test_url_and_describe(lab):
    svc = lab.service("inventory", latency=50, workers=7)
    assert svc.port > 0
    assert svc.url == f"http://127.0.0.1:{svc.port}/"
    text = svc.describe()
    assert "inventory" in text and "7 workers" in text and "no faults" in text
    assert "calls nothing" in text


def test_work_ms_in_body_is_the_drawn_latency(lab):
    svc = lab.service("const", latency=Constant(40))
    assert lab.call(svc).body["work_ms"] == 40.0


def test_constant_latency_measured(precise_lab):
    svc = precise_lab.service("one", latency=100)
    assert near(best_ms(precise_lab, svc), 100)


def test_chain_of_three_adds_up(precise_lab):
    lab = precise_lab
    first, second, third = lab.chain(3, latency=100)
    ms = best_ms(lab, first)
    assert near(ms, 300), f"3 x 100 ms in series took {ms:.1f} model ms"
    body = lab.call(first).body
    assert body["calls"][0]["service"] == "s2"
    assert body["calls"][0]["body"]["calls"][0]["service"] == "s3"
    assert third.served == 7, "warm-up, five measured calls and one more"


def test_fan_out_costs_the_slowest_not_the_sum(precise_lab):
    lab = precise_lab
    root, leaves = lab.fan_out(5, latency=0)
    for i, leaf in enumerate(leaves, start=1):
        leaf.set(latency=20 * i)  # 20, 40, 60, 80, 100 ms: sum 300, max 100
    ms = best_ms(lab, root)
    assert near(ms, 100), f"parallel fan-out of max 100 ms took {ms:.1f} model ms"
    assert len(lab.call(root).body["calls"]) == 5


def test_series_calls_add_up_and_parallel_do_not(lab):
    a, b = lab.service("a", latency=200), lab.service("b", latency=200)
    parent = lab.service("parent", latency=0, calls=[a, b])
    series = best_ms(lab, parent, n=3)
    parent.set(parallel=True)
    parallel = best_ms(lab, parent, n=3)
    assert series >= 400
    assert 200 <= parallel < 350


# ----- faults --------------------------------------------------------------------------------
def test_error_rate_one_answers_500(lab):
    svc = lab.service("broken", latency=10, faults=Faults(error_rate=1.0))
    answers = [lab.call(svc) for _ in range(3)]
    assert [a.status for a in answers] == [500, 500, 500]
    assert answers[0].body["outcome"] == "error"
    assert not answers[0].ok
    assert svc.served == 3, "an error still does the work"


def test_outage_answers_503_fast(lab):
    svc = lab.service("down", latency=2000, faults=Faults(outage=True))
    lab.call(svc)
    answer = lab.call(svc)
    assert answer.status == 503
    assert answer.body["outcome"] == "outage"
    assert answer.ms < 1000, "an outage refuses at once, it does not do the 2000 ms of work"
    assert svc.served == 0


def test_hang_with_client_timeout_is_status_0(lab):
    svc = lab.service("stuck", latency=0, faults=Faults(hang_rate=1.0, hang_ms=20_000))
    started = time.perf_counter()
    answer = lab.call(svc, timeout_ms=200)
    wall = time.perf_counter() - started
    assert answer.status == 0
    assert answer.body is None
    assert 200 <= answer.ms < 3000
    assert wall < 1.0, "the client gave up instead of waiting for the hang"
    assert svc.pool.busy == 1, "the hung request still holds a worker"


def test_hang_without_timeout_ends_in_504(lab):
    svc = lab.service("sticky", latency=0, faults=Faults(hang_rate=1.0, hang_ms=300))
    answer = lab.call(svc)
    assert answer.status == 504
    assert answer.body["outcome"] == "hung"
    assert answer.ms >= 300


@pytest.mark.parametrize("child_faults, child_status", [
    (Faults(error_rate=1.0), 500),
    (Faults(outage=True), 503),
])
def test_failing_downstream_gives_502(lab, child_faults, child_status):
    child = lab.service("child", latency=5, faults=child_faults)
    parent = lab.service("parent", latency=5, calls=[child])
    answer = lab.call(parent)
    assert answer.status == 502
    assert answer.body["calls"][0]["status"] == child_status


def test_downstream_timeout_gives_502(lab):
    child = lab.service("child", faults=Faults(hang_rate=1.0, hang_ms=20_000))
    parent = lab.service("parent", calls=[child], call_timeout_ms=100)
    answer = lab.call(parent)
    assert answer.status == 502
    assert answer.body["calls"][0]["status"] == 0
    assert answer.ms < 5000


def test_healthy_downstream_gives_200(lab):
    child = lab.service("child", latency=5)
    parent = lab.service("parent", latency=5, calls=[child])
    answer = lab.call(parent)
    assert answer.status == 200
    assert answer.body["calls"][0]["status"] == 200


def test_own_error_wins_over_downstream(lab):
    child = lab.service("child", faults=Faults(outage=True))
    parent = lab.service("parent", calls=[child], faults=Faults(error_rate=1.0))
    assert lab.call(parent).status == 500


# ----- worker pool -------------------------------------------------------------------------
def test_two_workers_queue_six_requests(precise_lab):
    lab = precise_lab
    svc = lab.service("narrow", latency=100, workers=2)
    lab.call(svc, "health")

    async def six() -> list[dict]:
        return await asyncio.gather(*(fetch(lab.session, svc.url, None) for _ in range(6)))

    def attempt() -> tuple[list[float], int]:
        future = lab.submit(six())
        seen = 0
        while not future.done():
            seen = max(seen, svc.in_flight)
            time.sleep(0.002)
        results = future.result()
        assert all(r["status"] == 200 for r in results)
        assert svc.in_flight == 0
        return sorted(r["ms"] for r in results), seen

    # Up to three tries: a busy machine may slow one; each must still show the queue.
    for _ in range(3):
        latencies, seen = attempt()
        assert latencies[0] >= 98 and latencies[2] >= 196 and latencies[4] >= 294, latencies
        assert seen > 2, "in_flight counts the waiting requests too"
        if near(latencies[-1], 300) and near(latencies[0], 100):
            break
    else:
        pytest.fail(f"6 x 100 ms on 2 workers should take about 300 ms: {latencies}")


def test_set_workers_resizes_the_pool(lab):
    svc = lab.service("resizable", workers=2)
    assert svc.set(workers=5) is svc
    assert svc.pool.capacity == 5
    assert "5 workers" in svc.describe()
    with pytest.raises(BadParameter, match="workers"):
        svc.set(workers=0)
    assert svc.pool.capacity == 5


# ----- live knobs ----------------------------------------------------------------------------
def test_set_latency_changes_the_next_request(lab):
    svc = lab.service("knob", latency=0)
    assert lab.call(svc).body["work_ms"] == 0
    svc.set(latency=Normal(200, 0))
    assert lab.call(svc).body["work_ms"] == 200
    svc.set(latency=30)
    assert lab.call(svc).body["work_ms"] == 30


def test_set_faults_live_and_back(lab):
    svc = lab.service("flaky")
    svc.set(outage=True)
    assert lab.call(svc).status == 503
    svc.set(outage=False, error_rate=1.0)
    assert lab.call(svc).status == 500
    svc.set(faults=Faults())
    assert lab.call(svc).status == 200
    assert str(svc.faults) == "no faults"


def test_set_single_fault_keeps_the_others(lab):
    svc = lab.service("mixed", faults=Faults(hang_rate=0.1, hang_ms=1234))
    svc.set(error_rate=0.2)
    assert svc.faults == Faults(error_rate=0.2, hang_rate=0.1, hang_ms=1234)


def test_set_faults_and_field_together(lab):
    svc = lab.service("both")
    svc.set(faults=Faults(hang_rate=0.5, hang_ms=10), error_rate=0.25)
    assert svc.faults == Faults(error_rate=0.25, hang_rate=0.5, hang_ms=10)


def test_set_calls_and_timeout(lab):
    child = lab.service("child", latency=5)
    parent = lab.service("parent")
    assert lab.call(parent).body["calls"] == []
    parent.set(calls=[child], call_timeout_ms=500)
    assert parent.call_timeout_ms == 500
    assert [c["service"] for c in lab.call(parent).body["calls"]] == ["child"]


def test_set_unknown_knob_names_it(lab):
    svc = lab.service("strict", latency=10)
    with pytest.raises(BadParameter) as info:
        svc.set(latncy=50)
    assert "latncy" in str(info.value)
    assert "latency" in info.value.fix, "the fix lists the real knobs"
    assert svc.latency == Constant(10), "nothing changed"


def test_set_unknown_knob_changes_nothing_else(lab):
    svc = lab.service("strict2", latency=10)
    with pytest.raises(BadParameter, match="speed"):
        svc.set(latency=99, speed=3)
    assert svc.latency == Constant(10)


def test_set_bad_values_raise(lab):
    svc = lab.service("guarded")
    with pytest.raises(BadParameter):
        svc.set(error_rate=2)
    with pytest.raises(BadParameter):
        svc.set(latency=-5)
    assert lab.call(svc).status == 200


# ----- /local ---------------------------------------------------------------------------------
def test_local_endpoint_skips_downstream(lab):
    child = lab.service("child", latency=2000)
    parent = lab.service("parent", latency=20, calls=[child])
    lab.call(parent, "health")
    answer = lab.call(parent, "local")
    assert answer.status == 200
    assert answer.body["calls"] == []
    assert answer.body["work_ms"] == 20
    assert answer.ms < 1500
    assert child.served == 0
    assert parent.served == 1
    full = lab.call(parent)
    assert full.ms >= 2000 and child.served == 1


def test_local_endpoint_still_fails_on_own_faults(lab):
    child = lab.service("child", faults=Faults(outage=True))
    parent = lab.service("parent", calls=[child])
    assert lab.call(parent, "local").status == 200, "a dead dependency does not matter"
    parent.set(error_rate=1.0)
    assert lab.call(parent, "local").status == 500


def test_unknown_path_is_404(lab):
    svc = lab.service("plain")
    assert lab.call(svc, "nope").status == 404


def test_seeded_services_repeat(scale):
    runs = []
    for _ in range(2):
        with Lab(seed=5) as lab:
            svc = lab.service("dice", latency=Normal(20, 5))
            runs.append([lab.call(svc).body["work_ms"] for _ in range(5)])
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 5


# ----- protection knobs (modules 02-04) ---------------------------------------------------
def burst(lab: Lab, svc, n: int, path: str = "") -> list[int]:
    """``n`` concurrent calls to ``svc``; their statuses."""
    async def go():
        return await asyncio.gather(*(fetch(lab.session, svc.url + path, None)
                                      for _ in range(n)))
    return [r["status"] for r in lab.run(go())]


def test_queue_limit_zero_turns_away_whoever_would_wait(lab):
    svc = lab.service("narrow", latency=300, workers=1, queue_limit=0)
    statuses = burst(lab, svc, 3)
    assert sorted(statuses) == [200, 503, 503]
    assert svc.rejected == 2 and svc.received == 3 and svc.served == 1


def test_queue_limit_lets_that_many_wait(lab):
    svc = lab.service("line", latency=200, workers=1, queue_limit=2)
    assert sorted(burst(lab, svc, 5)) == [200, 200, 200, 503, 503]


def test_without_bulkhead_local_waits_behind_slow_calls(lab):
    slow = lab.service("slowdep", latency=3000)
    front = lab.service("front", workers=2, calls=[slow])
    lab.call(front, "health")
    lab.submit(_many(lab, front, 2))  # both workers now wait for slowdep
    time.sleep(settings.to_wall(0.3))
    assert front.pool.busy == 2
    assert lab.call(front, "local").ms > 2000


def test_bulkhead_keeps_local_fast(lab):
    slow = lab.service("slowdep", latency=3000)
    front = lab.service("front", workers=2, calls=[slow], local_workers=2)
    lab.call(front, "health")
    lab.submit(_many(lab, front, 2))
    time.sleep(settings.to_wall(0.3))
    assert front.pool.busy == 2 and front.in_flight == 2
    assert lab.call(front, "local").ms < 500
    front.set(local_workers=None)
    assert front.local_pool is None


async def _many(lab: Lab, svc, n: int) -> None:
    await asyncio.gather(*(fetch(lab.session, svc.url, None) for _ in range(n)))


def test_attempts_retry_a_failing_child(lab):
    child = lab.service("flaky", error_rate=1.0)
    parent = lab.service("caller", calls=[child], attempts=4)
    answer = lab.call(parent)
    assert answer.status == 502
    assert answer.body["calls"][0]["attempts"] == 4
    assert child.received == 4 and parent.downstream_calls == 4
    parent.reset_counts()
    assert parent.downstream_calls == 0
    assert "4 attempts" in parent.describe()


def test_attempts_stop_at_the_first_success(lab):
    child = lab.service("fine")
    parent = lab.service("caller", calls=[child], attempts=4)
    assert lab.call(parent).ok and child.received == 1


def test_guard_wraps_every_downstream_call(lab):
    child = lab.service("dep", outage=True)
    seen = []

    async def fallback(dep, call):
        first = await call()
        seen.append((dep.name, first["status"]))
        return {"service": dep.name, "status": 200, "ms": 0.0, "body": "cached"}

    parent = lab.service("caller", calls=[child], guard=fallback)
    answer = lab.call(parent)
    assert answer.ok and answer.body["calls"][0]["body"] == "cached"
    assert seen == [("dep", 503)]
    assert "guard fallback" in parent.describe()


@pytest.mark.parametrize("knobs", [{"queue_limit": -1}, {"attempts": 0}, {"attempts": 1.5},
                                   {"guard": 3}, {"call_timeout_ms": 0},
                                   {"local_workers": 0}])
def test_bad_protection_knobs_are_refused(lab, knobs):
    svc = lab.service("knobby")
    with pytest.raises(BadParameter):
        svc.set(**knobs)


def test_custom_routes_take_any_method_and_do_the_services_work(lab_at):
    from aiohttp import web

    lab = lab_at(1.0)
    seen: list[tuple[str, object]] = []

    async def orders(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        seen.append((request.method, body))
        work_ms = await svc.work()
        return web.json_response({"work_ms": work_ms}, status=202)

    svc = lab.service("order", latency=30, routes={"/orders": orders})
    posted = lab.call(svc, "orders", method="POST", json={"id": "o-1"})
    got = lab.call(svc, "orders")
    assert (posted.status, got.status) == (202, 202)
    assert seen == [("POST", {"id": "o-1"}), ("GET", None)]
    assert posted.body["work_ms"] == 30 and posted.ms >= 30
    assert svc.served == 2
    assert lab.call(svc, "local").ok  # the service's own endpoints still answer


def test_routes_are_checked(lab_at):
    lab = lab_at(1.0)
    with pytest.raises(LabError, match="a path such as '/orders'"):
        lab.service("bad", routes={"orders": None})
    with pytest.raises(LabError, match="must be an async def"):
        lab.service("bad2", routes={"/orders": lambda request: None})


def test_call_sends_headers_as_given(lab_at):
    from aiohttp import web

    lab = lab_at(0.2)

    async def echo(request):
        return web.json_response({"trace": request.headers.get("traceparent")})

    svc = lab.service("echo", routes={"/echo": echo})
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert lab.call(svc, "echo", headers={"traceparent": parent}).body == {"trace": parent}
    assert lab.call(svc, "echo").body == {"trace": None}
