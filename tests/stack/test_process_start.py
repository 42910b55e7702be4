"""Starting the local stack's processes: ports no other process can take from under us, and a
process that dies at start says why (its log), instead of only an exit code."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from integration.infra.embedded_redis import free_port
from stack.processes import Stack


def ephemeral_range() -> range:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


def test_a_chosen_port_is_free_and_outside_the_kernels_ephemeral_range():
    # The kernel hands ephemeral ports to outgoing connections and to bind(0): one of those could
    # take our port between the choice and the server's bind (it happened in CI: a sandbox exited 1).
    ports = {free_port() for _ in range(50)}
    assert not ports & set(ephemeral_range())
    for port in list(ports)[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_process_that_dies_at_start_is_reported_with_its_log(tmp_path):
    stack = Stack(tmp_path)
    (tmp_path / "logs").mkdir()
    stack.ports["loop"] = free_port()
    stack._spawn("loop", [sys.executable, "-c", "import sys; print('OSError: [Errno 98] Address already in use'); sys.exit(1)"])
    with pytest.raises(RuntimeError) as raised:
        stack._wait_serving("loop", "/_sim/clock")
    assert "loop did not start" in str(raised.value)
    assert "Address already in use" in str(raised.value)
