"""Module 03 experiments: retry policies, backoff and jitter, amplification through layers.

A *policy* says how long a client waits before each retry. All times are model
milliseconds (see :mod:`labsupport.runtime.settings`); ``retry`` counts retries from 1, so
"3 retries" is 4 attempts. The five policies of the lesson::

    NoRetry()                       give up after the first failure
    Fixed(base_ms)                  always wait base_ms
    Exponential(base_ms, cap_ms)    min(cap, base * 2 ** (retry - 1)), no randomness
    FullJitter(base_ms, cap_ms)     uniform(0, that exponential window)
    Decorrelated(base_ms, cap_ms)   min(cap, uniform(base, 3 * previous delay))

The last three are the ones of the AWS Architecture Blog post "Exponential Backoff
and Jitter" (Marc Brooker, 2015). The retry storm and the retry budget live in
:mod:`labsupport.lessons.m03_retries_and_backoff.retry_storm`.
"""
from __future__ import annotations

import asyncio
import math
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from labsupport.kit.claims import Claim, expect_at_least
from labsupport.kit.dashboard import PALETTE, LiveView
from labsupport.kit.evidence import ratio
from labsupport.kit.experiment import Experiment
from labsupport.lessons.m04_circuit_breakers.gateway import GatewayPolicy
from labsupport.runtime import settings
from labsupport.runtime.errors import require
from labsupport.runtime.lab import Lab
from labsupport.runtime.services import CallResult, Guard, Service, fetch
from labsupport.runtime.settings import to_model, to_wall


# ----- backoff policies --------------------------------------------------------------------
def exponential_ms(retry: int, base_ms: float, cap_ms: float) -> float:
    """The exponential window before retry number ``retry`` (1 = first retry), capped.

    >>> [exponential_ms(r, 100, 1000) for r in (1, 2, 3, 4, 5)]
    [100, 200, 400, 800, 1000]
    """
    require(isinstance(retry, int) and retry >= 1,
            f"retry counts retries from 1, got {retry!r}.", "the first retry is retry=1")
    if retry - 1 > math.log2(max(cap_ms, 1e-9) / max(base_ms, 1e-9)) + 1:
        return cap_ms  # far past the cap: never compute 2 ** 5000
    return min(cap_ms, base_ms * 2 ** (retry - 1))


@dataclass(frozen=True)
class Policy:
    """How long to wait before each retry. ``delays(rng)`` yields the waits, in model ms.

    ``retries`` is False for a policy that never retries.
    """

    base_ms: float = 20.0
    cap_ms: float = 1000.0
    name: str = "policy"
    retries: bool = True

    def __post_init__(self) -> None:
        require(self.base_ms >= 0, f"base_ms must be 0 or more, got {self.base_ms}.")
        require(self.cap_ms >= self.base_ms,
                f"cap_ms ({self.cap_ms}) must be at least base_ms ({self.base_ms}).",
                "the cap is the longest wait, e.g. base_ms=20, cap_ms=1000")

    def delay_ms(self, retry: int, previous_ms: float, rng: random.Random) -> float:
        """The wait before retry ``retry``; ``previous_ms`` was the wait before the last one."""
        raise NotImplementedError

    def delays(self, rng: random.Random) -> Iterator[float]:
        """The waits before retry 1, 2, 3, ... for one client (draws from ``rng``)."""
        previous, retry = self.base_ms, 1
        while self.retries:
            previous = self.delay_ms(retry, previous, rng)
            yield previous
            retry += 1

    def schedule(self, retries: int, seed: int | str = 0) -> list[float]:
        """The first ``retries`` waits of one client with a seeded generator."""
        gen = self.delays(random.Random(f"schedule:{seed}"))
        return [next(gen) for _ in range(retries)] if self.retries else []


@dataclass(frozen=True)
class NoRetry(Policy):
    """Try once; a failure is final."""

    name: str = "no retry"
    retries: bool = False


@dataclass(frozen=True)
class Fixed(Policy):
    """Always wait ``base_ms``: every client that failed together retries together."""

    name: str = "fixed"

    def delay_ms(self, retry: int, previous_ms: float, rng: random.Random) -> float:
        return self.base_ms


