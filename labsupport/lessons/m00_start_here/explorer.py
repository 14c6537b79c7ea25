"""A first live widget: change one service's latency, send requests, see the result.

Used in ``00_start_here`` to prove that widgets work and to show the shape of
every later dashboard.
"""
from __future__ import annotations

from labsupport.kit.dashboard import Dashboard, latency_histogram
from labsupport.runtime.lab import Lab
from labsupport.runtime.metrics import Recorder
from labsupport.runtime.services import Service


class LatencyExplorer:
    """A slider for ``knob``'s latency and a button that sends ``requests`` to ``entry``."""

    def __init__(self, lab: Lab, entry: Service, knob: Service, requests: int = 20) -> None:
        import ipywidgets as w

        self.lab, self.entry, self.knob, self.requests = lab, entry, knob, requests
        self.recorder = Recorder(entry.name)
        start = int(knob.latency.mean_ms())
        self.slider = w.IntSlider(value=start, min=0, max=1000, step=50,
                                  description=f"{knob.name} ms", continuous_update=False)
        self.button = w.Button(description=f"Send {requests} requests", button_style="primary",
                               icon="paper-plane", layout=w.Layout(width="auto"))
        self.button.on_click(lambda _: self.send())
        self.dashboard = Dashboard(f"Latency explorer: call {entry.name}",
                                   [self.slider, self.button], self._draw)

    def expected_ms(self) -> float:
        """The theory: the sum of the mean latencies along the chain from ``entry``."""
        total, svc = 0.0, self.entry
        while True:
            total += svc.latency.mean_ms()
            if not svc.calls:
                return total
            svc = svc.calls[0]

    def send(self, latency_ms: int | None = None) -> str:
        """Apply the slider (or ``latency_ms``), send the requests, refresh; returns the summary."""
        if latency_ms is not None:
            self.slider.value = latency_ms
        self.knob.set(latency=self.slider.value)
        # Five users at a time: the services have enough workers that none waits for another.
        self.recorder = self.lab.closed_loop(self.entry, users=min(5, self.requests),
                                             requests=self.requests, progress=False)
        summary = (f"{self.knob.name} at {self.slider.value} ms: {self.recorder.summary()}; "
                   f"theory (sum along the chain) {self.expected_ms():.0f} ms")
        self.dashboard.refresh(summary)
        return summary

    def _draw(self, ax) -> None:
        latency_histogram(ax, self.recorder.latencies(), self.expected_ms(), "theory: sum")

    def _ipython_display_(self) -> None:
        self.dashboard._ipython_display_()
