"""The dashboard layout every module reuses: controls left, plot right, summary below.

The summary is one line of plain text under the plot, so a screen reader and
CI read the same result a sighted learner sees. With ``LAB_HEADLESS=1`` (or
outside Jupyter) nothing is drawn and only the summary is printed. With
``LAB_STATIC=1`` (the course site's build) a dashboard shows no controls: each finished
run leaves its plot as a PNG image and its summary line in the cell's output, so a page
made from the executed notebook shows what the run measured.
Colours come from the Okabe-Ito palette, which colour-blind readers can tell apart,
and plots use a transparent background so they read in the dark theme too.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from labsupport.runtime.errors import require

#: Okabe-Ito colours: blue, orange, bluish green, vermillion, sky blue, purple, yellow.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442")


def headless() -> bool:
    """True when dashboards should print text only (``LAB_HEADLESS`` set)."""
    return _flag("LAB_HEADLESS")


def static() -> bool:
    """True when dashboards leave images, not widgets (``LAB_STATIC`` set: the site build)."""
    return _flag("LAB_STATIC")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


class Dashboard:
    """Controls on the left, a matplotlib plot on the right, a text summary under them.

    ``draw(ax)`` is called to (re)draw the plot; :meth:`refresh` redraws it and
    sets the summary. Display the dashboard by leaving it last in a cell.
    """

    def __init__(self, title: str, controls: Sequence[Any],
                 draw: Callable[[Any], None] | None = None) -> None:
        import ipywidgets as w

        self.title = title
        self.draw = draw
        self._figure: Any = None
        self._axes: Any = None
        self._render_lock = threading.Lock()
        self.summary_text = "no results yet"
        # An Image widget, not an Output: it can be updated from a background thread.
        self.plot = w.Image(format="png", layout=w.Layout(min_width="420px", max_width="560px"))
        self.summary = w.HTML(self._summary_html(), layout=w.Layout(width="100%"))
        heading = w.HTML(f"<b>{title}</b>")
        left = w.VBox([heading, *controls], layout=w.Layout(width="34%", min_width="260px"))
        self.widget = w.VBox([w.HBox([left, self.plot]), self.summary])

    def _summary_html(self) -> str:
        # role=status + aria-live: screen readers announce each new summary.
        return f'<div role="status" aria-live="polite">{self.summary_text}</div>'

    def refresh(self, summary: str) -> None:
        """Redraw the plot and show ``summary`` (printed instead when headless)."""
        self.summary_text = summary
        self.summary.value = self._summary_html()
        if headless():
            print(summary)
            return
        if static():
            self._show_still(summary)
            return
        if self.draw is not None:
            self._redraw()

    def _show_still(self, summary: str) -> None:
        """The site build: this run's plot as an image, then its summary, in the cell output."""
        import html

        from IPython.display import HTML, Image, display

        if self.draw is not None:
            display(Image(data=self.render_png(), format="png"))
        display(HTML(f'<p class="lab-summary" role="status"><b>{html.escape(self.title)}'
                     f"</b>: {html.escape(summary)}</p>"))

    def _redraw(self) -> None:
        self.plot.value = self.render_png()

    def render_png(self) -> bytes:
        """Draw the plot into PNG bytes (independent of the notebook's matplotlib backend).

        One figure is reused and margins are fixed, so a frame takes tens of
        milliseconds and the dashboard can redraw several times a second.
        """
        from io import BytesIO

        with self._render_lock:
            if self._figure is None:
                self._figure, self._axes = _new_figure()
            self._axes.clear()
            self.draw(self._axes)
            buffer = BytesIO()
            self._figure.savefig(buffer, format="png", dpi=80, facecolor="white")
            return buffer.getvalue()

    def watch(self, done: Callable[[], bool], summarize: Callable[[], str],
              hz: float = 8.0) -> LiveView:
        """Redraw ``hz`` times a second in a background thread until ``done()``.

        The kernel stays free while traffic runs. Headless, only the final
        summary is shown.
        """
        view = LiveView(self, done, summarize, hz)
        view.start()
        return view

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if headless():
            print(f"{self.title}: {self.summary_text}")
        elif static():
            from IPython.display import HTML

            display(HTML(f"<p><i>Live dashboard: {self.title}. In JupyterLab it has controls "
                         "and a Run button; the runs below show what it measured.</i></p>"))
        else:
            display(self.widget)


