"""How `task-api serve` runs uvicorn: as uvicorn.run does, with one change to its shutdown."""

from __future__ import annotations

import asyncio
import select
import socket

import uvicorn
from uvicorn.supervisors import multiprocess

# At most this long after SIGTERM, connections already waiting to be accepted are still served.
DRAIN_SECONDS = 1.0
STARTUP_FAILURE = 3  # uvicorn's exit status when the app cannot start


class DrainingServer(uvicorn.Server):
    """On SIGTERM uvicorn closes its listening sockets at once, and the kernel resets every
    connection still waiting in their accept queues: requests that clients had already sent. This
    server first serves that queue (bounded by DRAIN_SECONDS), then shuts down as uvicorn does:
    in-flight requests finish, idle connections close, new connections are refused."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        while loop.time() < deadline and self._connections_waiting():
            await asyncio.sleep(0.01)
        # Let the connections accepted last deliver the request they carry.
        await asyncio.sleep(0.05)
        await super().shutdown(sockets)

    def _connections_waiting(self) -> bool:
        listeners = [sock.fileno() for server in self.servers for sock in server.sockets]
        if not listeners:
            return False
        readable, _, _ = select.select(listeners, [], [], 0)
        return bool(readable)


def run(config: uvicorn.Config) -> None:
    """uvicorn.run(), for a Config, with a DrainingServer in every worker."""
    if config.workers > 1:
        # uvicorn's multi-process supervisor builds each worker's server itself, from this name.
        multiprocess.Server = DrainingServer  # type: ignore[attr-defined]
        multiprocess.Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    config.load_app()
    server = DrainingServer(config)
    server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)
