"""labsupport.course.classroom: rosters, namespaced topics, progress topics and safe cleanup.

The cluster here is the lab's embedded broker; learners get unique namespaces per
test run so the tests never collide with each other or with a learner's topics.
"""
from __future__ import annotations

import time
import uuid

import pytest

from labsupport.__main__ import main
from labsupport.course import classroom
from labsupport.runtime.errors import BadParameter, LabError


@pytest.fixture
def run_id() -> str:
    return "t" + uuid.uuid4().hex[:6]


@pytest.fixture
def class_of_two(lab_broker, run_id):
    """Two learners prepared on the broker; their namespaces are cleaned up after."""
    learners = [f"{run_id}-alice", f"{run_id}-bob"]
    yield learners
    for learner in learners:
        classroom.cleanup(learner, yes=True)


# ----- rosters -----------------------------------------------------------------------------
def test_roster_file_skips_comments_and_blanks(tmp_path):
    path = tmp_path / "roster.txt"
    path.write_text("# class of 2026\nAda Lovelace\n\n  grace_hopper  # TA\n")
    assert classroom.read_roster(path) == ["ada-lovelace", "grace_hopper"]


def test_roster_refuses_two_names_that_become_one_namespace():
    with pytest.raises(BadParameter, match="both become namespace 'ada-l'"):
        classroom.roster(["Ada L", "ada.l"])


def test_roster_refuses_an_empty_list_and_unusable_names(tmp_path):
    with pytest.raises(BadParameter, match="no names"):
        classroom.roster([])
    with pytest.raises(BadParameter, match="no usable characters"):
        classroom.roster(["///"])


def test_missing_roster_file_says_so(tmp_path):
    with pytest.raises(LabError, match="Cannot read the roster"):
        classroom.read_roster(tmp_path / "nope.txt")


# ----- prepare and cleanup ------------------------------------------------------------------
def test_prepare_gives_each_learner_their_own_topics(class_of_two):
    outcome = classroom.prepare(class_of_two)
    assert not any(outcome.values()), outcome
    topics = classroom.list_topics()
    for learner in class_of_two:
        for name in classroom.COURSE_TOPICS:
            assert f"{learner}.{name}" in topics
    again = classroom.prepare(class_of_two)
    assert not any(again.values()), "preparing twice is harmless"


def test_cleanup_is_a_dry_run_unless_told(class_of_two):
    alice, bob = class_of_two
    classroom.prepare(class_of_two)
    dry = classroom.cleanup(alice)
    assert not dry.deleted and len(dry.topics) == len(classroom.COURSE_TOPICS)
    assert "dry run" in str(dry)
    assert f"{alice}.hello" in classroom.list_topics()


def test_cleanup_deletes_one_namespace_and_leaves_the_other(class_of_two):
    alice, bob = class_of_two
    classroom.prepare(class_of_two)
    done = classroom.cleanup(alice, yes=True)
    assert done.deleted and not done.problems
    topics = _settled_topics(lambda t: not t.startswith(alice + "."))
    assert not [t for t in topics if t.startswith(alice + ".")]
    assert {f"{bob}.{n}" for n in classroom.COURSE_TOPICS} <= set(topics)


def test_cleanup_of_a_shorter_name_never_reaches_a_longer_one(class_of_two, run_id):
    classroom.prepare(class_of_two)
    plan = classroom.cleanup(f"{run_id}-al")  # a prefix of alice's namespace, but not hers
    assert plan.topics == [] and plan.groups == []


@pytest.mark.parametrize("unsafe", ["", "*", "Alice", "alice.", "a.b", "../x", " bob"])
def test_cleanup_refuses_a_namespace_the_course_would_not_make(unsafe):
    with pytest.raises(BadParameter):
        classroom.cleanup(unsafe, yes=True)


def _settled_topics(ok, wait: float = 5.0) -> list[str]:
    """The topic list once ``ok(topic)`` holds for all (deletes take a moment to show)."""
    deadline = time.monotonic() + wait
    while True:
        topics = classroom.list_topics()
        if all(ok(t) for t in topics) or time.monotonic() > deadline:
            return topics
        time.sleep(0.1)


