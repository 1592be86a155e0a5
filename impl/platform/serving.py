"""How `task-api serve` runs uvicorn: as uvicorn.run does, with a hand-over and a drain before
its shutdown."""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import time

import uvicorn
from uvicorn.supervisors import multiprocess

from impl.platform.hand_over import HandOver
from impl.platform.slow_clients import LimitedConfig, fit_to_descriptors

log = logging.getLogger("task_api.serving")

# At most this long after SIGTERM, connections already waiting to be accepted are still served.
DRAIN_SECONDS = 1.0
# After the ready grace, the listener closes once no request (probes aside) came for this long,
# and at the latest this long after the grace.
QUIET_SECONDS = 0.5
QUIET_WAIT_MAX_SECONDS = 5.0
STARTUP_FAILURE = 3  # uvicorn's exit status when the app cannot start


class DrainingServer(uvicorn.Server):
    """On SIGTERM uvicorn closes its listening sockets at once, and the kernel resets every
    connection still waiting in their accept queues: requests that clients had already sent. This
    server first serves that queue (bounded by DRAIN_SECONDS), then shuts down as uvicorn does:
    in-flight requests finish, idle connections close, new connections are refused.

    With a ready grace (SHUTDOWN_READY_GRACE_SECONDS), a hand-over comes first: for that long
    the listener stays open, /api/ready answers 503 and responses close their connections
    (impl/platform/hand_over.py); then it waits until no request but the probes came for QUIET_SECONDS
    (the load balancer has stopped sending here), at most QUIET_WAIT_MAX_SECONDS more."""

    def __init__(self, config: uvicorn.Config, ready_grace: float = 0.0) -> None:
        super().__init__(config)
        self.ready_grace = ready_grace
        self.hand_over: HandOver | None = None

    async def _serve(self, sockets: list[socket.socket] | None = None) -> None:
        if not self.config.loaded:
            self.config.load()
        self.hand_over = HandOver(self.config.loaded_app)
        self.config.loaded_app = self.hand_over
        await super()._serve(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.hand_over is not None and self.ready_grace > 0:
            await self._hand_over(self.hand_over)
        if self.hand_over is not None:
            # Event streams end now (with a retry hint): uvicorn would otherwise wait for them.
            self.hand_over.close_streams()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        while loop.time() < deadline and self._connections_waiting():
            await asyncio.sleep(0.01)
        # Let the connections accepted last deliver the request they carry.
        await asyncio.sleep(0.05)
        await super().shutdown(sockets)

    async def _hand_over(self, hand_over: HandOver) -> None:
        hand_over.begin()
        began = time.monotonic()
        log.info("stopping: /api/ready answers 503, listener open for at least %.1f s",
                 self.ready_grace)
        while not self.force_exit:  # a second Ctrl-C cuts it short
            now = time.monotonic()
            if now - began >= self.ready_grace and (
                now - hand_over.last_request >= QUIET_SECONDS
                or now - began >= self.ready_grace + QUIET_WAIT_MAX_SECONDS
            ):
                break
            await asyncio.sleep(0.02)
        log.info("stopping: closing the listener %.2f s into the hand-over, last request "
                 "%.2f s ago", time.monotonic() - began, time.monotonic() - hand_over.last_request)

    def _connections_waiting(self) -> bool:
        listeners = [sock.fileno() for server in self.servers for sock in server.sockets]
        if not listeners:
            return False
        readable, _, _ = select.select(listeners, [], [], 0)
        return bool(readable)


class DrainingProcess(multiprocess.Process):
    """A worker of uvicorn's multi-process supervisor that serves with a DrainingServer.

    The supervisor starts workers with multiprocessing's "spawn": each worker imports afresh
    and unpickles this object, so it builds its server from this class (found by name, which
    imports this module in the worker), never from a name patched in the parent."""

    ready_grace = 0.0  # set in the parent before the supervisor builds its workers

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        self.worker_ready_grace = DrainingProcess.ready_grace  # pickled with the worker
        super().__init__(config, sockets)

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = DrainingServer(self.config, self.worker_ready_grace)
        return self._server


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: a port left in TIME_WAIT by a server just stopped is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_taken(host: str, port: int) -> str | None:
    """None when host:port can be listened on; else one line saying it is taken and naming a
    free port to choose instead. Checked before anything starts: a server that prints its
    token and URL for a port it then cannot bind ([Errno 98]) has misled its user."""
    if _bindable(host, port):
        return None
    free = next((p for p in range(port + 1, min(port + 100, 65536)) if _bindable(host, p)), None)
    instead = f", e.g. --port {free}" if free else ""
    return f"port {port} on {host} is taken by another program: choose another with --port{instead}"


def run(config: uvicorn.Config, ready_grace: float = 0.0) -> None:
    """uvicorn.run(), for a Config, with a DrainingServer in every worker."""
    if isinstance(config, LimitedConfig):
        config.limits = fit_to_descriptors(config.limits)
    if config.workers > 1:
        # The supervisor builds each worker from the name `Process` of its module.
        DrainingProcess.ready_grace = ready_grace
        multiprocess.Process = DrainingProcess  # type: ignore[misc]
        multiprocess.Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    config.load_app()
    server = DrainingServer(config, ready_grace)
    server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)