@dataclass(frozen=True)
class Exponential(Policy):
    """Double the wait each retry, up to ``cap_ms``; no randomness ("no jitter")."""

    name: str = "exponential"

    def delay_ms(self, retry: int, previous_ms: float, rng: random.Random) -> float:
        return exponential_ms(retry, self.base_ms, self.cap_ms)


@dataclass(frozen=True)
class FullJitter(Policy):
    """Wait a uniform random time between 0 and the capped exponential window."""

    name: str = "full jitter"

    def delay_ms(self, retry: int, previous_ms: float, rng: random.Random) -> float:
        return rng.uniform(0, exponential_ms(retry, self.base_ms, self.cap_ms))


@dataclass(frozen=True)
class Decorrelated(Policy):
    """Wait ``min(cap, uniform(base, 3 * previous wait))``: each wait grows from the last."""

    name: str = "decorrelated"

    def delay_ms(self, retry: int, previous_ms: float, rng: random.Random) -> float:
        return min(self.cap_ms, rng.uniform(self.base_ms, 3 * previous_ms))


def five_policies(base_ms: float = 20, cap_ms: float = 500) -> list[Policy]:
    """The lesson's five policies with the same base and cap."""
    return [NoRetry(base_ms, cap_ms), Fixed(base_ms, cap_ms), Exponential(base_ms, cap_ms),
            FullJitter(base_ms, cap_ms), Decorrelated(base_ms, cap_ms)]


class Custom(Policy):
    """A policy from your own function ``delay(retry, rng) -> ms``, e.g. your full jitter."""

    def __init__(self, delay: Callable[[int, random.Random], float], name: str = "yours") -> None:
        require(callable(delay), f"delay must be a function delay(retry, rng), got {delay!r}.")
        object.__setattr__(self, "delay", delay)
        super().__init__(0.0, math.inf, name, True)

    def delay_ms(self, retry: int, previous_ms: float, rng: random.Random) -> float:
        return float(self.delay(retry, rng))


def retry_guard(attempts: int, policy: Policy | None = None, budget: object | None = None,
                seed: int | str = 0) -> Guard:
    """A service ``guard`` that retries a downstream call: up to ``attempts`` tries in all,
    waiting as ``policy`` says (at once when None), and only while ``budget`` allows.

    ``budget`` is anything with ``on_request()`` (called once per call) and
    ``can_retry() -> bool`` (asked before each retry), e.g.
    :class:`~labsupport.lessons.m03_retries_and_backoff.retry_storm.RetryBudget`. Give the service ``attempts=1``:
    the guard does the retrying.
    """
    require(isinstance(attempts, int) and attempts >= 1,
            f"attempts must be a whole number of at least 1, got {attempts!r}.",
            "attempts counts the first try too: 3 retries means attempts=4")
    rng = random.Random(f"guard:{seed}")

    async def guard(child: Service, call: Callable[[], object]) -> CallResult:
        if budget is not None:
            budget.on_request()  # type: ignore[attr-defined]
        delays = policy.delays(rng) if policy is not None else None
        result: CallResult = await call()  # type: ignore[misc]
        tries = 1
        while result["status"] != 200 and tries < attempts:
            if budget is not None and not budget.can_retry():  # type: ignore[attr-defined]
                break
            if delays is not None:
                await asyncio.sleep(to_wall(next(delays) / 1000))
            result = await call()  # type: ignore[misc]
            tries += 1
        result["attempts"] = tries
        return result

    guard.__name__ = f"retry_guard({attempts} attempts)"
    return guard


def expect_more(name: str, larger: float | Sequence[float], smaller: float | Sequence[float],
                factor: float, meaning: str) -> Claim:
    """Claim an ordering with a margin: ``larger >= factor * smaller``; the measured value
    printed is the ratio ``larger / smaller``.

    Give two lists (one number per run, e.g. the calls of three seeded runs) and the ratio
    is that of their medians, with a bootstrap interval: a few runs that overlap come out
    INCONCLUSIVE instead of passing on the luck of their averages.
    """
    if isinstance(larger, (int, float)) and isinstance(smaller, (int, float)):
        require(smaller > 0 and factor > 0, "smaller and factor must be above 0.")
        return expect_at_least(f"{name} ({larger:,.0f} vs {smaller:,.0f}), ratio",
                               larger / smaller, factor, meaning)
    big = [larger] if isinstance(larger, (int, float)) else list(larger)
    small = [smaller] if isinstance(smaller, (int, float)) else list(smaller)
    require(factor > 0 and small and min(small) > 0,
            "smaller must hold numbers above 0, and factor must be above 0.")
    return expect_at_least(f"{name}, ratio of the medians of {len(big)} and {len(small)} runs",
                           ratio(big, small, q=0.5), factor, meaning)


