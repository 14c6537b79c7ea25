"""exercises/ is generated from solutions/: placeholders, byte-stable output, sync check."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from labsupport.__main__ import main
from labsupport.course.exercises_build import (
    MD_PLACEHOLDER,
    _defines,
    build,
    check_in_sync,
    strip_code,
    strip_markdown,
)
from labsupport.runtime.errors import LabError

ROOT = Path(__file__).resolve().parents[2]

CODE = '''import math

def end_to_end_success(availabilities):
    """Probability that the whole chain succeeds."""
    ### BEGIN SOLUTION
    secret = math.prod(availabilities)
    return secret
    ### END SOLUTION

print("after")'''

TOP = '''### BEGIN SOLUTION
chain_p99_ms = 380.6
### END SOLUTION
q1.check()'''


def solution_notebook(folder: Path, name: str = "01_demo.ipynb") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"state": {"x": 1}}
    nb.cells = [
        nbformat.v4.new_markdown_cell("Why?\n<!-- BEGIN SOLUTION -->\nBecause tails add."
                                      "\n<!-- END SOLUTION -->\nEnd."),
        nbformat.v4.new_code_cell(CODE, execution_count=3,
                                  outputs=[nbformat.v4.new_output("stream", text="after\n")]),
        nbformat.v4.new_code_cell(TOP),
    ]
    for index, cell in enumerate(nb.cells):
        cell.id = f"cell-{index}"
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / name)
    return folder / name


def test_placeholder_keeps_the_markers_indentation():
    lines = strip_code(CODE).split("\n")
    body = lines[lines.index('    """Probability that the whole chain succeeds."""') + 1:]
    assert body[0] == "    # YOUR CODE HERE"
    assert body[1].startswith('    raise NotImplementedError("Your turn: ')
    assert body[2:] == ["", 'print("after")']
    assert "secret" not in strip_code(CODE) and "SOLUTION" not in strip_code(CODE)
    assert strip_code(TOP).split("\n")[0] == "# YOUR CODE HERE"


def test_unbalanced_markers_are_named():
    with pytest.raises(LabError, match="without ### END SOLUTION"):
        strip_code("### BEGIN SOLUTION\nx = 1")
    with pytest.raises(LabError, match="without ### BEGIN SOLUTION"):
        strip_code("x = 1\n### END SOLUTION")
    with pytest.raises(LabError, match="unbalanced"):
        strip_markdown("<!-- BEGIN SOLUTION -->\nno end")


def test_build_writes_clean_exercises(tmp_path):
    solution_notebook(tmp_path / "solutions")
    written = build(tmp_path / "solutions", tmp_path / "exercises")
    assert [p.name for p in written] == ["01_demo.ipynb"]
    nb = nbformat.read(written[0], as_version=4)
    assert "widgets" not in nb.metadata
    assert nb.cells[0].source == f"Why?\n{MD_PLACEHOLDER}\nEnd."
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    text = written[0].read_text()
    assert "secret" not in text and "Because tails add" not in text and "380.6" not in text
    compile(code[0].source, "cell", "exec")  # still valid Python


def test_build_is_byte_stable_and_idempotent(tmp_path):
    solution_notebook(tmp_path / "solutions")
    first = build(tmp_path / "solutions", tmp_path / "exercises")[0].read_bytes()
    second = build(tmp_path / "solutions", tmp_path / "exercises")[0].read_bytes()
    assert first == second
    assert check_in_sync(tmp_path / "solutions", tmp_path / "exercises") == []


def test_check_in_sync_detects_edits_missing_and_extra_files(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solution_notebook(solutions)
    target = build(solutions, exercises)[0]
    target.write_text(target.read_text().replace("Why?", "Why, by hand?"))
    assert check_in_sync(solutions, exercises) == [f"{target}: differs from "
                                                   f"{solutions / '01_demo.ipynb'}"]
    solution_notebook(solutions, "02_more.ipynb")
    (exercises / "99_orphan.ipynb").write_text("{}")
    problems = check_in_sync(solutions, exercises)
    assert any("02_more.ipynb: missing" in p for p in problems)
    assert any("99_orphan.ipynb: has no solution notebook" in p for p in problems)


def test_cli_check_names_the_fix(tmp_path, monkeypatch, capsys):
    import labsupport.course.exercises_build as eb

    monkeypatch.setattr(eb, "course_root", lambda: tmp_path)
    solution_notebook(tmp_path / "solutions")
    assert main(["exercises", "check"]) == 1
    assert "run python -m labsupport exercises build" in capsys.readouterr().err
    assert main(["exercises", "build"]) == 0
    assert main(["exercises", "check"]) == 0


def test_the_repositorys_exercises_are_in_sync_with_solutions():
    if not list((ROOT / "solutions").glob("*.ipynb")):
        pytest.skip("solutions/ has no notebooks yet")
    problems = check_in_sync(ROOT / "solutions", ROOT / "exercises")
    assert problems == [], ("exercises/ is out of sync; run python -m labsupport exercises "
                            "build\n" + "\n".join(problems))


@pytest.mark.parametrize("source, name, found", [
    ("def slow_share(n):\n    ...", "slow_share", True),
    ("async def fetch_all(urls):\n    ...", "fetch_all", True),
    ("class Breaker:\n    ...", "Breaker", True),
    ("answer = 3", "answer", True),
    ("class BreakerTest:\n    ...", "Breaker", False),
    ("x = Breaker()", "Breaker", False),
])
def test_a_worked_answer_is_found_by_what_it_defines(source, name, found):
    assert _defines(source, name) is found
