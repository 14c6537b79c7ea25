"""Small files under ``.lab/`` that kernels and the command line share: which broker and
which cache server the lab started, read and written atomically, and a lock so that two
kernels starting at once never start two servers.
"""
from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from labsupport.runtime.settings import state_dir


def read_json(name: str) -> Any:
    """The JSON kept in ``.lab/<name>``, or ``None`` when there is none (or it is unreadable)."""
    try:
        return json.loads((state_dir() / name).read_text())
    except (OSError, ValueError):
        return None


def write_json(name: str, data: Any) -> None:
    """Keep ``data`` in ``.lab/<name>`` atomically: a reader never sees half a file."""
    path = state_dir() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def remove(name: str) -> None:
    """Forget ``.lab/<name>``."""
    (state_dir() / name).unlink(missing_ok=True)


@contextmanager
def locked(name: str) -> Iterator[None]:
    """Hold the lock ``.lab/<name>.lock`` (other processes wait) for the ``with`` block."""
    state_dir().mkdir(parents=True, exist_ok=True)
    with open(state_dir() / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
