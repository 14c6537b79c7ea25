"""The Kafka container: ``infra/docker-compose.yml`` (apache/kafka, KRaft, one node).

Used by ``broker up`` when a Docker engine answers. Its host listener is
``127.0.0.1:9092``.
"""
from __future__ import annotations

import shutil
import subprocess

from labsupport.broker import net, state
from labsupport.runtime.errors import LabError
from labsupport.runtime.settings import course_root

ADDRESS = "127.0.0.1:9092"


def compose_file() -> str:
    """Path of the course's compose file."""
    return str(course_root() / "infra" / "docker-compose.yml")


def docker_answers(timeout: float = 5.0) -> bool:
    """True when a Docker engine answers ``docker info`` within ``timeout`` seconds."""
    if not shutil.which("docker"):
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=timeout)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return done.returncode == 0


def start(ready_timeout: float = 90.0) -> state.BrokerRecord:
    """``docker compose up`` the Kafka container, wait for it, and record it."""
    _compose("up", "-d", "--wait", timeout=ready_timeout + 60)
    if not net.wait_until_answers(ADDRESS, ready_timeout):
        raise LabError(
            f"The Kafka container started but nothing answers at {ADDRESS}.",
            "see `docker compose -f infra/docker-compose.yml logs kafka`",
        )
    record = state.BrokerRecord(ADDRESS, "container")
    state.write(record)
    return record


def stop() -> None:
    """``docker compose down`` the Kafka container (its data goes with it)."""
    _compose("down", "--volumes", timeout=120)


def _compose(*args: str, timeout: float) -> None:
    cmd = ["docker", "compose", "-f", compose_file(), *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LabError(f"`{' '.join(cmd)}` took longer than {timeout:.0f} s.",
                       "check `docker compose ps`; or use the embedded broker: "
                       "LAB_BROKER=embedded make lab") from None
    if done.returncode != 0:
        raise LabError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-400:]}",
                       "check Docker, or use the embedded broker: LAB_BROKER=embedded make lab")
