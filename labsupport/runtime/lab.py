"""The :class:`Lab`: one background event loop that runs every simulated service.

A notebook creates one lab and asks it for services::

    from labsupport import Lab
    lab = Lab(seed=7)
    a, b, c = lab.chain(3, latency=500)   # a calls b calls c, 500 ms each
    lab.call(a).ms                         # about 1500

Creating a new ``Lab`` closes the previous one first (ports released, loop
stopped, thread joined), so Restart & Run All, even twice, never clashes.
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import sys
import threading
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from labsupport.runtime import load
from labsupport.runtime.errors import LabError, require
from labsupport.runtime.faults import Faults
from labsupport.runtime.latency import LatencyModel
from labsupport.runtime.messaging import Bus
from labsupport.runtime.metrics import Recorder
from labsupport.runtime.services import Route, Service, fetch
from labsupport.runtime.settings import to_wall
from labsupport.runtime.stores import Store, Stores
from labsupport.runtime.watchdog import Watchdog

T = TypeVar("T")
THREAD_NAME = "labsupport-loop"
SWITCH_INTERVAL_S = 0.001
"""How long a busy Python thread may keep the interpreter from the lab's loop (seconds)."""
_current: Lab | None = None


@dataclass(frozen=True)
class Response:
    """The answer to :meth:`Lab.call`: HTTP status (0 timeout, -1 refused), model ms, body."""

    status: int
    ms: float
    body: Any

    @property
    def ok(self) -> bool:
        return self.status == 200


class Lab:
    """Owns the services of one experiment and the loop they run on."""

    def __init__(self, seed: int = 0) -> None:
        global _current
        if _current is not None:
            _current.close()
        self.seed = seed
        self.services: dict[str, Service] = {}
        # A thread that waits for the interpreter (the loop's services, a consumer) gets it
        # within this long of a busy thread (a dashboard drawing a frame), not Python's 5 ms.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=THREAD_NAME,
                                        daemon=True)
        self._thread.start()
        self.session: aiohttp.ClientSession = self.run(self._open_session())
        self.closed = False
        self._bus: Bus | None = None
        self._stores = Stores(f"{os.getpid()}-{id(self):x}")
        #: notes pauses of the machine, for claims (:mod:`labsupport.runtime.watchdog`)
        self.watchdog = Watchdog()
        _current = self

    @staticmethod
    async def _open_session() -> aiohttp.ClientSession:
        # No connection limit: the client must never be the bottleneck.
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    # ----- running things on the lab's loop ------------------------------------------
    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the lab's loop; returns a future at once."""
        if getattr(self, "closed", False):
            coro.close()
            raise LabError("This lab is closed.", "create a new one: lab = Lab()")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        """Run ``coro`` on the lab's loop and wait for its result."""
        return self.submit(coro).result(timeout)  # type: ignore[arg-type]

    # ----- messaging -------------------------------------------------------------------
    @property
    def bus(self) -> Bus:
        """This lab's :class:`~labsupport.runtime.messaging.Bus` (topics, publishers, workers)."""
        if self._bus is None:
            require(not self.closed, "This lab is closed.", "create a new one: lab = Lab()")
            self._bus = Bus(self)
        return self._bus

    def store(self, name: str, fresh: bool = False) -> Store:
        """The SQLite store called ``name`` (see :mod:`labsupport.runtime.stores`); deleted on close.

        ``fresh=True`` starts it again empty (for an experiment that sets itself up again).
        """
        require(not self.closed, "This lab is closed.", "create a new one: lab = Lab()")
        return self._stores.get(name, fresh)

    # ----- services ------------------------------------------------------------------
    def service(self, name: str, latency: LatencyModel | float = 0,
                faults: Faults | None = None, workers: int = 100,
                calls: list[Service] | tuple[Service, ...] = (), parallel: bool = False,
                call_timeout_ms: float | None = None, routes: dict[str, Route] | None = None,
                **knobs: Any) -> Service:
        """Start a service called ``name``; see :class:`~labsupport.runtime.services.Service`.

        ``routes`` adds custom endpoints: ``{"/orders": handler}`` where ``handler`` is an
        ``async def handler(request)`` returning an aiohttp response (any HTTP method).

        Further knobs (``local_workers``, ``queue_limit``, ``attempts``, ``guard``)
        are passed to :meth:`Service.set`.

        A service of the same name is **replaced**: the old one stops (its port is freed)
        and the new one takes its name, so a cell that creates services can run again.
        """
        require(isinstance(name, str) and name.isidentifier(),
                f"A service name must be a simple word, got {name!r}.", "e.g. 'payment'")
        self.remove(name)
        svc = Service(self, name, latency, faults, workers, calls, parallel,
                      call_timeout_ms, seed=self.seed, routes=routes)
        if knobs:
            svc.set(**knobs)
        self.run(svc.start())
        self.services[name] = svc
        return svc

    def remove(self, name: str, timeout: float | None = None) -> Service | None:
        """Stop the service called ``name`` and forget it (nothing happens if there is none);
        ``timeout`` (wall seconds) bounds the wait for it to stop.

        Returns the stopped service, or ``None``.
        """
        svc = self.services.pop(name, None)
        if svc is not None:
            self.run(svc.stop(), timeout=timeout)
        return svc

    def chain(self, n: int, latency: LatencyModel | float, prefix: str = "s",
              **knobs: Any) -> list[Service]:
        """``n`` services where each calls the next: ``[s1, s2, ..., sn]``; call ``s1``."""
        require(isinstance(n, int) and n >= 1, f"n must be 1 or more, got {n!r}.")
        chain: list[Service] = []
        for i in range(n, 0, -1):
            calls = [chain[0]] if chain else []
            chain.insert(0, self.service(f"{prefix}{i}", latency, calls=calls, **knobs))
        return chain

    def fan_out(self, n: int, latency: LatencyModel | float, name: str = "root",
                **knobs: Any) -> tuple[Service, list[Service]]:
        """A ``root`` that calls ``n`` leaves in parallel; returns ``(root, leaves)``."""
        require(isinstance(n, int) and n >= 1, f"n must be 1 or more, got {n!r}.")
        leaves = [self.service(f"{name}_leaf{i}", latency, **knobs) for i in range(1, n + 1)]
        return self.service(name, 0, calls=leaves, parallel=True), leaves

    # ----- traffic -------------------------------------------------------------------
    def call(self, target: Service, path: str = "", timeout_ms: float | None = None,
             method: str = "GET", json: Any = None,
             headers: dict[str, str] | None = None) -> Response:
        """One request to ``target`` (``path`` e.g. ``'local'``); waits for the answer.

        ``method="POST", json={...}`` sends a body (for custom ``routes``); ``headers`` are
        sent as given.
        """
        timeout = load.client_timeout(timeout_ms) if timeout_ms else None
        result = self.run(fetch(self.session, target.url + path, timeout, target.name,
                                method, json, headers))
        return Response(result["status"], result["ms"], result["body"])

    def open_loop(self, target: Service, rate: float, duration: float, path: str = "",
                  timeout_ms: float = 10_000, poisson: bool = False,
                  recorder: Recorder | None = None, progress: bool = True) -> Recorder:
        """Open-loop load: ``rate`` requests per second for ``duration`` s; returns the record."""
        return self.start_open_loop(target, rate, duration, path, timeout_ms, poisson,
                                    recorder).wait(progress)

    def start_open_loop(self, target: Service, rate: float, duration: float, path: str = "",
                        timeout_ms: float = 10_000, poisson: bool = False,
                        recorder: Recorder | None = None) -> LoadRun:
        """Like :meth:`open_loop` but returns at once with a :class:`LoadRun` to watch."""
        if recorder is None:
            recorder = Recorder(f"{target.name} @ {rate:g}/s")
        stop = threading.Event()
        future = self.submit(load.open_loop(self.session, target.url + path, rate, duration,
                                            recorder, timeout_ms, poisson, self.seed, stop))
        return LoadRun(future, recorder, stop, duration)

    def closed_loop(self, target: Service, users: int, requests: int, path: str = "",
                    timeout_ms: float = 10_000, recorder: Recorder | None = None,
                    progress: bool = True) -> Recorder:
        """Closed-loop load: ``users`` concurrent users, ``requests`` in all."""
        if recorder is None:
            recorder = Recorder(f"{target.name} x {users} users")
        stop = threading.Event()
        future = self.submit(load.closed_loop(self.session, target.url + path, users,
                                              requests, recorder, timeout_ms, stop))
        return LoadRun(future, recorder, stop, None).wait(progress)

    def overhead_ms(self, target: Service, requests: int = 20, users: int = 5) -> float:
        """The lab's own cost of a call to ``target``: the median with every latency at 0 ms.

        Small at real time; larger as ``LAB_TIME_SCALE`` shrinks, because the lab
        reports model time (wall time divided by the scale). Claims that compare
        a measured latency with theory add it to the theory.
        """
        saved = {name: svc.latency for name, svc in self.services.items()}
        for svc in self.services.values():
            svc.set(latency=0)
        try:
            return self.closed_loop(target, users, requests, progress=False).percentile(50)
        finally:
            for name, latency in saved.items():
                self.services[name].set(latency=latency)

    # ----- shutting down ---------------------------------------------------------------
    def close(self) -> None:
        """Stop every service, close the client, stop the loop and join its thread."""
        global _current
        if self.closed:
            return
        try:
            if self._bus is not None:
                self._bus.close()
            self.run(self._shutdown(), timeout=10)
        finally:
            self._stores.close()
            self.watchdog.stop()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            self.closed = True
            if _current is self:
                _current = None

    async def _shutdown(self) -> None:
        for svc in self.services.values():
            await svc.stop()
        await self.session.close()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self.services)} services"
        return f"<Lab seed={self.seed}, {state}>"


