"""Structural checks of infra/docker-compose.yml (parsed with PyYAML; no Docker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "infra" / "docker-compose.yml"
KAFKA = "kafka"
UI = "kafka-ui"


@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE.is_file(), f"missing {COMPOSE}"
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), (
        "compose file must have a 'services' mapping"
    )
    return data


@pytest.fixture(scope="module")
def kafka(compose: dict) -> dict:
    assert KAFKA in compose["services"], f"no '{KAFKA}' service"
    return compose["services"][KAFKA]


@pytest.fixture(scope="module")
def env(kafka: dict) -> dict[str, str]:
    raw = kafka.get("environment")
    if isinstance(raw, list):  # "KEY=value" list form
        raw = dict(item.split("=", 1) for item in raw)
    assert isinstance(raw, dict), "kafka service needs an environment"
    return {k: str(v) for k, v in raw.items()}


def _listeners(value: str) -> dict[str, str]:
    """'NAME://host:port,...' -> {NAME: 'host:port'}."""
    out = {}
    for item in value.split(","):
        name, sep, addr = item.strip().partition("://")
        assert sep, f"malformed listener {item!r}"
        out[name] = addr
    return out


def _protocol_map(value: str) -> dict[str, str]:
    return dict(item.strip().split(":", 1) for item in value.split(","))


def _host_ip(port: object) -> str | None:
    """Host IP of a published port (short or long syntax); None if unbound."""
    if isinstance(port, dict):
        return port.get("host_ip")
    parts = str(port).split(":")
    return parts[0] if len(parts) == 3 else None


def test_kafka_image_is_pinned_apache_kafka_4(kafka):
    image = kafka.get("image", "")
    name, _, tag = image.partition(":")
    assert name == "apache/kafka", f"image should be apache/kafka, got {image!r}"
    assert tag and tag != "latest", f"image tag must be pinned, got {image!r}"
    assert tag.split(".")[0] == "4", f"expected a 4.x tag, got {tag!r}"


def test_every_published_port_is_loopback_only(compose):
    found = 0
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            found += 1
            assert _host_ip(port) == "127.0.0.1", (
                f"service {name!r} publishes {port!r} on all interfaces; use '127.0.0.1:...'"
            )
    assert found, "no published ports at all"


def test_kafka_publishes_9092(kafka):
    assert "127.0.0.1:9092:9092" in [str(p) for p in kafka.get("ports", [])], (
        f"kafka must publish '127.0.0.1:9092:9092', got {kafka.get('ports')!r}"
    )


def test_kraft_roles_are_broker_and_controller(env):
    roles = {r.strip() for r in env.get("KAFKA_PROCESS_ROLES", "").split(",")}
    assert {"broker", "controller"} <= roles, f"KAFKA_PROCESS_ROLES={roles!r}"
    assert env.get("KAFKA_NODE_ID") == "1", "KAFKA_NODE_ID should be 1"
    assert env.get("KAFKA_CONTROLLER_QUORUM_VOTERS") == "1@kafka:9093", (
        f"quorum voters: {env.get('KAFKA_CONTROLLER_QUORUM_VOTERS')!r}"
    )


def test_advertised_listeners_host_and_internal(env):
    adv = _listeners(env.get("KAFKA_ADVERTISED_LISTENERS", ""))
    assert adv.get("PLAINTEXT_HOST") == "127.0.0.1:9092", (
        f"host listener must advertise 127.0.0.1:9092, got {adv!r}"
    )
    internal = env.get("KAFKA_INTER_BROKER_LISTENER_NAME")
    assert internal in adv and internal != "PLAINTEXT_HOST", (
        f"inter-broker listener {internal!r} must be an advertised internal listener: {adv!r}"
    )
    assert adv[internal].startswith("kafka:"), (
        f"internal listener should advertise the service name, got {adv[internal]!r}"
    )


def test_listener_names_are_in_protocol_map(env):
    protocols = _protocol_map(env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", ""))
    names = set(_listeners(env.get("KAFKA_ADVERTISED_LISTENERS", "")))
    names |= set(_listeners(env.get("KAFKA_LISTENERS", "")))
    names.add(env.get("KAFKA_CONTROLLER_LISTENER_NAMES", "<unset>"))
    missing = names - set(protocols)
    assert not missing, f"listeners {sorted(missing)} absent from the security protocol map"


def test_controller_listener_is_declared(env):
    controller = env.get("KAFKA_CONTROLLER_LISTENER_NAMES")
    assert controller, "KAFKA_CONTROLLER_LISTENER_NAMES unset"
    assert controller in _listeners(env.get("KAFKA_LISTENERS", "")), (
        f"controller listener {controller!r} missing from KAFKA_LISTENERS"
    )
    assert controller not in _listeners(env.get("KAFKA_ADVERTISED_LISTENERS", "")), (
        "the controller listener must not be advertised to clients"
    )


def test_initial_rebalance_delay_is_zero(env):
    assert env.get("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS") == "0", (
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS must be 0"
    )


@pytest.mark.parametrize(
    "key",
    [
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ],
)
def test_required_single_node_factors_are_one(env, key):
    assert env.get(key) == "1", f"{key} must be 1 on a single node, got {env.get(key)!r}"


def test_every_replication_setting_is_one(env):
    keys = [k for k in env if k.endswith(("_REPLICATION_FACTOR", "_MIN_ISR"))]
    bad = {k: env[k] for k in keys if env[k] != "1"}
    assert not bad, f"single node: these must be 1: {bad!r}"


def test_group_min_session_timeout_accepts_course_value(env):
    value = int(env.get("KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS", "6000"))  # Kafka default 6000
    assert value <= 2000, f"group.min.session.timeout.ms={value} rejects the 2000 ms sessions"


def test_kafka_healthcheck_has_test_command(kafka):
    hc = kafka.get("healthcheck")
    assert isinstance(hc, dict), "kafka needs a healthcheck (for `up --wait`)"
    test = hc.get("test")
    assert test and test not in (["NONE"], "NONE"), f"healthcheck test missing: {test!r}"
    cmd = " ".join(test) if isinstance(test, list) else test
    assert "/opt/kafka/bin/" in cmd, f"healthcheck should use the image's scripts: {cmd!r}"
    for key in ("interval", "timeout", "retries", "start_period"):
        assert key in hc, f"healthcheck lacks {key}"


def test_ui_is_behind_a_profile_and_loopback(compose):
    services = compose["services"]
    assert UI in services, f"no '{UI}' service"
    ui = services[UI]
    assert "ui" in ui.get("profiles", []), "kafka-ui must only start with --profile ui"
    assert not services[KAFKA].get("profiles"), "kafka itself must not need a profile"
    ports = ui.get("ports", [])
    assert ports and all(_host_ip(p) == "127.0.0.1" for p in ports), (
        f"kafka-ui ports must bind 127.0.0.1: {ports!r}"
    )
    ui_env = {k: str(v) for k, v in (ui.get("environment") or {}).items()}
    assert "kafka:29092" in ui_env.values(), f"kafka-ui should use kafka:29092: {ui_env!r}"
    dep = (ui.get("depends_on") or {}).get(KAFKA, {})
    assert dep.get("condition") == "service_healthy", "kafka-ui should wait for healthy kafka"


def test_host_ip_detects_unbound_ports():
    assert _host_ip("9092:9092") is None
    assert _host_ip("127.0.0.1:9092:9092") == "127.0.0.1"
    assert _host_ip({"target": 9092, "published": 9092}) is None
