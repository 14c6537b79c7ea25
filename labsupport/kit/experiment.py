"""The shape every live experiment shares: named controls, a button, a plot and a summary.

A lesson's experiment subclasses :class:`Experiment` and says only what is its own::

    class Burst(Experiment):
        TITLE = "A burst of orders on a command queue"
        BUTTON = "Send the burst"

        def make_controls(self):
            import ipywidgets as w
            return {"orders": w.IntSlider(30, 5, 60, step=5, description="burst")}

        def run_controls(self, orders):
            self.start(orders)
            return self.board.watch(self.done, self.summary, hz=5)

``exp.dashboard()`` builds the widgets (leave it last in a cell to show it);
``exp.press_run(orders=40)`` is what the button does: it moves the named controls first, so a
notebook cell (or a test) runs exactly what a learner's click runs, and it builds the dashboard
itself when there is none yet. ``run_controls`` either returns a :class:`LiveView` (the run goes
on in the background and the plot follows it) or returns its result after calling
:meth:`Experiment.show`, which redraws the plot once and shows the summary line.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from labsupport.kit.dashboard import Dashboard, set_controls


class Experiment:
    """Base of the lessons' dashboards: ``TITLE``, ``BUTTON``, :meth:`make_controls`,
    :meth:`run_controls`, ``draw(ax)`` and ``summary()``; :meth:`dashboard` and
    :meth:`press_run` are shared."""

    TITLE = "An experiment"
    BUTTON = "Run"
    #: Extra keywords ``press_run`` takes besides the controls' names (for the error message).
    OTHER_KEYWORDS: Sequence[str] = ()

    board: Dashboard | None = None
    controls: dict[str, Any]

    def make_controls(self) -> dict[str, Any]:
        """The named controls (ipywidgets), in the order they are shown."""
        raise NotImplementedError

    def extra_widgets(self) -> list[Any]:
        """Widgets shown between the controls and the button (a lamp, a note); none here."""
        return []

    def make_board(self, widgets: list[Any]) -> Dashboard:
        """The dashboard that holds ``widgets``; a plain :class:`Dashboard` drawing ``draw``."""
        return Dashboard(self.TITLE, widgets, self.draw)

    def run_controls(self, **values: Any) -> Any:
        """Run with the controls' current ``values`` (by name)."""
        raise NotImplementedError

    def draw(self, ax: Any) -> None:
        """Draw the plot on matplotlib axes ``ax``."""
        raise NotImplementedError

    def summary(self) -> str:
        """One line of plain text: what the last run measured."""
        raise NotImplementedError

    def dashboard(self) -> Dashboard:
        """Controls on the left, the plot on the right, the summary below; leave it last in
        a cell to show it. Building it again gives fresh widgets."""
        import ipywidgets as w

        self.controls = self.make_controls()
        button = w.Button(description=self.BUTTON, button_style="primary",
                          layout=w.Layout(width="auto"))
        button.on_click(lambda _: self.click())
        self.board = self.make_board([*self.controls.values(), *self.extra_widgets(), button])
        return self.board

    def click(self) -> Any:
        """What a click on the button does: :meth:`press_run` with the controls as they are."""
        return self.press_run()

    def press_run(self, **values: Any) -> Any:
        """What the button does; ``values`` move the named controls first (e.g. ``rate=20``).
        Builds the dashboard first when there is none yet."""
        if self.board is None:
            self.dashboard()
        extra = {k: values.pop(k) for k in list(values) if k in self.OTHER_KEYWORDS}
        chosen = set_controls(self.controls, values, others=self.OTHER_KEYWORDS)
        return self.run_controls(**chosen, **extra)

    def show(self, result: Any) -> Any:
        """Redraw the plot once, show :meth:`summary` under it and return ``result``."""
        assert self.board is not None
        self.board.refresh(self.summary())
        return result
