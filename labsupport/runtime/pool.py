"""A worker pool for a simulated service: at most ``capacity`` requests at work at once.

Requests beyond the capacity wait in line, first come first served, which is
how the request queue of a real server's thread pool behaves. The capacity can
change while traffic runs.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

from labsupport.runtime.errors import require


class PoolFull(Exception):
    """Raised by :meth:`WorkerPool.slot` when the line is already at its limit."""


class WorkerPool:
    """A resizable, first-come-first-served limit on concurrent work.

    ``busy`` (requests at work) and ``waiting`` (requests in line) are live gauges.
    Use it only from the lab's event loop.
    """

    def __init__(self, capacity: int) -> None:
        self._check(capacity)
        self.capacity = capacity
        self.busy = 0
        self._line: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        """Requests waiting in line for a worker."""
        return sum(not f.done() for f in self._line)

    @staticmethod
    def _check(capacity: int) -> None:
        require(isinstance(capacity, int) and not isinstance(capacity, bool) and capacity >= 1,
                f"workers must be a whole number of at least 1, got {capacity!r}.",
                "give the size of the service's worker pool, e.g. workers=10")

    @contextlib.asynccontextmanager
    async def slot(self, max_waiting: int | None = None) -> AsyncIterator[None]:
        """Hold one worker for the duration of the ``async with`` block.

        With ``max_waiting``, a request that would find that many already in line
        is turned away at once (:class:`PoolFull`) instead of joining the line.
        """
        if max_waiting is not None and self.busy >= self.capacity \
                and self.waiting >= max_waiting:
            raise PoolFull
        await self._acquire()
        try:
            yield
        finally:
            self._release()

    async def _acquire(self) -> None:
        if self.busy < self.capacity and not self._line:
            self.busy += 1
            return
        turn = asyncio.get_running_loop().create_future()
        self._line.append(turn)
        try:
            await turn  # _hand_out() counted us as busy before waking us
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # woken and cancelled at once: give the worker back
            raise

    def _release(self) -> None:
        self.busy -= 1
        self._hand_out()

    def _hand_out(self) -> None:
        while self._line and self.busy < self.capacity:
            turn = self._line.popleft()
            if not turn.done():
                self.busy += 1
                turn.set_result(None)

    async def resize(self, capacity: int) -> None:
        """Change the capacity; requests in line start at once if there is room."""
        self._check(capacity)
        self.capacity = capacity
        self._hand_out()
