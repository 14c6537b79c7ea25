"""Simulated services: real aiohttp HTTP servers on 127.0.0.1 with knobs.

A :class:`Service` does some work (its latency model), may fail (its fault
model), has a worker pool of a fixed size, and may call other services in
series or in parallel. Every knob can change while traffic runs::

    inventory.set(latency=Normal(200, 50), workers=4, error_rate=0.05)

Endpoints: ``GET /`` does the work and the downstream calls; ``GET /local``
does only the service's own work (an endpoint that depends on nothing else,
yet shares the worker pool unless ``local_workers`` gives it its own: a
bulkhead); ``GET /health`` answers at once.

Protection knobs for the resilience modules: ``call_timeout_ms`` (per downstream
call), ``attempts`` (tries per downstream call, so 4 means "3 retries"),
``queue_limit`` (how many may wait for a worker before the rest get 503 at
once), and ``guard`` (an async function that wraps every downstream call, for
policies such as backoff or a circuit breaker).
"""
from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from labsupport.runtime import faults as fault_kinds
from labsupport.runtime.errors import require
from labsupport.runtime.faults import Faults
from labsupport.runtime.latency import LatencyModel, as_model
from labsupport.runtime.pool import PoolFull, WorkerPool
from labsupport.runtime.settings import to_model, to_wall

if TYPE_CHECKING:
    from labsupport.runtime.lab import Lab

_KNOBS = ("latency", "faults", "error_rate", "outage", "hang_rate", "workers", "calls",
          "parallel", "call_timeout_ms", "local_workers", "queue_limit", "attempts", "guard")

CallResult = dict[str, Any]
Route = Callable[[web.Request], Awaitable[web.StreamResponse]]
"""``async def handler(request) -> aiohttp.web.Response``: a custom endpoint (any method)."""
Guard = Callable[["Service", Callable[[], Awaitable[CallResult]]], Awaitable[CallResult]]
"""``async def guard(child, call) -> result``: wraps one downstream call.

``call()`` makes one attempt at ``child`` and returns ``{"service", "status", "ms",
"body"}`` (status 0 = timed out, -1 = refused); the guard may call it several
times, not at all, or return a result of its own (a fallback).
"""


class Service:
    """One simulated service. Create it with :meth:`Lab.service`, not directly."""

    def __init__(self, lab: Lab, name: str, latency: LatencyModel | float = 0,
                 faults: Faults | None = None, workers: int = 100,
                 calls: Iterable[Service] = (), parallel: bool = False,
                 call_timeout_ms: float | None = None, seed: int | str = 0,
                 routes: dict[str, Route] | None = None) -> None:
        self.lab = lab
        self.routes = _checked_routes(routes or {})
        self.name = name
        self.latency = as_model(latency)
        self.faults = faults or Faults()
        self.pool = WorkerPool(workers)
        self.calls = list(calls)
        self.parallel = parallel
        self.call_timeout_ms = call_timeout_ms
        self.rng = random.Random(f"{seed}:{name}")
        self.local_pool: WorkerPool | None = None
        self.queue_limit: int | None = None
        self.attempts = 1
        self.guard: Guard | None = None
        self.received = 0
        self.served = 0
        self.rejected = 0
        self.downstream_calls = 0
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
        local = self.local_pool.busy + self.local_pool.waiting if self.local_pool else 0
        return self.pool.busy + self.pool.waiting + local

    def reset_counts(self) -> None:
        """Set ``received``, ``served``, ``rejected`` and ``downstream_calls`` back to 0."""
        self.received = self.served = self.rejected = self.downstream_calls = 0

    def describe(self) -> str:
        """One line: name, address, latency, workers, faults, downstream calls."""
        mode = "parallel" if self.parallel else "series"
        calls = ", ".join(c.name for c in self.calls) or "nothing"
        return (f"{self.name} at {self.url}: latency {self.latency}, {self.pool.capacity} "
                f"workers, {self.faults}, calls {calls} ({mode}){self._protection()}")

    def _protection(self) -> str:
        parts = []
        if self.call_timeout_ms is not None:
            parts.append(f"timeout {self.call_timeout_ms:g} ms")
        if self.attempts > 1:
            parts.append(f"{self.attempts} attempts")
        if self.local_pool is not None:
            parts.append(f"/local has its own {self.local_pool.capacity} workers")
        if self.queue_limit is not None:
            parts.append(f"at most {self.queue_limit} waiting")
        if self.guard is not None:
            parts.append(f"guard {getattr(self.guard, '__name__', type(self.guard).__name__)}")
        return "; " + ", ".join(parts) if parts else ""

    def __repr__(self) -> str:
        return f"<Service {self.describe()}>"

    # ----- knobs -------------------------------------------------------------------
    def set(self, **knobs: Any) -> Service:
        """Change knobs live; returns the service.

        Work: latency, workers, calls, parallel. Faults: faults, error_rate, outage,
        hang_rate. Protection: call_timeout_ms, attempts, local_workers (a separate
        pool for ``/local``: a bulkhead), queue_limit, guard.
        """
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
            self.call_timeout_ms = _positive_or_none(knobs["call_timeout_ms"], "call_timeout_ms")
        self._set_protection(knobs)
        return self

    def _set_protection(self, knobs: dict[str, Any]) -> None:
        if "local_workers" in knobs:
            size = knobs["local_workers"]
            if size is None:
                self.local_pool = None
            elif self.local_pool is None:
                self.local_pool = WorkerPool(size)
            else:
                self.lab.run(self.local_pool.resize(size))
        if "queue_limit" in knobs:
            limit = knobs["queue_limit"]
            require(limit is None or (isinstance(limit, int) and limit >= 0),
                    f"queue_limit must be None or a whole number of 0 or more, got {limit!r}.",
                    "None lets the line grow without bound; 0 turns away anyone who would wait")
            self.queue_limit = limit
        if "attempts" in knobs:
            tries = knobs["attempts"]
            require(isinstance(tries, int) and tries >= 1,
                    f"attempts must be a whole number of at least 1, got {tries!r}.",
                    "attempts counts the first try too: 3 retries means attempts=4")
            self.attempts = tries
        if "guard" in knobs:
            guard = knobs["guard"]
            require(guard is None or callable(guard),
                    f"guard must be an async function guard(child, call), got {guard!r}.")
            self.guard = guard

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
        for path, handler in self.routes.items():
            app.router.add_route("*", path, handler)
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

    async def work(self) -> float:
        """Do this service's own work once (a worker slot, then its latency); returns the ms.

        For custom ``routes``: ``await svc.work()`` inside a handler costs what ``/local``
        costs. Raises :class:`~labsupport.runtime.pool.PoolFull` when ``queue_limit`` is exceeded.
        """
        async with self.pool.slot(self.queue_limit):
            self.served += 1
            work_ms = self.latency.sample(self.rng)
            await asyncio.sleep(to_wall(work_ms / 1000))
        return work_ms

    async def _handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"service": self.name, "ok": True})

    async def _handle_full(self, request: web.Request) -> web.Response:
        return await self._serve(with_calls=True)

    async def _handle_local(self, request: web.Request) -> web.Response:
        return await self._serve(with_calls=False)

    async def _serve(self, with_calls: bool) -> web.Response:
        self.received += 1
        fate = self.faults.decide(self.rng)
        if fate == fault_kinds.OUTAGE:
            return self._reply(503, "outage")
        pool = self.local_pool if (self.local_pool and not with_calls) else self.pool
        try:
            return await self._work(pool, fate, with_calls)
        except PoolFull:
            self.rejected += 1
            return self._reply(503, "busy")

    async def _work(self, pool: WorkerPool, fate: str, with_calls: bool) -> web.Response:
        async with pool.slot(self.queue_limit):
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

    async def _call(self, child: Service) -> CallResult:
        if self.guard is not None:
            return await self.guard(child, lambda: self._call_with_retries(child))
        return await self._call_with_retries(child)

    async def _call_with_retries(self, child: Service) -> CallResult:
        result: CallResult = {}
        for attempt in range(1, self.attempts + 1):
            result = await self._attempt(child)
            result["attempts"] = attempt
            if result["status"] == 200:
                break
        return result

    async def _attempt(self, child: Service) -> CallResult:
        self.downstream_calls += 1
        timeout = None
        if self.call_timeout_ms is not None:
            timeout = aiohttp.ClientTimeout(total=to_wall(self.call_timeout_ms / 1000))
        return await fetch(self.lab.session, child.url, timeout, child.name)


