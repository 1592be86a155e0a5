"""HAProxy (Debian's package, scripts/ensure_debian_package.sh haproxy haproxy) in front of the
replicas, on a free loopback port, with a generated configuration:

- health checks: GET /api/ready every CHECK_INTERVAL_MS; FALL failures take a replica out, RISE
  successes put it back (a stopping replica answers 503 while it still serves, impl/platform/hand_over.py);
- safe retries: a request whose connection could not be made (nothing was sent) is retried on
  another replica (`option redispatch 1`); one the replica may have received and dropped
  (`empty-response`, `response-timeout`) is retried only when a replay cannot do harm: GET,
  HEAD, OPTIONS, PUT and DELETE (idempotent in HTTP), and a POST with an Idempotency-Key (the
  API stores the key with the task, so a replay returns the same task). A PATCH or a POST
  without a key is never sent twice. `option http-buffer-request` has HAProxy read the whole body
  before it picks a replica, so a replayable request that a crashed replica dropped mid-way is
  replayed (measured: without it, POSTs with a key in flight on a SIGKILLed replica failed;
  with it, none). A request must fit HAProxy's 16 KiB buffer to be replayed: a task the
  contract accepts is under 4 KiB.

Live streams (`GET /api/tasks/events`, Server-Sent Events) have a backend of their own
(`streams`: the same replicas, tracking the health checks above; a server timeout above the
heartbeat, no 200 ms hold on each event, least connections): config() says why, and
docs/deploying-streams.md.

Slow clients (docs/slow-clients.md): a request must arrive within `timeout http-request` (the
replicas' REQUEST_HEAD_TIMEOUT_SECONDS), one source address holds at most PER_SOURCE_CONNECTIONS
connections at once (more are closed as they come), and `maxconn` is what the frontend holds in
all: MAX_CONNECTIONS, or fewer when HAProxy's descriptor limit holds fewer.

The stats socket (`show stat`) says which replicas are UP and counts connection errors, retries
and redispatches per replica; only errors and retried requests are logged (dontlog-normal).
"""

from __future__ import annotations

import csv
import math
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from scripts.local_stack.processes import free_port, stop

CHECK_INTERVAL_MS = 250
FALL = 2
RISE = 2
EVENTS_PATH = "/api/tasks/events"
# A stream's longest allowed silence, in heartbeats: a busy replica may send one late.
STREAM_SILENT_HEARTBEATS = 3
# Client connections HAProxy holds at once (global and frontend), at most: it needs two
# descriptors a connection (the client's and the replica's), and refuses to start when its
# descriptor limit cannot hold maxconn, so maxconn() fits it to the limit it will have. Was
# 4096: 5,000 slow connections filled it and 6 of 10 normal requests timed out in the
# kernel's queue behind them.
MAX_CONNECTIONS = 20_000
DESCRIPTORS_BESIDES_CONNECTIONS = 200  # listeners, health checks, the stats socket, logs
# Connections one source address may hold at once: many people behind one NAT fit, one host
# cannot fill `maxconn` (5,000 slow connections from one address then hold 500 slots, for at
# most `timeout http-request` each).
PER_SOURCE_CONNECTIONS = 500


