"""labsupport.runtime.pool: the worker pool's limit, gauges and live resizing."""
from __future__ import annotations

import asyncio

import pytest

from labsupport.runtime.errors import BadParameter
from labsupport.runtime.pool import WorkerPool


async def settle() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(10):
        await asyncio.sleep(0)


class Tracker:
    """Counts how many holders of a slot are inside at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.done = 0

    async def hold(self, pool: WorkerPool, release: asyncio.Event | float) -> None:
        async with pool.slot():
            self.now += 1
            self.peak = max(self.peak, self.now)
            if isinstance(release, asyncio.Event):
                await release.wait()
            else:
                await asyncio.sleep(release)
            self.now -= 1
        self.done += 1


@pytest.mark.parametrize("capacity", [1, 3, 5])
def test_capacity_is_respected(capacity):
    async def main() -> Tracker:
        pool, tracker = WorkerPool(capacity), Tracker()
        await asyncio.gather(*(tracker.hold(pool, 0.005) for _ in range(3 * capacity)))
        assert (pool.busy, pool.waiting) == (0, 0)
        return tracker

    tracker = asyncio.run(main())
    assert tracker.peak == capacity
    assert tracker.done == 3 * capacity


def test_gauges_busy_and_waiting():
    async def main() -> None:
        pool, tracker, release = WorkerPool(3), Tracker(), asyncio.Event()
        tasks = [asyncio.create_task(tracker.hold(pool, release)) for _ in range(9)]
        await settle()
        assert pool.busy == 3
        assert pool.waiting == 6
        release.set()
        await asyncio.gather(*tasks)
        assert (pool.busy, pool.waiting) == (0, 0)
        assert tracker.done == 9

    asyncio.run(main())


def test_a_freed_slot_goes_to_a_waiter():
    async def main() -> None:
        pool = WorkerPool(1)
        first, second = asyncio.Event(), asyncio.Event()
        tracker = Tracker()
        a = asyncio.create_task(tracker.hold(pool, first))
        b = asyncio.create_task(tracker.hold(pool, second))
        await settle()
        assert (pool.busy, pool.waiting) == (1, 1)
        first.set()
        await settle()
        assert a.done() and not b.done()
        assert (pool.busy, pool.waiting) == (1, 0)
        second.set()
        await b

    asyncio.run(main())


def test_resize_up_releases_waiters_at_once():
    async def main() -> None:
        pool, tracker, release = WorkerPool(1), Tracker(), asyncio.Event()
        tasks = [asyncio.create_task(tracker.hold(pool, release)) for _ in range(4)]
        await settle()
        assert (pool.busy, pool.waiting) == (1, 3)
        await pool.resize(3)
        await settle()
        assert pool.capacity == 3
        assert (pool.busy, pool.waiting) == (3, 1)
        await pool.resize(10)
        await settle()
        assert (pool.busy, pool.waiting) == (4, 0)
        release.set()
        await asyncio.gather(*tasks)
        assert tracker.peak == 4

    asyncio.run(main())


def test_resize_down_limits_new_work():
    async def main() -> None:
        pool, tracker, release = WorkerPool(3), Tracker(), asyncio.Event()
        tasks = [asyncio.create_task(tracker.hold(pool, release)) for _ in range(3)]
        await settle()
        await pool.resize(1)
        late = Tracker()
        extra = [asyncio.create_task(late.hold(pool, 0.001)) for _ in range(3)]
        await settle()
        assert pool.busy == 3, "work already started is not interrupted"
        assert pool.waiting == 3
        release.set()
        await asyncio.gather(*tasks, *extra)
        assert late.peak == 1, "after resizing to 1 only one request works at a time"

    asyncio.run(main())


def test_cancelled_waiter_leaves_the_line():
    async def main() -> None:
        pool, release = WorkerPool(1), asyncio.Event()
        tracker = Tracker()
        holder = asyncio.create_task(tracker.hold(pool, release))
        waiter = asyncio.create_task(tracker.hold(pool, release))
        await settle()
        assert pool.waiting == 1
        waiter.cancel()
        await settle()
        assert (pool.busy, pool.waiting) == (1, 0)
        release.set()
        await holder
        assert pool.busy == 0

    asyncio.run(main())


def test_slot_is_released_on_error():
    async def main() -> None:
        pool = WorkerPool(1)
        with pytest.raises(RuntimeError):
            async with pool.slot():
                raise RuntimeError("boom")
        assert pool.busy == 0
        async with pool.slot():  # would hang if the slot leaked
            assert pool.busy == 1

    asyncio.run(asyncio.wait_for(main(), 2))


@pytest.mark.parametrize("capacity", [0, -1, 1.5, "2", None])
def test_bad_capacity_raises(capacity):
    with pytest.raises(BadParameter, match="workers"):
        WorkerPool(capacity)  # type: ignore[arg-type]


def test_bad_resize_raises_and_keeps_capacity():
    async def main() -> None:
        pool = WorkerPool(4)
        with pytest.raises(BadParameter):
            await pool.resize(0)
        assert pool.capacity == 4

    asyncio.run(main())


def test_waiters_are_served_in_arrival_order():
    async def main() -> list[str]:
        pool, order = WorkerPool(1), []
        events = {name: asyncio.Event() for name in "HABCD"}

        async def hold(name: str) -> None:
            async with pool.slot():
                order.append(name)
                await events[name].wait()

        tasks = [asyncio.create_task(hold("H"))]
        await settle()
        tasks += [asyncio.create_task(hold(name)) for name in "ABC"]
        await settle()
        events["H"].set()
        tasks.append(asyncio.create_task(hold("D")))  # arrives just as H leaves
        await settle()
        for name in "ABCD":
            events[name].set()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(main()) == ["H", "A", "B", "C", "D"]
