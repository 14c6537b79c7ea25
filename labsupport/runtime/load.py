"""Load generators: open loop (fixed arrival rate) and closed loop (fixed users).

*Open loop* sends requests on a schedule whatever happens to earlier ones, the
way independent users arrive; latency is measured from the *scheduled* send
time, so a slow system cannot hide its latency by slowing the generator down
(the "coordinated omission" trap). *Closed loop* keeps ``users`` requests
outstanding: each user sends the next request when the last one answers.

Rates and durations are in model time (requests per model second).
"""
from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from labsupport.runtime.errors import require
from labsupport.runtime.metrics import Recorder
from labsupport.runtime.services import fetch
from labsupport.runtime.settings import to_model, to_wall


def client_timeout(timeout_ms: float) -> aiohttp.ClientTimeout:
    """An aiohttp timeout of ``timeout_ms`` model ms (so it scales with ``LAB_TIME_SCALE``)."""
    require(timeout_ms > 0, f"timeout_ms must be above 0, got {timeout_ms}.")
    return aiohttp.ClientTimeout(total=to_wall(timeout_ms / 1000))


def arrival_times(rate: float, duration: float, poisson: bool = False,
                  seed: int | str = 0) -> list[float]:
    """Model-time send times for ``rate`` requests/s over ``duration`` s.

    Evenly spaced by default; ``poisson=True`` draws exponential gaps (seeded).
    """
    require(rate > 0, f"rate must be above 0 requests/s, got {rate}.")
    require(duration > 0, f"duration must be above 0 s, got {duration}.")
    if not poisson:
        return [i / rate for i in range(int(round(rate * duration)))]
    rng, t, times = random.Random(f"arrivals:{seed}"), 0.0, []
    while True:
        t += rng.expovariate(rate)
        if t >= duration:
            return times
        times.append(t)


@dataclass(frozen=True)
class Shot:
    """One request of an open-loop run, as the user saw it.

    ``t`` is the scheduled send time (model s since the run began), ``ms`` the model ms
    from that scheduled time to the answer (so a generator that fell behind cannot hide
    the wait), ``status`` the HTTP status (0 timeout, -1 refused), ``body`` the JSON answer,
    ``headers`` the answer's headers, ``sent`` the request body and ``index`` its place in
    the schedule.
    """

    index: int
    t: float
    ms: float
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    sent: Any = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


Body = Callable[[int, float], Any]
"""``body(index, t)``: the JSON body of the request scheduled ``index``-th, at model ``t``."""


async def fire(session: aiohttp.ClientSession, url: str, times: Sequence[float], *,
               method: str = "GET", body: Body | None = None, data: bytes | None = None,
               timeout_ms: float = 10_000, stop: threading.Event | None = None,
               on_shot: Callable[[Shot], None] | None = None,
               start: float | None = None) -> list[Shot]:
    """Send one request at each model time in ``times`` (open loop) and return the shots.

    Every request leaves on schedule whatever happened to earlier ones. ``body(i, t)``
    gives each request its JSON body (``data`` sends the same raw bytes each time);
    ``on_shot`` sees each answer as it arrives (for live views); ``start`` is the loop time
    the schedule counts from (now, by default), so two runs can share one clock.
    """
    require(method.isalpha(), f"method must be an HTTP verb such as 'POST', got {method!r}.")
    timeout, loop = client_timeout(timeout_ms), asyncio.get_running_loop()
    start = loop.time() if start is None else start
    tasks: list[asyncio.Task[Shot]] = []
    for index, t in enumerate(times):
        due = start + to_wall(t)
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        if stop is not None and stop.is_set():
            break
        sent = body(index, t) if body else None
        tasks.append(asyncio.create_task(
            _shot(session, url, timeout, index, t, due, method, sent, data, on_shot)))
    return list(await asyncio.gather(*tasks))


async def _shot(session: aiohttp.ClientSession, url: str, timeout: aiohttp.ClientTimeout,
                index: int, t: float, due: float, method: str, sent: Any, data: bytes | None,
                on_shot: Callable[[Shot], None] | None) -> Shot:
    result = await fetch(session, url, timeout, method=method, json=sent, data=data,
                         with_headers=True)
    # Measured from the scheduled send time, not from when we got round to sending.
    ms = to_model(asyncio.get_running_loop().time() - due) * 1000
    shot = Shot(index, t, ms, result["status"], result["body"], result["headers"], sent)
    if on_shot is not None:
        on_shot(shot)
    return shot


async def open_loop(session: aiohttp.ClientSession, url: str, rate: float, duration: float,
                    recorder: Recorder, timeout_ms: float = 10_000, poisson: bool = False,
                    seed: int | str = 0, stop: threading.Event | None = None) -> Recorder:
    """Send requests to ``url`` at ``rate``/s for ``duration`` s; record into ``recorder``."""
    await fire(session, url, arrival_times(rate, duration, poisson, seed), stop=stop,
               timeout_ms=timeout_ms, on_shot=lambda s: recorder.record(s.t, s.ms, s.status))
    return recorder


async def closed_loop(session: aiohttp.ClientSession, url: str, users: int, requests: int,
                      recorder: Recorder, timeout_ms: float = 10_000,
                      stop: threading.Event | None = None) -> Recorder:
    """``users`` concurrent users send ``requests`` in all, each waiting for its answer."""
    require(isinstance(users, int) and users >= 1, f"users must be 1 or more, got {users!r}.")
    require(isinstance(requests, int) and requests >= 1,
            f"requests must be 1 or more, got {requests!r}.")
    timeout, loop = client_timeout(timeout_ms), asyncio.get_running_loop()
    start, remaining = loop.time(), [requests]

    async def user() -> None:
        while remaining[0] > 0 and not (stop is not None and stop.is_set()):
            remaining[0] -= 1
            now = loop.time()
            await _timed(session, url, timeout, recorder, to_model(now - start), now)

    await asyncio.gather(*(user() for _ in range(min(users, requests))))
    return recorder


async def _timed(session: aiohttp.ClientSession, url: str, timeout: aiohttp.ClientTimeout,
                 recorder: Recorder, t_model: float, sent_at: float) -> None:
    result = await fetch(session, url, timeout)
    # Measured from the scheduled send time, not from when we got round to sending.
    ms = to_model(asyncio.get_running_loop().time() - sent_at) * 1000
    recorder.record(t_model, ms, result["status"])
