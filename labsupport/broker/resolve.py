"""Which broker the lab uses, in order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` when it is set (any Kafka: a container, a class cluster);
2. the broker the lab already started (recorded in ``.lab/broker.json``);
3. otherwise a new embedded broker on a free 127.0.0.1 port (then recorded).
"""
from __future__ import annotations

import os

from labsupport.broker import embedded, net, state
from labsupport.runtime import statefiles

FIX_UP = "run `python -m labsupport broker up` (or `make lab`) and re-run this cell"


def from_env() -> state.BrokerRecord | None:
    """The broker named by ``KAFKA_BOOTSTRAP_SERVERS``, if set."""
    address = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    return state.BrokerRecord(address, "env") if address else None


def recorded() -> state.BrokerRecord | None:
    """The broker in the state file, forgetting an embedded one that has died."""
    record = state.read()
    if record and record.kind == "embedded" and not embedded.alive(record.pid):
        state.clear()
        return None
    return record


def resolve(start: bool = True) -> state.BrokerRecord | None:
    """The broker to use; starts the embedded one if none is known and ``start``."""
    record = from_env() or recorded()
    if record or not start:
        return record
    with _lock():
        return recorded() or embedded.start()


def _lock():
    # Two kernels starting at once must not start two brokers.
    return statefiles.locked("broker")


def fix_for(record: state.BrokerRecord) -> str:
    """The command that mends an unreachable broker of this kind."""
    if record.kind == "env":
        return ("start the broker at that address, or unset KAFKA_BOOTSTRAP_SERVERS so the lab "
                "uses its own (`python -m labsupport broker up`)")
    if record.kind == "container":
        return ("start Docker and run `python -m labsupport broker up`, or use the embedded "
                "broker: `python -m labsupport broker down && LAB_BROKER=embedded "
                "python -m labsupport broker up`")
    return FIX_UP


def reachable(record: state.BrokerRecord, timeout: float = 1.0) -> bool:
    """True when the recorded broker accepts TCP connections."""
    return net.answers(record.bootstrap, timeout)
