"""labsupport.course.bench: figures, verdicts, the report, and quick runs of each cheap step."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from labsupport.__main__ import main
from labsupport.course import bench


# ----- figures and the report -----------------------------------------------------------------
def test_a_lower_is_better_figure_meets_its_target_at_or_below():
    assert bench.Figure("p50", 0.9, "ms", 1.0).met is True
    assert bench.Figure("p50", 1.0, "ms", 1.0).met is True
    assert bench.Figure("p50", 1.2, "ms", 1.0).met is False


def test_a_higher_is_better_figure_meets_its_target_at_or_above():
    assert bench.Figure("ratio", 0.85, "×", 0.8, higher_is_better=True).met is True
    assert bench.Figure("ratio", 0.7, "×", 0.8, higher_is_better=True).met is False


def test_a_figure_without_target_has_no_verdict():
    figure = bench.Figure("throughput", 6000, "req/s")
    assert figure.met is None
    assert figure.row() == "| throughput | 6,000 req/s |  |  |"


def test_a_missed_target_says_why_in_its_row():
    row = bench.Figure("notebooks/02.ipynb", 120, "s", 90, why_missed="long experiments").row()
    assert "≤ 90 s" in row and "**missed**: long experiments" in row


def test_report_counts_targets_and_names_the_missed_ones():
    sections = [bench.Section("A", "how A", [bench.Figure("fast", 1, "ms", 2),
                                              bench.Figure("slow", 9, "ms", 2, why_missed="x")]),
                bench.Section("B", "how B", [bench.Figure("info", 3, "ms")], ["a note"])]
    text = bench.render(sections, "today", "abc123")
    assert "Targets met: 1 of 2; missed: slow" in text
    assert "## A" in text and "## B" in text and "a note" in text
    assert "commit `abc123`" in text and "CPUs" in text


# ----- the cheap steps, really measured ---------------------------------------------------------
def test_harness_measures_both_servers():
    section = bench.harness(requests=200, users=5)
    figures = {f.what: f for f in section.figures}
    assert 0 < figures["0 ms service p50"].value < 50
    assert figures["bare aiohttp throughput"].value > 100
    assert 0.2 < figures["lab ÷ bare throughput"].value < 5


def test_broker_step_measures_ack_round_trip_and_join(lab_broker):
    section = bench.broker_latency(messages=20, joins=1)
    figures = {f.what: f.value for f in section.figures}
    ack = next(v for k, v in figures.items() if k.endswith("produce ack p50"))
    trip = next(v for k, v in figures.items() if k.endswith("produce→consume p50"))
    join = next(v for k, v in figures.items() if "join" in k)
    assert 0 < ack <= trip < 2000
    assert 0 < join < 20_000


def notebook(source: str) -> dict:
    """A one-cell notebook running ``source``."""
    return {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {},
                       "outputs": [], "source": source}],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                        "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def test_notebook_step_times_each_notebook(tmp_path):
    nb = notebook("import os\nassert os.environ['LAB_TIME_SCALE'] == '1'")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "99_tiny.ipynb").write_text(json.dumps(nb))
    section = bench.notebook_times(root=tmp_path)
    [figure] = section.figures
    assert figure.what == "notebooks/99_tiny.ipynb" and 0 < figure.value < 90 and figure.met


def test_a_notebook_that_fails_is_reported_and_the_others_still_run(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "97_fails.ipynb").write_text(json.dumps(notebook(
        "raise RuntimeError('the claim stayed inconclusive')")))
    (tmp_path / "notebooks" / "98_fine.ipynb").write_text(json.dumps(notebook("1 + 1")))
    failed, fine = bench.notebook_times(root=tmp_path).figures
    assert failed.met is False and "the claim stayed inconclusive" in failed.failed
    assert "**failed**: RuntimeError: the claim stayed inconclusive" in failed.row()
    assert fine.met and not fine.failed


def test_a_failing_test_suite_is_reported_not_hidden(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "run_all.sh").write_text("echo '3 failed'\nexit 3\n")
    section = bench.make_test_time(root=tmp_path)
    assert "FAILED (exit 3)" in section.notes[0] and "3 failed" in section.notes[0]


def test_the_suite_s_stages_become_figures_against_their_budgets(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "run_all.sh").write_text(
        "mkdir -p tests/artifacts\n"
        "printf 'lint\\t1\\t30\\nbrowser\\t300\\t240\\n' > tests/artifacts/stage_times.tsv\n")
    section = bench.make_test_time(root=tmp_path)
    total, lint, browser = section.figures
    assert total.met and total.target == 480 and not section.notes
    assert (lint.what, lint.value, lint.met) == ("stage: lint", 1, True)
    assert (browser.value, browser.target, browser.met) == (300, 240, False)


def test_waiting_for_jupyter_stops_when_make_lab_dies():
    with pytest.raises(RuntimeError, match="stopped before JupyterLab answered"):
        bench._wait_for_http("http://127.0.0.1:9/api", time.perf_counter(), 5, lambda: 2)


def test_waiting_for_jupyter_gives_up_at_the_limit():
    port = bench._free_port()
    with pytest.raises(TimeoutError, match="did not answer within"):
        bench._wait_for_http(f"http://127.0.0.1:{port}/api", time.perf_counter(), 0.5,
                             lambda: None)


def test_cli_writes_the_report(tmp_path, capsys):
    out = tmp_path / "B.md"
    skip = [arg for step in bench.STEPS if step != "harness" for arg in ("--skip", step)]
    assert main(["bench", *skip, "--output", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    text = Path(out).read_text()
    assert "## Harness overhead" in text and "## Broker" not in text