# ----- progress -----------------------------------------------------------------------------
def test_progress_reaches_the_instructor_in_classroom_mode(class_of_two, monkeypatch, tmp_path):
    from labsupport.course import progress

    alice, bob = class_of_two
    classroom.prepare(class_of_two)
    monkeypatch.setenv("LAB_CLASSROOM", "1")
    monkeypatch.setenv("LAB_NAMESPACE", alice)
    monkeypatch.setenv("LAB_PROGRESS_FILE", str(tmp_path / "progress.json"))
    progress.record("01", "q1", "tried", "not yet")
    progress.record("01", "q1", "done")
    progress.record("01", "q2", "tried")
    rows = {row.learner: row for row in classroom.status(class_of_two)}
    assert rows[alice].done == ["01:q1"] and rows[alice].tried == ["01:q2"]
    assert rows[bob].done == [] and rows[bob].tried == []
    assert "01:q1" in str(rows[alice])


def test_progress_stays_local_outside_classroom_mode(class_of_two, monkeypatch):
    alice, _ = class_of_two
    classroom.prepare(class_of_two)
    monkeypatch.delenv("LAB_CLASSROOM", raising=False)
    monkeypatch.setenv("LAB_NAMESPACE", alice)
    assert classroom.publish_progress({"module": "01", "question": "q1"}) is False
    assert classroom.read_progress(alice) == {}


def test_progress_to_a_dead_broker_gives_up_quietly(monkeypatch):
    from labsupport.broker import net

    monkeypatch.setenv("LAB_CLASSROOM", "1")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{net.free_port()}")
    start = time.monotonic()
    assert classroom.publish_progress({"module": "01", "question": "q1"}) is False
    assert time.monotonic() - start < 5


# ----- the cluster check and properties files -----------------------------------------------
def test_check_creates_and_removes_a_probe_topic(lab_broker):
    report = classroom.check()
    assert report.can_create and report.brokers
    assert "OK" in str(report)
    assert not [t for t in classroom.list_topics() if "classroom-probe" in t]


def test_a_properties_file_is_used_by_every_client(lab_broker, monkeypatch, tmp_path):
    props = tmp_path / "class.properties"
    props.write_text("# class cluster\nclient.id=latency-lab-class\nsecurity.protocol=plaintext\n")
    monkeypatch.setenv("LAB_KAFKA_PROPERTIES", str(props))
    assert classroom.check().can_create


def test_a_wrong_setting_names_the_properties_file(lab_broker, monkeypatch, tmp_path):
    props = tmp_path / "typo.properties"
    props.write_text("sasl.mechanisms.typo=PLAIN\n")
    monkeypatch.setenv("LAB_KAFKA_PROPERTIES", str(props))
    with pytest.raises(LabError, match="refused a setting") as caught:
        classroom.check()
    assert str(props) in caught.value.fix


def test_wrong_security_protocol_fails_fast_naming_the_file(lab_broker, monkeypatch, tmp_path):
    props = tmp_path / "ssl.properties"
    props.write_text("security.protocol=SSL\n")
    monkeypatch.setenv("LAB_KAFKA_PROPERTIES", str(props))
    start = time.monotonic()
    with pytest.raises(LabError) as caught:
        classroom.check()
    assert time.monotonic() - start < 10
    assert "LAB_KAFKA_PROPERTIES" in caught.value.fix


# ----- the command line ---------------------------------------------------------------------
def test_cli_prepare_status_cleanup(class_of_two, tmp_path, capsys):
    roster = tmp_path / "roster.txt"
    roster.write_text("\n".join(class_of_two) + "\n")
    assert main(["classroom", "prepare", str(roster)]) == 0
    assert main(["classroom", "status", str(roster)]) == 0
    out = capsys.readouterr().out
    assert all(learner in out for learner in class_of_two)
    assert main(["classroom", "cleanup", class_of_two[0], "--yes"]) == 0
    assert "deleted" in capsys.readouterr().out


def test_cli_cleanup_without_a_namespace_explains(capsys):
    assert main(["classroom", "cleanup"]) == 1
    assert "cleanup needs the namespace" in capsys.readouterr().err
