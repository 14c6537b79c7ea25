"""Broker resolution, the embedded broker's life cycle, failures and namespacing."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labsupport import broker
from labsupport.broker import embedded, net, resolve, state
from labsupport.runtime.errors import BrokerUnavailable

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def own_state(tmp_path, monkeypatch):
    """A private state folder and no KAFKA_BOOTSTRAP_SERVERS: this test's own broker."""
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    yield tmp_path
    broker.down()


def closed_address() -> str:
    return f"127.0.0.1:{net.free_port()}"


def test_env_variable_wins_and_starts_nothing(own_state, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    record = resolve.resolve(start=True)
    assert (record.bootstrap, record.kind) == ("127.0.0.1:19092", "env")
    assert state.read() is None, "an env broker must not be recorded or started"


def test_recorded_broker_is_reused_not_started_again(own_state):
    first = broker.ensure()
    second = broker.ensure()
    assert first.kind == "embedded" and first.pid == second.pid
    assert state.read().bootstrap == first.bootstrap
    assert first.bootstrap.startswith("127.0.0.1:")


def test_embedded_broker_listens_on_loopback_only(own_state):
    record = broker.ensure()
    cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes().split(b"\0")
    listener = cmdline[cmdline.index(b"--listener-url") + 1].decode()
    assert listener == f"tcp://{record.bootstrap}"


def test_dead_embedded_broker_is_forgotten_and_replaced(own_state):
    first = broker.ensure()
    embedded.stop(first)
    assert resolve.recorded() is None, "a dead embedded broker must be forgotten"
    second = broker.ensure()
    assert second.pid != first.pid and net.answers(second.bootstrap)


def test_down_stops_the_process_and_status_says_none(own_state):
    record = broker.ensure()
    broker.down()
    assert not embedded.alive(record.pid)
    assert broker.status() == (None, False)


def test_round_trip_on_own_broker(own_state):
    broker.ensure()
    trip = broker.round_trip()
    assert 0 < trip["ack_ms"] <= trip["round_trip_ms"] < 8000


def test_unreachable_env_broker_fails_fast_naming_address_and_fix(monkeypatch):
    address = closed_address()
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", address)
    start = time.monotonic()
    with pytest.raises(BrokerUnavailable) as caught:
        broker.bootstrap()
    assert time.monotonic() - start < 10
    assert address in str(caught.value)
    assert "KAFKA_BOOTSTRAP_SERVERS" in caught.value.fix


def test_recorded_container_that_is_down_names_broker_up(own_state):
    state.write(state.BrokerRecord(closed_address(), "container"))
    with pytest.raises(BrokerUnavailable) as caught:
        broker.ensure()
    assert "python -m labsupport broker up" in caught.value.fix


def test_silent_listener_times_out_within_ten_seconds(monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{sock.getsockname()[1]}")
        start = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="did not answer Kafka metadata"):
            broker.ensure()
        assert time.monotonic() - start < 10


def test_advertised_listener_mistake_is_detected(own_state, monkeypatch):
    """A real broker that advertises an address nobody can reach, as a misconfigured
    container does; the check must say so and name the fix."""
    port, wrong = net.free_port(), net.free_port()
    proc = subprocess.Popen(
        [embedded.binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{wrong}"],
        cwd=own_state, env=embedded._clean_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        assert net.wait_until_answers(f"127.0.0.1:{port}", 8)
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
        with pytest.raises(BrokerUnavailable, match="advertised-listener") as caught:
            broker.ensure()
        assert f"127.0.0.1:{wrong}" in str(caught.value)
        assert "KAFKA_ADVERTISED_LISTENERS" in caught.value.fix
    finally:
        proc.kill()
        proc.wait()


def test_namespaces_keep_learners_apart(lab_broker, monkeypatch):
    from confluent_kafka.admin import AdminClient

    names = []
    for learner in ("ada", "grace"):
        monkeypatch.setenv("LAB_NAMESPACE", learner)
        names.append(broker.create_topic("orders", partitions=2))
    assert names == ["ada.orders", "grace.orders"]
    topics = AdminClient(broker.admin_config()).list_topics(timeout=5).topics
    assert {"ada.orders", "grace.orders"} <= set(topics)
    assert len(topics["ada.orders"].partitions) == 2
    for learner in ("ada", "grace"):
        monkeypatch.setenv("LAB_NAMESPACE", learner)
        broker.delete_topic("orders")


def test_consumer_group_joins_quickly_with_course_defaults(lab_broker):
    """BROKER.md: with the default 45 s session a join takes ~23 s; ours must take ~1-2 s."""
    from confluent_kafka import Consumer, Producer

    name = broker.create_topic("join-check")
    producer = Producer(broker.producer_config(linger_ms=0))
    producer.produce(name, b"x")
    producer.flush(5)
    consumer = Consumer(broker.consumer_config(f"join-{time.time_ns()}"))
    start = time.monotonic()
    try:
        consumer.subscribe([name])
        msg = None
        while msg is None and time.monotonic() - start < 10:
            msg = consumer.poll(0.1)
        joined = time.monotonic() - start
    finally:
        consumer.close()
    assert msg is not None and not msg.error()
    assert joined < 5, f"joining the group took {joined:.1f} s"


def run_cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "labsupport", *args], capture_output=True,
                          text=True, timeout=30, env=env, cwd=ROOT)


def test_cli_status_prints_the_address(lab_broker):
    done = run_cli("broker", "status")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == lab_broker.bootstrap


def test_cli_status_fails_when_nothing_answers():
    done = run_cli("broker", "status", env_extra={"KAFKA_BOOTSTRAP_SERVERS": closed_address()})
    assert done.returncode == 1
    assert "NOT answering" in done.stderr


def test_cli_up_and_down_in_own_state(tmp_path):
    env = {"LAB_STATE_DIR": str(tmp_path), "KAFKA_BOOTSTRAP_SERVERS": "", "LAB_BROKER": "embedded"}
    up = run_cli("broker", "up", env_extra=env)
    assert up.returncode == 0 and "embedded at 127.0.0.1:" in up.stdout, up.stderr
    address = up.stdout.split(" at ")[1].split()[0]
    assert net.answers(address)
    down = run_cli("broker", "down", env_extra=env)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not net.wait_until_answers(address, 0.5)


def test_doctor_with_broker_down_fails_within_ten_seconds_naming_fix():
    address = closed_address()
    start = time.monotonic()
    done = run_cli("doctor", env_extra={"KAFKA_BOOTSTRAP_SERVERS": address})
    assert time.monotonic() - start < 10
    assert done.returncode == 1
    assert f"[FAIL] broker: No broker answers at {address}" in done.stdout
    assert "fix:" in done.stdout


def test_doctor_passes_with_the_lab_broker(lab_broker):
    done = run_cli("doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[OK]   broker" in done.stdout and "[FAIL]" not in done.stdout


def test_one_broker_identity_with_what_the_embedded_broker_cannot_show(monkeypatch, tmp_path):
    from labsupport import broker
    from labsupport.broker import kind as ident

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    who = broker.identity()
    assert who.kind == "env" and who.real_kafka and who.cannot_show == ()
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS")
    monkeypatch.setattr(ident.resolve, "resolve", lambda start: None)
    nobody = broker.identity()
    assert nobody.kind == "none" and not nobody.real_kafka
    monkeypatch.setattr(ident.resolve, "resolve",
                        lambda start: broker.BrokerRecord(kind="embedded",
                                                          bootstrap="127.0.0.1:2"))
    embedded = broker.identity()
    assert "retention" in " ".join(embedded.cannot_show)
    assert "Kafka container" in embedded.skip_note("log compaction")
