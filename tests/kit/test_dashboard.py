"""The dashboard layout: live redraw rate, summary line, headless mode, no leaked threads."""
from __future__ import annotations

import threading
import time

import pytest

from labsupport.kit.dashboard import DRAW_SHARE, PALETTE, Dashboard


def draw_histogram(ax) -> None:
    ax.hist([i % 17 for i in range(300)], bins=17, color=PALETTE[0])
    ax.axvline(8, color=PALETTE[1], linestyle="--")


def finishes_after(seconds: float):
    end = time.monotonic() + seconds
    return lambda: time.monotonic() >= end


def test_live_view_redraws_five_times_a_second_unless_drawing_would_take_the_machine(monkeypatch):
    """Five frames a second; where a frame takes longer than DRAW_SHARE of 200 ms (a slow
    laptop, a busy neighbour), as many as keep drawing to that share of the time (a frame
    holds the interpreter the experiment needs), and never under one a second."""
    monkeypatch.delenv("LAB_HEADLESS", raising=False)
    board = Dashboard("live", [], draw_histogram)
    board.render_png()   # the first frame sets the figure up: slow everywhere, not measured
    runs = []
    for _ in range(3):   # best of three 2 s runs: a busy machine slows a moment, not all three
        view = board.watch(finishes_after(2.0), lambda: f"t={time.monotonic():.2f}")
        view.join(10)
        runs.append((round(view.redraw_hz, 1), round(view.drawable_hz, 1),
                     round(view.drawing / view.seconds, 2)))
        if view.redraw_hz >= 0.8 * min(5.0, DRAW_SHARE * view.drawable_hz):
            break
    rate, drawable, share = max(runs)
    assert rate >= 0.8 * min(5.0, DRAW_SHARE * drawable) and rate >= 1, (
        f"only {rate} redraws per second, though frames took 1/{drawable} s "
        f"(runs: redraws, drawable per second, share of time drawing: {runs})")
    # a frame a second at the least: slower frames than DRAW_SHARE s take a larger share
    assert share <= max(DRAW_SHARE, 1 / drawable) + 0.1, (
        f"drawing took {share:.0%} of the time (runs: {runs})")
    assert bytes(board.plot.value).startswith(b"\x89PNG"), "the plot widget holds no PNG"
    assert board.summary_text.startswith("t=")


def test_summary_is_plain_text_for_screen_readers():
    board = Dashboard("summary", [], draw_histogram)
    board.refresh("3 requests, p50 12 ms")
    assert 'role="status"' in board.summary.value
    assert "3 requests, p50 12 ms" in board.summary.value


def test_headless_prints_the_same_summary_and_draws_nothing(monkeypatch, capsys):
    monkeypatch.setenv("LAB_HEADLESS", "1")
    board = Dashboard("headless", [], draw_histogram)
    view = board.watch(finishes_after(0.3), lambda: "done: 5 requests")
    view.join(5)
    assert capsys.readouterr().out.strip() == "done: 5 requests"
    assert view.frames == 0 and bytes(board.plot.value) == b""


def test_watcher_thread_ends_with_the_run():
    board = Dashboard("threads", [], draw_histogram)
    board.watch(finishes_after(0.2), lambda: "ok").join(5)
    assert not [t for t in threading.enumerate() if t.name == "labsupport-dashboard"]


@pytest.mark.parametrize("colour", PALETTE)
def test_palette_is_okabe_ito(colour):
    okabe_ito = {"#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442"}
    assert colour in okabe_ito


def test_static_mode_leaves_each_runs_plot_and_summary_as_outputs(monkeypatch):
    """The site build (LAB_STATIC=1): no widget, but the finished run's PNG and summary."""
    shown = []
    monkeypatch.delenv("LAB_HEADLESS", raising=False)
    monkeypatch.setenv("LAB_STATIC", "1")
    monkeypatch.setattr("IPython.display.display", lambda *objs, **kw: shown.extend(objs))
    board = Dashboard("static <board>", [], draw_histogram)
    board._ipython_display_()
    assert "Live dashboard" in shown[0].data and not bytes(board.plot.value)
    shown.clear()
    view = board.watch(finishes_after(0.3), lambda: "done: 5 requests")
    view.join(5)
    assert view.frames == 0
    image, summary = shown
    assert image.data.startswith(b"\x89PNG")
    assert "done: 5 requests" in summary.data and "static &lt;board&gt;" in summary.data
