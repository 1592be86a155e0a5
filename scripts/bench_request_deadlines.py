"""What the request deadlines and the connection bound cost a request: uvicorn's own protocol
against impl/platform/slow_clients.py's, in one run, on an app that does nothing (a 200 with a
small JSON body), so the protocol's share of each request is as large as it can be; the API's
handlers (a database round trip, JSON, auth) only make it smaller.

    .venv/bin/python scripts/bench_request_deadlines.py [--seconds 5] [--rounds 3]

Each server is one process (one core at most); wrk (Debian's) drives it, keep-alive
connections (-c16, the per-request cost) and then a new connection per request (Connection:
close, the per-connection cost: the waiting list and the head timer), alternating stock and
limited, round after round. Prints the median requests/s of each and the ratio limited/stock.
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


def wrk(port: int, seconds: float, connections: int, script: Path | None) -> float:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run([*command, f"http://127.0.0.1:{port}/"], capture_output=True,
                         text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} failed responses:\n{out}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert found, out
    return float(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
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
            results: dict[str, dict[str, list[float]]] = {m: {k: [] for k in ports} for m in modes}
            for kind, port in ports.items():  # warm-up
                wrk(port, 1, 16, None)
            for round_number in range(args.rounds):
                for mode, (connections, script) in modes.items():
                    order = list(ports) if round_number % 2 == 0 else list(reversed(ports))
                    for kind in order:
                        results[mode][kind].append(wrk(ports[kind], args.seconds, connections,
                                                       script))
        load = os.getloadavg()[0]
        print(f"uvicorn protocol, stock vs limited (impl/platform/slow_clients.py); wrk -t1, "
              f"{args.rounds} x {args.seconds:g} s each, alternating; load average {load:.2f}")
        print("| requests | stock req/s | limited req/s | ratio |")
        print("|---|---:|---:|---:|")
        for mode, by_kind in results.items():
            stock = statistics.median(by_kind["stock"])
            limited = statistics.median(by_kind["limited"])
            print(f"| {mode} | {stock:,.0f} | {limited:,.0f} | {limited / stock:.2f} |")
    finally:
        for server in servers.values():
            stop(server, timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
