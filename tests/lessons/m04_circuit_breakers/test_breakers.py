"""Module 04's instrumentation: pybreaker from asyncio, the watch, the flapping schedule,
half-open bursts and the gateway policy, on real services at time scale 0.2."""
from __future__ import annotations

import asyncio

import pybreaker
import pytest
from matplotlib.figure import Figure

from labsupport.lessons.m04_circuit_breakers.breakers import (
    DEFAULTS,
    AsyncPyBreaker,
    BreakerOpen,
    BreakerWatch,
    Flapping,
    FlappingScenario,
    HalfOpenBurst,
    calls_through_outage,
    calls_until_open,
    defaults_table,
    draw_lanes,
    draw_timeline,
    expected_calls_to_open,
    lamp_html,
    mismatches,
    sleep_model,
    threads_inside,
    trials_in_outage,
)
from labsupport.lessons.m04_circuit_breakers.gateway import GatewayExperiment, GatewayPolicy
from labsupport.runtime.errors import BadParameter, LabError


@pytest.fixture
def lab(lab_at):
    return lab_at(0.2, seed=4)


@pytest.fixture
def fast(lab_at):
    """Time scale 0.2 without services (a lab is made and closed around the test)."""
    return lab_at(0.2)


def run(coro):
    return asyncio.run(coro)


async def failing():
    raise ConnectionError("down")


async def working():
    return "answer"


async def outcome(breaker, fn) -> str:
    try:
        await breaker.call(fn)
        return "ok"
    except BreakerOpen:
        return "refused"
    except ConnectionError:
        return "failed"


# ----- pybreaker from asyncio -------------------------------------------------------------
def test_pybreaker_call_counts_an_async_failure_as_a_success():
    """The trap the lesson shows: breaker.call(async fn) never sees the failure."""
    breaker = pybreaker.CircuitBreaker(fail_max=2)
    for _ in range(5):
        breaker.call(failing).close()
    assert breaker.fail_counter == 0 and breaker.current_state == "closed"


def test_async_pybreaker_opens_at_fail_max_and_refuses_without_calling(fast):
    breaker = AsyncPyBreaker(fail_max=3, reset_timeout_s=60)
    calls = []

    async def counted():
        calls.append(1)
        raise ConnectionError("down")

    async def scenario():
        return [await outcome(breaker, counted) for _ in range(6)]

    assert run(scenario()) == ["failed"] * 3 + ["refused"] * 3
    assert len(calls) == 3 and breaker.state == "open"


def test_async_pybreaker_half_open_gate(fast):
    async def scenario(limit):
        breaker = AsyncPyBreaker(fail_max=1, reset_timeout_s=0.2, trial_limit=limit)
        await outcome(breaker, failing)
        await asyncio.sleep(0.2 * 0.2 + 0.02)   # the reset timeout in wall seconds
        arrived, gate = [], asyncio.Event()

        async def slow_ok():
            arrived.append(1)
            await gate.wait()
            return "answer"

        tasks = [asyncio.ensure_future(outcome(breaker, slow_ok)) for _ in range(8)]
        await asyncio.sleep(0.01)
        gate.set()
        return len(arrived), await asyncio.gather(*tasks), breaker.state

    one, outcomes, state = run(scenario(1))
    assert one == 1 and outcomes.count("refused") == 7 and state == "closed"
    three, _, _ = run(scenario(3))
    assert three == 3
    everyone, _, _ = run(scenario(None))
    assert everyone == 8, "pybreaker alone lets every coroutine through while half-open"


def test_async_pybreaker_listeners_hear_changes_in_order(fast):
    breaker = AsyncPyBreaker(fail_max=1, reset_timeout_s=0.1)
    heard = []
    breaker.add_listener(lambda old, new: heard.append((old, new)))

    async def scenario():
        await outcome(breaker, failing)
        await asyncio.sleep(0.1 * 0.2 + 0.02)
        await outcome(breaker, working)

    run(scenario())
    assert heard == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]


