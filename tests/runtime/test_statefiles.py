"""labsupport.runtime.statefiles: shared .lab/ records, atomic writes, a cross-process lock."""
from __future__ import annotations

import multiprocessing
import time

from labsupport.runtime import statefiles


def hold(seconds: float) -> None:
    with statefiles.locked("demo"):
        time.sleep(seconds)


def test_records_round_trip_and_unreadable_ones_read_as_none(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path))
    assert statefiles.read_json("x.json") is None
    statefiles.write_json("x.json", {"url": "redis://127.0.0.1:1/0"})
    assert statefiles.read_json("x.json") == {"url": "redis://127.0.0.1:1/0"}
    (tmp_path / "x.json").write_text("{half")
    assert statefiles.read_json("x.json") is None
    statefiles.remove("x.json")
    statefiles.remove("x.json")
    assert not list(tmp_path.glob("x.json*"))


def test_the_lock_makes_another_process_wait(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path))
    other = multiprocessing.get_context("fork").Process(target=hold, args=(0.5,))
    other.start()
    time.sleep(0.2)
    started = time.monotonic()
    with statefiles.locked("demo"):
        waited = time.monotonic() - started
    other.join(5)
    assert waited >= 0.2, f"the lock did not make us wait ({waited:.2f} s)"