# ----- experiment 1: policies against a dependency that fails under contention ------------
@dataclass(frozen=True)
class ContentionResult:
    """One policy's run: calls the dependency received, clients served, time to the last."""

    policy: str
    clients: int
    calls: int
    succeeded: int
    completion_ms: float


class ContentionExperiment(Experiment):
    """``clients`` arrive at once at a dependency with few workers and no queue.

    The dependency (``workers`` workers, ``latency`` ms of work each,
    ``queue_limit=0``) answers 503 at once to anyone who would have to wait. Each
    client retries until it gets a 200 (at most ``max_attempts`` tries), waiting as
    its policy says. We count the calls the dependency received (its work) and
    the time until the last client was served (completion).

    Its dashboard has sliders for clients, workers, base and cap; Run tries all five
    policies. ``press_run(clients=24, workers=2, base_ms=20, cap_ms=500)`` moves the
    sliders first.
    """

    TITLE = "Five retry policies, one contended dependency"
    BUTTON = "Run the five policies"

    def __init__(self, lab: Lab, workers: int = 4, latency: float = 100,
                 name: str = "contended") -> None:
        self.lab = lab
        self.dep = lab.service(name, latency, workers=workers, queue_limit=0)
        self.results: list[ContentionResult] = []
        self._future: object | None = None
        self._done = threading.Event()
        self._done.set()

    @property
    def workers(self) -> int:
        return self.dep.pool.capacity

    def ideal_ms(self, clients: int) -> float:
        """The best possible completion: clients served ``workers`` at a time."""
        return math.ceil(clients / self.workers) * self.dep.latency.mean_ms()

    def warm_up(self, clients: int = 24) -> float:
        """Open a connection per client (and measure the lab's overhead, model ms)."""
        return self.lab.overhead_ms(self.dep, requests=clients, users=clients)

    MIN_SCALE = 0.5
    """The smallest time scale a run uses: retries 20 ms apart are 4 ms of wall time at 0.2,
    where a busy machine's own scheduling jitter spreads the no-jitter waves by itself and
    hides the very effect the runs compare (measured: 1.34x the calls at 0.5, 1.15x at 0.2
    beside a second test process)."""

    def run(self, policy: Policy, clients: int = 24, max_attempts: int = 50,
            seed: int | str | None = None) -> ContentionResult:
        """Run ``clients`` clients with ``policy`` (at a time scale of at least
        :attr:`MIN_SCALE`); returns and keeps the result."""
        with settings.scale_at_least(self.MIN_SCALE):
            result = self.lab.run(self._run(policy, clients, max_attempts, seed))
        self.results.append(result)
        return result

    def compare(self, policies: Sequence[Policy] | None = None, clients: int = 24,
                max_attempts: int = 50) -> list[ContentionResult]:
        """Run every policy in turn (the five of the lesson by default)."""
        self.results = []
        for policy in policies or five_policies():
            self.run(policy, clients, max_attempts)
        return list(self.results)

    async def _run(self, policy: Policy, clients: int, max_attempts: int,
                   seed: int | str | None) -> ContentionResult:
        require(isinstance(clients, int) and clients >= 1,
                f"clients must be 1 or more, got {clients!r}.")
        require(isinstance(max_attempts, int) and max_attempts >= 1,
                f"max_attempts must be 1 or more, got {max_attempts!r}.")
        seed = self.lab.seed if seed is None else seed
        self.dep.reset_counts()
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def client(i: int) -> tuple[bool, float]:
            delays = policy.delays(random.Random(f"{seed}:{policy.name}:{i}"))
            for attempt in range(1, max_attempts + 1):
                answer = await fetch(self.lab.session, self.dep.url, None, self.dep.name)
                if answer["status"] == 200:
                    return True, loop.time()
                wait = next(delays, None) if attempt < max_attempts else None
                if wait is None:
                    break
                await asyncio.sleep(to_wall(wait / 1000))
            return False, loop.time()

        outcomes = await asyncio.gather(*(client(i) for i in range(clients)))
        last = max(t for _, t in outcomes)
        return ContentionResult(policy.name, clients, self.dep.received,
                                sum(ok for ok, _ in outcomes),
                                to_model(last - start) * 1000)

    # ----- what the dashboard shows ------------------------------------------------------
    def summary(self) -> str:
        """One line per run: policy, calls, clients served, completion."""
        if not self.results:
            return "no runs yet"
        parts = [f"{r.policy}: {r.calls} calls, {r.succeeded}/{r.clients} served in "
                 f"{r.completion_ms / 1000:.1f} s" for r in self.results]
        return "; ".join(parts)

    def draw(self, ax) -> None:
        """Calls per policy as bars, completion time written on each bar."""
        results = list(self.results)
        names = [r.policy for r in results]
        colors = [PALETTE[i % len(PALETTE)] for i in range(len(results))]
        bars = ax.bar(names, [r.calls for r in results], color=colors)
        for bar, r in zip(bars, results, strict=True):
            ax.annotate(f"{r.completion_ms / 1000:.1f} s", (bar.get_x() + bar.get_width() / 2,
                        bar.get_height()), ha="center", va="bottom", fontsize=8)
        if results:
            ax.axhline(results[0].clients, color=PALETTE[3], linestyle="--", linewidth=1.5,
                       label="one call per client")
            ax.set_ylim(0, max(r.calls for r in results) * 1.18)
            ax.legend(loc="upper right", fontsize=8)
        ax.set_ylabel("calls the dependency received")
        ax.tick_params(axis="x", labelsize=8)

    def make_controls(self) -> dict[str, Any]:
        import ipywidgets as w

        return {
            "clients": w.IntSlider(24, 10, 80, 1, description="clients"),
            "workers": w.IntSlider(self.workers, 1, 10, description="workers"),
            "base_ms": w.IntSlider(20, 5, 200, 5, description="base ms"),
            "cap_ms": w.IntSlider(500, 200, 4000, 100, description="cap ms"),
        }

    def run_controls(self, clients: int, workers: int, base_ms: int, cap_ms: int) -> LiveView:
        """Run the five policies with ``base_ms`` and ``cap_ms``, one after another, for
        ``clients`` clients against ``workers`` workers. The runs go on in the background;
        the plot follows."""
        require(self._done.is_set(), "The five policies are still running.",
                "wait until the summary lists all five, then press Run again")
        self.dep.set(workers=workers)
        self.results = []
        policies = five_policies(base_ms, cap_ms)
        done = self._done = threading.Event()

        async def all_policies() -> None:
            try:
                for policy in policies:
                    self.results.append(await self._run(policy, clients, 50, None))
            finally:
                done.set()

        self._future = self.lab.submit(all_policies())
        return self.board.watch(done.is_set, self.summary)

    def result(self, policy: str) -> ContentionResult:
        """The last result of the policy named ``policy``."""
        for r in reversed(self.results):
            if r.policy == policy:
                return r
        raise LookupError(f"no run of {policy!r} yet")


