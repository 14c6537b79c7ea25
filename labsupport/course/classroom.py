"""Classroom mode: many learners on one Kafka cluster, each in a namespace of their own.

Every learner's topics and consumer groups are named ``<namespace>.<name>``, where
the namespace is ``LAB_NAMESPACE`` (or the user name). An instructor points the
lab at the class cluster with ``KAFKA_BOOTSTRAP_SERVERS`` and, for a secured
cluster, ``LAB_KAFKA_PROPERTIES`` (a file of librdkafka settings kept outside the
course), then uses::

    python -m labsupport classroom check               # the cluster answers; topics can be made
    python -m labsupport classroom prepare roster.txt  # every learner's topics, made in advance
    python -m labsupport classroom status roster.txt   # topics and exercise progress per learner
    python -m labsupport classroom cleanup alice --yes # delete alice's topics and groups only

A roster is a text file with one learner per line (``#`` starts a comment).
Learners who set ``LAB_CLASSROOM=1`` also publish each exercise check to their
own ``<namespace>.progress`` topic, which ``status`` reads.

Cleanup can only delete names that begin with ``<namespace>.``, for a namespace
that is already name-safe, and never a cluster's internal topics.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labsupport import broker
from labsupport.broker import clients
from labsupport.runtime.errors import BrokerUnavailable, LabError, require
from labsupport.runtime.settings import clean_namespace, namespace
from labsupport.runtime.waiting import wait_until

#: The topics each learner's notebooks use, with their partition counts.
COURSE_TOPICS: dict[str, int] = {"hello": 1, "progress": 1}
PROGRESS_TOPIC = "progress"
TIMEOUT = 10.0


# ----- rosters and names --------------------------------------------------------------------
def read_roster(path: str | Path) -> list[str]:
    """The learners' namespaces in a roster file (one learner per line).

    Names are made name-safe the same way ``LAB_NAMESPACE`` is; two names that
    become the same namespace are refused, since those learners would share topics.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LabError(f"Cannot read the roster {path}: {exc.strerror}.",
                       "give a text file with one learner name per line") from None
    names = [line.split("#", 1)[0].strip() for line in lines]
    return roster([name for name in names if name])


def roster(names: Iterable[str]) -> list[str]:
    """Name-safe namespaces for ``names``; refuses an empty roster and collisions."""
    seen: dict[str, str] = {}
    for raw in names:
        clean = clean_namespace(raw, "a roster name")
        require(clean not in seen,
                f"Roster names {seen.get(clean)!r} and {raw!r} both become namespace {clean!r}.",
                "make the names differ in letters or digits, e.g. add a surname")
        seen[clean] = raw
    require(bool(seen), "The roster has no names.", "list one learner per line")
    return list(seen)


def full_name(learner: str, name: str) -> str:
    """``<learner>.<name>``: the topic or group ``name`` in a learner's namespace."""
    return f"{clean_namespace(learner)}.{name}"


# ----- talking to the cluster -----------------------------------------------------------------
def _admin() -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient(broker.admin_config())


def _wait(futures: dict[str, Any]) -> dict[str, str]:
    """``{name: ""}`` for each success, or the error text."""
    outcome = {}
    for name, future in futures.items():
        try:
            future.result(timeout=TIMEOUT)
            outcome[name] = ""
        except Exception as exc:  # a KafkaException carrying a KafkaError
            outcome[name] = _error_text(exc)
    return outcome


def _error_text(exc: BaseException) -> str:
    err = exc.args[0] if exc.args else exc
    return getattr(err, "str", lambda: str(err))()


def list_topics() -> list[str]:
    """Every topic on the cluster except internal ones (names starting with ``_``)."""
    metadata = _admin().list_topics(timeout=TIMEOUT)
    return sorted(name for name in metadata.topics if not name.startswith("_"))


@dataclass
class ClusterReport:
    """What :func:`check` found: the brokers, the topics and whether a learner can work."""

    bootstrap: str
    brokers: dict[int, str]
    topics: int
    can_create: bool
    problem: str = ""

    def __str__(self) -> str:
        lines = [f"cluster at {self.bootstrap}: {len(self.brokers)} broker(s) "
                 f"({', '.join(self.brokers.values())}), {self.topics} topics",
                 "topic create/delete in a namespace: " + ("OK" if self.can_create
                                                           else f"FAILED ({self.problem})")]
        return "\n".join(lines)


