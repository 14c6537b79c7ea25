"""labsupport: the helper package of the Latency Lab course.

The pieces a notebook uses most::

    from labsupport import Lab, Constant, Normal, LogNormal, Spikes, Faults, broker, expect

``Lab`` runs simulated HTTP services; the latency and fault models shape how
they behave; ``broker`` connects to the course's Kafka-protocol broker; ``expect``
states a claim and checks it against what was measured.
Every public function has a docstring: put ``?`` after a name to read it.

The package in layers, each importing only those above it:

- ``runtime`` and ``broker``: the engine (services, load, metrics, the Kafka broker);
- ``kit``: dashboards, claims and the statistics they decide from;
- ``lessons``: one package per module (``lessons.m05_async_messaging``...);
- ``exercises`` and ``course``: the questions and their checks, progress, grading, tooling.
"""
from __future__ import annotations

from labsupport import broker
from labsupport.kit.claims import expect, expect_at_least, expect_at_most, sanity
from labsupport.runtime.errors import BadParameter, BrokerUnavailable, LabError
from labsupport.runtime.faults import Faults
from labsupport.runtime.lab import Lab, LoadRun, Response
from labsupport.runtime.latency import Constant, LatencyModel, LogNormal, Normal, Spikes
from labsupport.runtime.metrics import Recorder, percentile
from labsupport.runtime.services import Service
from labsupport.runtime.settings import namespace, set_time_scale, time_scale

__all__ = [
    "Lab", "LoadRun", "Response", "Service", "Constant", "Normal", "LogNormal", "Spikes",
    "LatencyModel", "Faults", "Recorder", "percentile", "broker", "LabError",
    "BrokerUnavailable", "BadParameter", "namespace", "time_scale", "set_time_scale",
    "expect", "expect_at_least", "expect_at_most", "sanity",
]
__version__ = "0.1.0"
