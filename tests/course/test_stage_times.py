"""The suite's stage times: read, tabled, and a stage over its budget fails loudly."""
from __future__ import annotations

from labsupport.course import stage_times


def write(tmp_path, text: str):
    path = tmp_path / "stage_times.tsv"
    path.write_text(text)
    return path


def test_within_budget_prints_the_table_and_passes(tmp_path, capsys):
    path = write(tmp_path, "lint (ruff)\t2\t30\npytest: all\t301\t420\n")
    assert stage_times.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "lint (ruff)" in out and "301s" in out and "total" in out and "303s" in out
    assert "OVER" not in out and "FAIL" not in out


def test_a_stage_over_its_budget_fails_and_is_named(tmp_path, capsys):
    path = write(tmp_path, "lint (ruff)\t2\t30\nbrowser\t250\t240\n")
    assert stage_times.main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "browser  " in out and "OVER BUDGET" in out
    assert "FAIL: 'browser' took 250 s, over its budget of 240 s" in out
    assert "lint (ruff)  " in out.split("FAIL")[0]


def test_a_missing_file_is_a_usage_message_not_a_traceback(tmp_path, capsys):
    assert stage_times.main([str(tmp_path / "nope.tsv")]) == 2
    assert "usage" in capsys.readouterr().out


def test_speed_prints_a_factor_in_percent_and_what_it_measured(capsys, monkeypatch):
    monkeypatch.setattr(stage_times, "loop_s", lambda: 0.6)
    assert stage_times.main(["--speed"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "150"
    assert "0.60 s" in captured.err and "x 1.50" in captured.err


def test_the_calibration_loop_takes_time_in_proportion_to_its_work():
    short, long = stage_times.loop_s(200_000), stage_times.loop_s(800_000)
    assert 0 < short < long
