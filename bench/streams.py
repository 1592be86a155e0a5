"""Many open live streams (GET /api/tasks/events) and the time from a commit to each event:
the client side of scripts/bench_sync.py, run as its own process so that reading 1,000 streams
does not share an event loop (or a CPU's time slice) with the writer.

    python -m bench.streams CONFIG.json   # {"host", "port", "streams": [[user, bearer, since]],
                                          #  "out": path, "concurrency": n}

Opens every stream (at most `concurrency` openings at a time), prints `ready` once each has
sent its first `up-to-date`, then records when each `changes` event arrives: for every task in
it (id, version), for every tombstone (id, -1), the CLOCK_MONOTONIC time at which its bytes
were read (the same clock in every process of the machine). On SIGTERM or a line on stdin it
writes them to `out` as JSON, one list per stream, and prints `done`.

An HTTP/1.1 client on raw asyncio streams (chunked transfer encoding, as uvicorn sends a
streaming response), so that the client's cost per event is a few tens of microseconds.
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

Arrival = tuple[str, int, float]  # task id, version (-1: deleted), monotonic seconds


def parse_events(buffer: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
    """The complete SSE messages at the start of `buffer` as (event name, data), and the rest
    (an incomplete message). Comments and `retry:` lines have no event name: skipped."""
    events: list[tuple[str, bytes]] = []
    while True:
        end = buffer.find(b"\n\n")
        if end < 0:
            return events, buffer
        message, buffer = buffer[:end], buffer[end + 2:]
        name, data = "", b""
        for line in message.split(b"\n"):
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                data = line[6:]
        if name:
            events.append((name, data))


def arrivals_of(data: bytes, moment: float) -> list[Arrival]:
    """What a `changes` event delivers, stamped with when it arrived."""
    body = json.loads(data)
    return ([(task["id"], int(task["version"]), moment) for task in body["tasks"]]
            + [(gone["id"], -1, moment) for gone in body["deleted"]])


class Stream:
    def __init__(self, host: str, port: int, bearer: str, since: str | None) -> None:
        self.host, self.port, self.bearer, self.since = host, port, bearer, since
        self.arrivals: list[Arrival] = []
        self.ready = asyncio.Event()
        self.failed: str | None = None

    async def run(self) -> None:
        path = "/api/tasks/events" + (f"?since={self.since}" if self.since else "")
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            writer.write((f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: "
                          f"text/event-stream\r\nAuthorization: Bearer {self.bearer}\r\n\r\n"
                          ).encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head[:60].decode(errors="replace"))
            buffer = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await reader.readexactly(size + 2)
                moment = time.monotonic()
                if size == 0:
                    raise RuntimeError("the stream ended")
                events, buffer = parse_events(buffer + chunk[:-2])
                for name, data in events:
                    if name == "changes":
                        self.arrivals += arrivals_of(data, moment)
                    elif name == "up-to-date":
                        self.ready.set()
        except Exception as error:  # noqa: BLE001 - reported, the run goes on
            self.failed = f"{type(error).__name__}: {error}"
            self.ready.set()


async def _main(config: dict[str, Any]) -> None:
    host, port = config["host"], config["port"]
    streams = [Stream(host, port, bearer, since) for _user, bearer, since in config["streams"]]
    gate = asyncio.Semaphore(config.get("concurrency", 20))
    tasks = []

    async def opened(stream: Stream) -> None:
        async with gate:
            tasks.append(asyncio.create_task(stream.run()))
            await stream.ready.wait()

    await asyncio.gather(*(opened(stream) for stream in streams))
    failed = [stream.failed for stream in streams if stream.failed]
    print(f"ready {len(streams) - len(failed)} {len(failed)} {failed[:3]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), stop.set)
    await stop.wait()
    Path(config["out"]).write_text(json.dumps({
        "arrivals": [stream.arrivals for stream in streams],
        "failed": [stream.failed for stream in streams],
    }))
    print("done", flush=True)
    for task in tasks:
        task.cancel()


Write = tuple[str, str, int, float]  # user, task id, version, monotonic seconds after commit


def latencies(writes: list[Write], users: list[str],
              arrivals: list[list[Arrival]]) -> tuple[list[float], int]:
    """The time (s) from each write to the first event that brings it (its version, or a later
    one: two quick writes of one task may come in one event) on every stream of its user
    (`users[i]`: the user of the stream whose arrivals are `arrivals[i]`), and how many of
    those (write, stream) pairs never came."""
    streams_of: dict[str, list[int]] = {}
    for index, user in enumerate(users):
        streams_of.setdefault(user, []).append(index)
    firsts: list[dict[str, list[tuple[int, float]]]] = []
    for stream in arrivals:
        seen: dict[str, list[tuple[int, float]]] = {}
        for task_id, version, moment in stream:
            seen.setdefault(task_id, []).append((version, moment))
        firsts.append(seen)
    found, missing = [], 0
    for user, task_id, version, committed in writes:
        for index in streams_of.get(user, []):
            moments = [moment for got, moment in firsts[index].get(task_id, [])
                       if got >= version and moment >= committed - 1.0]
            if moments:
                found.append(min(moments) - committed)
            else:
                missing += 1
    return found, missing


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": statistics.median(values),
            "p99": percentile(values, 0.99), "max": max(values)}


if __name__ == "__main__":
    with open(sys.argv[1]) as source:
        asyncio.run(_main(json.load(source)))
