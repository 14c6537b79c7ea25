"""The dashboard layout every module reuses: controls left, plot right, summary below.

The summary is one line of plain text under the plot, so a screen reader and
CI read the same result a sighted learner sees. With ``LAB_HEADLESS=1`` (or
outside Jupyter) nothing is drawn and only the summary is printed.
Colours come from the Okabe-Ito palette, which colour-blind readers can tell apart,
and plots use a transparent background so they read in the dark theme too.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

#: Okabe-Ito colours: blue, orange, bluish green, vermillion, sky blue, purple, yellow.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442")


def headless() -> bool:
    """True when dashboards should print text only (``LAB_HEADLESS`` set)."""
    return os.environ.get("LAB_HEADLESS", "").lower() in ("1", "true", "yes")


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
        self.summary_text = "no results yet"
        self.plot = w.Output(layout=w.Layout(min_width="420px"))
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
        if self.draw is not None:
            self._redraw()

    def _redraw(self) -> None:
        from IPython.display import Image, display

        with self.plot:
            self.plot.clear_output(wait=True)
            display(Image(data=self.render_png()))

    def render_png(self) -> bytes:
        """Draw the plot into PNG bytes (independent of the notebook's matplotlib backend)."""
        from io import BytesIO

        from matplotlib.figure import Figure

        fig = Figure(figsize=(5.5, 3.2))
        ax = fig.add_subplot()
        self.draw(ax)
        fig.tight_layout()
        buffer = BytesIO()
        fig.savefig(buffer, format="png", dpi=96, facecolor="white")
        return buffer.getvalue()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if headless():
            print(f"{self.title}: {self.summary_text}")
        else:
            display(self.widget)
