"""The docs page in a real browser: Debian's headless Chromium loads /docs from the live server
with the network cut off except for loopback, Swagger UI renders every operation of the
contract, and a screenshot is kept at artifacts/docs.png for CI to publish.

No npm packages and no Python browser driver: Chromium's own --dump-dom, --screenshot and
--log-net-log are enough. If Chromium is missing, run scripts/ensure_chromium.sh."""

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
from dataclasses import dataclass, field
from functools import partial
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CONTRACT = REPO / "openapi.yaml"
SCREENSHOT = REPO / "artifacts" / "docs.png"
WINDOW = (1280, 3000)
TIMEOUT = 90  # seconds for one Chromium run
VIRTUAL_TIME_BUDGET = "15000"  # ms of page time before the DOM is dumped or the shot taken
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
CDN_SCRIPT = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"

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


def _contract_operations() -> list[tuple[str, str, dict[str, object]]]:
    paths = yaml.safe_load(CONTRACT.read_bytes())["paths"]
    return [
        (method.upper(), path, operation)
        for path, item in paths.items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


OPERATIONS = _contract_operations()


# --- Chromium --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> str:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None
    )
    if found is None:
        pytest.fail(
            "Chromium is not installed: the docs browser test needs Debian's headless "
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
    with tempfile.TemporaryDirectory(prefix="docs-chromium-") as profile:
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
        run.page_requests = _page_requests(net_log, url)
    return run


def _page_requests(net_log: Path, page_url: str) -> list[str]:
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


# --- the control: these flags really do cut the network --------------------------------------

CONTROL_PAGE = """<!doctype html>
<html><head><title>network control</title></head><body>
<p id="loopback">PENDING</p><p id="localhost">PENDING</p><p id="cdn">PENDING</p>
<script>function mark(id, value) { document.getElementById(id).textContent = value; }</script>
<script src="http://127.0.0.1:PORT/marker.js"
  onload="mark('loopback', 'LOADED')" onerror="mark('loopback', 'BLOCKED')"></script>
<script src="http://localhost:PORT/marker.js"
  onload="mark('localhost', 'LOADED')" onerror="mark('localhost', 'BLOCKED')"></script>
<script src="CDN"
  onload="mark('cdn', 'LOADED')" onerror="mark('cdn', 'BLOCKED')"></script>
</body></html>
"""


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def control_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A page on a loopback server that loads one script from 127.0.0.1, the same script from
    "localhost" (reachable on any machine, unless the flags cut it) and one from a CDN."""
    root = tmp_path_factory.mktemp("control")
    (root / "marker.js").write_text("window.markerLoaded = true;\n")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    port = server.server_address[1]
    page = CONTROL_PAGE.replace("PORT", str(port)).replace("CDN", CDN_SCRIPT)
    (root / "control.html").write_text(page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/control.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _marks(dom: str) -> dict[str, str]:
    class Marks(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.current: str | None = None
            self.marks: dict[str, str] = {}

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.current = dict(attrs).get("id") if tag == "p" else None

        def handle_data(self, data: str) -> None:
            if self.current:
                self.marks[self.current] = self.marks.get(self.current, "") + data.strip()

        def handle_endtag(self, tag: str) -> None:
            self.current = None

    parser = Marks()
    parser.feed(dom)
    return parser.marks


def test_the_flags_cut_every_host_but_loopback(
    chromium: str, control_url: str, tmp_path: Path
) -> None:
    cut = run_chromium(chromium, control_url, "--dump-dom", net_log=tmp_path / "net.json")
    assert _marks(cut.stdout) == {"loopback": "LOADED", "localhost": "BLOCKED", "cdn": "BLOCKED"}
    # The net log does record the page's attempt at the CDN, so the same check on /docs below
    # would see one.
    assert CDN_SCRIPT in cut.page_requests, cut.page_requests
    # The same page without the flags does reach localhost: it is the flags that cut it off,
    # not this machine having no network.
    opened = run_chromium(chromium, control_url, "--dump-dom", cut_network=False)
    assert _marks(opened.stdout)["localhost"] == "LOADED"


# --- /docs as Chromium renders it -------------------------------------------------------------


@dataclass
class RenderedOperation:
    element_id: str
    method: str = ""
    path: str = ""
    summary: str = ""


VOID_ELEMENTS = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
    "track", "wbr",
}


class _SwaggerPage(HTMLParser):
    """What a reader sees of Swagger UI's rendering: the info title and each operation's
    summary line (method badge, path, summary)."""

    def __init__(self) -> None:
        super().__init__()
        self.classes: set[str] = set()
        self.title = ""
        self.operations: list[RenderedOperation] = []
        self.text: list[str] = []
        self._stack: list[tuple[str, str | None]] = []  # (tag, what its text is captured as)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = set((attributes.get("class") or "").split())
        self.classes |= classes
        capture = None
        element_id = attributes.get("id") or ""
        if "opblock" in classes and element_id.startswith("operations-"):
            self.operations.append(RenderedOperation(element_id))
        elif self.operations and "opblock-summary-method" in classes:
            capture = "method"
        elif self.operations and "opblock-summary-path" in classes:
            self.operations[-1].path = attributes.get("data-path") or ""
        elif self.operations and "opblock-summary-description" in classes:
            capture = "summary"
        elif tag in ("h1", "h2") and "title" in classes and not self.title:
            capture = "title"
        if tag not in VOID_ELEMENTS:
            self._stack.append((tag, capture))

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        for _, capture in self._stack:
            if capture == "title":
                self.title += data
            elif capture == "method":
                self.operations[-1].method += data.strip()
            elif capture == "summary":
                self.operations[-1].summary += data


def _normal(text: str) -> str:
    return " ".join(text.replace("\u200b", "").split())


@pytest.fixture(scope="module")
def docs(chromium: str, base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Run:
    net_log = tmp_path_factory.mktemp("docs-net-log") / "net.json"
    return run_chromium(chromium, f"{base_url}/docs", "--dump-dom", net_log=net_log)


@pytest.fixture(scope="module")
def page(docs: Run) -> _SwaggerPage:
    parser = _SwaggerPage()
    parser.feed(docs.stdout)
    parser.close()
    return parser


def test_swagger_ui_renders_the_contract(docs: Run, page: _SwaggerPage) -> None:
    assert "swagger-ui" in page.classes, docs.stdout[:2000]
    info = yaml.safe_load(CONTRACT.read_bytes())["info"]
    title = _normal(page.title)
    assert title.startswith(info["title"]), f"info title rendered as {title!r}"
    assert info["version"] in title
    # Rendered from the definition, not merely the bootstrap page: the operations are there.
    assert page.operations, "Swagger UI rendered no operation"


def test_swagger_ui_shows_no_error(docs: Run, page: _SwaggerPage) -> None:
    text = _normal(" ".join(page.text))
    for error in (
        "Failed to load API definition", "Fetch error", "Unable to render this definition",
        "Resolver error", "Parser error", "No operations defined in spec",
        "No API definition provided",
    ):
        assert error not in text, f"/docs shows {error!r}"
    assert "errors-wrapper" not in page.classes, "Swagger UI lists errors about the definition"
    # The bundle and stylesheet did load: without them the page would be an empty div.
    assert "loading-container" not in page.classes


def test_the_page_shows_exactly_the_contract_operations(page: _SwaggerPage) -> None:
    rendered = sorted((op.method, op.path) for op in page.operations)
    expected = sorted(
        (method, path)
        for method, path, operation in OPERATIONS
        for _ in (operation.get("tags") or ["default"])  # one block under each of its tags
    )
    assert rendered == expected


@pytest.mark.parametrize(
    ("method", "path", "operation"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS]
)
def test_every_operation_is_on_the_page(
    page: _SwaggerPage, method: str, path: str, operation: dict[str, object]
) -> None:
    blocks = [op for op in page.operations if (op.method, op.path) == (method, path)]
    tags = operation.get("tags") or ["default"]
    assert isinstance(tags, list)
    assert len(blocks) == len(tags), f"{method} {path} rendered {len(blocks)} times: {blocks}"
    if "operationId" in operation:
        ids = sorted(op.element_id for op in blocks)
        assert ids == sorted(f"operations-{tag}-{operation['operationId']}" for tag in tags)
    if "summary" in operation:
        for block in blocks:
            assert _normal(block.summary) == _normal(str(operation["summary"]))


def test_docs_asks_nothing_of_the_internet(docs: Run, base_url: str) -> None:
    """Everything the page requested, by Chromium's own net log, was on the server."""
    assert docs.page_requests, f"the net log at {docs.net_log} has no request of the page"
    outside = [url for url in docs.page_requests if not url.startswith(f"{base_url}/")]
    assert outside == [], f"/docs asked the internet for {outside}"
    paths = [urlsplit(url).path for url in docs.page_requests]
    assert "/docs" in paths and "/openapi.json" in paths, paths
    assert any(p.endswith(".js") for p in paths) and any(p.endswith(".css") for p in paths), paths


# --- the screenshot ---------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Each method's badge colour in swagger-ui.css (light theme, dark theme).
METHOD_COLOURS = {
    "GET": ("61affe", "55a1ff"),
    "POST": ("49cc90", "00b572"),
    "PUT": ("fca130", "ff7d35"),
    "DELETE": ("f93e3e", "eb6156"),
    "PATCH": ("50e3c2", "03b7bf"),
}


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


def test_screenshot_of_the_docs_is_saved(
    chromium: str, base_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    width, height = WINDOW
    run = run_chromium(
        chromium, f"{base_url}/docs", f"--screenshot={SCREENSHOT}",
        f"--window-size={width},{height}",
    )
    assert SCREENSHOT.is_file(), f"Chromium wrote no screenshot at {SCREENSHOT}"
    data = SCREENSHOT.read_bytes()
    with capsys.disabled():
        print(f"\nscreenshot of /docs: {SCREENSHOT} ({len(data)} bytes, {run.seconds:.1f}s)")
    assert data.startswith(PNG_SIGNATURE)
    # A blank page of this size is about 20 kB; the rendered docs are several times that.
    assert len(data) > 60_000, f"{SCREENSHOT} is only {len(data)} bytes"
    image = decode_png(data)
    assert (image.width, image.height) == WINDOW
    assert len(image.sample_colours()) >= 32, "the screenshot is (nearly) a single colour"
    # The stylesheet was applied and the operations were painted: each method's badge colour.
    for method in sorted({method for method, _, _ in OPERATIONS} & METHOD_COLOURS.keys()):
        assert any(
            image.has_colour(bytes.fromhex(colour)) for colour in METHOD_COLOURS[method]
        ), f"no {method} badge in the screenshot"