# ----- experiment 2: amplification through layers -----------------------------------------
@dataclass(frozen=True)
class AmplificationResult:
    """Calls each layer received for one user request; ``bottom`` is the failing one."""

    attempts: int
    layers: int
    everywhere: bool
    received: list[int]

    @property
    def bottom(self) -> int:
        return self.received[-1]

    def theory(self) -> list[int]:
        """attempts^(depth) at every layer when all retry; else 1, then ``attempts`` each."""
        if self.everywhere:
            return [self.attempts ** i for i in range(self.layers + 1)]
        return [1] + [self.attempts] * self.layers


class Amplification(Experiment):
    """``max_layers`` calling services in a chain over a bottom service that is down.

    ``run(attempts, layers, everywhere)`` sends one user request into the top of
    the last ``layers`` callers and counts, with each service's ``received``, how
    many calls reached each layer. Its dashboard has sliders for attempts and layers and
    a toggle for where the retries are; ``press_run(attempts=3, layers=5,
    everywhere=True)`` moves them first and returns the :class:`AmplificationResult`.
    """

    TITLE = "Retries multiply through layers"
    BUTTON = "Send one request"

    def __init__(self, lab: Lab, max_layers: int = 5, prefix: str = "layer") -> None:
        require(isinstance(max_layers, int) and 1 <= max_layers <= 6,
                f"max_layers must be between 1 and 6, got {max_layers!r}.")
        self.lab = lab
        self.services = lab.chain(max_layers + 1, 0, prefix=prefix)
        self.services[-1].set(outage=True)
        self.last: AmplificationResult | None = None

    @property
    def max_layers(self) -> int:
        return len(self.services) - 1

    def run(self, attempts: int = 3, layers: int = 5, everywhere: bool = True
            ) -> AmplificationResult:
        """One request through ``layers`` callers, each trying ``attempts`` times (or
        only the top one when ``everywhere`` is False); counts calls per layer."""
        require(isinstance(layers, int) and 1 <= layers <= self.max_layers,
                f"layers must be between 1 and {self.max_layers}, got {layers!r}.")
        require(isinstance(attempts, int) and 1 <= attempts <= 6,
                f"attempts must be between 1 and 6 here, got {attempts!r}.",
                "6 attempts at 5 layers is already 7,776 calls at the bottom")
        used = self.services[self.max_layers - layers:]
        for i, svc in enumerate(used[:-1]):
            svc.set(attempts=attempts if (everywhere or i == 0) else 1)
        for svc in used:
            svc.reset_counts()
        self.lab.call(used[0])
        self.last = AmplificationResult(attempts, layers, everywhere,
                                        [svc.received for svc in used])
        return self.last

    def summary(self) -> str:
        r = self.last
        if r is None:
            return "no runs yet"
        where = "at every layer" if r.everywhere else "only at the top"
        return (f"{r.layers} calling layers, {r.attempts} attempts {where}: the failing "
                f"bottom received {r.bottom:,} calls for one user request "
                f"(theory {r.theory()[-1]:,}); all layers: {sum(r.received):,} calls")

    def draw(self, ax) -> None:
        r = self.last
        if r is None:
            return
        names = [f"L{i + 1}" for i in range(r.layers)] + ["bottom"]
        ax.bar(names, r.received, color=[PALETTE[0]] * r.layers + [PALETTE[3]],
               label="measured (received)")
        ax.plot(names, r.theory(), "o", color=PALETTE[1], markersize=8, label="theory")
        ax.set_yscale("log")
        ax.set_ylim(0.5, max(max(r.received), 1) * 3)
        ax.set_ylabel("calls received (log scale)")
        ax.legend(loc="upper left", fontsize=8)

    def make_controls(self) -> dict[str, Any]:
        import ipywidgets as w

        return {
            "attempts": w.IntSlider(3, 1, 5, description="attempts"),
            "layers": w.IntSlider(self.max_layers, 1, self.max_layers, description="layers"),
            "everywhere": w.ToggleButtons(options=[("every layer", True), ("top only", False)],
                                          description="retry at"),
        }

    def run_controls(self, attempts: int, layers: int, everywhere: bool
                     ) -> AmplificationResult:
        """:meth:`run` with the controls' ``attempts``, ``layers`` and ``everywhere``."""
        return self.show(self.run(attempts, layers, everywhere))


