"""A watchdog for pauses of the machine: the evidence that a run measured the laptop, not
the design.

Every :class:`~labsupport.runtime.lab.Lab` runs one :class:`Watchdog`, a thread that asks to
sleep 10 ms, again and again, and notes each time it woke up much later than it asked. A
healthy process on a healthy machine wakes within a few ms (the lab sets Python's switch
interval to 1 ms, so a busy thread of the lab hands over at once). A late wake-up of
``PAUSE_MS`` or more means this process could not run Python for that long: another
program took the cores, the machine swapped, or a garbage collection held the interpreter.
Every request in flight during the pause looks that much slower, every timer fires that
much later, at any time scale, and at ``LAB_TIME_SCALE=0.2`` a 100 ms pause reads as 500
model ms.

The pauses are kept for the whole process (a claim printed after ``lab.close()`` still sees
them); :func:`worst_pause` answers "how long was the longest pause in the last minute?".
"""
from __future__ import annotations

import threading
import time
from collections import deque

PAUSE_MS = 50.0
"""A late wake-up this long (wall ms) or longer is a pause of the machine, not of the lab."""

WINDOW_S = 60.0
"""How far back (wall s) :func:`worst_pause` looks by default: an experiment and its claims."""

_pauses: deque[tuple[float, float]] = deque(maxlen=1000)   # (perf_counter at wake-up, ms)


def note_pause(ms: float, at: float | None = None) -> None:
    """Record a pause of ``ms`` wall ms that ended at ``at`` (perf_counter; default now)."""
    _pauses.append((time.perf_counter() if at is None else at, float(ms)))


def forget_pauses() -> None:
    """Start a fresh record (a test does, so that an earlier test's pauses are not its own)."""
    _pauses.clear()


def worst_pause(window_s: float = WINDOW_S) -> float:
    """The longest pause (wall ms) that ended in the last ``window_s`` wall seconds; 0 if none."""
    since = time.perf_counter() - window_s
    return max((ms for at, ms in list(_pauses) if at >= since), default=0.0)


class Watchdog:
    """The thread that notices pauses (``labsupport-watchdog``); :meth:`stop` joins it."""

    def __init__(self, every_s: float = 0.01, pause_ms: float = PAUSE_MS) -> None:
        self.every_s, self.pause_ms = every_s, pause_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="labsupport-watchdog",
                                        daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while True:
            asked = time.perf_counter()
            if self._stop.wait(self.every_s):
                return
            woke = time.perf_counter()
            late_ms = (woke - asked - self.every_s) * 1000
            if late_ms >= self.pause_ms:
                note_pause(late_ms, woke)

    def stop(self) -> None:
        """Stop watching and join the thread."""
        self._stop.set()
        self._thread.join(timeout=5)


__all__ = ["PAUSE_MS", "WINDOW_S", "Watchdog", "forget_pauses", "note_pause", "worst_pause"]
