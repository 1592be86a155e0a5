"""uvicorn serving an ASGI app in a thread of the test process, on a loopback socket bound
before the thread starts.

Binding here, not in uvicorn, means the port is ours from the first moment (no other process
can take it between choosing and listening) and uvicorn resolves no address: uvloop resolves
even "127.0.0.1" through libuv's thread pool, which every uvloop loop of the process shares.
A receiver once waited over 30 s to listen in a CI run while the process's other loops were
busy; if a server still does not start, the error shows where its thread stands."""

from __future__ import annotations

import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

START_SECONDS = 30  # generous: the machine is shared


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)  # connections wait in the backlog until the loop accepts them
    sock.set_inheritable(False)
    return sock


def _where_it_stands(thread: threading.Thread) -> str:
    frame = sys._current_frames().get(thread.ident or -1)
    if frame is None:
        return "(no frame: the thread is not running Python code)"
    return "".join(traceback.format_stack(frame))


@contextmanager
def serving(app: Any, *, lifespan: str = "off", stop_seconds: float = 15,
            **config: Any) -> Iterator[int]:
    """Yields the port once uvicorn serves `app` on it; stops the server on exit."""
    sock = bound_socket()
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan=lifespan, **config,
    ))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name=f"uvicorn-{port}")
    thread.start()
    deadline = time.monotonic() + START_SECONDS
    try:
        while not server.started:
            if not thread.is_alive():  # uvicorn logged why on stderr
                raise RuntimeError(f"server on port {port}: its thread ended before serving")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"server on port {port}: not serving after {START_SECONDS} s; its thread:\n"
                    + _where_it_stands(thread))
            time.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=stop_seconds)
        sock.close()
