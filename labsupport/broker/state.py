"""The state file that records which broker the lab started (``.lab/broker.json``).

Kernels and the command line read the same file, so a broker started by
``make lab`` is reused by every notebook instead of starting another.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from labsupport.runtime import statefiles
from labsupport.runtime.settings import state_dir


@dataclass
class BrokerRecord:
    """Where a broker listens and how it was started (``embedded`` or ``container``)."""

    bootstrap: str
    kind: str
    pid: int | None = None
    workdir: str | None = None


def state_file() -> Path:
    """Path of the broker state file."""
    return state_dir() / "broker.json"


def read() -> BrokerRecord | None:
    """The recorded broker, or ``None`` when there is none (or the file is unreadable)."""
    try:
        return BrokerRecord(**statefiles.read_json(state_file().name))
    except TypeError:
        return None


def write(record: BrokerRecord) -> None:
    """Record ``record`` atomically so a concurrent reader never sees half a file."""
    statefiles.write_json(state_file().name, asdict(record))


def clear() -> None:
    """Forget the recorded broker."""
    statefiles.remove(state_file().name)
