"""labsupport.runtime.cache_server: a real Redis-protocol server, found like the broker, shared by
kernels, stopped by `cache down`, and a clear message when there is none."""
from __future__ import annotations

import os
import time

import pytest
import redis

from labsupport.__main__ import main
from labsupport.broker import net
from labsupport.runtime import cache_server


@pytest.fixture
def own_state(tmp_path, monkeypatch):
    """A state folder of the test's own, so the course's running server is left alone."""
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("LAB_CACHE_URL", raising=False)
    from labsupport.runtime import settings
    if settings.state_dir() != tmp_path:
        pytest.skip("state_dir() does not follow LAB_STATE_DIR")
    yield tmp_path
    cache_server.down()


def test_up_starts_one_shared_server_with_real_commands_and_down_stops_it(own_state):
    record = cache_server.up()
    assert record.kind == "embedded" and record.url.startswith("redis://127.0.0.1:")
    assert cache_server.up().pid == record.pid, "a second `up` must reuse the running server"
    client = redis.Redis.from_url(record.url)
    client.set("k", "v", px=200)
    assert client.get("k") == b"v" and 0 < client.pttl("k") <= 200
    time.sleep(0.35)
    assert client.get("k") is None, "EXPIRE is real: the key is gone after its TTL"
    assert client.set("lock", "a", nx=True, px=1000) and not client.set("lock", "b", nx=True)
    assert client.config_get("save")["save"] == "", "no persistence"
    client.close()
    cache_server.down()
    assert not cache_server.answers(record.url, 0.5)
    assert not (own_state / "cache.json").exists()


def test_the_asyncio_client_works_from_the_labs_loop(own_state, lab_at):
    import redis.asyncio as aioredis

    lab = lab_at(1.0)
    address = cache_server.url()

    async def round_trip() -> bytes:
        client = aioredis.from_url(address)
        try:
            await client.set("shared", "1")
            return await client.get("shared")
        finally:
            await client.aclose()

    assert lab.run(round_trip()) == b"1"


def test_a_server_that_died_is_replaced(own_state):
    first = cache_server.up()
    os.kill(first.pid, 9)
    for _ in range(50):
        if not cache_server.answers(first.url, 0.2):
            break
        time.sleep(0.05)
    second = cache_server.up()
    assert second.pid != first.pid and cache_server.answers(second.url)


def test_an_address_that_does_not_answer_fails_fast_and_names_the_fix(monkeypatch):
    monkeypatch.setenv("LAB_CACHE_URL", f"redis://127.0.0.1:{net.free_port()}/0")
    started = time.monotonic()
    with pytest.raises(cache_server.CacheUnavailable, match="LAB_CACHE_URL") as err:
        cache_server.ensure()
    assert time.monotonic() - started < 5 and "unset LAB_CACHE_URL" in err.value.fix


def test_no_binary_anywhere_says_how_to_get_one(own_state, monkeypatch):
    monkeypatch.setattr(cache_server, "binary", lambda: "")
    with pytest.raises(cache_server.CacheUnavailable, match="No Redis-protocol server") as err:
        cache_server.ensure()
    assert "apt install valkey-server" in err.value.fix and "brew install valkey" in err.value.fix


def test_the_command_line(own_state, capsys):
    assert main(["cache", "status"]) == 1
    assert main(["cache", "up"]) == 0 and "redis://127.0.0.1" in capsys.readouterr().out
    assert main(["cache", "status"]) == 0
    assert main(["cache", "down"]) == 0 and "stopped" in capsys.readouterr().out


def test_the_doctor_reports_the_cache_as_information_only_when_missing(own_state, monkeypatch):
    from labsupport.course import doctor

    monkeypatch.setattr(cache_server, "binary", lambda: "")
    check = doctor.check_cache()
    assert not check.ok and check.info_only and "skipped" in check.detail
