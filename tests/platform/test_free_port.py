"""free_port (scripts/local_stack/processes.py), which every test server's port comes from: below
the kernel's ephemeral range (where no bind(0) and no outgoing connection can take it), never
the same port twice in a process, never a port another running process was given, and disjoint
blocks for processes that run at the same time (scripts/test.sh: PORT_BLOCK per pass)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from scripts.local_stack import processes


def test_ports_come_from_below_the_ephemeral_range_and_never_twice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT_BLOCK", "0")
    low = processes._ephemeral_low()
    ports = [processes.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(low - processes._BLOCK_SIZE <= port < low for port in ports)


def test_the_passes_blocks_do_not_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT_BLOCK", "0")
    first = set(processes._block())
    monkeypatch.setenv("PORT_BLOCK", "1")
    second = set(processes._block())
    assert first and second and not first & second
    assert all(port < processes._ephemeral_low() for port in second)
    assert processes.free_port() in second


def test_a_port_someone_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT_BLOCK", "2")
    block = processes._block()
    with socket.socket() as taken:
        for index, candidate in enumerate(block):  # another program listening in the block
            try:
                taken.bind(("127.0.0.1", candidate))
                break
            except OSError:
                continue
        taken.listen()
        monkeypatch.setattr(processes.random, "randrange", lambda _n: index)  # start there
        port = processes.free_port()
        assert port != candidate and port in block
        with socket.socket() as sock:  # the port handed out is really free
            sock.bind(("127.0.0.1", port))


def test_a_port_another_process_was_given_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """As pytest and the deploy recipe it starts: both take ports from the same block. The other
    process holds its port without listening on it yet (a server still starting)."""
    monkeypatch.setenv("PORT_BLOCK", "3")
    program = ("import sys; from scripts.local_stack import processes; "
               "print(processes.free_port(), flush=True); sys.stdin.read()")
    other = subprocess.Popen(
        [sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env={**os.environ, "PORT_BLOCK": "3"},
    )
    try:
        assert other.stdout is not None
        given = int(other.stdout.readline())
        start = processes._block().index(given)
        monkeypatch.setattr(processes.random, "randrange", lambda _n: start)  # start there
        port = processes.free_port()
        assert port != given and port in processes._block()
    finally:
        assert other.stdin is not None
        other.stdin.close()
        other.wait(timeout=10)
    # Once the other process has exited, its port can be handed out again.
    monkeypatch.setattr(processes.random, "randrange", lambda _n: start)
    assert processes.free_port() == given