@pytest.mark.parametrize("kwargs, message", [
    ({"fail_max": 0}, "fail_max must be a whole number"),
    ({"reset_timeout_s": 0}, "reset_timeout_s must be above 0"),
    ({"trial_limit": 0}, "trial_limit must be None or 1 or more"),
])
def test_async_pybreaker_bad_parameters(kwargs, message):
    with pytest.raises(BadParameter, match=message):
        AsyncPyBreaker(**kwargs)


# ----- the watch --------------------------------------------------------------------------
class FakeChild:
    name = "prices"


def answer(status):
    async def call():
        return {"service": "prices", "status": status, "ms": 1.0, "body": {"price": status}}
    return call


def test_watch_records_calls_streak_and_falls_back_to_the_cache(fast):
    breaker = AsyncPyBreaker(fail_max=2, reset_timeout_s=60)
    watch = BreakerWatch(breaker, fallback=True)

    async def scenario():
        good = await watch.guard(FakeChild(), answer(200))
        bad = [await watch.guard(FakeChild(), answer(503)) for _ in range(3)]
        return good, bad

    good, bad = run(scenario())
    assert good["status"] == 200 and "fallback" not in good
    assert all(b["status"] == 200 and b["fallback"] and b["body"] == {"price": 200} for b in bad)
    assert [e.outcome for e in watch.events] == ["ok", "failed", "failed", "refused"]
    assert watch.reached == 3 and watch.count("refused") == 1
    assert watch.streak_at_first_open() == 2
    assert watch.path() == ["closed", "open"]
    assert watch.refused_ms() < 1.0
    assert len(watch.refused_times()) == watch.count("refused")


def test_watch_without_fallback_passes_errors_on(fast):
    watch = BreakerWatch(AsyncPyBreaker(fail_max=1, reset_timeout_s=60), fallback=False)

    async def scenario():
        return [await watch.guard(FakeChild(), answer(500)) for _ in range(2)]

    failed, refused = run(scenario())
    assert failed["status"] == 500
    assert refused["status"] == 503 and refused["body"] == {"outcome": "circuit open"}


def test_watch_rejects_something_that_is_not_a_breaker():
    with pytest.raises(BadParameter, match="the breaker has no `state`"):
        BreakerWatch(object())


# ----- the schedule and the theory ----------------------------------------------------------
def test_flapping_schedule():
    schedule = Flapping((("up", 1), ("down", 2), ("up", 1), ("down", 0.5)))
    assert schedule.duration == 4.5
    assert schedule.outages() == [(1, 3), (4, 4.5)]
    assert schedule.is_down(1.5) and not schedule.is_down(3.2) and schedule.is_down(4.2)
    with pytest.raises(BadParameter, match="a phase is 'up' or 'down'"):
        Flapping((("sideways", 1),))
    with pytest.raises(BadParameter, match="lasts more than 0 s"):
        Flapping((("up", 0),))
    with pytest.raises(BadParameter, match="at least one phase"):
        Flapping(())


def test_trials_and_calls_through_an_outage():
    assert trials_in_outage(4, 20, 5, 1.5) == 2
    assert calls_through_outage(4, 20, 5, 1.5) == 7
    assert calls_through_outage(2.5, 20, 5, 1.5) == 6
    assert calls_through_outage(0.2, 20, 5, 1.5) == 4, "shorter than the time to open"
    assert calls_through_outage(60, 20, 5, 60) == 5, "pybreaker's defaults: no trial in 60 s"
    with pytest.raises(BadParameter):
        trials_in_outage(4, 0, 5, 1.5)


def test_defaults_table_has_each_library_and_its_numbers():
    table = defaults_table()
    for library, numbers in (("pybreaker", ("5 failures in a row", "60 s", "no limit")),
                             ("resilience4j", ("last 100 calls", "50%", "60 s", "10 trials")),
                             ("Hystrix", ("rolling 10 s", "20 requests", "5 s", "1 trial"))):
        row = next(line for line in table.splitlines() if line.startswith(library))
        assert all(n in row for n in numbers), row
    assert len(DEFAULTS) == 3
    assert max(len(line) for line in table.splitlines()) <= 90, "fits a notebook output"


