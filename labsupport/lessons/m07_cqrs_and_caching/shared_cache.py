"""Module 07 · Caches on a real cache server (Valkey/Redis), shared by every instance.

The caches of :mod:`labsupport.lessons.m07_cqrs_and_caching.caching` are dicts inside one service. Here the entries live
on the lab's cache server (:mod:`labsupport.runtime.cache_server`), reached with redis-py's asyncio
client from inside the services, the way a real service reaches Redis:

* :class:`ServerCaches`: cache-aside with a TTL the *server* enforces (``SET key value PX
  ms``), beside the same cache without an expiry (the control arm), or an event-refreshed
  cache whose bus worker writes into the server;
* :class:`SharedInstances`: two instances of one service sharing one cache on the server,
  against two instances with a dict each (the control arm: the dict TTL cache of
  :mod:`labsupport.lessons.m07_cqrs_and_caching.caching`);
* :class:`Stampede`: one hot key expires under load; the plain cache-aside lets every reader
  that misses recompute it, :func:`get_or_compute` lets one reader hold a lock
  (``SET lock token NX PX ms``) while the others wait for its value. The computes are counted
  by the backend service, not by the cache code.

Every experiment writes its keys under a prefix of its own (``lab07:<kind>:<random>:``) and
deletes them in :meth:`close`, so a cell can run again. :func:`connect` returns ``None``, and
says why and how to fix it in one sentence, when no cache server can be had.
"""
from __future__ import annotations

import asyncio
import json
import math
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio as aioredis
from aiohttp import web

from labsupport.kit.dashboard import PALETTE, LiveView
from labsupport.kit.evidence import Estimate, quantile, share
from labsupport.kit.experiment import Experiment
from labsupport.lessons.m07_cqrs_and_caching.caching import CacheBench, Entry, catch_up
from labsupport.lessons.m07_cqrs_and_caching.cqrs import (
    model_now,
    require_positive,
    submit_loaded,
)
from labsupport.runtime import cache_server
from labsupport.runtime.errors import require
from labsupport.runtime.load import Shot, arrival_times, fire
from labsupport.runtime.metrics import percentile
from labsupport.runtime.settings import to_wall

if TYPE_CHECKING:
    from labsupport.lessons.m07_cqrs_and_caching.cqrs import OrderShop
    from labsupport.runtime.lab import Lab
    from labsupport.runtime.messaging import Event


def connect(start: bool = True) -> str | None:
    """The cache server's ``redis://`` URL, or ``None`` after printing why there is none and
    the fix (the cells that need the server then skip)."""
    try:
        return cache_server.url(start)
    except cache_server.CacheUnavailable as err:
        fix = err.fix if cache_server.INSTALL_FIX in err.fix else (
            f"{err.fix}; or {cache_server.INSTALL_FIX}")
        print(f"The cache-server cells below skip: {err.problem} Fix: {fix}.")
        return None


def describe(url: str) -> str:
    """Which server answers at ``url``, and its version (asked with INFO server)."""
    client = redis.Redis.from_url(url)
    try:
        info = client.info("server")
    finally:
        client.close()
    name = info.get("server_name", "redis")
    version = info.get(f"{name}_version", info.get("redis_version", "?"))
    return f"cache server: {name.capitalize()} {version} at {url}"


def px(model_ms: float) -> int:
    """A TTL of ``model_ms`` model ms as the wall ms the server counts (at least 1)."""
    return max(1, round(to_wall(model_ms / 1000) * 1000))


def encode(entry: Entry) -> str:
    return json.dumps({"value": entry.value, "seq": entry.seq, "stored_at": entry.stored_at})


def decode(raw: bytes | str) -> Entry:
    data = json.loads(raw)
    return Entry(data["value"], data["seq"], data["stored_at"])


_OPEN: dict[str, Any] = {}


