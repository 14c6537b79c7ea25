"""A gateway's call policy in Python: a total deadline, attempts, a timeout per try.

API gateways and service meshes describe a route's policy in configuration, e.g. in
Envoy ``timeout: 2s`` with ``retry_policy: {retry_on: 5xx, num_retries: 2,
per_try_timeout: 1s}`` (without ``retry_on: 5xx`` Envoy does not retry a try that timed out).
:class:`GatewayPolicy` is the same policy as a Python object::

    policy = GatewayPolicy(total_ms=2000, attempts=3, per_try_ms=1000, backoff_ms=100)
    policy.worst_case_ms()        # 2000: the total deadline cuts the third try off
    lab.run(policy.call(lab.session, hung.url))

All times are model milliseconds (scaled by ``LAB_TIME_SCALE`` when the lab waits).
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from labsupport.kit.experiment import Experiment
from labsupport.runtime.errors import require
from labsupport.runtime.lab import Lab
from labsupport.runtime.services import Service, fetch
from labsupport.runtime.settings import to_model, to_wall


@dataclass(frozen=True)
class GatewayPolicy:
    """``attempts`` tries of at most ``per_try_ms`` each, ``backoff_ms`` apart, all
    within ``total_ms`` (``None``: no overall deadline)."""

    total_ms: float | None = 2000.0
    attempts: int = 3
    per_try_ms: float = 1000.0
    backoff_ms: float = 0.0

    def __post_init__(self) -> None:
        require(isinstance(self.attempts, int) and self.attempts >= 1,
                f"attempts must be a whole number of 1 or more, got {self.attempts!r}.",
                "attempts counts the first try: 2 retries means attempts=3")
        require(self.per_try_ms > 0, f"per_try_ms must be above 0, got {self.per_try_ms!r}.",
                "e.g. per_try_ms=1000 for a 1 s timeout on each try")
        require(self.total_ms is None or self.total_ms > 0,
                f"total_ms must be None or above 0, got {self.total_ms!r}.",
                "e.g. total_ms=2000, or None for no overall deadline")
        require(self.backoff_ms >= 0, f"backoff_ms must be 0 or more, got {self.backoff_ms!r}.")

    def tries_ms(self) -> float:
        """Time for every attempt to time out, with the waits between them."""
        return self.attempts * self.per_try_ms + (self.attempts - 1) * self.backoff_ms

    def worst_case_ms(self) -> float:
        """The longest a caller can wait: min(total, attempts × per-try + backoffs)."""
        if self.total_ms is None:
            return self.tries_ms()
        return min(self.total_ms, self.tries_ms())

    def attempts_started(self) -> int:
        """How many attempts begin before the deadline when every try times out."""
        started = 0
        for k in range(self.attempts):
            begins = k * (self.per_try_ms + self.backoff_ms)
            if self.total_ms is not None and begins >= self.total_ms:
                break
            started += 1
        return started

    async def call(self, session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
        """Call ``url`` under this policy; returns ``status`` (0 = gave up), ``ms`` (model),
        ``attempts`` (how many tries started)."""
        start, tries = time.perf_counter(), [0]
        status = 0
        try:
            async with asyncio.timeout(to_wall(self.total_ms / 1000) if self.total_ms else None):
                status = await self._tries(session, url, tries)
        except TimeoutError:
            status = 0
        ms = to_model(time.perf_counter() - start) * 1000
        return {"status": status, "ms": ms, "attempts": tries[0]}

    async def _tries(self, session: aiohttp.ClientSession, url: str, tries: list[int]) -> int:
        per_try = aiohttp.ClientTimeout(total=to_wall(self.per_try_ms / 1000))
        status = 0
        for k in range(self.attempts):
            if k:
                await asyncio.sleep(to_wall(self.backoff_ms / 1000))
            tries[0] += 1
            status = (await fetch(session, url, per_try))["status"]
            if status == 200:
                break
        return status

    def describe(self) -> str:
        """One line, the way a gateway's configuration would say it."""
        total = "no total deadline" if self.total_ms is None else f"total {self.total_ms:g} ms"
        return (f"{total}, {self.attempts} attempts of at most {self.per_try_ms:g} ms, "
                f"{self.backoff_ms:g} ms between tries: worst case {self.worst_case_ms():g} ms")


