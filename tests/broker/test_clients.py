"""labsupport.broker.clients: namespaced names and client settings (no broker needed)."""
from __future__ import annotations

import logging

import pytest

from labsupport.broker import clients
from labsupport.runtime.errors import LabError

BOOT = "127.0.0.1:9092"


@pytest.fixture(autouse=True)
def team_namespace(monkeypatch):
    monkeypatch.setenv("LAB_NAMESPACE", "Team A/West")
    monkeypatch.delenv("LAB_KAFKA_PROPERTIES", raising=False)


@pytest.fixture
def properties(tmp_path, monkeypatch):
    """Point LAB_KAFKA_PROPERTIES at a file with the given text."""
    def write(text: str):
        path = tmp_path / "class.properties"
        path.write_text(text)
        monkeypatch.setenv("LAB_KAFKA_PROPERTIES", str(path))
        return path
    return write


# ----- names ---------------------------------------------------------------------------------
def test_topic_and_group_are_namespaced():
    assert clients.topic("orders") == "team-a-west.orders"
    assert clients.group("billing") == "team-a-west.billing"


def test_names_are_not_prefixed_twice():
    assert clients.topic("team-a-west.orders") == "team-a-west.orders"
    assert clients.group(clients.group("billing")) == "team-a-west.billing"


def test_prefix_must_match_whole_namespace():
    assert clients.topic("team-a-westerly") == "team-a-west.team-a-westerly"
    assert clients.topic("team-a.orders") == "team-a-west.team-a.orders"


def test_namespace_follows_the_variable(monkeypatch):
    monkeypatch.setenv("LAB_NAMESPACE", "bob")
    assert clients.topic("orders") == "bob.orders"
    assert clients.topic("team-a-west.orders") == "bob.team-a-west.orders"


# ----- consumer ------------------------------------------------------------------------------
def test_consumer_defaults():
    config = clients.consumer_config(BOOT, "billing")
    assert config["bootstrap.servers"] == BOOT
    assert config["session.timeout.ms"] == 2000
    assert config["heartbeat.interval.ms"] == 200
    assert config["fetch.wait.max.ms"] == 15
    assert config["auto.offset.reset"] == "earliest"
    assert config["group.id"] == "team-a-west.billing"
    assert config["logger"] is clients.KAFKA_LOG


def test_consumer_group_already_namespaced():
    config = clients.consumer_config(BOOT, "team-a-west.billing")
    assert config["group.id"] == "team-a-west.billing"


def test_consumer_overrides_win_over_defaults():
    config = clients.consumer_config(BOOT, "g", session_timeout_ms=6000,
                                     auto_offset_reset="latest", enable_auto_commit=False)
    assert config["session.timeout.ms"] == 6000
    assert config["auto.offset.reset"] == "latest"
    assert config["enable.auto.commit"] is False
    assert not any("_" in key for key in config if key != "logger")


def test_consumer_defaults_are_not_mutated():
    clients.consumer_config(BOOT, "g", session_timeout_ms=9999)
    assert clients.CONSUMER_DEFAULTS["session.timeout.ms"] == 2000
    assert clients.consumer_config(BOOT, "g")["session.timeout.ms"] == 2000


# ----- producer / admin ---------------------------------------------------------------------
def test_producer_overrides_are_dotted():
    config = clients.producer_config(BOOT, linger_ms=0, enable_idempotence=True, acks="all")
    assert config["linger.ms"] == 0
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert "linger_ms" not in config and "enable_idempotence" not in config
    assert "group.id" not in config and "session.timeout.ms" not in config


def test_python_callback_keys_untouched():
    def on_delivery(err, msg):
        return None

    def error_cb(err):
        return None

    config = clients.producer_config(BOOT, on_delivery=on_delivery, error_cb=error_cb,
                                     stats_cb=error_cb, throttle_cb=error_cb)
    assert config["on_delivery"] is on_delivery
    assert config["error_cb"] is error_cb
    assert config["stats_cb"] is error_cb and config["throttle_cb"] is error_cb
    assert not any(key in config for key in ("on.delivery", "error.cb", "stats.cb"))
    consumer = clients.consumer_config(BOOT, "g", on_commit=on_delivery)
    assert consumer["on_commit"] is on_delivery


def test_logger_override_replaces_the_quiet_logger():
    mine = logging.getLogger("mine")
    assert clients.producer_config(BOOT, logger=mine)["logger"] is mine


def test_admin_config_is_the_common_part():
    assert clients.admin_config(BOOT) == {"bootstrap.servers": BOOT, "logger": clients.KAFKA_LOG}


def test_kafka_logger_is_silent_by_default():
    assert clients.KAFKA_LOG.propagate is False


# ----- LAB_KAFKA_PROPERTIES -----------------------------------------------------------------
def test_no_properties_file():
    assert clients.extra_properties() == {}


def test_properties_file_parsed(properties):
    properties("""# class cluster settings
! also a comment

security.protocol = SASL_SSL
sasl.mechanism=PLAIN
   sasl.username =  learner 1
sasl.jaas.config = org.apache.Module required password="a=b";
this line has no equals sign
   # indented comment = ignored
""")
    assert clients.extra_properties() == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "learner 1",
        "sasl.jaas.config": 'org.apache.Module required password="a=b";',
    }


def test_properties_reach_every_client(properties):
    properties("security.protocol=SSL\nssl.ca.location=/etc/ca.pem\n")
    for config in (clients.producer_config(BOOT), clients.consumer_config(BOOT, "g"),
                   clients.admin_config(BOOT)):
        assert config["security.protocol"] == "SSL"
        assert config["ssl.ca.location"] == "/etc/ca.pem"
        assert config["bootstrap.servers"] == BOOT


def test_overrides_win_over_properties(properties):
    properties("linger.ms=100\n")
    assert clients.producer_config(BOOT)["linger.ms"] == "100"
    assert clients.producer_config(BOOT, linger_ms=0)["linger.ms"] == 0


def test_empty_properties_file(properties):
    properties("\n# nothing here\n\n")
    assert clients.extra_properties() == {}


def test_missing_properties_file_raises(monkeypatch, tmp_path):
    missing = tmp_path / "nope.properties"
    monkeypatch.setenv("LAB_KAFKA_PROPERTIES", str(missing))
    with pytest.raises(LabError) as info:
        clients.extra_properties()
    assert "LAB_KAFKA_PROPERTIES" in str(info.value)
    assert str(missing) in str(info.value)
    assert info.value.fix
    with pytest.raises(LabError):
        clients.producer_config(BOOT)


def test_directory_as_properties_file_raises(monkeypatch, tmp_path):
    monkeypatch.setenv("LAB_KAFKA_PROPERTIES", str(tmp_path))
    with pytest.raises(LabError, match="Cannot read"):
        clients.consumer_config(BOOT, "g")
