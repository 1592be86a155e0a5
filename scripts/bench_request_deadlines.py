"""What the request deadlines and the connection bound cost a request: uvicorn's own protocol
against impl/platform/slow_clients.py's, in one run, on an app that does nothing (a 200 with a
small JSON body), so the protocol's share of each request is as large as it can be; the API's
handlers (a database round trip, JSON, auth) only make it smaller.

    .venv/bin/python scripts/bench_request_deadlines.py [--seconds 5] [--rounds 3]

Each server is one process (one core at most); wrk (Debian's) drives it, keep-alive
connections (-c16, the per-request cost) and then a new connection per request (Connection:
close, the per-connection cost: the waiting list and the head timer), alternating stock and
limited, round after round. Prints, for each, the median of the server's CPU time per request
(user + system, from /proc: on a machine shared with other work, throughput swings with what
the others do, CPU per request much less) and of requests/s, and the ratios limited/stock.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.local_stack.processes import free_port, stop

BODY = b'{"data":{"status":"ok"},"meta":{}}'
CLOSE_LUA = 'wrk.headers["Connection"] = "close"\n'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})


def serve(kind: str, port: int) -> None:
    import uvicorn

    from impl.platform.slow_clients import LimitedConfig, RequestLimits

    common: dict[str, Any] = {"host": "127.0.0.1", "port": port, "log_level": "warning",
                              "access_log": False, "lifespan": "off", "http": "httptools"}
    if kind == "limited":
        common.pop("http")
        config: uvicorn.Config = LimitedConfig(app, limits=RequestLimits(), **common)
    else:
        config = uvicorn.Config(app, **common)
    uvicorn.Server(config).run()


def wait_listening(port: int) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port: int, seconds: int, connections: int, script: Path | None,
        pid: int) -> tuple[float, float]:
    """Requests/s and the server's CPU microseconds per request."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    if script is not None:
        command += ["-s", str(script)]
    cpu_before = cpu_seconds(pid)
    out = subprocess.run([*command, f"http://127.0.0.1:{port}/"], capture_output=True,
                         text=True, check=True).stdout
    cpu = cpu_seconds(pid) - cpu_before
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} failed responses:\n{out}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    assert rate and total, out
    return float(rate.group(1)), cpu / int(total.group(1)) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=["stock", "limited"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return 0
    ports = {"stock": free_port(), "limited": free_port()}
    servers = {kind: subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port",
                                       str(port)]) for kind, port in ports.items()}
    try:
        for port in ports.values():
            wait_listening(port)
        with tempfile.TemporaryDirectory() as tmp:
            close_script = Path(tmp) / "close.lua"
            close_script.write_text(CLOSE_LUA)
            modes = {"keep-alive, -c16": (16, None), "a connection per request, -c4": (4, close_script)}
            results: dict[str, dict[str, list[tuple[float, float]]]] = {
                m: {k: [] for k in ports} for m in modes}
            for kind, port in ports.items():  # warm-up
                wrk(port, 1, 16, None, servers[kind].pid)
            for round_number in range(args.rounds):
                for mode, (connections, script) in modes.items():
                    order = list(ports) if round_number % 2 == 0 else list(reversed(ports))
                    for kind in order:
                        results[mode][kind].append(wrk(ports[kind], args.seconds, connections,
                                                       script, servers[kind].pid))
        load = os.getloadavg()[0]
        print(f"uvicorn protocol, stock vs limited (impl/platform/slow_clients.py); wrk -t1, "
              f"{args.rounds} x {args.seconds:g} s each, alternating; load average {load:.2f}")
        print("| requests | CPU us/request: stock | limited | ratio | req/s: stock | limited "
              "| ratio |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for mode, by_kind in results.items():
            rate = {k: statistics.median(r for r, _ in v) for k, v in by_kind.items()}
            cpu = {k: statistics.median(c for _, c in v) for k, v in by_kind.items()}
            print(f"| {mode} | {cpu['stock']:.1f} | {cpu['limited']:.1f} | "
                  f"{cpu['limited'] / cpu['stock']:.2f} | {rate['stock']:,.0f} | "
                  f"{rate['limited']:,.0f} | {rate['limited'] / rate['stock']:.2f} |")
    finally:
        for server in servers.values():
            stop(server, timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
