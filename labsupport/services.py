"""Simulated services: real aiohttp HTTP servers on 127.0.0.1 with knobs.

A :class:`Service` does some work (its latency model), may fail (its fault
model), has a worker pool of a fixed size, and may call other services in
series or in parallel. Every knob can change while traffic runs::

    inventory.set(latency=Normal(200, 50), workers=4, error_rate=0.05)

Endpoints: ``GET /`` does the work and the downstream calls; ``GET /local``
does only the service's own work (an endpoint that depends on nothing else,
yet shares the worker pool); ``GET /health`` answers at once.
"""
from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from . import faults as fault_kinds
from .errors import require
from .faults import Faults
from .latency import LatencyModel, as_model
from .pool import WorkerPool
from .settings import to_model, to_wall

if TYPE_CHECKING:
    from .lab import Lab

_KNOBS = ("latency", "faults", "error_rate", "outage", "hang_rate", "workers", "calls",
          "parallel", "call_timeout_ms")


class Service:
    """One simulated service. Create it with :meth:`Lab.service`, not directly."""

    def __init__(self, lab: Lab, name: str, latency: LatencyModel | float = 0,
                 faults: Faults | None = None, workers: int = 100,
                 calls: Iterable[Service] = (), parallel: bool = False,
                 call_timeout_ms: float | None = None, seed: int | str = 0) -> None:
        self.lab = lab
        self.name = name
        self.latency = as_model(latency)
        self.faults = faults or Faults()
        self.pool = WorkerPool(workers)
        self.calls = list(calls)
        self.parallel = parallel
        self.call_timeout_ms = call_timeout_ms
        self.rng = random.Random(f"{seed}:{name}")
        self.served = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    # ----- what learners look at -------------------------------------------------
    @property
    def url(self) -> str:
        """The service's base address, ``http://127.0.0.1:PORT/``."""
        return f"http://127.0.0.1:{self.port}/"

    @property
    def in_flight(self) -> int:
        """Requests inside the service now: at work plus waiting for a worker."""
        return self.pool.busy + self.pool.waiting

    def describe(self) -> str:
        """One line: name, address, latency, workers, faults, downstream calls."""
        mode = "parallel" if self.parallel else "series"
        calls = ", ".join(c.name for c in self.calls) or "nothing"
        return (f"{self.name} at {self.url}: latency {self.latency}, {self.pool.capacity} "
                f"workers, {self.faults}, calls {calls} ({mode})")

    def __repr__(self) -> str:
        return f"<Service {self.describe()}>"

    # ----- knobs -------------------------------------------------------------------
    def set(self, **knobs: Any) -> Service:
        """Change knobs live: latency, faults, error_rate, outage, hang_rate, workers,
        calls, parallel, call_timeout_ms. Returns the service."""
        unknown = sorted(set(knobs) - set(_KNOBS))
        require(not unknown, f"{self.name}.set() has no knob {', '.join(unknown)}.",
                f"use one of: {', '.join(_KNOBS)}")
        if "latency" in knobs:
            self.latency = as_model(knobs["latency"])
        self._set_faults(knobs)
        if "workers" in knobs:
            self.lab.run(self.pool.resize(knobs["workers"]))
        if "calls" in knobs:
            self.calls = list(knobs["calls"])
        if "parallel" in knobs:
            self.parallel = bool(knobs["parallel"])
        if "call_timeout_ms" in knobs:
            self.call_timeout_ms = knobs["call_timeout_ms"]
        return self

    def _set_faults(self, knobs: dict[str, Any]) -> None:
        current = knobs.get("faults", self.faults)
        fields = {k: knobs[k] for k in ("error_rate", "outage", "hang_rate") if k in knobs}
        if fields or "faults" in knobs:
            merged = {**current.__dict__, **fields}
            self.faults = Faults(**merged)

    # ----- the HTTP server -----------------------------------------------------------
    async def start(self) -> None:
        """Bind a free 127.0.0.1 port and serve (runs on the lab's loop)."""
        app = web.Application()
        app.router.add_get("/", self._handle_full)
        app.router.add_get("/local", self._handle_local)
        app.router.add_get("/health", self._handle_health)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        """Stop serving and release the port."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"service": self.name, "ok": True})

    async def _handle_full(self, request: web.Request) -> web.Response:
        return await self._serve(with_calls=True)

    async def _handle_local(self, request: web.Request) -> web.Response:
        return await self._serve(with_calls=False)

    async def _serve(self, with_calls: bool) -> web.Response:
        fate = self.faults.decide(self.rng)
        if fate == fault_kinds.OUTAGE:
            return self._reply(503, "outage")
        async with self.pool.slot():
            self.served += 1
            if fate == fault_kinds.HANG:
                await asyncio.sleep(to_wall(self.faults.hang_ms / 1000))
                return self._reply(504, "hung")
            work_ms = self.latency.sample(self.rng)
            await asyncio.sleep(to_wall(work_ms / 1000))
            calls = await self._call_downstream() if with_calls else []
        if fate == fault_kinds.ERROR:
            return self._reply(500, "error", work_ms, calls)
        failed = [c for c in calls if c["status"] != 200]
        return self._reply(502 if failed else 200, "ok", work_ms, calls)

    def _reply(self, status: int, outcome: str, work_ms: float = 0.0,
               calls: list[dict[str, Any]] | None = None) -> web.Response:
        body = {"service": self.name, "outcome": outcome, "work_ms": round(work_ms, 3),
                "calls": calls or []}
        return web.json_response(body, status=status)

    async def _call_downstream(self) -> list[dict[str, Any]]:
        if self.parallel:
            return list(await asyncio.gather(*(self._call(c) for c in self.calls)))
        return [await self._call(c) for c in self.calls]

    async def _call(self, child: Service) -> dict[str, Any]:
        timeout = None
        if self.call_timeout_ms is not None:
            timeout = aiohttp.ClientTimeout(total=to_wall(self.call_timeout_ms / 1000))
        return await fetch(self.lab.session, child.url, timeout, child.name)


async def fetch(session: aiohttp.ClientSession, url: str,
                timeout: aiohttp.ClientTimeout | None, name: str = "") -> dict[str, Any]:
    """GET ``url``; returns status (0 timeout, -1 refused), model ms and the body."""
    start = time.perf_counter()
    status, body = -1, None
    try:
        async with session.get(url, timeout=timeout or aiohttp.ClientTimeout()) as resp:
            status = resp.status
            body = await resp.json(content_type=None)
    except asyncio.TimeoutError:
        status = 0
    except (aiohttp.ClientError, OSError, ValueError):
        status = -1 if status == -1 else status
    ms = to_model(time.perf_counter() - start) * 1000
    return {"service": name, "status": status, "ms": round(ms, 3), "body": body}
