"""Benchmarks of the lab itself: ``make bench`` writes ``BENCHMARKS.md``.

Everything is measured side by side in one run on the current machine:

* the harness: a 0 ms service's p50/p99 and requests per second, next to a bare
  aiohttp server answering the same client;
* the broker: produce acknowledgement and produce→consume latency, consumer-group
  join time (the embedded broker, and the Kafka container when it answers);
* the course: ``make test`` wall time, each notebook's Run All time at real time
  scale, and a cold ``make lab`` (fresh clone to JupyterLab answering).

Each figure is compared with the course's target; a missed target is reported
as missed, with the reason we know of.
"""
from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from labsupport.course import stage_times
from labsupport.course.checks import plain
from labsupport.runtime import settings
from labsupport.runtime.metrics import Recorder, percentile
from labsupport.runtime.settings import course_root


@dataclass
class Figure:
    """One measured figure and its target (``None`` when there is no target)."""

    what: str
    value: float
    unit: str
    target: float | None = None
    higher_is_better: bool = False
    why_missed: str = ""
    failed: str = ""
    """What went wrong when the measured thing itself failed (then the target is missed)."""

    @property
    def met(self) -> bool | None:
        """True/False against the target; None when there is none."""
        if self.failed:
            return False
        if self.target is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def row(self) -> str:
        """A Markdown table row: what, measured, target, verdict."""
        sign = "≥" if self.higher_is_better else "≤"
        target = "" if self.target is None else f"{sign} {_num(self.target)} {self.unit}"
        missed = f"**failed**: {self.failed}" if self.failed else f"**missed**: {self.why_missed}"
        verdict = {None: "", True: "met", False: missed}[self.met]
        return f"| {self.what} | {_num(self.value)} {self.unit} | {target} | {verdict} |"


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}".rstrip("0").rstrip(".")


@dataclass
class Section:
    """A group of figures with a sentence on how they were measured."""

    title: str
    how: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ----- the harness ---------------------------------------------------------------------------
async def _bare_handler(request: web.Request) -> web.Response:
    return web.json_response({"service": "bare", "outcome": "ok"})


async def _start_bare() -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/", _bare_handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    return runner, f"http://127.0.0.1:{sock.getsockname()[1]}/"


def _throughput(lab: Any, url: str, users: int, requests: int) -> float:
    from labsupport.runtime import load

    recorder = Recorder("throughput")
    start = time.perf_counter()
    lab.run(load.closed_loop(lab.session, url, users, requests, recorder, 10_000, None))
    return requests / (time.perf_counter() - start)


def harness(requests: int = 2000, users: int = 20) -> Section:
    """A 0 ms service's latency and throughput, and a bare aiohttp server's throughput."""
    from labsupport.runtime.lab import Lab

    saved = settings.time_scale_override()
    settings.set_time_scale(1.0)
    lab = Lab(seed=0)
    try:
        svc = lab.service("zero")
        lab.closed_loop(svc, 5, 200, progress=False)  # warm up connections
        single = lab.closed_loop(svc, 1, requests, progress=False)
        runner, bare_url = lab.run(_start_bare())
        try:
            _throughput(lab, bare_url, users, 200)
            bare = max(_throughput(lab, bare_url, users, requests) for _ in range(2))
            ours = max(_throughput(lab, svc.url, users, requests) for _ in range(2))
        finally:
            lab.run(runner.cleanup())
    finally:
        lab.close()
        settings.set_time_scale(saved)
    why = ("each lab request also draws its fate from the fault model, takes a worker from "
           "the pool and counts itself; the bare server returns a constant")
    return Section("Harness overhead", f"A 0 ms service, one user, {requests} requests in a "
                   f"row; throughput with {users} concurrent users against the lab's service and "
                   "a bare aiohttp server on the same event loop and client (best of 2).", [
                       Figure("0 ms service p50", single.percentile(50), "ms", 1.0,
                              why_missed="the machine is busy or slow"),
                       Figure("0 ms service p99", single.percentile(99), "ms", 5.0,
                              why_missed="the machine is busy or slow"),
                       Figure("lab service throughput", ours, "req/s"),
                       Figure("bare aiohttp throughput", bare, "req/s"),
                       Figure("lab ÷ bare throughput", ours / bare, "×", 0.8, True, why),
                   ])


