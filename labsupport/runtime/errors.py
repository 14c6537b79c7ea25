"""Errors the lab raises on purpose, shown to learners as one clear message.

A :class:`LabError` says what went wrong and the command that fixes it. In a
notebook it is shown without a traceback from inside ``labsupport``: the
traceback would only point at our code, never at the learner's.
"""
from __future__ import annotations


class LabError(Exception):
    """A problem with the lab set-up or a parameter, with the fix named.

    ``str(err)`` is the whole message; ``err.fix`` is the command or action
    that mends it (also part of the message).
    """

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        text = problem if not fix else f"{problem}\n  Fix: {fix}"
        super().__init__(text)

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of printing a traceback.
        name = type(self).__name__
        return [f"\x1b[31m{name}\x1b[0m: {self}"]


class BrokerUnavailable(LabError):
    """No Kafka-protocol broker answered at the address the lab resolved."""


class BadParameter(LabError, ValueError):
    """A knob was given a value it cannot take (a negative latency, say)."""


def require(condition: bool, message: str, fix: str = "") -> None:
    """Raise :class:`BadParameter` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise BadParameter(message, fix)