def check() -> ClusterReport:
    """Check the class cluster: it answers, and a namespaced topic can be made and removed."""
    record = broker.ensure()
    brokers = broker.check(record)
    probe = full_name(namespace(), f"classroom-probe-{uuid.uuid4().hex[:8]}")
    problem = _make_topics([probe], 1).get(probe, "")
    if not problem:
        admin = _admin()  # kept alive until its futures are done
        problem = _wait(admin.delete_topics([probe], operation_timeout=TIMEOUT))[probe]
    # A broker acknowledges a deletion before every metadata answer forgets the topic.
    if not problem and not wait_until(lambda: probe not in list_topics(), TIMEOUT, 0.1):
        problem = f"the probe topic {probe} was deleted but is still listed after {TIMEOUT:g} s"
    return ClusterReport(record.bootstrap, brokers, len(list_topics()), not problem, problem)


def _make_topics(names: list[str], partitions: int) -> dict[str, str]:
    from confluent_kafka.admin import NewTopic

    admin = _admin()  # kept alive until its futures are done
    futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names],
                                  operation_timeout=TIMEOUT)
    outcome = _wait(futures)
    return {n: "" if "already exists" in why.lower() else why for n, why in outcome.items()}


def prepare(learners: list[str], topics: dict[str, int] | None = None) -> dict[str, str]:
    """Create every learner's course topics (existing ones are fine).

    Returns ``{full topic name: ""}`` for each success, or the error text.
    """
    broker.ensure()
    topics = COURSE_TOPICS if topics is None else topics
    outcome: dict[str, str] = {}
    for name, partitions in topics.items():
        outcome |= _make_topics([full_name(learner, name) for learner in learners], partitions)
    return outcome


# ----- progress -------------------------------------------------------------------------------
def publish_progress(entry: dict[str, Any]) -> bool:
    """Send one exercise result to the learner's progress topic (classroom mode only).

    Does nothing unless ``LAB_CLASSROOM=1``. Never raises: a lost progress
    message must not break a learner's check. Returns True when the broker took it.
    """
    if os.environ.get("LAB_CLASSROOM") != "1":
        return False
    try:
        return _send_progress(entry)
    except Exception:
        return False


def _send_progress(entry: dict[str, Any]) -> bool:
    from confluent_kafka import Producer

    record = broker.resolve.resolve(start=False)
    if record is None:
        return False
    config = clients.producer_config(record.bootstrap, linger_ms=0, batch_num_messages=1,
                                     message_timeout_ms=2000)
    producer = Producer(config)
    key = f"{entry['module']}:{entry['question']}"
    delivered: list[bool] = []
    producer.produce(clients.topic(PROGRESS_TOPIC), json.dumps(entry).encode(), key.encode(),
                     on_delivery=lambda err, msg: delivered.append(err is None))
    producer.flush(2.5)
    return bool(delivered and delivered[0])


def read_progress(learner: str, timeout: float = 5.0) -> dict[str, dict[str, Any]]:
    """A learner's latest result per question, read from their progress topic."""
    from confluent_kafka import Consumer, TopicPartition

    name = full_name(learner, PROGRESS_TOPIC)
    consumer = Consumer(clients.consumer_config(
        broker.bootstrap(), f"classroom-{uuid.uuid4().hex[:8]}", enable_auto_commit=False))
    latest: dict[str, dict[str, Any]] = {}
    try:
        partitions = consumer.list_topics(name, timeout=timeout).topics[name].partitions
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=timeout)
            if high > low:
                ends[p] = (low, high)
        consumer.assign([TopicPartition(name, p, low) for p, (low, _) in ends.items()])
        _read_to(consumer, {p: high for p, (_, high) in ends.items()}, latest,
                 time.monotonic() + timeout)
    finally:
        consumer.close()
    return latest