def maxconn() -> int:
    """MAX_CONNECTIONS, or what the descriptor limit HAProxy inherits (it cannot raise the
    hard one in a container without CAP_SYS_RESOURCE) holds."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, (hard - DESCRIPTORS_BESIDES_CONNECTIONS) // 2))


def config(port: int, servers: Sequence[tuple[str, int]], directory: Path,
           heartbeat_seconds: float = 15.0, request_timeout_seconds: float = 10.0) -> str:
    """HAProxy's configuration; `heartbeat_seconds`: the replicas' SYNC_HEARTBEAT_SECONDS;
    `request_timeout_seconds`: their REQUEST_HEAD_TIMEOUT_SECONDS."""
    stream_timeout_ms = math.ceil(STREAM_SILENT_HEARTBEATS * heartbeat_seconds * 1000)
    request_timeout_ms = math.ceil(request_timeout_seconds * 1000)
    connections = maxconn()
    lines = [
        "global",
        f"    maxconn {connections}",
        f"    stats socket {directory / 'haproxy.sock'} mode 600 level admin",
        "    log stdout format raw local0 info",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option dontlog-normal",
        "    timeout connect 2s",
        "    timeout client 60s",
        # The whole request (head, and the body: http-buffer-request below) within this of the
        # connection or of the previous response, as the replicas require (a slow client gets
        # a 408 here, never reaching them); responses (event streams) are not bound by it.
        f"    timeout http-request {request_timeout_ms}ms",
        # Above the API's own bounds (a query 10 s, a pooled connection 5 s).
        "    timeout server 30s",
        "    timeout http-keep-alive 10s",
        "    timeout check 2s",
        "    retries 3",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response response-timeout",
        "",
        "frontend api",
        f"    bind 127.0.0.1:{port}",
        f"    maxconn {connections}",
        # Open connections per source address, counted as they are accepted; over the limit a
        # connection is closed at once, before HAProxy reads or allocates anything for it.
        "    stick-table type ip size 1m expire 60s store conn_cur",
        "    tcp-request connection track-sc0 src",
        f"    tcp-request connection reject if {{ sc0_conn_cur gt {PER_SOURCE_CONNECTIONS} }}",
        f"    use_backend streams if {{ path {EVENTS_PATH} }} METH_GET",
        "    default_backend replicas",
        "",
        "backend replicas",
        "    balance roundrobin",
        "    option http-buffer-request",
        "    option httpchk GET /api/ready",
        "    http-check expect status 200",
        f"    default-server check inter {CHECK_INTERVAL_MS}ms fall {FALL} rise {RISE}",
        "    acl replay_safe method GET HEAD OPTIONS PUT DELETE",
        "    acl replay_safe req.hdr(idempotency-key) -m found",
        "    http-request disable-l7-retry unless replay_safe",
        *(f"    server {name} 127.0.0.1:{server_port}" for name, server_port in servers),
        "",
        # Each setting measured with HAProxy 2.6.12 (Debian 12) in front of a server sending
        # a chunk every few seconds (docs/deploying-streams.md):
        "backend streams",
        # HAProxy 2.6 proxies an event stream as an ordinary response, not a tunnel: `timeout
        # tunnel` never applies (a stream was still cut at `timeout server` with one set).
        # `timeout server` is the longest silence allowed from the replica mid-response: it
        # must be above SYNC_HEARTBEAT_SECONDS (the comment line an idle stream gets), else
        # every idle stream is cut at it. `timeout client` does not cut a response being sent
        # (a silent client outlived a 2 s client timeout).
        f"    timeout server {stream_timeout_ms}ms",
        # Otherwise HAProxy sends each chunk with MSG_MORE (more is coming) and the kernel
        # holds it up to 200 ms: every event and heartbeat arrived 200 ms late; with it, at once.
        "    option http-no-delay",
        # Streams last: round robin counts requests, leastconn open connections, so a new
        # stream goes to the replica holding fewest (after a rolling restart, the one started
        # last holds none).
        "    balance leastconn",
        # The same replicas, up and down with the health checks of `replicas` (no second set).
        *(f"    server {name} 127.0.0.1:{server_port} track replicas/{name}"
          for name, server_port in servers),
    ]
    return "\n".join(lines) + "\n"


@dataclass
class HAProxy:
    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        path = self.directory / "haproxy.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def command(self, line: str) -> str:
        """One command on the stats socket, its answer."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.directory / "haproxy.sock"))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """`show stat` of the backend's servers: name -> column -> value (status, econ,
        eresp, wretr, wredis, stot, hrsp_5xx, lastchg...)."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(text.splitlines())
        return {row["svname"]: row for row in rows
                if row["pxname"] == "replicas" and row["svname"] != "BACKEND"}

    def wait_status(self, name: str, status: str, timeout: float) -> float:
        """Until the server's status starts with `status` (UP, DOWN); returns the seconds
        waited."""
        began = time.monotonic()
        while True:
            current = self.servers()[name]["status"]
            if current.split()[0] == status:
                return time.monotonic() - began
            if time.monotonic() - began > timeout:
                raise TimeoutError(f"haproxy: {name} is {current!r}, not {status} after "
                                   f"{timeout} s")
            time.sleep(0.02)


def binary() -> str:
    for candidate in ("haproxy", "/usr/sbin/haproxy"):
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError("haproxy is not installed: run scripts/ensure_debian_package.sh "
                       "haproxy haproxy")


def _wait_for_stats(haproxy: HAProxy, timeout: float) -> None:
    """Until the stats socket answers (the listeners are bound before it)."""
    deadline = time.monotonic() + timeout
    while True:
        if haproxy.process.poll() is not None:
            raise RuntimeError(f"haproxy exited with {haproxy.process.returncode}:\n"
                               f"{haproxy.log}")
        try:
            haproxy.servers()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start:\n{haproxy.log}") from None
            time.sleep(0.05)


@contextmanager
def running_haproxy(servers: Sequence[tuple[str, int]], port: int | None = None,
                    heartbeat_seconds: float = 15.0,
                    request_timeout_seconds: float = 10.0) -> Iterator[HAProxy]:
    """HAProxy in the foreground (-db) on a free loopback port (or `port`), in front of
    `servers` (name, port on 127.0.0.1) whose streams send a heartbeat this often."""
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="task-api-haproxy-") as tmp:
        directory = Path(tmp)
        cfg = directory / "haproxy.cfg"
        cfg.write_text(config(port, servers, directory, heartbeat_seconds,
                              request_timeout_seconds))
        check = subprocess.run([binary(), "-c", "-q", "-f", str(cfg)], capture_output=True,
                               text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused its configuration:\n{check.stderr}")
        with (directory / "haproxy.log").open("wb") as log:
            process = subprocess.Popen(
                [binary(), "-db", "-f", str(cfg)], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        haproxy = HAProxy(process, port, directory)
        try:
            _wait_for_stats(haproxy, timeout=15)
            yield haproxy
        finally:
            stop(process, timeout=10)
