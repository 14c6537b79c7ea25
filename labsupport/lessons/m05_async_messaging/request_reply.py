"""Module 05 · Request-reply over Kafka: publish a request, wait for its reply on another topic.

The caller gives every request a **correlation id** and names its **reply topic** in the
headers; a responder does the work and publishes the answer to that topic with the same
correlation id; the caller's reply listener hands each answer to the request that waits
for it::

    rr = RequestReply(lab, work)            # work: async def work(value) -> answer
    rr.wait_ready()
    answer = await rr.request({"amount": 20}, key="o-1")   # on the lab's loop

Each request crosses the broker twice (request, reply), and each crossing costs a
produce acknowledgement and a consumer fetch. With several instances of the caller, each
needs its own reply topic (or partition), or replies land with an instance that never
asked: that is why the reply topic travels in the message.
"""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from labsupport.runtime.errors import LabError, require
from labsupport.runtime.lab import Lab
from labsupport.runtime.messaging import Event, Worker
from labsupport.runtime.settings import to_wall

Work = Callable[[Any], Awaitable[Any]]
CORRELATION, REPLY_TO = "correlation_id", "reply_to"


class RequestReply:
    """Requests on ``<prefix>requests``, replies on ``<prefix>replies``, ``responders`` of them."""

    def __init__(self, lab: Lab, work: Work, responders: int = 2, prefix: str = "",
                 timeout_ms: float = 5000) -> None:
        require(isinstance(responders, int) and 1 <= responders <= 4,
                f"responders must be a whole number from 1 to 4, got {responders!r}.")
        require(callable(work), f"work must be an async function of one value, got {work!r}.")
        self.lab, self.work, self.timeout_ms = lab, work, timeout_ms
        self.requests = lab.bus.topic(f"{prefix}requests", responders)
        self.replies = lab.bus.topic(f"{prefix}replies", 1)
        self.publisher = lab.bus.publisher()
        self.pending: dict[str, asyncio.Future[Any]] = {}
        self.late = 0
        self.listener = lab.bus.worker(self.replies, f"{prefix}caller", self._on_reply,
                                       name=f"{prefix}reply-listener")
        self.responders = [lab.bus.worker(self.requests, f"{prefix}responders", self._respond,
                                          name=f"{prefix}responder{i + 1}")
                           for i in range(responders)]

    @property
    def workers(self) -> list[Worker]:
        """The reply listener and the responders."""
        return [self.listener, *self.responders]

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait until the listener and every responder have their partitions."""
        for worker in self.workers:
            worker.wait_assigned(timeout)

    async def request(self, value: Any, key: str) -> Any:
        """Publish ``value`` as a request and wait for its reply (on the lab's loop)."""
        cid = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self.pending[cid] = future
        try:
            await self.publisher.publish(self.requests, value, key=key,
                                         headers={CORRELATION: cid, REPLY_TO: self.replies})
            return await asyncio.wait_for(future, to_wall(self.timeout_ms / 1000))
        except asyncio.TimeoutError:
            raise LabError(f"no reply to request {cid} within {self.timeout_ms:g} ms.",
                           "check that the responders run (rr.responders)") from None
        finally:
            self.pending.pop(cid, None)

    async def _respond(self, event: Event) -> None:
        answer = await self.work(event.value)
        await self.publisher.publish(event.headers[REPLY_TO], answer, key=event.key,
                                     headers={CORRELATION: event.headers[CORRELATION]})

    async def _on_reply(self, event: Event) -> None:
        future = self.pending.get(event.headers.get(CORRELATION, ""))
        if future is None or future.done():
            self.late += 1   # nobody waits any more (timed out): dropped, and counted
            return
        future.set_result(event.value)

    def stop(self) -> None:
        """Stop the listener and the responders."""
        for worker in self.workers:
            worker.stop()