class _OnServer:
    """A prefix of keys of its own and the clients that reach the server; replaces (and
    closes) the previous experiment of the same kind, as ``lab.service`` does for a name."""

    kind = "cache"

    def _connect(self, lab: Lab, url: str) -> None:
        previous = _OPEN.pop(self.kind, None)
        if previous is not None:
            previous.close()
        self.server_url, self.prefix = url, f"lab07:{self.kind}:{uuid.uuid4().hex[:8]}:"
        self.sync = redis.Redis.from_url(url)
        try:
            self.sync.ping()
        except redis.RedisError as err:
            raise cache_server.CacheUnavailable(
                f"The cache server at {url} does not answer ({err}).",
                "python -m labsupport cache up, then run connect() again") from None
        self.client: aioredis.Redis = lab.run(_open_async(url))
        lab.run(_warm(self.client))
        self._lab = lab
        _OPEN[self.kind] = self

    def key(self, arm: str, name: str) -> str:
        return f"{self.prefix}{arm}:{name}"

    def delete_keys(self, arm: str = "") -> int:
        """Delete this experiment's keys (of one ``arm``, or all); returns how many."""
        keys = list(self.sync.scan_iter(match=f"{self.prefix}{arm}*", count=500))
        return self.sync.delete(*keys) if keys else 0

    def keys_left(self) -> int:
        return sum(1 for _ in self.sync.scan_iter(match=f"{self.prefix}*", count=500))

    def close(self) -> None:
        """Delete this experiment's keys and close its clients."""
        if _OPEN.get(self.kind) is self:
            del _OPEN[self.kind]
        try:
            self.delete_keys()
        except redis.RedisError:
            pass   # the server is gone: its keys went with it
        self.sync.close()
        if not self._lab.closed:
            self._lab.run(self.client.aclose())


async def _open_async(url: str, connections: int = 64) -> aioredis.Redis:
    """An asyncio client made on the lab's loop (its connections belong to that loop; values
    come back as ``str``), with a pool of ``connections`` that makes a request wait for a free
    one rather than fail (redis-py's default pool raises "Too many connections" beyond 100)."""
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=connections,
                                                    timeout=30, decode_responses=True)
    return aioredis.Redis.from_pool(pool)


async def _warm(client: aioredis.Redis, connections: int = 16) -> None:
    """Open ``connections`` of the pool before a run (a connection costs a handshake)."""
    await asyncio.gather(*(client.ping() for _ in range(connections)))


class _ServerBench(_OnServer, CacheBench):
    """A :class:`~labsupport.lessons.m07_cqrs_and_caching.caching.CacheBench` whose entries live on the cache server."""

    async def _server_get(self, arm: str, customer: str, ttl_px: int | None) -> web.Response:
        """Cache-aside on the server: GET; on a miss compute, then ``SET key value PX ttl``
        (no PX: the entry never expires)."""
        key = self.key(arm, customer)
        raw = await self.client.get(key)
        if raw is not None:
            return self._answer(arm, decode(raw), True)
        entry = await self._compute(customer, f"{arm}_cache")   # a miss: the user waits
        await self.client.set(key, encode(entry), px=ttl_px)
        return self._answer(arm, entry, False)