class LoadRun:
    """A load test running in the background: watch ``recorder``, ``stop()`` or ``wait()``."""

    def __init__(self, future: concurrent.futures.Future, recorder: Recorder,
                 stop: threading.Event, duration: float | None) -> None:
        self.future, self.recorder, self._stop, self.duration = future, recorder, stop, duration

    def done(self) -> bool:
        """True when every request has been answered (or given up on)."""
        return self.future.done()

    def stop(self) -> Recorder:
        """Send no more requests; wait for those in flight; return the record."""
        self._stop.set()
        return self.wait(progress=False)

    def wait(self, progress: bool = True) -> Recorder:
        """Wait until the run ends (a progress bar when it takes more than 2 s)."""
        wall = to_wall(self.duration) if self.duration else 0.0
        if progress and wall > 2:
            _progress_bar(self.future, wall)
        self.future.result()
        return self.recorder


def _progress_bar(future: concurrent.futures.Future, wall_seconds: float) -> None:
    from tqdm.auto import tqdm

    start = time.monotonic()
    with tqdm(total=round(wall_seconds, 1), unit="s", desc="load", leave=False) as bar:
        while not future.done():
            future_wait = min(0.25, max(0.01, wall_seconds))
            concurrent.futures.wait([future], timeout=future_wait)
            bar.n = round(min(time.monotonic() - start, wall_seconds), 1)
            bar.refresh()


def current() -> Lab | None:
    """The lab created last in this process (``None`` if closed)."""
    return _current


@atexit.register
def _close_at_exit() -> None:
    if _current is not None:
        _current.close()
