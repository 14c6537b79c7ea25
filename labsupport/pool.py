"""A worker pool for a simulated service: at most ``capacity`` requests at work at once.

Requests beyond the capacity wait in line, which is exactly how a thread pool
in a real server behaves. The capacity can change while traffic runs.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from .errors import require


class WorkerPool:
    """A resizable limit on concurrent work; ``busy`` and ``waiting`` are live gauges."""

    def __init__(self, capacity: int) -> None:
        self._check(capacity)
        self.capacity = capacity
        self.busy = 0
        self.waiting = 0
        self._changed: asyncio.Condition | None = None

    @staticmethod
    def _check(capacity: int) -> None:
        require(isinstance(capacity, int) and capacity >= 1,
                f"workers must be a whole number of at least 1, got {capacity!r}.",
                "give the size of the service's worker pool, e.g. workers=10")

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # created lazily, on the lab's loop
            self._changed = asyncio.Condition()
        return self._changed

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one worker for the duration of the ``async with`` block."""
        changed = self._condition()
        async with changed:
            self.waiting += 1
            try:
                await changed.wait_for(lambda: self.busy < self.capacity)
            finally:
                self.waiting -= 1
            self.busy += 1
        try:
            yield
        finally:
            async with changed:
                self.busy -= 1
                changed.notify()

    async def resize(self, capacity: int) -> None:
        """Change the capacity; waiting requests start at once if there is room."""
        self._check(capacity)
        changed = self._condition()
        async with changed:
            self.capacity = capacity
            changed.notify_all()
