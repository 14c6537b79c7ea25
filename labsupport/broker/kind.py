"""Which broker is this? One answer for every lesson: its kind, its name in words, and what
it cannot show.

The course runs on three kinds of Kafka-protocol broker. Figures depend on which (the embedded
broker's consumers wait up to ``fetch.wait.max.ms`` for data; the Apache Kafka container keeps
topics across restarts), so every figure is printed with its broker, and the cells that need
real Kafka say so, visibly, elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass

from labsupport.broker import resolve

LABELS = {
    "embedded": "the embedded broker (Tansu, in memory; fetches wait up to fetch.wait.max.ms)",
    "container": "the Apache Kafka container",
    "env": "your Kafka (KAFKA_BOOTSTRAP_SERVERS)",
    "none": "no broker yet",
}

EMBEDDED_CANNOT_SHOW = (
    "topics and offsets surviving a broker restart",
    "retention.ms and log compaction",
    "read_committed hiding aborted transactions",
)


@dataclass(frozen=True)
class Identity:
    """The broker the lab uses now: ``kind`` is embedded, container, env or none."""

    kind: str
    label: str
    cannot_show: tuple[str, ...]

    @property
    def real_kafka(self) -> bool:
        """True on Apache Kafka (the container, or a cluster named by the environment)."""
        return self.kind in ("container", "env")

    def skip_note(self, what: str) -> str:
        """A visible note for a step this broker cannot show, naming where it can run."""
        return (f"Skipped on {self.label}: {what} needs Apache Kafka. Run this cell with the "
                "Kafka container (make broker-up with Docker running) to see it.")


def identity() -> Identity:
    """Which broker the lab would use now, without starting one."""
    record = resolve.resolve(start=False)
    kind = record.kind if record is not None else "none"
    return Identity(kind, LABELS.get(kind, kind),
                    EMBEDDED_CANNOT_SHOW if kind == "embedded" else ())
