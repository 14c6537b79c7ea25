"""Module 02 · The pool that runs out in a Python service is often a connection pool.

An asyncio service has no thread per request, but every outgoing HTTP call needs a
connection, and aiohttp's ``ClientSession`` takes its connections from a pool: the
``TCPConnector`` it creates when you pass none. In the installed aiohttp that pool holds at
most ``limit=100`` connections in all and ``limit_per_host=0`` (no limit) per host
(``aiohttp/connector.py``, ``BaseConnector.__init__``). A call that finds the pool full
waits in the client for a connection to come back, before anything is sent.

:class:`ConnectionPoolExperiment` shows it on a real service that holds every request for
``hold_ms`` and counts how many it holds at once (its own count, not the client's)::

    pools = ConnectionPoolExperiment(lab)
    default = pools.run(requests=150)             # ClientSession() as most code writes it
    bigger = pools.run(requests=150, limit=200)   # the control arm: a bigger pool
    default.peak_at_service, bigger.peak_at_service   # 100, 150

The client's side comes from aiohttp's own tracing signals
(``on_connection_queued_start`` / ``_end``): which requests waited for a connection, and
for how long. Every connection is also a socket, so a file descriptor in each process
that holds an end of it: :func:`fd_limit` reads the process's limit (``ulimit -n``).
"""
from __future__ import annotations

import asyncio
import inspect
import os
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from labsupport.runtime.errors import require
from labsupport.runtime.lab import Lab
from labsupport.runtime.metrics import percentile
from labsupport.runtime.settings import to_model, to_wall


def connector_defaults() -> dict[str, int]:
    """``limit`` and ``limit_per_host`` as the installed aiohttp's ``TCPConnector`` declares
    them (read from its signature, so a different aiohttp version shows its own values)."""
    params = inspect.signature(aiohttp.TCPConnector.__init__).parameters
    return {name: params[name].default for name in ("limit", "limit_per_host")}


def fd_limit() -> tuple[int, int] | None:
    """The process's (soft, hard) limit on open file descriptors, as ``ulimit -n`` shows it;
    ``None`` where the ``resource`` module does not exist (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def open_fds() -> int | None:
    """How many file descriptors this process holds now (Linux: ``/proc/self/fd``)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


@dataclass
class PoolRun:
    """One burst of concurrent requests through one ``ClientSession``."""

    limit: int | None                 # the connector's limit (None: aiohttp's default)
    requests: int
    hold_ms: float
    peak_at_service: int = 0          # most requests the service held at once (its count)
    late_at_service: int = 0          # arrived at the service after half a hold or later
    queued_ms: list[float] = field(default_factory=list)   # per waiting request (model ms)
    latencies_ms: list[float] = field(default_factory=list)  # per request, as the caller saw
    fds_before: int | None = None
    fds_at_peak: int | None = None

    @property
    def label(self) -> str:
        return "ClientSession() default" if self.limit is None else f"TCPConnector(limit={self.limit})"

    @property
    def queued(self) -> int:
        """Requests that waited in the client's pool for a connection (aiohttp's trace)."""
        return len(self.queued_ms)

    def extra_fds(self) -> int | None:
        """File descriptors the process held at the service's peak beyond those before."""
        if self.fds_before is None or self.fds_at_peak is None:
            return None
        return self.fds_at_peak - self.fds_before

    def summary(self) -> str:
        waited = (f"{self.queued} waited in the client for a connection, median "
                  f"{percentile(self.queued_ms, 50):.0f} ms" if self.queued_ms
                  else "none waited in the client")
        fds = self.extra_fds()
        fd_text = f"; {fds} more file descriptors open at the peak" if fds is not None else ""
        return (f"{self.label}: {self.requests} requests at once, the service held at most "
                f"{self.peak_at_service} at a time; {waited}; the callers' p50 "
                f"{percentile(self.latencies_ms, 50):.0f} ms, p90 "
                f"{percentile(self.latencies_ms, 90):.0f} ms{fd_text}")


class ConnectionPoolExperiment:
    """A service that holds each request ``hold_ms`` (model) and counts them, called in a
    burst through a fresh ``aiohttp.ClientSession`` per run."""

    def __init__(self, lab: Lab, hold_ms: float = 2000, name: str = "slowpool") -> None:
        require(hold_ms > 0, f"hold_ms must be above 0, got {hold_ms!r}.")
        self.lab = lab
        self.hold_ms = hold_ms
        self._inside = 0
        self._run: PoolRun | None = None
        self._first_arrival = 0.0
        self.service = lab.service(name, 0, routes={"/hold": self._hold})

    async def _hold(self, request: web.Request) -> web.Response:
        run = self._run
        now = time.perf_counter()
        self._inside += 1
        if run is not None:
            if not self._first_arrival:
                self._first_arrival = now
            elif to_model(now - self._first_arrival) * 1000 >= self.hold_ms / 2:
                run.late_at_service += 1
            if self._inside > run.peak_at_service:
                run.peak_at_service = self._inside
                run.fds_at_peak = open_fds()
        try:
            await asyncio.sleep(to_wall(self.hold_ms / 1000))
        finally:
            self._inside -= 1
        return web.Response(text="held")

    def run(self, requests: int = 150, limit: int | None = None) -> PoolRun:
        """``requests`` concurrent GETs through one new session; ``limit=None`` is
        ``ClientSession()`` with no connector (aiohttp builds its default one)."""
        require(isinstance(requests, int) and requests >= 1,
                f"requests must be a whole number of 1 or more, got {requests!r}.")
        require(limit is None or (isinstance(limit, int) and limit >= 0),
                f"limit must be None (aiohttp's default) or a whole number, got {limit!r}.",
                "0 means no limit in aiohttp")
        run = PoolRun(limit=limit, requests=requests, hold_ms=self.hold_ms)
        self._run, self._first_arrival = run, 0.0
        try:
            self.lab.run(self._burst(run), timeout=to_wall(self.hold_ms / 1000)
                         * (requests // max(limit or 1, 1) + 3) + 30)
        finally:
            self._run = None
        return run

    async def _burst(self, run: PoolRun) -> None:
        trace = aiohttp.TraceConfig()
        trace.on_connection_queued_start.append(_queued_start)
        trace.on_connection_queued_end.append(_queued_end)
        connector = None if run.limit is None else aiohttp.TCPConnector(limit=run.limit)
        url = f"{self.service.url}hold"
        run.fds_before = open_fds()
        async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
            marks: list[dict[str, float]] = [{} for _ in range(run.requests)]
            waits = await asyncio.gather(*(_timed_get(session, url, mark) for mark in marks))
        run.latencies_ms = [to_model(w) * 1000 for w in waits]
        run.queued_ms = [to_model(m["end"] - m["start"]) * 1000 for m in marks if "end" in m]


async def _timed_get(session: aiohttp.ClientSession, url: str, mark: dict[str, float]) -> float:
    start = time.perf_counter()
    async with session.get(url, trace_request_ctx=mark) as response:
        await response.read()
    return time.perf_counter() - start


async def _queued_start(session: Any, ctx: Any, params: Any) -> None:
    ctx.trace_request_ctx.setdefault("start", time.perf_counter())


async def _queued_end(session: Any, ctx: Any, params: Any) -> None:
    ctx.trace_request_ctx["end"] = time.perf_counter()
