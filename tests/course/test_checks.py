"""The Question machinery: check(), hint(), solution(), learner errors, progress."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from labsupport.course import progress
from labsupport.course.checks import Case, Cases, Mistake, Property, Question, Value

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def progress_file(tmp_path, monkeypatch):
    path = tmp_path / "progress.json"
    monkeypatch.setenv("LAB_PROGRESS_FILE", str(path))
    monkeypatch.setenv("NO_COLOR", "1")
    return path


def double_question() -> Question:
    return Question(
        id="q9", module="99", title="double a number", name="double",
        what="a function double(x)",
        steps=[Cases([Case((2,), 4), Case((5,), 10), Case((0,), 0)], name="double",
                     mistakes=[Mistake("you squared it.", like=lambda x: x * x)]),
               Property(lambda f: None if f(-3) == -6 else "negative numbers go wrong.")],
        hints=["Twice the number.", "Multiply by 2.", "return 2 * x"],
        solution="def double(x):\n    return 2 * x\n",
    )


def value_question() -> Question:
    return Question(id="q8", module="99", title="the answer", name="answer_ms",
                    steps=[Value(42.0, rel=0.02, unit=" ms", mistakes=[
                        Mistake("that is half of it.", like=21.0)])],
                    hints=["a", "b", "c"], solution="answer_ms = 42")


def test_not_attempted_when_the_name_is_missing(capsys):
    assert value_question().check() is False
    out = capsys.readouterr().out
    assert out.startswith("Not attempted yet: define `answer_ms`")
    assert "q8.check()" in out


@pytest.mark.parametrize("placeholder", [None, Ellipsis])
def test_not_attempted_for_none_and_ellipsis(placeholder, capsys):
    assert value_question().check(placeholder) is False
    assert "Not attempted yet" in capsys.readouterr().out


def test_not_attempted_when_the_code_raises_not_implemented(capsys):
    def double(x):
        # YOUR CODE HERE
        raise NotImplementedError("Your turn: replace this line with your code.")

    assert double_question().check(double) is False
    assert "Not attempted yet: define `double`" in capsys.readouterr().out


def test_looks_the_name_up_in_the_callers_namespace(capsys):
    answer_ms = 42.5  # noqa: F841 - found by name
    assert value_question().check() is True
    assert capsys.readouterr().out.startswith("Correct: ")


def test_correct_and_specific_wrong_answers(capsys):
    q = double_question()
    assert q.check(lambda x: 2 * x) is True
    assert q.check(lambda x: x * x) is False
    out = capsys.readouterr().out
    assert "Not yet: double(2) returned 4" not in out  # 2*2 == 2+2: not a failure
    assert "Not yet: double(5) returned 25, expected 10: you squared it." in out
    assert q.check(lambda x: abs(2 * x)) is False
    assert "Not yet: negative numbers go wrong." in capsys.readouterr().out


def test_value_messages(capsys):
    q = value_question()
    q.check(21.0)
    q.check(60.0)
    q.check("42")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Not yet: you have 21 ms: that is half of it."
    assert out[1].startswith("Not yet: 60 ms is too high.")
    assert out[2] == "Not yet: the answer should be a number (in ms), got str '42'."


def test_a_forgotten_return_is_named(capsys):
    def double(x):
        2 * x

    double_question().check(double)
    assert "double(2) returned NoneType None; it should return a number. Did you forget " \
        "`return`?" in capsys.readouterr().out


def test_learner_exception_is_shown_as_theirs_with_their_line(capsys):
    def double(x):
        factor = 2 * (x - 5) / (x - 5)
        return factor * x

    assert double_question().check(double) is False
    out = capsys.readouterr().out
    assert "Your code raised ZeroDivisionError: division by zero when called as double(5)" in out
    assert "(in double): factor = 2 * (x - 5) / (x - 5)" in out
    assert "test_checks.py" in out and "labsupport" not in out
    assert "Traceback" not in out


def test_learner_exception_in_a_notebook_cell_names_the_cell_line(progress_file):
    script = textwrap.dedent("""
        from IPython.testing.globalipapp import start_ipython
        ip = start_ipython()
        ip.run_cell("from labsupport.exercises.m03 import q1")
        ip.run_cell("def full_jitter_ms(retry, base_ms, cap_ms, rng):\\n    p = 1.0\\n    return p / retry * 0 + 1 / 0\\n")
        ip.run_cell("q1.check()")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert "Your code raised ZeroDivisionError" in result.stdout, result.stderr
    assert "at line 3 of your cell (in full_jitter_ms): return p / retry * 0 + 1 / 0" \
        in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_a_checker_bug_is_not_blamed_on_the_learner():
    q = Question(id="q7", module="99", title="t", name="x",
                 steps=[Property(lambda answer: 1 / 0)], hints=["a", "b", "c"], solution="")
    with pytest.raises(ZeroDivisionError):
        q.check(1)


def test_hints_are_graded_and_bounded(capsys):
    q = double_question()
    q.hint()
    q.hint()
    q.hint()
    q.hint()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Hint 1 of 3 for q9: Twice the number."
    assert out[1] == "Hint 2 of 3 for q9: Multiply by 2."
    assert out[2] == "Hint 3 of 3 for q9: return 2 * x"
    assert "q9.solution() shows the answer" in out[3]
    assert out[4].startswith("You have seen all 3 hints for q9")
    q.hint(2)
    assert capsys.readouterr().out.startswith("Hint 2 of 3")
    for wrong in (4, 0, "two"):
        q.hint(wrong)
        assert capsys.readouterr().out.startswith("q9 has hints 1 to 3: try q9.hint(1).")


def test_solution_only_on_request(capsys):
    q = double_question()
    q.check(lambda x: x * x)
    q.hint(1)
    assert "return 2 * x" not in capsys.readouterr().out.replace("Hint 3", "")
    q.solution()
    out = capsys.readouterr().out
    assert "Solution to q9 (double a number):" in out and "return 2 * x" in out


def test_repr_tells_how_to_use_it():
    text = repr(double_question())
    assert "Define `double`" in text and "q9.check()" in text and "q9.hint()" in text
    assert "q9.solution()" in text


def test_every_check_is_recorded(progress_file, capsys):
    q = double_question()
    q.check(None)
    assert progress.status("99", "q9") == progress.NOT_ATTEMPTED
    q.check(lambda x: x * x)
    assert progress.status("99", "q9") == progress.TRIED
    q.check(lambda x: 2 * x)
    saved = json.loads(progress_file.read_text())["modules"]["99"]["q9"]
    assert saved["status"] == "done" and saved["tries"] == 2
    q.check(None)  # emptying the cell later does not undo the work
    assert progress.status("99", "q9") == progress.DONE
