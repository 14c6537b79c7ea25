"""The test harness itself (root conftest.py): how the suite talks to its kernels."""
from __future__ import annotations

import pytest


@pytest.mark.services
def test_test_kernels_run_without_a_heartbeat_thread():
    """A kernel started in a test process answers, and its client has no heartbeat thread
    (the thread that once blocked nbval's teardown beside a CPU hog)."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3", startup_timeout=60)
    try:
        reply = client.execute_interactive("x = 6 * 7", timeout=30)
        assert reply["content"]["status"] == "ok"
        assert client.is_alive()
        assert not client.hb_channel.is_alive()
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
