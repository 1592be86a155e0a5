"""Small process and port helpers shared by the stack's parts (and the tests)."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from typing import Any

# Ports are handed out below the kernel's ephemeral range, never from it. A port from `bind(0)`
# is free when asked, but once let go the kernel may give it to anyone: to another process's
# `bind(0)` or to any outgoing connection's local end. A CI run lost that race twice at once: a
# `task-api serve --port` found its port taken by the other test pass's webhook receiver, and
# its readiness probe then reached that receiver. Below the range only this function hands ports
# out; PORT_BLOCK (0, 1, ...; scripts/test.sh gives each parallel pass its own) splits that
# space between processes that run at the same time, and one process never gets a port twice.
_BLOCK_SIZE = 4_000
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _block() -> range:
    index = int(os.environ.get("PORT_BLOCK", "0") or 0)
    top = _ephemeral_low() - index * _BLOCK_SIZE
    return range(max(top - _BLOCK_SIZE, 1_024), top)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback TCP port nobody listens on, that this process was not given before."""
    block = _block()
    if len(block) >= 100:
        start = random.randrange(len(block))
        for offset in range(len(block)):
            port = block[(start + offset) % len(block)]
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    with socket.socket() as sock:  # no room below the range (or all taken): the kernel's
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(process: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def wait_for_port(port: int, process: subprocess.Popen[Any], what: str, timeout: float,
                  log: str = "") -> None:
    """Until 127.0.0.1:port accepts a connection; fails when the process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}") from None
            time.sleep(0.05)