def measure(lab: Lab, policy: GatewayPolicy, target: Service, callers: int = 5) -> list[dict]:
    """``callers`` concurrent calls to ``target`` under ``policy``; one result each."""
    require(isinstance(callers, int) and callers >= 1,
            f"callers must be a whole number of 1 or more, got {callers!r}.")

    async def all_calls() -> list[dict]:
        return list(await asyncio.gather(*(policy.call(lab.session, target.url)
                                            for _ in range(callers))))

    wall = to_wall(policy.worst_case_ms() / 1000)
    return lab.run(all_calls(), timeout=wall + 30)


class GatewayExperiment(Experiment):
    """A payment service that hangs on every request, called under a policy.

    Its dashboard has sliders for the policy; Run calls the hung service 5 times at once.
    ``press_run(total_ms=2000, attempts=3, per_try_ms=1000, backoff_ms=100)`` moves the
    sliders first (``total_ms=0``: no deadline).
    """

    TITLE = "A gateway policy against a hung dependency"
    BUTTON = "Call the hung service"

    def __init__(self, lab: Lab, name: str = "payments", hang_ms: float = 10_000) -> None:
        from labsupport.runtime.faults import Faults

        self.lab = lab
        self.hung = lab.service(name, 0, faults=Faults(hang_rate=1.0, hang_ms=hang_ms))
        self.policy = GatewayPolicy()
        self.results: list[dict] = []

    def run(self, policy: GatewayPolicy, callers: int = 5) -> list[dict]:
        """``callers`` concurrent calls under ``policy``; ``hung.received`` counts attempts."""
        self.policy = policy
        self.hung.reset_counts()
        self.results = measure(self.lab, policy, self.hung, callers)
        return self.results

    def median_ms(self) -> float:
        from labsupport.runtime.metrics import percentile

        return percentile(self.waits_ms(), 50)

    def waits_ms(self) -> list[float]:
        """How long each caller of the last run waited (model ms)."""
        return [r["ms"] for r in self.results]

    def attempts_per_call(self) -> float:
        """Attempts that reached the hung service, per call (counted by the service)."""
        return self.hung.received / len(self.results) if self.results else float("nan")

    def summary(self) -> str:
        if not self.results:
            return "press Run"
        return (f"{self.policy.describe()}; measured median {self.median_ms():.0f} ms, "
                f"{self.attempts_per_call():g} attempts per call reached {self.hung.name}")

    def draw(self, ax: Any) -> None:
        from labsupport.kit.dashboard import PALETTE

        ax.bar(["computed worst case", "measured (median)"],
               [self.policy.worst_case_ms(), self.median_ms() if self.results else 0],
               color=[PALETTE[1], PALETTE[0]])
        ax.set_ylabel("model ms until the caller gets an answer")

    def make_controls(self) -> dict[str, Any]:
        import ipywidgets as w

        return {
            "total_ms": w.IntSlider(2000, 0, 4000, 250, description="total ms"),
            "attempts": w.IntSlider(3, 1, 5, description="attempts"),
            "per_try_ms": w.IntSlider(1000, 250, 2000, 250, description="per try ms"),
            "backoff_ms": w.IntSlider(100, 0, 500, 50, description="backoff ms"),
        }

    def run_controls(self, total_ms: int, attempts: int, per_try_ms: int,
                     backoff_ms: int) -> list[dict]:
        """Call the hung service 5 times at once under the policy the sliders say
        (``total_ms=0``: no deadline); returns one result per call."""
        policy = GatewayPolicy(total_ms or None, attempts, per_try_ms, backoff_ms)
        return self.show(self.run(policy))

    def through_breaker(self, policy: GatewayPolicy, breaker: Any, calls: int = 4) -> list[float]:
        """``calls`` calls one after another, each under ``policy`` inside ``breaker.call``;
        returns what each cost the caller (model ms). A refused call costs ~0 ms."""
        from labsupport.lessons.m04_circuit_breakers.breakers import BreakerOpen

        require(isinstance(calls, int) and calls >= 1, f"calls must be 1 or more, got {calls!r}.")

        async def one() -> float:
            start = time.perf_counter()

            async def attempt() -> dict[str, Any]:
                result = await policy.call(self.lab.session, self.hung.url)
                if result["status"] != 200:
                    raise ConnectionError(f"{self.hung.name} gave no answer in time")
                return result

            with contextlib.suppress(BreakerOpen, ConnectionError):
                await breaker.call(attempt)
            return to_model(time.perf_counter() - start) * 1000

        async def in_turn() -> list[float]:
            return [await one() for _ in range(calls)]

        self.policy = policy
        self.hung.reset_counts()
        wall = to_wall(policy.worst_case_ms() / 1000) * calls
        return self.lab.run(in_turn(), timeout=wall + 30)