# ----- the broker ------------------------------------------------------------------------------
def _bootstraps() -> dict[str, str]:
    from labsupport import broker
    from labsupport.broker import container, net

    found = {}
    record = broker.ensure()
    found[{"env": "KAFKA_BOOTSTRAP_SERVERS"}.get(record.kind, record.kind)] = record.bootstrap
    if record.bootstrap != container.ADDRESS and net.answers(container.ADDRESS, timeout=1.0):
        found["container"] = container.ADDRESS
    return found


def _produce_latencies(bootstrap: str, topic: str, n: int) -> tuple[list[float], list[float]]:
    """Produce ``n`` messages one at a time; ack ms and produce→consume ms for each."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from labsupport.broker import clients

    producer = Producer(clients.producer_config(bootstrap, linger_ms=0, batch_num_messages=1))
    consumer = Consumer(clients.consumer_config(bootstrap, f"bench-{uuid.uuid4().hex[:6]}",
                                                enable_auto_commit=False))
    acks, trips = [], []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        for i in range(n):
            start = time.perf_counter()
            producer.produce(topic, str(i).encode())
            producer.flush(10)
            acks.append((time.perf_counter() - start) * 1000)
            _await_message(consumer, str(i).encode(), start + 10)
            trips.append((time.perf_counter() - start) * 1000)
    finally:
        consumer.close()
    return acks, trips


def _await_message(consumer: Any, value: bytes, deadline: float) -> None:
    while time.perf_counter() < deadline:
        msg = consumer.poll(0.05)
        if msg is not None and not msg.error() and msg.value() == value:
            return
    raise TimeoutError("a produced message did not come back within 10 s")


def _join_ms(bootstrap: str, topic: str) -> float:
    """Time from subscribe() to the first partition assignment, course settings."""
    from confluent_kafka import Consumer

    from labsupport.broker import clients

    assigned: list[float] = []
    consumer = Consumer(clients.consumer_config(bootstrap, f"bench-join-{uuid.uuid4().hex[:6]}"))
    start = time.perf_counter()
    consumer.subscribe([topic], on_assign=lambda c, p: assigned.append(time.perf_counter()))
    try:
        while not assigned and time.perf_counter() - start < 60:
            consumer.poll(0.05)
    finally:
        consumer.close()
    return (assigned[0] - start) * 1000 if assigned else float("inf")


def broker_latency(messages: int = 200, joins: int = 3) -> Section:
    """Produce-ack, produce→consume and group-join times on every broker that answers."""
    from labsupport import broker

    started = not broker.status()[1] and not os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    try:
        figures = _broker_figures(messages, joins)
    finally:
        if started:
            broker.down()  # leave the machine as we found it
    return Section("Broker", f"{messages} messages of a few bytes produced one at a time "
                   "(linger.ms=0, flush after each) and read back by an assigned consumer with "
                   "the course's settings (fetch.wait.max.ms=15); group joins with "
                   "session.timeout.ms=2000.", figures)


def _broker_figures(messages: int, joins: int) -> list[Figure]:
    from labsupport import broker

    figures: list[Figure] = []
    for kind, bootstrap in _bootstraps().items():
        topic = broker.create_topic(f"bench.{uuid.uuid4().hex[:6]}")
        try:
            _produce_latencies(bootstrap, topic, 10)  # warm up: metadata, connections
            acks, trips = _produce_latencies(bootstrap, topic, messages)
            join = sorted(_join_ms(bootstrap, topic) for _ in range(joins))[joins // 2]
        finally:
            broker.delete_topic(topic)
        figures += [Figure(f"{kind}: produce ack p50", percentile(acks, 50), "ms"),
                    Figure(f"{kind}: produce ack p99", percentile(acks, 99), "ms"),
                    Figure(f"{kind}: produce→consume p50", percentile(trips, 50), "ms"),
                    Figure(f"{kind}: produce→consume p99", percentile(trips, 99), "ms"),
                    Figure(f"{kind}: consumer-group join (median of {joins})", join, "ms")]
    return figures


# ----- the course ------------------------------------------------------------------------------
TEST_TARGET_S = 480.0
"""`make test` from a fresh clone, package caches warm: at most 8 minutes."""


def make_test_time(root: Path | None = None) -> Section:
    """Wall time of the full test suite (``tests/run_all.sh``) and of each of its stages
    against the stage's budget, dependencies installed."""
    root = root or course_root()
    times = root / "tests" / "artifacts" / "stage_times.tsv"
    times.unlink(missing_ok=True)
    start = time.perf_counter()
    done = subprocess.run(["bash", "tests/run_all.sh"], cwd=root, capture_output=True, text=True,
                          env=_clean_env())
    seconds = time.perf_counter() - start
    figures = [Figure("`make test` wall time (after set-up)", seconds, "s", TEST_TARGET_S,
                      why_missed="see the stages below")]
    stages = stage_times.read(times) if times.is_file() else []
    figures += [Figure(f"stage: {s.name}", s.seconds, "s", s.budget, why_missed="over budget")
                for s in stages]
    notes = [] if done.returncode == 0 else [
        f"`make test` FAILED (exit {done.returncode}); its last lines:\n\n```\n"
        + "\n".join(done.stdout.splitlines()[-15:]) + "\n```"]
    return Section("Test suite", "`bash tests/run_all.sh` (what `make test` runs once "
                   "`.venv` exists): ruff; one pytest run over two workers (unit tests, "
                   "checkers, every notebook and solution under nbval with each cell twice); the "
                   "browser test.", figures, notes)


