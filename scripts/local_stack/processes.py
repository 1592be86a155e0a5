"""Small process and port helpers shared by the stack's parts (and the tests)."""

from __future__ import annotations

import fcntl
import os
import random
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

# Ports are handed out below the kernel's ephemeral range, never from it. A port from `bind(0)`
# is free when asked, but once let go the kernel may give it to anyone: to another process's
# `bind(0)` or to any outgoing connection's local end. A CI run lost that race twice at once: a
# `task-api serve --port` found its port taken by the other test pass's webhook receiver, and
# its readiness probe then reached that receiver. Below the range only this function hands ports
# out; PORT_BLOCK (0, 1, ...; scripts/test.sh gives each parallel pass its own) splits that
# space between processes that run at the same time, and one process never gets a port twice.
# Within a block, processes of one pass (pytest and the recipes it starts, which call this too)
# tell each other what they handed out: a shared list of "port pid" lines, read and rewritten
# under an exclusive lock, where a port counts as taken while its process lives (so no entry goes
# stale, and no file descriptor is held per port). Checking that nobody listens was not enough:
# a CI run's deploy recipe chose the port pytest had just handed to a server still starting, and
# HAProxy could not bind it.
_BLOCK_SIZE = 4_000
_handed_out: set[int] = set()
_REGISTRY = Path(tempfile.gettempdir()) / "task-api-ports.txt"


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _live(lines: str) -> list[tuple[int, int]]:
    """The registry's (port, pid) entries whose process still runs."""
    live = []
    for line in lines.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
            port, pid = int(fields[0]), int(fields[1])
            if _alive(pid):
                live.append((port, pid))
    return live


def _first_free(block: range, taken: set[int]) -> int | None:
    start = random.randrange(len(block))
    for offset in range(len(block)):
        port = block[(start + offset) % len(block)]
        if port not in taken and _bindable(port):
            return port
    return None


def free_port() -> int:
    """A loopback TCP port nobody listens on, that neither this process nor another running one
    that uses this function was given before."""
    block = _block()
    if len(block) >= 100:
        try:
            registry = open(_REGISTRY, "a+")  # noqa: SIM115 (closed below, lock with it)
        except OSError:  # another user's file: only this process's own ports are known
            registry = None
        if registry is None:
            port = _first_free(block, _handed_out)
        else:
            with registry:
                fcntl.flock(registry, fcntl.LOCK_EX)  # released when the file closes
                registry.seek(0)
                live = _live(registry.read())
                taken = _handed_out | {given for given, pid in live if pid != os.getpid()}
                port = _first_free(block, taken)
                if port is not None:
                    live.append((port, os.getpid()))
                    registry.seek(0)
                    registry.truncate()  # only live entries are kept: it stays short
                    registry.write("".join(f"{given} {pid}\n" for given, pid in live))
        if port is not None:
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