def test_lamp_says_the_state_in_words():
    assert "breaker HALF-OPEN" in lamp_html("half-open")
    assert "breaker OPEN" in lamp_html("open")


def test_mismatches():
    assert mismatches(["closed", "open"], ["closed", "open"]) == 0
    assert mismatches(["closed", "open", "closed"], ["closed", "open"]) == 1
    assert mismatches(["closed", "half-open"], ["closed", "open"]) == 1


def test_sleep_model_rejects_negative_time():
    with pytest.raises(BadParameter):
        sleep_model(-1)


# ----- on real services ------------------------------------------------------------------------
SHORT = Flapping((("up", 1.0), ("down", 2.5), ("up", 2.0)))


def test_flapping_scenario_on_real_services(lab):
    scenario = FlappingScenario(lab, SHORT, rate=20, latency_ms=50)
    watch = scenario.run(AsyncPyBreaker(fail_max=5, reset_timeout_s=0.9))
    assert scenario.prices.received == watch.reached, "no refused call reached prices"
    assert watch.streak_at_first_open() == 5
    assert watch.path()[:3] == ["closed", "open", "half-open"]
    assert watch.path()[-1] == "closed"
    assert watch.trials_between(1.0, 3.5) == trials_in_outage(2.5, 20, 5, 0.9) == 2
    assert watch.reached_while_open(1.0, 3.5) == 2
    assert 7 <= watch.failed_between(1.0, 3.5) <= 7 + 4
    assert watch.reached_between(0, 5.5) == watch.reached
    assert scenario.user_success() == 1.0
    assert not scenario.prices.faults.outage, "the schedule leaves prices up"
    figure = Figure()
    draw_timeline(figure.add_subplot(), watch, SHORT)
    draw_lanes(figure.add_subplot(), {"a": watch, "b": watch}, SHORT)
    assert "breaker CLOSED" in scenario.summary()


def test_flapping_scenario_dashboard_runs_and_stops(lab, monkeypatch):
    monkeypatch.setenv("LAB_HEADLESS", "1")
    scenario = FlappingScenario(lab, Flapping((("up", 0.5), ("down", 1.0), ("up", 1.0))))
    scenario.dashboard(lambda fail_max, reset: AsyncPyBreaker(fail_max, reset))
    view = scenario.press_run(fail_max=3, reset_timeout_s=0.5, fallback=False)
    view.join(30)
    assert scenario.done() and scenario.watch.streak_at_first_open() == 3
    assert scenario.load.recorder.errors == (scenario.watch.count("refused")
                                             + scenario.watch.count("failed"))
    with pytest.raises(BadParameter, match="No control 'colour'"):
        scenario.press_run(colour="red")


def test_wait_before_start_is_a_clear_error(lab):
    scenario = FlappingScenario(lab, SHORT)
    with pytest.raises(BadParameter, match="nothing is running"):
        scenario.wait()


def test_half_open_burst_counts_at_the_dependency(lab):
    burst = HalfOpenBurst(lab, latency_ms=100)
    gated = burst.run(AsyncPyBreaker(fail_max=2, reset_timeout_s=0.5), callers=15, label="1")
    assert (gated.reached, gated.refused, gated.ok, gated.state_after) == (1, 14, 1, "closed")
    open_door = burst.run(AsyncPyBreaker(fail_max=2, reset_timeout_s=0.5, trial_limit=None),
                          callers=15, label="none")
    assert open_door.reached == 15
    assert "1 of 15 callers reached inventory" in burst.summary()