def _read_to(consumer: Any, ends: dict[int, int], latest: dict[str, dict[str, Any]],
             deadline: float) -> None:
    """Read each partition up to its end offset (progress records are single-record batches)."""
    left = dict(ends)
    while left and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None or msg.error():
            continue
        try:
            entry = json.loads(msg.value())
            latest[f"{entry['module']}:{entry['question']}"] = entry
        except (ValueError, KeyError, TypeError):
            pass  # not a progress record: skip it
        if msg.offset() + 1 >= left.get(msg.partition(), 0):
            left.pop(msg.partition(), None)


@dataclass
class LearnerStatus:
    """One row of :func:`status`: a learner's topics and finished exercises."""

    learner: str
    topics: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.learner:<20} {len(self.topics):>3} topics   "
                f"{len(self.done):>3} done   {len(self.tried):>3} tried   "
                + (", ".join(sorted(self.done)) or "-"))


def status(learners: list[str] | None = None) -> list[LearnerStatus]:
    """Topics and progress per learner (every namespace on the cluster if no roster)."""
    topics = list_topics()
    if learners is None:
        learners = sorted({t.split(".", 1)[0] for t in topics if "." in t})
    rows = []
    for learner in learners:
        mine = [t for t in topics if t.startswith(learner + ".")]
        progress = read_progress(learner) if full_name(learner, PROGRESS_TOPIC) in mine else {}
        done = [k for k, e in progress.items() if e.get("status") == "done"]
        tried = [k for k, e in progress.items() if e.get("status") == "tried"]
        rows.append(LearnerStatus(learner, mine, done, tried))
    return rows


# ----- cleanup --------------------------------------------------------------------------------
@dataclass
class Cleanup:
    """What :func:`cleanup` deleted (or would delete, on a dry run)."""

    namespace: str
    topics: list[str]
    groups: list[str]
    deleted: bool
    problems: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        verb = "deleted" if self.deleted else "would delete (dry run; add --yes)"
        lines = [f"{self.namespace}: {verb} {len(self.topics)} topics, {len(self.groups)} groups"]
        lines += [f"  topic {t}" for t in self.topics] + [f"  group {g}" for g in self.groups]
        lines += [f"  FAILED {name}: {why}" for name, why in self.problems.items()]
        return "\n".join(lines)


def cleanup(learner: str, yes: bool = False) -> Cleanup:
    """Delete one namespace's topics and consumer groups; a dry run unless ``yes``.

    Only names that begin with ``<namespace>.`` are touched, and the namespace
    must already be name-safe, so a typo cannot widen what is deleted.
    """
    require(isinstance(learner, str) and learner == clean_namespace(learner, "the namespace"),
            f"{learner!r} is not a namespace the course would make.",
            f"give it exactly as the course writes it, e.g. {clean_namespace(str(learner))!r}")
    prefix = learner + "."
    topics = [t for t in list_topics() if t.startswith(prefix)]
    groups = [g for g in _list_groups() if g.startswith(prefix)]
    result = Cleanup(learner, topics, groups, deleted=yes)
    if yes:
        result.problems = _delete(topics, groups)
    return result


def _list_groups() -> list[str]:
    admin = _admin()
    try:
        found = admin.list_consumer_groups(request_timeout=TIMEOUT).result(timeout=TIMEOUT)
    except Exception as exc:
        raise BrokerUnavailable(f"The cluster did not list its consumer groups: "
                                f"{_error_text(exc)}.",
                                "check that your credentials may describe groups") from None
    return sorted(g.group_id for g in found.valid)


def _delete(topics: list[str], groups: list[str]) -> dict[str, str]:
    problems: dict[str, str] = {}
    admin = _admin()
    if topics:
        outcome = _wait(admin.delete_topics(topics, operation_timeout=TIMEOUT))
        problems |= {t: why for t, why in outcome.items() if why}
    if groups:
        outcome = _wait(admin.delete_consumer_groups(groups, request_timeout=TIMEOUT))
        problems |= {g: why for g, why in outcome.items() if why}
    return problems


__all__ = ["COURSE_TOPICS", "ClusterReport", "Cleanup", "LearnerStatus", "check", "cleanup",
           "full_name", "list_topics", "prepare", "publish_progress", "read_progress",
           "read_roster", "roster", "status"]
