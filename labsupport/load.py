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

import aiohttp

from .errors import require
from .metrics import Recorder
from .services import fetch
from .settings import to_model, to_wall


def _timeout(timeout_ms: float) -> aiohttp.ClientTimeout:
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


async def open_loop(session: aiohttp.ClientSession, url: str, rate: float, duration: float,
                    recorder: Recorder, timeout_ms: float = 10_000, poisson: bool = False,
                    seed: int | str = 0, stop: threading.Event | None = None) -> Recorder:
    """Send requests to ``url`` at ``rate``/s for ``duration`` s; record into ``recorder``."""
    timeout, loop = _timeout(timeout_ms), asyncio.get_running_loop()
    start, tasks = loop.time(), set()
    for t in arrival_times(rate, duration, poisson, seed):
        delay = start + to_wall(t) - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if stop is not None and stop.is_set():
            break
        task = asyncio.create_task(_timed(session, url, timeout, recorder, t, start + to_wall(t)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return recorder


async def closed_loop(session: aiohttp.ClientSession, url: str, users: int, requests: int,
                      recorder: Recorder, timeout_ms: float = 10_000,
                      stop: threading.Event | None = None) -> Recorder:
    """``users`` concurrent users send ``requests`` in all, each waiting for its answer."""
    require(isinstance(users, int) and users >= 1, f"users must be 1 or more, got {users!r}.")
    require(isinstance(requests, int) and requests >= 1,
            f"requests must be 1 or more, got {requests!r}.")
    timeout, loop = _timeout(timeout_ms), asyncio.get_running_loop()
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
