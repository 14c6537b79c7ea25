"""Per-hop timing with OpenTelemetry: spans across real HTTP hops, and a waterfall view.

A chain of services (``gateway → orders → payment → inventory``) each runs its own
OpenTelemetry ``TracerProvider`` (as separate processes would, each with its
``service.name``), all exporting to one ``InMemorySpanExporter``. Each hop

1. extracts the caller's W3C ``traceparent`` header with OpenTelemetry's
   ``TraceContextTextMapPropagator`` (no header: it starts a new trace),
2. opens a SERVER span that is a child of the caller's span,
3. does its own work, then calls the next hop with the context injected into the headers,
4. observes its duration into a prometheus_client histogram labelled with its name.

Nothing is global: providers, exporter and registry belong to one :class:`TracedChain`,
so running a notebook twice never stacks providers::

    chain = TracedChain(lab, slow_hop="payment")
    traces = chain.run(requests=60)
    traces[0].slowest_hop()      # the service with the most time of its own
"""
from __future__ import annotations

import gc
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry

from labsupport.kit.dashboard import PALETTE, Dashboard
from labsupport.kit.evidence import Estimate, share
from labsupport.kit.experiment import Experiment
from labsupport.lessons.m09_backpressure_and_observability.backpressure import PanelDashboard
from labsupport.lessons.m09_backpressure_and_observability.histograms import (
    Buckets,
    counts,
    histogram_quantile,
    new_histogram,
    read_buckets,
)
from labsupport.runtime.errors import require
from labsupport.runtime.latency import LatencyModel, Normal, Spikes
from labsupport.runtime.metrics import percentile
from labsupport.runtime.services import fetch
from labsupport.runtime.settings import to_model

if TYPE_CHECKING:
    from labsupport.runtime.lab import Lab
    from labsupport.runtime.services import Service

HOPS = ("gateway", "orders", "payment", "inventory")
PROPAGATOR = TraceContextTextMapPropagator()


@dataclass(frozen=True)
class Hop:
    """One span of a trace, in model ms from the start of the trace."""

    service: str
    span_id: int
    parent_id: int | None
    start_ms: float
    end_ms: float

    @property
    def ms(self) -> float:
        return self.end_ms - self.start_ms


@dataclass(frozen=True)
class Trace:
    """The spans of one request, root first."""

    trace_id: int
    hops: tuple[Hop, ...]

    @property
    def ms(self) -> float:
        """The whole request, as the root span saw it."""
        return self.root.ms

    @property
    def root(self) -> Hop:
        return next(h for h in self.hops if h.parent_id is None)

    def own_ms(self, hop: Hop) -> float:
        """A span's own time: its duration minus its children's."""
        return hop.ms - sum(h.ms for h in self.hops if h.parent_id == hop.span_id)

    def slowest_hop(self) -> str:
        """The service that spent the most time of its own in this request."""
        return max(self.hops, key=self.own_ms).service

    def broken_links(self, order: Sequence[str]) -> int:
        """Spans whose parent is not the span of the hop before them in ``order``."""
        by_service = {h.service: h for h in self.hops}
        bad = 0
        for before, after in zip(order, order[1:], strict=False):
            child, parent = by_service.get(after), by_service.get(before)
            bad += child is None or parent is None or child.parent_id != parent.span_id
        return bad


