"""The lab's Kafka-protocol broker: find it, start it, check it, configure clients.

Learners mostly need three things::

    from labsupport import broker
    broker.bootstrap()                    # '127.0.0.1:40123', the broker is ready
    broker.producer_config(linger_ms=0)   # settings for confluent_kafka.Producer
    broker.topic("orders")                # 'alice.orders' (namespaced per learner)

Every function that talks to the broker first checks that it answers and, if
not, raises :class:`~labsupport.runtime.errors.BrokerUnavailable` within seconds with
the address it tried and the command that fixes it.
"""
from __future__ import annotations

import os
import time
import uuid
from typing import Any

from labsupport.broker import clients, container, embedded, net, resolve, state
from labsupport.broker.clients import group, topic
from labsupport.broker.kind import Identity, identity
from labsupport.broker.state import BrokerRecord
from labsupport.runtime.errors import BrokerUnavailable, LabError

__all__ = [
    "BrokerRecord", "bootstrap", "ensure", "up", "down", "status", "topic", "group",
    "producer_config", "consumer_config", "admin_config", "create_topic", "delete_topic",
    "round_trip", "Identity", "identity",
]

CHECK_TIMEOUT = 6.0  # seconds; with the TCP check, every failure is reported within 10 s


def ensure(timeout: float = CHECK_TIMEOUT) -> BrokerRecord:
    """Resolve the broker (starting the embedded one if needed) and check that it answers.

    Raises :class:`BrokerUnavailable` naming the address and the fix.
    """
    record = resolve.resolve(start=True)
    check(record, timeout)
    return record


def bootstrap() -> str:
    """The bootstrap address of a broker that answers (see :func:`ensure`)."""
    return ensure().bootstrap


def check(record: BrokerRecord, timeout: float = CHECK_TIMEOUT) -> dict[int, str]:
    """Check ``record`` answers Kafka metadata and that its advertised addresses are reachable.

    Returns the advertised address of each broker (id to ``host:port``).
    """
    if not net.answers(record.bootstrap, timeout=2.0):
        raise BrokerUnavailable(f"No broker answers at {record.bootstrap} ({_origin(record)}).",
                                resolve.fix_for(record))
    advertised = _advertised(record, timeout)
    for address in advertised.values():
        if not net.answers(address, timeout=2.0):
            raise BrokerUnavailable(_listener_problem(record, address), _LISTENER_FIX)
    return advertised


_LISTENER_FIX = ("set the broker's advertised listener for host clients to the address you "
                 "connect to, e.g. KAFKA_ADVERTISED_LISTENERS=PLAINTEXT_HOST://127.0.0.1:9092 "
                 "(infra/docker-compose.yml does this)")


def _listener_problem(record: BrokerRecord, address: str) -> str:
    return (f"The broker at {record.bootstrap} answers but advertises {address}, which this "
            "machine cannot reach (the advertised-listener mistake).")


def _advertised(record: BrokerRecord, timeout: float) -> dict[int, str]:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient(clients.admin_config(record.bootstrap))
    except KafkaException as exc:
        raise LabError(f"The Kafka client refused a setting: {_kafka_text(exc)}.",
                       _properties_fix() or "remove the setting") from None
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"Something listens at {record.bootstrap} but it did not answer Kafka metadata "
            f"within {timeout:.0f} s ({_kafka_text(exc)}).",
            _properties_fix() or resolve.fix_for(record)) from None
    return {b.id: f"{b.host}:{b.port}" for b in metadata.brokers.values()}


def _kafka_text(exc: Exception) -> str:
    return exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)


def _properties_fix() -> str:
    path = os.environ.get("LAB_KAFKA_PROPERTIES")
    if not path:
        return ""
    return (f"check the settings in LAB_KAFKA_PROPERTIES={path} against the cluster "
            "(security.protocol, sasl.mechanism, sasl.username/password, ssl.ca.location), "
            "or unset it for the lab's own broker")


def _origin(record: BrokerRecord) -> str:
    return {"env": "from KAFKA_BOOTSTRAP_SERVERS", "embedded": "the lab's embedded broker",
            "container": "the lab's Kafka container"}.get(record.kind, record.kind)