def set_controls(controls: dict[str, Any], values: dict[str, Any],
                 others: Sequence[str] = ()) -> dict[str, Any]:
    """Move the named ``controls`` to ``values`` (what a ``press_run(**values)`` does first);
    returns every control's value by name. ``others`` are extra keywords the caller takes."""
    for name, value in values.items():
        require(name in controls, f"No control {name!r}.",
                f"use one of: {', '.join([*controls, *others])}")
        controls[name].value = value
    return {name: control.value for name, control in controls.items()}


def latency_histogram(ax: Any, latencies: Sequence[float], theory_ms: float,
                      theory_label: str = "theory") -> None:
    """Measured latencies as a histogram with the theory as a dashed line (x from 0)."""
    if latencies:
        ax.hist(latencies, bins=20, color=PALETTE[0], alpha=0.85, label="measured")
    ax.axvline(theory_ms, color=PALETTE[1], linestyle="--", linewidth=2, label=theory_label)
    ax.set_xlim(left=0)
    ax.set_xlabel("user-facing latency (model ms)")
    ax.set_ylabel("requests")
    ax.legend(loc="upper left", fontsize=8)


def _new_figure() -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.4))
    axes = figure.add_subplot()
    figure.subplots_adjust(left=0.12, right=0.97, bottom=0.16, top=0.95)
    return figure, axes


DRAW_SHARE = 0.25
"""The most of the wall time a live view spends drawing frames (a slow machine gets fewer
frames a second rather than slower experiments)."""


class LiveView:
    """A background redraw loop for a :class:`Dashboard`; ``redraw_hz`` is its measured rate.

    It draws ``hz`` frames a second, fewer (down to one) where a frame takes longer than
    ``DRAW_SHARE`` of the period: a frame holds Python's interpreter, which the running
    experiment needs too.
    """

    def __init__(self, dashboard: Dashboard, done: Callable[[], bool],
                 summarize: Callable[[], str], hz: float) -> None:
        self.dashboard, self.done, self.summarize, self.hz = dashboard, done, summarize, hz
        self.frames = 0
        self.seconds = 0.0
        self.drawing = 0.0   # seconds spent drawing frames
        self._thread = threading.Thread(target=self._loop, name="labsupport-dashboard",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        start = time.monotonic()
        live = not headless() and not static()
        period = 1 / self.hz
        while not self.done():
            began = time.monotonic()
            if live:
                self.dashboard.refresh(self.summarize())
                self.frames += 1
                self.drawing += time.monotonic() - began
            # the next frame is due one period after this one began, or later when frames are
            # slow: drawing may take at most DRAW_SHARE of the time, since a frame holds the
            # interpreter the lab's services and consumers need for what the view measures
            # (but at least one frame a second: the first frame, which sets up the figure, is
            # slow everywhere)
            spent = time.monotonic() - began
            gap = max(period, min(1.0, spent / DRAW_SHARE))
            time.sleep(max(0.0, began + gap - time.monotonic()))
        self.seconds = time.monotonic() - start
        self.dashboard.refresh(self.summarize())

    @property
    def redraw_hz(self) -> float:
        """Frames drawn per second while the run lasted (0 when headless)."""
        return self.frames / self.seconds if self.seconds else 0.0

    @property
    def drawable_hz(self) -> float:
        """Frames a second this machine could draw, from the time each frame took
        (``DRAW_SHARE`` of it is the most ``redraw_hz`` reaches when drawing is slow)."""
        return self.frames / self.drawing if self.drawing else 0.0

    def join(self, timeout: float | None = None) -> None:
        """Wait for the run and the last redraw."""
        self._thread.join(timeout)