# ----- experiment 4: the same schedules as tenacity ------------------------------------------
def tenacity_delays_ms(wait: Callable[..., float], retry: int, n: int = 2000,
                       seed: int = 0) -> list[float]:
    """``n`` waits (ms) that the tenacity wait strategy ``wait`` gives before retry ``retry``.

    tenacity counts attempts, not retries: before retry r it has made r attempts,
    so ``attempt_number = r``. It draws from Python's global ``random``, seeded here.
    """
    import tenacity

    require(isinstance(retry, int) and retry >= 1, f"retry counts from 1, got {retry!r}.")
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(),
                                    kwargs={})
    state.attempt_number = retry
    saved = random.getstate()
    random.seed(seed)
    try:
        return [wait(state) * 1000 for _ in range(n)]
    finally:
        random.setstate(saved)


def policy_delays_ms(policy: Policy, retry: int, n: int = 2000, seed: int = 0) -> list[float]:
    """``n`` waits (ms) of ``policy`` before retry ``retry`` (stateless policies only)."""
    rng = random.Random(f"compare:{seed}")
    return [policy.delay_ms(retry, policy.base_ms, rng) for _ in range(n)]


@dataclass(frozen=True)
class WaitStats:
    """Mean, min and max of many waits before one retry, and the window they should fill."""

    retry: int
    window_ms: float
    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, retry: int, window_ms: float, waits: Sequence[float]) -> WaitStats:
        return cls(retry, window_ms, sum(waits) / len(waits), min(waits), max(waits))