def _clean_env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("LAB_TIME_SCALE", "LAB_STRICT", "PYTEST"))}
    return {**keep, **extra}


def notebook_times(pattern: str = "notebooks/*.ipynb", root: Path | None = None) -> Section:
    """Run All time of each notebook at real time scale (``LAB_TIME_SCALE=1``), fresh kernel."""
    root = root or course_root()
    figures = []
    for path in sorted(root.glob(pattern)):
        seconds, error = _run_notebook(path)
        figures.append(Figure(f"{path.parent.name}/{path.name}", seconds, "s", 90.0,
                              why_missed="its experiments run for longer than the target",
                              failed=error))
    return Section("Notebooks at real time", "Each notebook run top to bottom in a new kernel "
                   "(nbclient) with `LAB_TIME_SCALE=1` and `LAB_STRICT=1`.", figures)


def _run_notebook(path: Path) -> tuple[float, str]:
    """Seconds to run ``path`` in a new kernel, and the error that stopped it ("" if none)."""
    code = ("import nbformat, sys\nfrom nbclient import NotebookClient\n"
            "nb = nbformat.read(sys.argv[1], as_version=4)\n"
            "NotebookClient(nb, timeout=600, kernel_name='python3',"
            " resources={'metadata': {'path': sys.argv[2]}}).execute()\n")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, str(path), str(path.parent)],
                          env=_clean_env(LAB_TIME_SCALE="1", LAB_STRICT="1", LAB_HEADLESS="1"),
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode == 0:
        return seconds, ""
    lines = [line.strip() for line in plain(done.stderr).splitlines()]
    return seconds, next((line[:300] for line in reversed(lines) if line), "no message")


