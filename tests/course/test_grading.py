"""python -m labsupport grade: learners' notebooks run in fresh kernels; verdicts, reports,
a hang reported as that learner's own, exit status."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

import nbformat
import pytest

from labsupport.__main__ import main
from labsupport.course import grading
from labsupport.runtime.errors import LabError

ROOT = Path(__file__).resolve().parents[2]
MODULE = "06"  # its solution runs in seconds (one broker experiment); the others take longer
SOLUTION = ROOT / "solutions" / "06_delivery_semantics.ipynb"
EXERCISE = ROOT / "exercises" / "06_delivery_semantics.ipynb"


def wrong_copy(folder: Path) -> Path:
    """The worked solution with a learner's mistake: no crash loses or repeats a message."""
    nb = nbformat.read(SOLUTION, as_version=4)
    answer = next(i for i, c in enumerate(nb.cells)
                  if c.cell_type == "code" and "crash_outcomes = {" in c.source)
    nb.cells.insert(answer + 1, nbformat.v4.new_code_cell(
        'crash_outcomes = {"A": (0, 0), "B": (0, 0), "C": (0, 0)}  # every crash is harmless?'))
    path = folder / SOLUTION.name
    nbformat.write(nb, path)
    return path


@pytest.fixture
def classroom(tmp_path):
    """Three learners: one hands in the solution, one the untouched exercise, one a mistake."""
    for name, source in (("ada", SOLUTION), ("bob", EXERCISE)):
        (tmp_path / name).mkdir()
        shutil.copy(source, tmp_path / name / source.name)
    (tmp_path / "cy").mkdir()
    wrong_copy(tmp_path / "cy")
    return tmp_path


def test_full_marks_zero_and_a_wrong_answer_with_reports(classroom, lab_broker, capsys):
    out = classroom / "reports"
    code = main(["grade", str(classroom / "ada"), str(classroom / "bob"), str(classroom / "cy"),
                 "--timeout", "240", "--out", str(out)])
    assert code == 1  # bob and cy have questions not done
    data = {g["learner"]: g for g in json.loads((out / "grades.json").read_text())}
    assert data["ada"]["score"] == data["ada"]["total"] >= 1 and not data["ada"]["problems"]
    assert data["bob"]["score"] == 0
    assert {v["status"] for v in data["bob"]["verdicts"]} == {"not attempted"}
    assert data["cy"]["score"] < data["cy"]["total"]
    assert any(v["status"] == "tried" and v["message"] for v in data["cy"]["verdicts"])
    suites = {s.get("name"): s for s in ET.parse(out / "junit.xml").getroot()}
    assert suites["ada"].get("failures") == "0" and int(suites["bob"].get("failures")) >= 1
    text = (out / "grades.txt").read_text()
    assert "ada" in text and f"{data['ada']['total']}/{data['ada']['total']}" in text
    assert "wrote" in capsys.readouterr().out


def small_notebook(*sources: str) -> nbformat.NotebookNode:
    """A learner's notebook of a few cells, checking module 06's first question."""
    cells = ["from labsupport.exercises.m06 import q1", *sources, "q1.check()"]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])


def test_a_hang_is_that_learners_problem_and_the_others_are_graded(tmp_path, lab_broker):
    for learner, extra in (("dan", ["import time\ntime.sleep(3600)"]), ("eve", [])):
        (tmp_path / learner).mkdir()
        nbformat.write(small_notebook(*extra), tmp_path / learner / EXERCISE.name)
    grades = {g.learner: g for g in grading.grade([str(tmp_path / "dan"),
                                                   str(tmp_path / "eve")], limit_s=12)}
    assert any("time limit" in p for p in grades["dan"].problems)
    assert not grades["eve"].problems and grades["eve"].total >= 1
    assert grades["eve"].verdicts[0].status == "not attempted"
    import psutil
    kernels = [p for p in psutil.Process().children(recursive=True)
               if "ipykernel" in " ".join(p.cmdline())]
    assert not kernels, "the hung learner's kernel was left running"


def test_paths_name_learners_and_bad_paths_are_refused(tmp_path):
    (tmp_path / "ann").mkdir()
    shutil.copy(EXERCISE, tmp_path / "ann" / EXERCISE.name)
    shutil.copy(EXERCISE, tmp_path / "ben.ipynb")
    found = grading.learners([str(tmp_path / "ann"), str(tmp_path / "ben.ipynb")])
    assert [name for name, _ in found] == ["ann", "ben"]
    assert grading.module_of(tmp_path / "ben.ipynb") == MODULE
    with pytest.raises(LabError, match="Nothing to grade"):
        grading.learners([str(tmp_path / "nobody")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabError, match="No notebooks"):
        grading.learners([str(tmp_path / "empty")])
    with pytest.raises(LabError, match="time limit"):
        grading.grade([str(tmp_path / "ann")], limit_s=0)


def test_reports_mark_each_question():
    grades = [grading.LearnerGrade("ann", verdicts=[
        grading.Verdict("06", "q1", "done"), grading.Verdict("06", "q2", "tried", "off by 2")],
        problems=[])]
    assert "1/2" in grading.table(grades) and "✓" in grading.table(grades)
    suite = ET.fromstring(grading.to_junit(grades))[0]
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    failure = suite.find("testcase[@name='q2']/failure")
    assert failure is not None and failure.get("message") == "off by 2"