def compare_with_tenacity(base_ms: float = 100, cap_ms: float = 2000, retries: int = 8,
                          n: int = 2000, seed: int = 0
                          ) -> tuple[list[WaitStats], list[WaitStats]]:
    """Full jitter here vs ``tenacity.wait_random_exponential`` with the same base and cap:
    statistics of ``n`` waits for each retry 1..``retries``: (ours, tenacity's)."""
    import tenacity

    ours = FullJitter(base_ms, cap_ms)
    theirs = tenacity.wait_random_exponential(multiplier=base_ms / 1000, max=cap_ms / 1000)
    mine, other = [], []
    for r in range(1, retries + 1):
        window = exponential_ms(r, base_ms, cap_ms)
        mine.append(WaitStats.of(r, window, policy_delays_ms(ours, r, n, seed)))
        other.append(WaitStats.of(r, window, tenacity_delays_ms(theirs, r, n, seed)))
    return mine, other


def draw_wait_comparison(ax, ours: Sequence[WaitStats], theirs: Sequence[WaitStats]) -> None:
    """Window (the upper bound), its half (the expected mean), and both measured means."""
    xs = [s.retry for s in ours]
    ax.plot(xs, [s.window_ms for s in ours], color=PALETTE[4], linewidth=2,
            label="window min(cap, base·2^(r-1))")
    ax.plot(xs, [s.window_ms / 2 for s in ours], color=PALETTE[1], linestyle="--",
            label="half the window (expected mean)")
    ax.plot(xs, [s.mean for s in ours], "o", color=PALETTE[0], markersize=8,
            label="mean: labsupport FullJitter")
    ax.plot(xs, [s.mean for s in theirs], "x", color=PALETTE[3], markersize=9, mew=2,
            label="mean: tenacity wait_random_exponential")
    ax.plot(xs, [s.high for s in theirs], "_", color=PALETTE[3], markersize=12, mew=2,
            label="longest tenacity wait")
    ax.set_xlabel("retry number")
    ax.set_ylabel("wait before the retry (ms)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize=7)


ENVOY_BACKOFF_BASE_MS = 25.0
"""Envoy's default retry back-off base interval: each wait is drawn below 25·(2ⁿ−1) ms."""


def istio_policy(timeout_ms: float | None, attempts: int, per_try_ms: float | None = None,
                 retry_on_timeout: bool = False) -> GatewayPolicy:
    """An Istio VirtualService route's ``timeout`` and ``retries`` as a :class:`GatewayPolicy`.

    Istio's ``retries.attempts`` counts **retries** (Envoy's ``num_retries``): up to
    ``1 + attempts`` tries. The route ``timeout`` bounds all of them together, and
    ``perTryTimeout`` each one (``None``: the route timeout). A try that hits its
    ``perTryTimeout`` is retried only when ``retryOn`` names ``5xx``, ``gateway-error`` or
    ``reset`` (``retry_on_timeout=True``); Istio's default ``retryOn`` names none of them,
    so a hung service gets one try. The back-off between tries is the first retry's upper
    bound, 25 ms (Envoy draws it at random).
    """
    require(isinstance(attempts, int) and attempts >= 0,
            f"attempts must be a whole number of 0 or more, got {attempts!r}.",
            "Istio's attempts counts retries: 0 turns retries off")
    require(timeout_ms is not None or per_try_ms is not None,
            "give a route timeout_ms or a per_try_ms: with neither, nothing bounds a try.")
    tries = 1 + attempts if retry_on_timeout else 1
    return GatewayPolicy(total_ms=timeout_ms, attempts=tries,
                         per_try_ms=per_try_ms if per_try_ms is not None else timeout_ms,
                         backoff_ms=ENVOY_BACKOFF_BASE_MS)
