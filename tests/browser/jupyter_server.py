"""Start and stop a throwaway JupyterLab server for the browser tests.

The server runs from the repository's venv in its own process group, with
fresh temporary settings/workspaces/runtime/config/data directories, so it
never picks up (or writes) a developer's personal Jupyter state. Autosave is
switched off through a user-settings override, so running a notebook in the
browser cannot write outputs back into the repository.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# User-settings overrides written into the temporary settings dir.
# Keys are "<plugin package>/<plugin name>.jupyterlab-settings".
SETTINGS_OVERRIDES: dict[str, dict] = {
    # Never write notebooks back to disk behind the test's back.
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    # Attach every cell to the DOM (the default "contentVisibility"/"full"
    # windowing may leave off-screen cells unrendered, which breaks DOM checks).
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    # No "get Jupyter news?" toast, no update check (no network in CI).
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JupyterServer:
    """A JupyterLab subprocess; use :meth:`start` and (always) :meth:`stop`."""

    def __init__(
        self,
        root_dir: Path,
        log_path: Path,
        *,
        startup_timeout: float = 60.0,
        jupyter: Path | None = None,
    ) -> None:
        self.root_dir = Path(root_dir).resolve()
        self.log_path = Path(log_path)
        self.startup_timeout = startup_timeout
        self.jupyter = jupyter or REPO_ROOT / ".venv" / "bin" / "jupyter"
        self.port = free_port()
        self.token = secrets.token_hex(24)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="latency-lab-browser-"))
        self._log_file = None

    # -- helpers ---------------------------------------------------------------
    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}/{path.lstrip('/')}{sep}token={self.token}"

    def api(self, path: str, method: str = "GET", timeout: float = 5.0) -> object:
        """JSON from ``/api/<path>`` (sessions, kernels, ...)."""
        return self.request_json(f"api/{path.lstrip('/')}", method, timeout)

    def request_json(self, path: str, method: str = "GET", timeout: float = 5.0) -> object:
        req = urllib.request.Request(self.url(path), method=method)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def shutdown_kernels(self) -> None:
        """Delete all sessions (shuts their kernels down: stops simulated services)."""
        try:
            sessions = self.api("sessions")
            for session in sessions:  # type: ignore[union-attr]
                self.api(f"sessions/{session['id']}", method="DELETE", timeout=30)
        except (OSError, urllib.error.URLError, ValueError):
            pass

    # -- lifecycle -------------------------------------------------------------
    def _prepare_dirs(self) -> dict[str, Path]:
        dirs = {
            name: self._tmp / name
            for name in ("settings", "workspaces", "runtime", "config", "data")
        }
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        for rel, content in SETTINGS_OVERRIDES.items():
            target = dirs["settings"] / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(content, indent=2))
        return dirs

    def start(self) -> JupyterServer:
        if not self.jupyter.exists():
            raise RuntimeError(f"{self.jupyter} not found: create the venv first")
        dirs = self._prepare_dirs()
        cmd = [
            str(self.jupyter),
            "lab",
            "--no-browser",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            f"--ServerApp.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.port_retries=0",
            f"--LabApp.user_settings_dir={dirs['settings']}",
            f"--LabApp.workspaces_dir={dirs['workspaces']}",
            # window.jupyterapp: lets the test read cell models next to their DOM.
            "--LabApp.expose_app_in_browser=True",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        env = dict(os.environ)
        env.update(
            LAB_TIME_SCALE=os.environ.get("LAB_TIME_SCALE", "0.2"),
            JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
            JUPYTER_CONFIG_DIR=str(dirs["config"]),
            JUPYTER_DATA_DIR=str(dirs["data"]),
            JUPYTER_PLATFORM_DIRS="1",
            PYTHONUNBUFFERED="1",
        )
        env.pop("JUPYTER_TOKEN", None)
        # labsupport dashboards print text only when LAB_HEADLESS is set (nbval
        # runs); the browser test is precisely about the drawn widgets.
        env.pop("LAB_HEADLESS", None)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "w")  # closed in stop()
        self._log_file.write("$ " + " ".join(cmd).replace(self.token, "<token>") + "\n")
        self._log_file.flush()
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.root_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        status_url = self.url("api/status")
        last_error: object = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"jupyter lab exited with code {self.proc.returncode}; "
                    f"log ({self.log_path}):\n{self.log_text()[-4000:]}"
                )
            try:
                with urllib.request.urlopen(status_url, timeout=2) as resp:
                    if resp.status == 200:
                        return
                    last_error = f"HTTP {resp.status}"
            except (OSError, urllib.error.URLError) as exc:
                last_error = exc
            time.sleep(0.25)
        raise RuntimeError(
            f"jupyter lab did not answer /api/status within {self.startup_timeout:.0f} s "
            f"(last error: {last_error}); log ({self.log_path}):\n{self.log_text()[-4000:]}"
        )

    def stop(self) -> None:
        """Terminate the server's process group (SIGTERM, then SIGKILL) and clean up."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            self.shutdown_kernels()
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=10)
        if proc is not None:
            # Stragglers left in the group after the leader exited.
            _signal_group(proc, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> JupyterServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        if sys.platform == "win32":  # pragma: no cover - not supported by the course
            proc.send_signal(sig)
        else:
            os.killpg(proc.pid, sig)  # start_new_session: pgid == pid
    except (ProcessLookupError, PermissionError):
        pass
