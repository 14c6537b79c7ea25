"""The progress record: a local JSON file and a table of modules x questions."""
from __future__ import annotations

import json

import pytest

from labsupport.__main__ import main
from labsupport.course import progress
from labsupport.exercises import progress_table


@pytest.fixture(autouse=True)
def progress_file(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "progress.json"
    monkeypatch.setenv("LAB_PROGRESS_FILE", str(path))
    return path


def test_defaults_to_the_ignored_state_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("LAB_PROGRESS_FILE")
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path / "state"))
    assert progress.progress_file() == tmp_path / "state" / "progress.json"


def test_record_saves_status_message_and_tries(progress_file):
    progress.record("01", "q2", progress.TRIED, "min() is the weakest link")
    progress.record("01", "q2", progress.DONE, "right")
    entry = json.loads(progress_file.read_text())["modules"]["01"]["q2"]
    assert entry["status"] == "done" and entry["message"] == "right"
    assert entry["tries"] == 2 and "first_done" in entry
    assert progress.status("01", "q2") == "done"
    assert progress.status("01", "q3") == "not attempted"


def test_unknown_status_is_refused():
    with pytest.raises(ValueError):
        progress.record("01", "q1", "great")


def test_a_broken_file_reads_as_empty(progress_file):
    progress_file.parent.mkdir(parents=True)
    progress_file.write_text("{not json")
    assert progress.load() == {}
    progress.record("01", "q1", progress.DONE)
    assert progress.status("01", "q1") == "done"


def test_table_lists_declared_questions(capsys):
    progress.record("01", "q1", progress.DONE)
    progress.record("01", "q3", progress.TRIED)
    lines = progress_table().splitlines()
    assert lines[0].split() == ["module", "q1", "q2", "q3", "q4", "done"]
    assert lines[1].split() == ["01", "✓", "·", "✗", "·", "1/4"]
    assert "✓ done" in lines[-1]
    assert main(["progress"]) == 0
    assert capsys.readouterr().out.strip() == progress_table()


def test_table_before_any_check_shows_nothing_done():
    assert progress_table().splitlines()[1].split() == ["01", "·", "·", "·", "·", "0/4"]


def test_the_table_alone_shows_only_what_was_checked():
    """progress knows nothing of the exercises package (no import cycle): it is told."""
    progress.record("03", "q2", progress.DONE)
    assert progress.table().splitlines()[1].split() == ["03", "✓", "1/1"]
    assert progress.table({"03": ["q1", "q2"]}).splitlines()[1].split() == ["03", "·", "✓",
                                                                          "1/2"]