def test_trip_says_what_to_do_when_the_dependency_is_healthy(lab):
    from labsupport.lessons.m04_circuit_breakers.breakers import trip

    healthy = lab.service("healthy", 0)
    with pytest.raises(LabError, match="did not open within 3 failing calls"):
        trip(lab, AsyncPyBreaker(fail_max=2), healthy, max_calls=3)


# ----- the gateway policy ---------------------------------------------------------------------
@pytest.mark.parametrize("policy, worst, started", [
    (GatewayPolicy(2000, 3, 1000, 100), 2000, 2),
    (GatewayPolicy(None, 3, 1000, 100), 3200, 3),
    (GatewayPolicy(5000, 3, 1000, 0), 3000, 3),
    (GatewayPolicy(2000, 3, 1000, 0), 2000, 2),
    (GatewayPolicy(500, 3, 1000, 0), 500, 1),
])
def test_policy_worst_case(policy, worst, started):
    assert policy.worst_case_ms() == worst
    assert policy.attempts_started() == started
    assert f"worst case {worst:g} ms" in policy.describe()


@pytest.mark.parametrize("kwargs, message", [
    ({"attempts": 0}, "attempts must be a whole number"),
    ({"per_try_ms": 0}, "per_try_ms must be above 0"),
    ({"total_ms": -1}, "total_ms must be None or above 0"),
    ({"backoff_ms": -5}, "backoff_ms must be 0 or more"),
])
def test_policy_bad_parameters(kwargs, message):
    with pytest.raises(BadParameter, match=message):
        GatewayPolicy(**kwargs)


def test_policy_against_a_hung_service(lab):
    gateway = GatewayExperiment(lab, hang_ms=5000)
    overhead = lab.overhead_ms(lab.service("plain", 0))
    policy = GatewayPolicy(total_ms=600, attempts=3, per_try_ms=300, backoff_ms=50)
    gateway.run(policy, callers=4)
    assert gateway.median_ms() == pytest.approx(600, abs=30 + overhead)
    assert len(gateway.waits_ms()) == len(gateway.results)
    assert gateway.attempts_per_call() == policy.attempts_started() == 2
    assert all(r["status"] == 0 for r in gateway.results)
    healthy = lab.service("fine", 20)
    answer = lab.run(policy.call(lab.session, healthy.url))
    assert answer["status"] == 200 and answer["attempts"] == 1


def test_policy_inside_a_breaker_stops_paying_the_deadline(lab):
    gateway = GatewayExperiment(lab, hang_ms=5000)
    policy = GatewayPolicy(total_ms=300, attempts=2, per_try_ms=200)
    costs = gateway.through_breaker(policy, AsyncPyBreaker(fail_max=2, reset_timeout_s=60), 4)
    assert all(ms == pytest.approx(300, abs=60) for ms in costs[:2])
    assert max(costs[2:]) < 1.0
    assert gateway.hung.received == 2 * policy.attempts_started()


def test_pybreaker_call_serialises_threads_and_calling_does_not():
    """pybreaker 1.4.1: call() holds the lock for the whole call; calling() releases it
    before the block runs, so it limits neither closed traffic nor half-open trials."""
    assert threads_inside("call", threads=6, work_s=0.03).peak_inside == 1
    assert threads_inside("calling", threads=6, work_s=0.03).peak_inside == 6
    assert threads_inside("calling", threads=6, work_s=0.03, half_open=True).peak_inside == 6
    with pytest.raises(BadParameter):
        threads_inside("run")


def test_random_failures_open_a_consecutive_breaker_about_as_often_as_expected():
    assert round(expected_calls_to_open(0.3, 5)) == 586
    assert expected_calls_to_open(0.5, 1) == pytest.approx(2.0)
    counts = calls_until_open(0.5, fail_max=2, runs=400, seed=1)
    assert min(counts) >= 2
    assert sum(counts) / len(counts) == pytest.approx(expected_calls_to_open(0.5, 2), rel=0.15)
    with pytest.raises(BadParameter):
        expected_calls_to_open(1.0, 5)
