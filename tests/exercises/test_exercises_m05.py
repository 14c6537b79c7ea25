"""Module 05's question on real services and the lab's broker: the worked answer passes;
each plausible wrong answer fails with its own message."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from labsupport.course.exercises_build import solution_source
from labsupport.exercises import declared_questions
from labsupport.exercises.m05 import BURST_CASE, LAG_RUN, Handlers, q1, q2, q3, shop

pytestmark = pytest.mark.usefixtures("isolated_progress", "lab_broker", "checker_time_scale")


def verdict(answer, capsys) -> tuple[bool, str]:
    ok = q1.check(answer)
    return ok, capsys.readouterr().out.strip()


def solution() -> Handlers:
    namespace: dict = {}
    exec(solution_source("05", "place_order"), namespace)
    return Handlers(namespace["place_order"], namespace["fulfil"], namespace["order_status"])


def handlers(mistake: str | None = None) -> Handlers:
    """Handlers written independently of the solution, with one ``mistake`` switched on."""

    async def place_order(request):
        order = await request.json()
        oid = shop.new_order_id()
        order["order_id"] = oid
        if mistake == "blocking":
            await shop.pay(oid, order["amount"])
            await shop.reserve(oid)
        topic = "orders" if mistake == "wrong topic" else shop.topic
        key = None if mistake == "no key" else oid
        if mistake in ("no ack wait", "no ack wait, acks land first"):
            asyncio.get_running_loop().create_task(shop.publish(topic, order, key=key))
        elif mistake == "not awaited":
            shop.publish(topic, order, key=key).close()
        else:
            await shop.publish(topic, order, key=key)
        if mistake == "waits besides":   # e.g. a sleep "to let the consumer start"
            from labsupport.runtime.settings import to_wall
            await asyncio.sleep(to_wall(0.2))
        body = {"accepted": True} if mistake == "no id" else {"order_id": oid}
        return web.json_response(body, status=200 if mistake == "200" else 202)

    seen_offsets = set()

    async def fulfil(event):
        oid = event.value["order_id"]
        if mistake == "by offset":   # dedup by (partition, offset): a re-publish is new
            if (event.partition, event.offset) in seen_offsets:
                return
            seen_offsets.add((event.partition, event.offset))
        elif mistake != "not idempotent" and shop.get_status(oid) == "done":
            return
        if mistake == "done first":
            shop.set_status(oid, "done")
        await shop.pay(oid, event.value["amount"])
        await shop.reserve(oid)
        if mistake != "never done":
            shop.set_status(oid, "done")

    async def order_status(request):
        oid = request.query["id"]
        if mistake == "no ack wait, acks land first":
            await asyncio.sleep(0.5)  # every fire-and-forget ack arrives before the checker looks
        status = shop.get_status(oid)
        if mistake == "status 404" and status is None:
            return web.json_response({"order_id": oid}, status=404)
        if mistake == "status says completed":
            status = "completed" if status == "done" else status
        return web.json_response({"order_id": oid, "status": status or "pending"})

    return Handlers(place_order, fulfil, order_status)


def test_the_module_declares_its_three_questions():
    assert declared_questions()["05"] == ["q1", "q2", "q3"]
    assert all(len(q.hints) == 3 for q in (q1, q2, q3))
    assert "BEGIN SOLUTION" not in q1._solution


def test_the_worked_solution_passes_and_is_told_what_it_did(capsys):
    ok, out = verdict(solution(), capsys)
    assert ok, out
    assert "answered 12 orders with 202" in out and "said 'pending' while" in out, out
    assert "came a second time it paid nothing" in out, out


def test_order_ids_are_fresh_in_every_check():
    from labsupport.exercises import m05

    first, second = next(m05._ORDER_IDS), next(m05._ORDER_IDS)
    assert second > first   # a later check never hands out an id an earlier one used


def test_an_independent_correct_answer_passes(capsys):
    ok, out = verdict(handlers(None), capsys)
    assert ok, out


@pytest.mark.parametrize("mistake, message", [
    ("blocking", "it still blocks"),
    ("200", "answered 200 OK. Answer 202 Accepted"),
    ("no id", "the 202 answer has no order id"),
    ("no key", "published without a key"),
    ("wrong topic", "publish to shop.topic"),
    ("no ack wait", "before the broker acknowledged"),
    ("no ack wait, acks land first", "before the broker acknowledged"),
    ("not awaited", "without publishing anything"),
    ("waits besides", "waiting for something besides the publish"),
    ("not idempotent", "fulfil paid for it twice"),
    ("by offset", "fulfil paid for it twice"),
    ("done first", "before shop.pay and shop.reserve had finished"),
    ("never done", "never recorded them as done"),
    ("status 404", "accepted but not done yet"),
    ("status says completed", "is done (paid, reserved, recorded), but GET"),
])
def test_each_wrong_answer_gets_its_own_message(mistake, message, capsys):
    ok, out = verdict(handlers(mistake), capsys)
    assert not ok and out.startswith("Not yet:"), out
    assert message in out, out


def test_a_sync_fulfil_is_rejected_before_anything_runs(capsys):
    good = handlers(None)

    def fulfil(event):
        return None

    ok, out = verdict(Handlers(good.place_order, fulfil, good.order_status), capsys)
    assert not ok and "`fulfil` must be an `async def`" in out, out


def test_an_error_in_fulfil_is_shown_as_the_learners(capsys):
    good = handlers(None)

    async def fulfil(event):
        return event.value["no_such_field"]

    ok, out = verdict(Handlers(good.place_order, fulfil, good.order_status), capsys)
    assert not ok and "KeyError" in out and "fulfil(event)" in out, out


def test_the_placeholder_counts_as_not_attempted(capsys):
    good = handlers(None)

    async def place_order(request):
        raise NotImplementedError("Your turn")

    ok, out = verdict(Handlers(place_order, good.fulfil, good.order_status), capsys)
    assert not ok and out.startswith("Not attempted yet"), out


def test_side_by_side_measures_the_answer_against_the_blocking_endpoint():
    from labsupport.exercises.m05 import side_by_side

    race = side_by_side(*solution())
    assert race.done == race.orders == 12
    assert race.median_ratio() < 0.25 and race.ratio().high < 0.25
    assert "blocking (200)" in race.table()


def test_side_by_side_with_the_placeholder_names_the_fix():
    from labsupport.exercises.m05 import side_by_side
    from labsupport.runtime.errors import LabError

    good = handlers(None)

    async def place_order(request):
        raise NotImplementedError("Your turn")

    with pytest.raises(LabError, match="q1.check"):
        side_by_side(place_order, good.fulfil, good.order_status)


def test_shop_outside_a_check_says_how_to_use_it():
    from labsupport.runtime.errors import LabError

    with pytest.raises(LabError, match="only while q1.check"):
        shop.new_order_id()


# ----- q2: predict a burst's drain time ---------------------------------------------------------
def solution_value(question, name):
    namespace: dict = {}
    exec("from labsupport.exercises.m05 import BURST_CASE, LAG_RUN\n" + question._solution,
         namespace)
    return namespace[name]


def simulated_drain_ms() -> float:
    """Another correct method: step the three consumers through their partitions."""
    free = {}
    for p, count in enumerate(BURST_CASE.per_partition):
        owner = next(i for i, held in enumerate(BURST_CASE.owners) if p in held)
        for _ in range(count):
            free[owner] = free.get(owner, 0.0) + BURST_CASE.per_order_ms
    return max(free.values())


def test_q2_the_formula_and_a_simulation_both_pass(capsys):
    assert q2.check(solution_value(q2, "burst_drain_ms")), capsys.readouterr().out
    assert q2.check(simulated_drain_ms()), capsys.readouterr().out
    assert q2.check(3.25 * 1000 + 40)   # a pickup time added is within the tolerance
    assert "13 orders" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, words", [
    (9 * 250, "busiest PARTITION"),
    (36 / 3 * 250, "evenly over the consumers"),
    (36 / 6 * 250, "evenly over the partitions"),
    (36 * 250, "as if one consumer did them all"),
    (3.25, "looks like seconds"),
    (250, "one order's work"),
    (5000, "too high"),
])
def test_q2_each_wrong_prediction_gets_its_own_message(wrong, words, capsys):
    assert not q2.check(wrong)
    assert words in capsys.readouterr().out


# ----- q3: diagnose a lag table -----------------------------------------------------------------
def test_q3_the_worked_diagnosis_passes_and_matches_the_runs_construction(capsys):
    answer = solution_value(q3, "lag_diagnosis")
    assert answer == LAG_RUN.truth()
    assert q3.check(answer)
    out = capsys.readouterr().out
    assert "overloaded partition" in out and "its consumer stopped" in out


def test_q3_the_table_shows_the_symptoms_it_is_built_from():
    plans = {p.partition: p for p in LAG_RUN.plans}
    last = LAG_RUN.looks[-1]
    lags = {n: LAG_RUN.row(p, last)[0] - LAG_RUN.row(p, last)[1] for n, p in plans.items()}
    assert max(lags, key=lags.get) == LAG_RUN.truth()["stuck"]   # the biggest lag is NOT hot
    writes = {n: LAG_RUN.rates(p)[0] for n, p in plans.items()}
    assert max(writes, key=writes.get) == LAG_RUN.truth()["hot"]
    stuck = plans[LAG_RUN.truth()["stuck"]]
    frozen = {LAG_RUN.row(stuck, t)[1] for t in LAG_RUN.looks[3:]}
    assert len(frozen) == 1 and "partition 2" in LAG_RUN.table()   # committed stops moving


@pytest.mark.parametrize("answer, words", [
    ({"hot": 2, "stuck": 1}, "its consumer stopped, the keys did not overload it"),
    ({"hot": 3, "stuck": 2}, "healthy"),
    ({"hot": 1, "stuck": 0}, "healthy"),
    ({"hot": 1, "stuck": 1}, "one partition for two symptoms"),
    ({"hot": 1, "stuck": 7}, "not a partition of the table"),
    ({"hot": "p1", "stuck": 2}, "not a partition of the table"),
    ({"hot": 1}, "a dict with these keys"),
])
def test_q3_each_wrong_diagnosis_gets_its_own_message(answer, words, capsys):
    assert not q3.check(answer)
    assert words in capsys.readouterr().out