def up(prefer: str | None = None) -> BrokerRecord:
    """Start the lab's broker: the container if Docker answers, else the embedded broker.

    ``prefer`` (or ``LAB_BROKER``) may be ``"embedded"`` or ``"container"``.
    A broker already recorded and answering is reused; with ``KAFKA_BOOTSTRAP_SERVERS``
    set, nothing is started.
    """
    existing = resolve.from_env() or resolve.recorded()
    if existing and (existing.kind == "env" or resolve.reachable(existing)):
        return existing
    choice = prefer or os.environ.get("LAB_BROKER", "auto")
    if choice == "container" or (choice == "auto" and container.docker_answers()):
        return container.start()
    return embedded.start()


def down() -> BrokerRecord | None:
    """Stop the broker the lab started (if any) and forget it.

    A container whose Docker engine no longer answers is simply forgotten.
    """
    record = state.read()
    if record and record.kind == "embedded":
        embedded.stop(record)
    elif record and record.kind == "container" and container.docker_answers():
        container.stop()
    state.clear()
    return record


def status() -> tuple[BrokerRecord | None, bool]:
    """The broker the lab would use (without starting one) and whether it answers."""
    record = resolve.resolve(start=False)
    return record, bool(record and resolve.reachable(record))


def producer_config(**overrides: Any) -> dict[str, Any]:
    """Settings for ``confluent_kafka.Producer`` (``linger_ms=0`` means ``linger.ms=0``)."""
    return clients.producer_config(bootstrap(), **overrides)


def consumer_config(group_name: str = "lab", **overrides: Any) -> dict[str, Any]:
    """Settings for ``confluent_kafka.Consumer`` in the namespaced group ``group_name``."""
    return clients.consumer_config(bootstrap(), group_name, **overrides)


def admin_config() -> dict[str, Any]:
    """Settings for ``confluent_kafka.admin.AdminClient``."""
    return clients.admin_config(bootstrap())


def create_topic(name: str, partitions: int = 1, timeout: float = 10.0) -> str:
    """Create the namespaced topic ``name`` (no error if it exists); returns its full name."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient, NewTopic

    full = topic(name)
    admin = AdminClient(admin_config())
    future = admin.create_topics([NewTopic(full, partitions, 1)], operation_timeout=timeout)[full]
    try:
        future.result(timeout=timeout)
    except Exception as exc:
        err = exc.args[0] if exc.args else None
        if getattr(err, "code", lambda: None)() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
    return full


def delete_topic(name: str, timeout: float = 10.0) -> None:
    """Delete the namespaced topic ``name`` (no error if it does not exist)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(admin_config())
    future = admin.delete_topics([topic(name)], operation_timeout=timeout)[topic(name)]
    try:
        future.result(timeout=timeout)
    except Exception:
        pass


def round_trip(timeout: float = 8.0) -> dict[str, float]:
    """Produce one message and read it back; returns ``ack_ms`` and ``round_trip_ms``.

    Raises :class:`BrokerUnavailable` if the message does not come back in time.
    """
    from confluent_kafka import Consumer, Producer, TopicPartition

    name = create_topic("doctor.roundtrip")
    token = uuid.uuid4().hex.encode()
    start = time.perf_counter()
    offset = _produce_one(Producer(producer_config(linger_ms=0)), name, token, timeout)
    ack = time.perf_counter()
    consumer = Consumer(consumer_config("doctor", enable_auto_commit=False))
    try:
        consumer.assign([TopicPartition(name, 0, offset)])
        _read_until(consumer, token, start + timeout)
    finally:
        consumer.close()
    done = time.perf_counter()
    return {"ack_ms": (ack - start) * 1000, "round_trip_ms": (done - start) * 1000}


def _produce_one(producer: Any, name: str, value: bytes, timeout: float) -> int:
    reports: list[Any] = []
    producer.produce(name, value, on_delivery=lambda err, msg: reports.append((err, msg)))
    producer.flush(timeout)
    if not reports or reports[0][0] is not None:
        why = reports[0][0] if reports else f"no delivery report within {timeout:.0f} s"
        raise BrokerUnavailable(f"Producing to {name} at {bootstrap()} failed: {why}.",
                                resolve.FIX_UP)
    return reports[0][1].offset()


def _read_until(consumer: Any, token: bytes, deadline: float) -> None:
    while time.perf_counter() < deadline:
        msg = consumer.poll(0.1)
        if msg is not None and not msg.error() and msg.value() == token:
            return
    raise BrokerUnavailable("The broker took the message but did not give it back in time.",
                            resolve.FIX_UP)