async def json_body(request: web.Request) -> dict[str, Any]:
    """A custom route's JSON body as a dict (``{}`` when there is none or it is not an object)."""
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _checked_routes(routes: dict[str, Route]) -> dict[str, Route]:
    for path, handler in routes.items():
        require(isinstance(path, str) and path.startswith("/") and path != "/",
                f"A route is a path such as '/orders', got {path!r}.",
                "'/', '/local' and '/health' are the service's own")
        require(asyncio.iscoroutinefunction(handler),
                f"The handler for {path} must be an async def taking the request.",
                "async def handler(request): return web.json_response({...})")
    return dict(routes)


def _positive_or_none(value: Any, name: str) -> float | None:
    require(value is None or (isinstance(value, (int, float)) and value > 0),
            f"{name} must be None or a number of ms above 0, got {value!r}.",
            f"e.g. {name}=250, or None for no limit")
    return value


async def fetch(session: aiohttp.ClientSession, url: str,
                timeout: aiohttp.ClientTimeout | None, name: str = "",
                method: str = "GET", json: Any = None,
                headers: dict[str, str] | None = None, data: bytes | None = None,
                with_headers: bool = False) -> dict[str, Any]:
    """GET (or ``method``) ``url``; returns status (0 timeout, -1 refused), model ms, body.

    ``json`` sends a JSON body, ``data`` raw bytes; ``headers`` are sent as given (e.g. a W3C
    ``traceparent`` for tracing). ``with_headers=True`` adds the answer's headers under
    ``"headers"``.
    """
    start = time.perf_counter()
    status, body, answer_headers = -1, None, {}
    try:
        async with session.request(method, url, json=json, data=data, headers=headers,
                                   timeout=timeout or aiohttp.ClientTimeout()) as resp:
            status, answer_headers = resp.status, dict(resp.headers)
            body = await resp.json(content_type=None)
    except asyncio.TimeoutError:
        status = 0
    except (aiohttp.ClientError, OSError, ValueError):
        status = -1 if status == -1 else status
    ms = to_model(time.perf_counter() - start) * 1000
    result = {"service": name, "status": status, "ms": round(ms, 3), "body": body}
    if with_headers:
        result["headers"] = answer_headers
    return result
