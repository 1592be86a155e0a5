"""Debian's headless Chromium for the browser tests: the flags that cut every host but loopback,
one run with a fresh profile (--dump-dom, --screenshot, --log-net-log), the page's own requests
from the net log, and just enough PNG decoding to check a screenshot. No npm packages and no
Python browser driver. If Chromium is missing, run scripts/ensure_chromium.sh."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

TIMEOUT = 90  # seconds for one Chromium run
VIRTUAL_TIME_BUDGET = "15000"  # ms of page time before the DOM is dumped or the shot taken

BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)
# Nothing but 127.0.0.1: every other name fails to resolve, and anything that would still go
# out is sent to a proxy on the discard port, which refuses it.
NO_NETWORK_FLAGS = (
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1",
)


def find_chromium() -> str:
    """The chromium binary, or the test fails saying how to install it."""
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None
    )
    if found is None:
        pytest.fail(
            "Chromium is not installed: the browser tests need Debian's headless "
            "Chromium. Run scripts/ensure_chromium.sh (scripts/test.sh does) and retry.",
            pytrace=False,
        )
    return found


@dataclass
class Run:
    stdout: str
    seconds: float
    net_log: Path | None = None
    page_requests: list[str] = field(default_factory=list)


def run_chromium(
    chromium: str, url: str, *args: str, cut_network: bool = True, net_log: Path | None = None
) -> Run:
    """One headless Chromium run with a fresh profile. Its stderr is noise (D-Bus, GPU) and is
    only shown when the run fails."""
    with tempfile.TemporaryDirectory(prefix="task-api-chromium-") as profile:
        command = [
            chromium, *BASE_FLAGS, f"--user-data-dir={profile}",
            *(NO_NETWORK_FLAGS if cut_network else ()),
            *((f"--log-net-log={net_log}",) if net_log else ()),
            f"--virtual-time-budget={VIRTUAL_TIME_BUDGET}", *args, url,
        ]
        started = time.monotonic()
        # Its own process group, so that a hung run takes its renderer and GPU children along.
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            pytest.fail(f"Chromium took more than {TIMEOUT}s on {url}: {command}")
        seconds = time.monotonic() - started
    if process.returncode != 0:
        tail = stderr.decode(errors="replace")[-3000:]
        pytest.fail(f"Chromium exited {process.returncode} on {url}: {command}\n{tail}")
    run = Run(stdout.decode(errors="replace"), seconds, net_log)
    if net_log is not None:
        run.page_requests = page_requests(net_log, url)
    return run


def page_requests(net_log: Path, page_url: str) -> list[str]:
    """The URLs the page itself asked for (main frame, scripts, styles, XHR, images), from
    Chromium's net log. The browser's own background requests (update checks, account lookups)
    are left out: they are not made on behalf of the page's site."""
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    parts = urlsplit(page_url)
    site = f"{parts.scheme}://{parts.hostname}"
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if event["type"] != start_job or "url" not in params:
            continue
        key = params.get("network_isolation_key", "")
        if key.split(" ")[0] == site:
            urls.append(params["url"])
    return urls


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def static_server(directory: Path) -> Iterator[str]:
    """The files of `directory` over HTTP on a free loopback port; yields its origin."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Image:
    width: int
    height: int
    channels: int
    rows: list[bytes]

    def has_colour(self, rgb: bytes) -> bool:
        for row in self.rows:
            at = row.find(rgb)
            while at != -1:
                if at % self.channels == 0:
                    return True
                at = row.find(rgb, at + 1)
        return False

    def sample_colours(self, step: int = 7) -> set[bytes]:
        colours = set()
        for row in self.rows[::step]:
            for x in range(0, len(row), self.channels * step):
                colours.add(row[x : x + 3])
        return colours


def decode_png(data: bytes) -> Image:
    """Just enough PNG to read Chromium's screenshots: 8-bit RGB or RGBA, not interlaced."""
    assert data.startswith(PNG_SIGNATURE)
    position, chunks, header = 8, [], b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, (depth, colour_type)
    channels = 3 if colour_type == 2 else 4
    stride = width * channels
    raw = zlib.decompress(b"".join(chunks))
    assert len(raw) == height * (stride + 1), "truncated image data"
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif kind == 2:  # Up
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = previous[i]
                c = previous[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                predictor = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + predictor) & 0xFF
        else:
            assert kind == 0, f"unknown PNG filter {kind}"
        rows.append(bytes(line))
        previous = line
    return Image(width, height, channels, rows)
