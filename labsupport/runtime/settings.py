"""Settings read from the environment: time scale, learner namespace, state folder.

* ``LAB_TIME_SCALE`` multiplies every simulated time (1.0 = real time). CI uses
  a small value such as 0.2 so a 500 ms service sleeps 100 ms of wall time.
  Everything the lab reports is in *model time*: wall time divided by the scale,
  so numbers read the same at any scale.
* ``LAB_NAMESPACE`` prefixes topic and consumer-group names so learners can
  share one Kafka cluster. Defaults to the user name.
* ``LAB_STATE_DIR`` is where the lab keeps its state (the running broker);
  defaults to ``.lab/`` at the top of the course checkout.
"""
from __future__ import annotations

import getpass
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labsupport.runtime.errors import BadParameter, require

_scale_override: float | None = None
_floors: list[float] = []   # minimum scales held by running experiments (see scale_at_least)
_floors_lock = threading.Lock()
#: (perf_counter, model s, scale) where the model clock last changed pace; None: never
_anchor: tuple[float, float, float] | None = None


def _base_scale() -> float:
    if _scale_override is not None:
        return _scale_override
    raw = os.environ.get("LAB_TIME_SCALE", "1.0")
    try:
        value = float(raw)
    except ValueError:
        raise BadParameter(
            f"LAB_TIME_SCALE={raw!r} is not a number.",
            "set LAB_TIME_SCALE to a number such as 1.0 (real time) or 0.2 (5x faster)",
        ) from None
    _check_scale(value)
    return value


def time_scale() -> float:
    """The factor every simulated time is multiplied by (``LAB_TIME_SCALE``, or the kernel's
    :func:`set_time_scale`), raised to the largest :func:`scale_at_least` in force."""
    base = _base_scale()
    floors = _floors
    return max(base, *floors) if floors else base


def time_scale_override() -> float | None:
    """The scale :func:`set_time_scale` set for this kernel, or ``None`` (``LAB_TIME_SCALE``)."""
    return _scale_override


def model_clock() -> float:
    """Model seconds on a monotonic clock that stays continuous when the time scale changes
    (:func:`set_time_scale`, :func:`scale_at_least`): a model second lasts ``time_scale()``
    wall seconds *from the moment that scale took effect*, so timestamps taken before and after
    a change still subtract to the model time between them."""
    anchor = _anchor
    if anchor is None:
        return time.perf_counter() / time_scale()
    perf, model, scale = anchor
    return model + (time.perf_counter() - perf) / scale


def _rebase(change: Callable[[], None]) -> None:
    """Apply ``change`` (to the scale) with the model clock continuing where it was."""
    global _anchor
    with _floors_lock:
        try:
            now: float | None = model_clock()
        except BadParameter:   # LAB_TIME_SCALE is unreadable: no clock to continue
            now = None
        change()
        try:
            _anchor = None if now is None else (time.perf_counter(), now, time_scale())
        except BadParameter:
            _anchor = None


def set_time_scale(value: float | None) -> None:
    """Override the time scale for this kernel (``None`` returns to ``LAB_TIME_SCALE``)."""
    global _scale_override
    if value is not None:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise BadParameter(f"The time scale must be a number, got {value!r}.",
                               "use 1.0 for real time, or e.g. 0.2 to run 5x faster") from None
        _check_scale(value)

    def change() -> None:
        global _scale_override
        _scale_override = value
    _rebase(change)


class ScaleFloor:
    """A time scale of at least ``minimum`` while it is held (the scale in force if larger):
    ``with scale_at_least(0.5): ...``, or ``floor = scale_at_least(0.5)`` and
    ``floor.release()`` when a run started in the background ends."""

    def __init__(self, minimum: float) -> None:
        _check_scale(minimum)
        self.minimum, self.held = float(minimum), True
        _rebase(lambda: _floors.append(self.minimum))

    def release(self) -> None:
        """Give the floor back (once; later calls do nothing)."""
        if self.held:
            self.held = False
            _rebase(lambda: _floors.remove(self.minimum))

    def until_done(self, future: Any) -> Any:
        """Release the floor when ``future`` (a run started in the background) is done;
        returns ``future``."""
        future.add_done_callback(lambda _: self.release())
        return future

    def __enter__(self) -> float:
        return time_scale()

    def __exit__(self, *exc: object) -> None:
        self.release()


def scale_at_least(minimum: float) -> ScaleFloor:
    """Run at a time scale of at least ``minimum`` until the floor is released (the block
    ends). For an experiment whose effect lives in gaps of a few model ms, or whose requests
    per wall second would fill the machine: at a small scale those gaps are a few wall ms,
    which a busy machine's own jitter blurs. The model clock stays continuous."""
    return ScaleFloor(minimum)


def _check_scale(value: float) -> None:
    require(
        0.01 <= value <= 10,
        f"Time scale {value} is outside 0.01..10.",
        "use 1.0 for real time, or a value such as 0.2 to run 5x faster",
    )


def to_wall(model_seconds: float) -> float:
    """Wall-clock seconds for ``model_seconds`` of simulated time."""
    return model_seconds * time_scale()


def to_model(wall_seconds: float) -> float:
    """Model seconds for ``wall_seconds`` measured on the clock."""
    return wall_seconds / time_scale()


def namespace() -> str:
    """The learner's namespace: ``LAB_NAMESPACE`` or the user name, made name-safe."""
    raw = os.environ.get("LAB_NAMESPACE") or _user() or "learner"
    return clean_namespace(raw, "LAB_NAMESPACE")


def clean_namespace(raw: str, what: str = "a namespace") -> str:
    """``raw`` made safe for topic names: lower case, letters, digits, '-' and '_'.

    >>> clean_namespace("Ada Lovelace")
    'ada-lovelace'
    """
    clean = re.sub(r"[^a-zA-Z0-9_-]+", "-", raw).strip("-_").lower()
    require(bool(clean), f"{what}={raw!r} has no usable characters.",
            "use letters, digits, '-' or '_'")
    return clean[:40]


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return ""


def course_root() -> Path:
    """The top folder of the course checkout (where ``Makefile`` lives)."""
    return Path(__file__).resolve().parents[2]


def state_dir() -> Path:
    """The folder for lab state shared by kernels and the CLI (created on demand)."""
    path = Path(os.environ.get("LAB_STATE_DIR") or course_root() / ".lab")
    path.mkdir(parents=True, exist_ok=True)
    return path