class ServerCaches(_ServerBench):
    """Caches whose entries live on the cache server; ``arms`` picks two or three of:

    * ``aside``: cache-aside with a TTL the server enforces (``SET ... PX``);
    * ``forever``: the same without an expiry (the control arm: it never refreshes);
    * ``event``: every entry computed ahead of time, a bus worker on the shop's topic writes
      the recomputed entry into the server when an event about that customer arrives.
    """

    labels = {"aside": "cache-aside, TTL on the server", "forever": "no TTL (control)",
              "event": "event-refreshed, on the server"}
    TITLE = "Caches on the cache server"

    def __init__(self, lab: Lab, shop: OrderShop, url: str, arms: tuple[str, ...] = (
            "aside", "forever"), compute_ms: float = 50.0, ttl_ms: float = 2000.0) -> None:
        require(len(arms) >= 2 and set(arms) <= set(self.labels) and len(set(arms)) == len(arms),
                f"arms are two or three of {', '.join(self.labels)}, got {arms!r}.")
        self.arms, self.kind = tuple(arms), "_".join(arms)
        CacheBench.__init__(self, lab, shop, compute_ms, ttl_ms)
        self._connect(lab, url)
        self.services = {arm: lab.service(f"{self.kind}_{arm}", 0, routes={
            "/summary/{customer}": self._handler(arm)}) for arm in arms}
        if "event" in arms:
            self._start_refresher()

    def _handler(self, arm: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        ttl = (lambda: px(self.ttl_ms)) if arm == "aside" else (lambda: None)

        async def get(request: web.Request) -> web.Response:
            return await self._server_get(arm, request.match_info["customer"], ttl())
        return get

    def url(self, arm: str, index: int) -> str:
        return self.services[arm].url

    def _reset(self) -> None:
        for arm in self.arms:
            if arm != "event":
                self.delete_keys(arm)

    # ----- the event-refreshed arm --------------------------------------------------------
    def _start_refresher(self) -> None:
        for customer in self.shop.customers:   # precompute every entry, ahead of any read
            self.sync.set(self.key("event", customer),
                          encode(self._compute_blocking(customer, "event_refresher")))
        group = f"srv-summary-cache-{self.prefix.split(':')[2]}"   # new group: from offset 0
        self.worker = self.lab.bus.worker(self.shop.topic, group, self._on_event,
                                          name=group).wait_assigned()
        catch_up(self.worker, sum(self.lab.bus.end_offsets(self.shop.topic)))

    def _on_event(self, event: Event) -> None:
        """The refresher (a bus worker thread): recompute unless the entry has this write,
        then write it into the server."""
        customer, seq = event.value["customer"], event.value["customer_seq"]
        raw = self.sync.get(self.key("event", customer))
        if raw is not None and decode(raw).seq >= seq:
            return   # an earlier recompute already includes it
        self.sync.set(self.key("event", customer),
                      encode(self._compute_blocking(customer, "event_refresher")))

    def wait_refreshed(self, timeout: float = 10.0) -> bool:
        """Wait until every entry on the server holds its customer's last write."""
        from labsupport.runtime.waiting import wait_until

        def fresh() -> bool:
            return all(decode(self.sync.get(self.key("event", c))).seq
                       >= self.shop.history[c][-1][0] for c in self.shop.customers)
        return wait_until(fresh, timeout, interval=0.02)

    def close(self) -> None:
        """Stop the services and the refresher, delete the keys, close the clients."""
        if not self.lab.closed:
            if getattr(self, "worker", None) is not None:
                self.worker.stop()
            for arm in self.arms:
                self.lab.remove(f"{self.kind}_{arm}")
        super().close()


class SharedInstances(_ServerBench):
    """Two instances of one summary service behind a round-robin balancer (read ``i`` goes
    to instance ``i % 2``), in two arms that get the same reads at the same moments:

    * ``shared``: both instances use one cache-aside entry per customer on the server;
    * ``local``: each instance keeps its own dict TTL cache (the control arm).
    """

    arms = ("shared", "local")
    labels = {"shared": "one cache on the server", "local": "a dict per instance (control)"}
    TITLE = "Two instances: one shared cache, or a dict each"
    kind = "instances"

    def __init__(self, lab: Lab, shop: OrderShop, url: str, compute_ms: float = 50.0,
                 ttl_ms: float = 400.0) -> None:
        CacheBench.__init__(self, lab, shop, compute_ms, ttl_ms)
        self._connect(lab, url)
        self.local: list[dict[str, Entry]] = [{}, {}]
        self._went_back: dict[str, tuple[int, int]] = {}
        self._settings: tuple[float, float, float] = (10.0, 40.0, 8.0)
        self.instances = {
            "shared": [lab.service(f"shared_{n}", 0, routes={
                "/summary/{customer}": self._shared_get}) for n in "ab"],
            "local": [lab.service(f"local_{n}", 0, routes={
                "/summary/{customer}": self._local_get(i)}) for i, n in enumerate("ab")]}

    async def _shared_get(self, request: web.Request) -> web.Response:
        return await self._server_get("shared", request.match_info["customer"],
                                      px(self.ttl_ms))

    def _local_get(self, instance: int) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def get(request: web.Request) -> web.Response:
            return await self._dict_ttl("local", self.local[instance],
                                        request.match_info["customer"])
        return get

    def url(self, arm: str, index: int) -> str:
        return self.instances[arm][index % 2].url

    def run(self, write_rate: float = 10.0, read_rate: float = 40.0,
            duration: float = 8.0) -> SharedInstances:
        """One run (see :meth:`CacheBench.run`); its answers that went back in time are
        added to every earlier run's, for :meth:`went_back`."""
        super().run(write_rate, read_rate, duration)
        self._settings = (write_rate, read_rate, duration)
        for arm in self.arms:
            back, reads = self._went_back.get(arm, (0, 0))
            self._went_back[arm] = (back + self.logs[arm].backward(), reads + self.logs[arm].reads)
        return self

    def went_back(self, arm: str) -> Estimate:
        """Share of ``arm``'s answers that went back in time, over every run so far (Wilson):
        a handful in 480 reads, so one run alone may see none."""
        back, reads = self._went_back.get(arm, (0, 0))
        return share(back, reads)

    def went_back_more(self, arm: str = "local") -> Estimate:
        """Run once more with the last settings and return :meth:`went_back` (a claim's
        ``more=``: a bigger sample when one run's count cannot decide)."""
        self.run(*self._settings)
        return self.went_back(arm)

    def _reset(self) -> None:
        self.delete_keys("shared")
        for entries in self.local:
            entries.clear()

    def summary(self) -> str:
        return super().summary() + " | went back in time: " + ", ".join(
            f"{arm} {self.logs[arm].backward()}" for arm in self.arms)

    def close(self) -> None:
        """Stop the four instances, delete the keys, close the clients."""
        for name in ("shared_a", "shared_b", "local_a", "local_b"):
            if not self.lab.closed:
                self.lab.remove(name)
        super().close()


# ----- the stampede ------------------------------------------------------------------------
RELEASE = ("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
           "else return 0 end")
"""Delete the lock only if it still holds our token (a holder that outlived its PX must not
delete the next holder's lock)."""


async def get_or_compute(cache: aioredis.Redis, key: str, compute: Callable[[], Awaitable[str]],
                         ttl_ms: int, lock_ms: int, poll_ms: float = 2.0,
                         give_up_ms: float = 30_000) -> bytes | str:
    """Cache-aside that lets one reader compute a missing key while the others wait.

    GET; on a miss try ``SET key:lock token NX PX lock_ms``. The reader that gets the lock
    computes, stores the value with ``PX ttl_ms`` and releases the lock (only its own). The
    others poll: they return the value as soon as it is there, and try the lock again, so a
    holder that crashed only delays them until its lock expires (``lock_ms``). Wall ms.
    """
    lock, token = f"{key}:lock", uuid.uuid4().hex
    waited = 0.0
    while waited < give_up_ms:
        value = await cache.get(key)
        if value is not None:
            return value
        if await cache.set(lock, token, nx=True, px=lock_ms):
            try:
                value = await cache.get(key)   # filled while we took the lock?
                if value is None:
                    value = await compute()
                    await cache.set(key, value, px=ttl_ms)
                return value
            finally:
                await cache.eval(RELEASE, 1, lock, token)
        await asyncio.sleep(poll_ms / 1000)
        waited += poll_ms
    raise TimeoutError(f"{key}: no value and no lock within {give_up_ms:g} ms")


@dataclass
class StampedeRun:
    """One run: the same reads of one hot key sent to both caches at the same moments."""

    rate: float
    duration: float
    compute_ms: float
    ttl_ms: float
    computes: dict[str, list[float]]                  # the backend's log: model s per compute
    shots: dict[str, list[Shot]] = field(default_factory=dict)

    def count(self, arm: str) -> int:
        """Computes the backend served for ``arm`` (its own request log)."""
        return len(self.computes[arm])

    def reads(self, arm: str) -> int:
        return len(self.shots[arm])

    def without_value(self, arm: str) -> int:
        """Reads that got no value (an error, a timeout, or an empty answer)."""
        return sum(not s.ok or not s.body or s.body.get("value") is None
                   for s in self.shots[arm])

    def wait(self, arm: str, q: float = 90) -> Estimate:
        """The readers' wait (model ms) at percentile ``q``."""
        return quantile([s.ms for s in self.shots[arm] if s.ok], q / 100)

    def predicted_cycles(self) -> float:
        """How many times the key is missing during the run, from the inputs: a cycle is the
        compute, the TTL, then half a gap between reads until the next reader misses."""
        return math.ceil(self.duration * 1000 / (self.compute_ms + self.ttl_ms
                                                  + 500 / self.rate))

    def predicted_plain(self) -> float:
        """Plain cache-aside: per cycle the first reader misses, and so does every reader
        that arrives during its compute: 1 + rate * compute."""
        return self.predicted_cycles() * (1 + self.rate * self.compute_ms / 1000)

    def summary(self) -> str:
        return (f"{self.reads('plain')} reads of one hot key, {self.rate:g}/s for "
                f"{self.duration:g} s (compute {self.compute_ms:g} ms, TTL {self.ttl_ms:g} ms): "
                f"the backend computed it {self.count('plain')} times for plain cache-aside "
                f"(predicted {self.predicted_plain():.0f}), {self.count('locked')} times with "
                f"the lock (predicted {self.predicted_cycles():.0f}); wait p90 plain "
                f"{percentile([s.ms for s in self.shots['plain']], 90):.0f} ms, locked "
                f"{percentile([s.ms for s in self.shots['locked']], 90):.0f} ms; reads "
                f"without a value: {self.without_value('plain')} and "
                f"{self.without_value('locked')}")


class Stampede(_OnServer, Experiment):
    """One hot key read ``rate`` times a second through two caches on the server, each read
    sent to both at the same moment: ``hot_plain`` (GET, on a miss compute and SET PX: the
    control arm) and ``hot_locked`` (:func:`get_or_compute`, or the ``fix`` you pass with the
    same arguments). The expensive compute is a backend service, ``hot_origin``, which logs
    every request it serves, per arm."""

    TITLE = "A hot key expires: stampede or lock"
    BUTTON = "Run 5 s of reads"
    kind = "stampede"
    ARMS = ("plain", "locked")

    def __init__(self, lab: Lab, url: str, compute_ms: float = 200.0,
                 ttl_ms: float = 800.0, fix: Callable[..., Awaitable[Any]] | None = None) -> None:
        self.lab = lab
        #: the locked cache's get-or-compute: ``fix(cache, key, compute, ttl_ms, lock_ms)``
        self.fix = fix or get_or_compute
        self.set(compute_ms, ttl_ms)
        self._connect(lab, url)
        self.backend: dict[str, list[float]] = {arm: [] for arm in self.ARMS}
        self._lock = threading.Lock()
        self._started = model_now()
        self.origin = lab.service("hot_origin", 0, routes={"/compute/{arm}": self._compute})
        self.caches = {"plain": lab.service("hot_plain", 0, routes={"/hot": self._plain}),
                       "locked": lab.service("hot_locked", 0, routes={"/hot": self._locked})}
        self.runs: list[StampedeRun] = []
        self.run_future: Any = None
        self.rate, self.duration = 60.0, 5.0

    def set(self, compute_ms: float, ttl_ms: float) -> None:
        require_positive(compute_ms=compute_ms, ttl_ms=ttl_ms)
        self.compute_ms, self.ttl_ms = float(compute_ms), float(ttl_ms)

    # ----- the backend and the two caches ---------------------------------------------------
    async def _compute(self, request: web.Request) -> web.Response:
        """The backend: the expensive query. It logs each request itself, per arm."""
        arm = request.match_info["arm"]
        with self._lock:
            self.backend.setdefault(arm, []).append(model_now() - self._started)
        await asyncio.sleep(to_wall(self.compute_ms / 1000))
        return web.json_response({"value": f"computed at {model_now():.3f}"})

    async def _from_backend(self, arm: str) -> str:
        async with self.lab.session.get(f"{self.origin.url}compute/{arm}") as answer:
            return (await answer.json())["value"]

    async def _plain(self, request: web.Request) -> web.Response:
        """The classic cache-aside: GET; on a miss compute and SET with PX. Every reader that
        arrives while the key is missing computes it again."""
        key = self.key("plain", "hot")
        value = await self.client.get(key)
        if value is None:
            value = await self._from_backend("plain")
            await self.client.set(key, value, px=px(self.ttl_ms))
        return web.json_response({"value": value})

    async def _locked(self, request: web.Request) -> web.Response:
        value = await self.fix(self.client, self.key("locked", "hot"),
                                     lambda: self._from_backend("locked"), px(self.ttl_ms),
                                     lock_ms=max(px(5 * self.compute_ms), 200))
        return web.json_response({"value": value})

    # ----- the run ----------------------------------------------------------------------------
    def start(self, rate: float = 60.0, duration: float = 5.0) -> Any:
        """Reads of the hot key at ``rate`` a second for ``duration`` model s, to both."""
        require_positive(rate=rate, duration=duration)
        self.rate, self.duration = rate, duration
        self.delete_keys()
        self.backend = {arm: [] for arm in self.ARMS}
        self._started = model_now()
        self.run_future = submit_loaded(self.lab, self._traffic(rate, duration))
        return self.run_future

    async def _traffic(self, rate: float, duration: float) -> StampedeRun:
        times = arrival_times(rate, duration)
        start = asyncio.get_running_loop().time() + 0.02
        shots = await asyncio.gather(*(fire(self.lab.session, self.caches[arm].url + "hot",
                                            times, start=start) for arm in self.ARMS))
        run = StampedeRun(rate, duration, self.compute_ms, self.ttl_ms,
                          {arm: list(self.backend[arm]) for arm in self.ARMS},
                          dict(zip(self.ARMS, shots, strict=True)))
        self.runs.append(run)
        return run

    def run(self, rate: float = 60.0, duration: float = 5.0) -> StampedeRun:
        """:meth:`start` and wait."""
        return self.start(rate, duration).result()

    def done(self) -> bool:
        return self.run_future is None or self.run_future.done()

    def summary(self) -> str:
        if self.done() and self.runs:
            return self.runs[-1].summary()
        return (f"running: the backend has computed {len(self.backend['plain'])} times for "
                f"plain cache-aside, {len(self.backend['locked'])} with the lock")

    def draw(self, ax: Any) -> None:
        """Computes the backend served, counted as they happen, for both caches."""
        for arm, colour, label in (("plain", PALETTE[3], "plain cache-aside (control)"),
                                   ("locked", PALETTE[0], "lock: SET NX PX, readers wait")):
            times = sorted(self.backend.get(arm, []))
            ax.step([0, *times], range(len(times) + 1), where="post", color=colour,
                    label=f"{label}: {len(times)}")
        ax.set_xlabel("model seconds since the run started")
        ax.set_ylabel("computes at the backend")
        ax.legend(loc="upper left", fontsize=8)

    def make_controls(self) -> dict[str, Any]:
        """Sliders for the read rate, the compute and the TTL; Run reads the hot key."""
        import ipywidgets as w

        return {
            "rate": w.IntSlider(int(self.rate), 10, 200, step=10, description="reads/s"),
            "compute_ms": w.IntSlider(int(self.compute_ms), 50, 500, step=50,
                                      description="compute ms"),
            "ttl_ms": w.IntSlider(int(self.ttl_ms), 200, 3000, step=100, description="TTL ms"),
        }

    def run_controls(self, rate: int, compute_ms: int, ttl_ms: int) -> LiveView:
        """What Run does: ``press_run(rate=60, compute_ms=200, ttl_ms=800)`` moves the
        sliders, then reads the hot key for 5 s; the plot counts the computes live."""
        self.set(compute_ms, ttl_ms)
        self.start(rate=rate)
        return self.board.watch(self.done, self.summary, hz=4)

    def close(self) -> None:
        """Stop the three services, delete the keys, close the clients."""
        for name in ("hot_origin", "hot_plain", "hot_locked"):
            if not self.lab.closed:
                self.lab.remove(name)
        super().close()


__all__ = ["connect", "describe", "px", "ServerCaches", "SharedInstances", "Stampede", "StampedeRun",
           "get_or_compute", "RELEASE"]
