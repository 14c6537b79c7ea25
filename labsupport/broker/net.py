"""Small network helpers: free ports and TCP reachability on 127.0.0.1."""
from __future__ import annotations

import socket

from labsupport.runtime.waiting import wait_until


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def split_address(address: str) -> tuple[str, int]:
    """``'host:port'`` to ``('host', port)`` (takes the first of a comma list)."""
    first = address.split(",")[0].strip()
    for prefix in ("PLAINTEXT://", "SSL://", "SASL_SSL://", "SASL_PLAINTEXT://", "tcp://"):
        if first.upper().startswith(prefix.upper()):
            first = first[len(prefix):]
    host, _, port = first.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def answers(address: str, timeout: float = 1.0) -> bool:
    """True when something accepts a TCP connection at ``address``."""
    try:
        host, port = split_address(address)
    except ValueError:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until_answers(address: str, timeout: float) -> bool:
    """Poll ``address`` until it accepts a connection or ``timeout`` seconds pass."""
    return wait_until(lambda: answers(address, timeout=0.2), timeout)