def cold_lab_time(root: Path | None = None, limit: float = 900.0) -> Section:
    """A fresh clone's ``make lab``: seconds until JupyterLab answers (pip cache as it is)."""
    root = root or course_root()
    with tempfile.TemporaryDirectory(prefix="latency-lab-cold-") as tmp:
        clone = Path(tmp) / "course"
        subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
        port = _free_port()
        seconds = _time_make_lab(clone, port, limit)
    figure = Figure("cold `make lab` to JupyterLab ready", seconds, "s")
    return Section("Cold start", "`git clone` of this checkout, then `make lab` (creates "
                   ".venv, installs the pinned packages from the pip cache, starts the broker "
                   "and JupyterLab) until JupyterLab's API answers.", [figure])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _time_make_lab(clone: Path, port: int, limit: float) -> float:
    args = f"LAB_ARGS=--no-browser --port {port} --ServerApp.port_retries=0"
    start = time.perf_counter()
    proc = subprocess.Popen(["make", "lab", args], cwd=clone, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env=_clean_env(LAB_BROKER="embedded"))
    try:
        return _wait_for_http(f"http://127.0.0.1:{port}/api", start, limit, proc.poll)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        for server in ("broker", "cache"):  # make lab starts both
            subprocess.run([str(clone / ".venv/bin/python"), "-m", "labsupport", server, "down"],
                           cwd=clone, capture_output=True)


def _wait_for_http(url: str, start: float, limit: float, exited: Callable[[], Any]) -> float:
    while time.perf_counter() - start < limit:
        if exited() is not None:
            raise RuntimeError("`make lab` stopped before JupyterLab answered")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return time.perf_counter() - start
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer within {limit:.0f} s")


# ----- the report --------------------------------------------------------------------------------
def machine() -> str:
    """One line about this machine: CPUs, processor, OS, Python."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def render(sections: list[Section], when: str, commit: str) -> str:
    """The Markdown of BENCHMARKS.md."""
    figures = [f for s in sections for f in s.figures if f.target is not None]
    missed = [f for f in figures if f.met is False]
    lines = ["# Benchmarks", "",
             "Written by `make bench` (`python -m labsupport bench`). Re-run it on your machine; "
             "every figure below comes from one run.", "",
             f"* Measured: {when}, commit `{commit}`", f"* Machine: {machine()}",
             f"* Targets met: {len(figures) - len(missed)} of {len(figures)}"
             + (f"; missed: {', '.join(f.what for f in missed)}" if missed else ""), ""]
    for section in sections:
        lines += [f"## {section.title}", "", section.how, "",
                  "| figure | measured | target | verdict |", "|---|---|---|---|"]
        lines += [f.row() for f in section.figures] + [""]
        lines += [note + "\n" for note in section.notes]
    return "\n".join(lines).rstrip() + "\n"


STEPS: dict[str, Callable[[], Section]] = {
    "harness": harness, "broker": broker_latency, "test": make_test_time,
    "notebooks": notebook_times, "cold": cold_lab_time,
}


def run(skip: tuple[str, ...] = (), output: Path | None = None,
        say: Callable[[str], Any] = print) -> Path:
    """Run every step not in ``skip`` and write the report (``BENCHMARKS.md`` by default)."""
    from labsupport import broker
    from labsupport.runtime import cache_server

    had_broker = broker.status()[1] or bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    had_cache = cache_server.status()[1] or bool(os.environ.get("LAB_CACHE_URL"))
    sections = []
    try:
        for name, step in STEPS.items():
            if name in skip:
                continue
            say(f"bench: {name}...")
            start = time.perf_counter()
            sections.append(step())
            say(f"bench: {name} took {time.perf_counter() - start:.0f} s")
    finally:
        if not had_broker and broker.status()[1]:
            broker.down()  # notebook 00 starts one; leave the machine as we found it
        if not had_cache and cache_server.status()[1]:
            cache_server.down()  # so does the cache server (notebook 00's doctor, 07)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=course_root(),
                            capture_output=True, text=True).stdout.strip() or "unknown"
    when = time.strftime("%Y-%m-%d %H:%M %Z")
    path = output or course_root() / "BENCHMARKS.md"
    path.write_text(render(sections, when, commit), encoding="utf-8")
    return path

