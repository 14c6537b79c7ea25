"""labsupport: the helper package of the Latency Lab course.

The pieces a notebook uses most::

    from labsupport import Lab, Constant, Normal, LogNormal, Spikes, Faults, broker

``Lab`` runs simulated HTTP services; the latency and fault models shape how
they behave; ``broker`` connects to the course's Kafka-protocol broker.
Every public function has a docstring: put ``?`` after a name to read it.
"""
from __future__ import annotations

from . import broker
from .errors import BadParameter, BrokerUnavailable, LabError
from .faults import Faults
from .lab import Lab, LoadRun, Response
from .latency import Constant, LatencyModel, LogNormal, Normal, Spikes
from .metrics import Recorder, percentile
from .services import Service
from .settings import namespace, set_time_scale, time_scale

__all__ = [
    "Lab", "LoadRun", "Response", "Service", "Constant", "Normal", "LogNormal", "Spikes",
    "LatencyModel", "Faults", "Recorder", "percentile", "broker", "LabError",
    "BrokerUnavailable", "BadParameter", "namespace", "time_scale", "set_time_scale",
]
__version__ = "0.1.0"
