"""The Experiment base: what a click does, what press_run(**values) does, and bad input."""
from __future__ import annotations

import pytest

from labsupport.kit.experiment import Experiment
from labsupport.runtime.errors import LabError


class Doubler(Experiment):
    TITLE = "Twice the input"
    BUTTON = "Double it"
    OTHER_KEYWORDS = ("note",)

    def __init__(self) -> None:
        self.runs: list[tuple[int, str]] = []

    def make_controls(self):
        import ipywidgets as w

        return {"x": w.IntSlider(3, 0, 10, description="x")}

    def run_controls(self, x: int, note: str = "") -> int:
        self.runs.append((x, note))
        return self.show(2 * x)

    def draw(self, ax) -> None:
        ax.plot([0, 1], [0, 2 * self.runs[-1][0] if self.runs else 0])

    def summary(self) -> str:
        return f"doubled {self.runs[-1][0]}" if self.runs else "no run yet"


def button(board):
    """The dashboard's button (its left column holds the heading, the controls, the button)."""
    left = board.widget.children[0].children[0]
    return next(w for w in left.children if getattr(w, "description", "") == "Double it")


@pytest.fixture(autouse=True)
def headless(monkeypatch):
    monkeypatch.setenv("LAB_HEADLESS", "1")


def test_press_run_builds_the_dashboard_moves_the_controls_and_shows_the_summary(capsys):
    exp = Doubler()
    assert exp.board is None
    assert exp.press_run(x=7) == 14
    assert exp.board is not None and exp.controls["x"].value == 7
    assert exp.board.summary_text == "doubled 7"
    assert "doubled 7" in capsys.readouterr().out


def test_the_button_runs_with_what_the_controls_show():
    exp = Doubler()
    board = exp.dashboard()
    exp.controls["x"].value = 4
    button(board).click()
    assert exp.runs == [(4, "")]
    assert board.summary_text == "doubled 4"


def test_a_subclass_can_say_what_a_click_does():
    class Noted(Doubler):
        def click(self):
            return self.press_run(note="clicked")

    exp = Noted()
    board = exp.dashboard()
    button(board).click()
    assert exp.runs == [(3, "clicked")]


def test_extra_keywords_reach_run_controls_and_unknown_names_are_refused():
    exp = Doubler()
    exp.press_run(x=1, note="first")
    assert exp.runs == [(1, "first")]
    with pytest.raises(LabError, match="No control 'y'") as info:
        exp.press_run(y=2)
    assert "x, note" in str(info.value)
    assert exp.runs == [(1, "first")]


def test_a_new_dashboard_has_fresh_controls():
    exp = Doubler()
    first = exp.dashboard()
    exp.press_run(x=9)
    second = exp.dashboard()
    assert second is not first and exp.controls["x"].value == 3


def test_a_subclass_that_says_nothing_says_what_is_missing():
    with pytest.raises(NotImplementedError):
        Experiment().press_run()