class TracedChain(Experiment):
    """``gateway → orders → payment → inventory`` with tracing and a histogram per hop.

    Every hop works about ``work_ms``; ``slow_hop`` is sometimes (``slow_share`` of its
    requests) ``slow_ms`` instead. ``chain.dashboard()`` shows which hop is slow, how often,
    how many requests and Run; ``chain.press_run(slow_hop="payment", slow_share=0.2,
    requests=100)`` is what Run does.
    """

    TITLE = "Where did the time go? Traces and histograms"
    BUTTON = "Run"

    def __init__(self, lab: Lab, hops: Sequence[str] = HOPS, work_ms: float = 20.0,
                 slow_hop: str = "payment", slow_ms: float = 250.0, slow_share: float = 0.2,
                 prefix: str = "") -> None:
        require(len(hops) >= 2, "a chain needs at least two hops.", f"e.g. {HOPS}")
        self.lab, self.hop_names, self.prefix = lab, list(hops), prefix
        self.work_ms = work_ms
        self.exporter = InMemorySpanExporter()
        self.registry = CollectorRegistry()
        self.histogram = new_histogram(self.registry, "service")
        self.services: dict[str, Service] = {}
        self.tracers: dict[str, trace.Tracer] = {}
        self.providers: list[TracerProvider] = []
        for name in reversed(self.hop_names):
            provider = TracerProvider(resource=Resource.create({"service.name": name}))
            provider.add_span_processor(SimpleSpanProcessor(self.exporter))
            self.providers.append(provider)
            self.tracers[name] = provider.get_tracer("labsupport.lessons.m09_backpressure_and_observability.tracing")
            nxt = self.services.get(self._after(name))
            self.services[name] = lab.service(f"{prefix}{name}", Normal(work_ms, work_ms / 5),
                                              routes={"/checkout": self._handler(name, nxt)})
        self.slow_hop = ""
        self.set_slow(slow_hop, slow_ms, slow_share)
        self.traces: list[Trace] = []

    def _after(self, name: str) -> str:
        i = self.hop_names.index(name)
        return self.hop_names[i + 1] if i + 1 < len(self.hop_names) else ""

    def set_slow(self, hop: str, slow_ms: float = 250.0, share: float = 0.2) -> None:
        """Make ``hop`` slow (``slow_ms``) for ``share`` of its requests; the others normal."""
        require(hop in self.hop_names, f"there is no hop {hop!r}.",
                f"use one of {', '.join(self.hop_names)}")
        require(0 <= share <= 1, f"share must be between 0 and 1, got {share!r}.", "e.g. 0.2")
        normal: LatencyModel = Normal(self.work_ms, self.work_ms / 5)
        for name, svc in self.services.items():
            svc.set(latency=Spikes(normal, Normal(slow_ms, slow_ms / 10), share)
                    if name == hop else normal)
        self.slow_hop = hop

    @property
    def entry(self) -> Service:
        return self.services[self.hop_names[0]]

    def _handler(self, name: str, nxt: Service | None) -> Any:
        tracer = self.tracers[name]

        async def checkout(request: web.Request) -> web.Response:
            parent = PROPAGATOR.extract(dict(request.headers))
            with tracer.start_as_current_span(f"{name} /checkout", context=parent,
                                              kind=trace.SpanKind.SERVER) as span:
                start = span.start_time or 0
                await self.services[name].work()
                status = 200
                if nxt is not None:
                    headers: dict[str, str] = {}
                    PROPAGATOR.inject(headers)   # traceparent: this span is the parent
                    result = await fetch(self.lab.session, nxt.url + "checkout", None,
                                         nxt.name, "POST", None, headers)
                    status = result["status"]
                span.set_attribute("http.response.status_code", status)
            seconds = to_model(((span.end_time or 0) - start) / 1e9)
            self.histogram.labels(name).observe(seconds)
            return web.json_response({"service": name}, status=status)

        return checkout

    def run(self, requests: int = 60, users: int = 4) -> list[Trace]:
        """Send ``requests`` through the chain (``users`` at a time); returns their traces."""
        require(isinstance(requests, int) and 1 <= requests <= 1000,
                f"requests must be a whole number from 1 to 1000, got {requests!r}.")
        gc.collect()   # a collection mid-run would be a slow hop that is nobody's
        self.exporter.clear()
        self.registry = CollectorRegistry()
        self.histogram = new_histogram(self.registry, "service")
        self.lab.closed_loop(self.entry, users, requests, path="checkout", progress=False)
        self.traces = collect(self.exporter)
        return self.traces

    # ----- what the traces say ------------------------------------------------------------------
    def histograms(self) -> dict[str, Buckets]:
        """Each hop's buckets, read back from this chain's registry."""
        return {name: read_buckets(self.registry, "service", name) for name in self.hop_names}

    def slow_traces(self, extra_ms: float = 150.0) -> list[Trace]:
        """Traces that took at least ``extra_ms`` longer than the median one.

        150 ms is well inside the 230 ms a slow hop adds, and above the pauses (a redraw,
        the garbage collector) that can slow a trace in no particular hop.
        """
        median = percentile([t.ms for t in self.traces], 50)
        return [t for t in self.traces if t.ms > median + extra_ms]

    def share_blaming(self, hop: str, traces: Sequence[Trace]) -> float:
        """Share of ``traces`` whose slowest hop (own time) is ``hop``."""
        return sum(t.slowest_hop() == hop for t in traces) / len(traces) if traces else math.nan

    def blame(self, hop: str, traces: Sequence[Trace]) -> Estimate:
        """:meth:`share_blaming` with Wilson's interval (a few dozen slow traces)."""
        return share(sum(t.slowest_hop() == hop for t in traces), len(traces))

    def broken_links(self) -> int:
        """Spans, over all traces, not linked to the hop before them."""
        return sum(t.broken_links(self.hop_names) for t in self.traces)

    def summary(self) -> str:
        if not self.traces:
            return "press Run"
        slow = self.slow_traces()
        share = self.share_blaming(self.slow_hop, slow)
        return (f"{len(self.traces)} traces of {len(self.hop_names)} spans; median "
                f"{percentile([t.ms for t in self.traces], 50):.0f} ms; {len(slow)} slow "
                f"(150+ ms over the median), slowest hop = {self.slow_hop} in "
                f"{0 if math.isnan(share) else share:.0%} of them")

    def examples(self) -> tuple[Trace, Trace]:
        """A typical trace (the median) and the slowest one."""
        ordered = sorted(self.traces, key=lambda t: t.ms)
        return ordered[len(ordered) // 2], ordered[-1]

    # ----- the dashboard ------------------------------------------------------------------------
    def draw(self, axes: Sequence[Any]) -> None:
        """Left: waterfalls of a typical and the slowest trace; right: each hop's histogram."""
        if not self.traces:
            return
        fast, slow = self.examples()
        draw_waterfall(axes[0], [("slowest", slow), ("typical", fast)], self.hop_names)
        draw_histograms(axes[1], self.histograms())

    def make_controls(self) -> dict[str, Any]:
        """Which hop is slow, how often, how many requests."""
        import ipywidgets as w

        return {
            "slow_hop": w.Dropdown(options=self.hop_names, value=self.slow_hop,
                                   description="slow hop"),
            "slow_share": w.FloatSlider(0.2, min=0.05, max=0.5, step=0.05,
                                        description="how often"),
            "requests": w.IntSlider(100, 20, 200, step=20, description="requests"),
        }

    def make_board(self, widgets: list[Any]) -> Dashboard:
        """Two panels: the waterfalls and the histograms."""
        return PanelDashboard(self.TITLE, widgets, self.draw, (1, 2), size=(8.0, 3.4),
                              left=0.17)

    def run_controls(self, slow_hop: str, slow_share: float, requests: int) -> list[Trace]:
        """What Run does: ``press_run(slow_hop=, slow_share=, requests=)`` moves those
        controls first; returns the traces."""
        self.set_slow(slow_hop, share=slow_share)
        return self.show(self.run(requests))

    def close(self) -> None:
        """Shut the tracer providers down (the services close with the lab)."""
        for provider in self.providers:
            provider.shutdown()


def collect(exporter: InMemorySpanExporter) -> list[Trace]:
    """Group the finished spans by trace; times in model ms from each trace's first span."""
    by_trace: dict[int, list[Any]] = {}
    for span in exporter.get_finished_spans():
        by_trace.setdefault(span.context.trace_id, []).append(span)
    traces = []
    for trace_id, spans in by_trace.items():
        origin = min(s.start_time for s in spans)
        hops = tuple(sorted((Hop(s.resource.attributes.get("service.name", "?"),
                                 s.context.span_id, s.parent.span_id if s.parent else None,
                                 to_model((s.start_time - origin) / 1e9) * 1000,
                                 to_model((s.end_time - origin) / 1e9) * 1000)
                             for s in spans), key=lambda h: h.start_ms))
        traces.append(Trace(trace_id, hops))
    return traces


def draw_waterfall(ax: Any, traces: Sequence[tuple[str, Trace]], order: Sequence[str]) -> None:
    """Each span a bar on a timeline, one row per service, one block of rows per trace;
    the dark part of a bar is the span's own time."""
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(order)}
    labels, y = [], 0
    for title, tr in traces:
        for name in order:
            hop = next((h for h in tr.hops if h.service == name), None)
            if hop is not None:
                ax.barh(y, hop.ms, left=hop.start_ms, color=colours[name], alpha=0.35)
                ax.text(hop.end_ms, y, f" {tr.own_ms(hop):.0f}", va="center", fontsize=7)
            labels.append(f"{title}: {name}")
            y += 1
        y += 0.6
    ax.set_yticks([i + (0.6 if i >= len(order) else 0) for i in range(len(labels))], labels,
                  fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("model ms from the start (label: own time)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title("waterfall: the slowest and a typical trace", fontsize=9)


def draw_histograms(ax: Any, histograms: dict[str, Buckets]) -> None:
    """Each hop's requests per bucket (from prometheus_client), with its p99 marked."""
    for i, (name, buckets) in enumerate(histograms.items()):
        bounds = [b * 1000 for b, _ in buckets if not math.isinf(b)]
        per = counts(buckets)[:len(bounds)]
        ax.step(bounds, per, where="post", color=PALETTE[i % len(PALETTE)],
                label=f"{name} p99 {histogram_quantile(0.99, buckets) * 1000:.0f} ms")
    ax.set_xscale("log")
    ax.set_xlabel("span duration, model ms (bucket bounds)", fontsize=8)
    ax.set_ylabel("requests", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    ax.set_title("one histogram per service", fontsize=9)
