"""The docs page in a real browser: Debian's headless Chromium loads /docs from the live server
with the network cut off except for loopback, Swagger UI renders every operation of the
contract, and a screenshot is kept at artifacts/docs.png for CI to publish.

No npm packages and no Python browser driver: Chromium's own --dump-dom, --screenshot and
--log-net-log are enough (tests/support/chromium.py). If Chromium is missing, run
scripts/ensure_chromium.sh."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.artifacts import ARTIFACTS
from tests.support.chromium import (
    PNG_SIGNATURE,
    Run,
    decode_png,
    find_chromium,
    run_chromium,
    static_server,
)

REPO = Path(__file__).resolve().parents[2]
CONTRACT = REPO / "openapi.yaml"
SCREENSHOT = ARTIFACTS / "docs.png"
WINDOW = (1280, 3000)
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
CDN_SCRIPT = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"


def _contract_operations() -> list[tuple[str, str, dict[str, object]]]:
    paths = yaml.safe_load(CONTRACT.read_bytes())["paths"]
    return [
        (method.upper(), path, operation)
        for path, item in paths.items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


OPERATIONS = _contract_operations()


@pytest.fixture(scope="session")
def chromium() -> str:
    return find_chromium()


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


@pytest.fixture(scope="module")
def control_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A page on a loopback server that loads one script from 127.0.0.1, the same script from
    "localhost" (reachable on any machine, unless the flags cut it) and one from a CDN."""
    root = tmp_path_factory.mktemp("control")
    (root / "marker.js").write_text("window.markerLoaded = true;\n")
    with static_server(root) as origin:
        port = urlsplit(origin).port
        page = CONTROL_PAGE.replace("PORT", str(port)).replace("CDN", CDN_SCRIPT)
        (root / "control.html").write_text(page)
        yield f"{origin}/control.html"


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

# Each method's badge colour in swagger-ui.css (light theme, dark theme).
METHOD_COLOURS = {
    "GET": ("61affe", "55a1ff"),
    "POST": ("49cc90", "00b572"),
    "PUT": ("fca130", "ff7d35"),
    "DELETE": ("f93e3e", "eb6156"),
    "PATCH": ("50e3c2", "03b7bf"),
}


def test_screenshot_of_the_docs_is_saved(
    chromium: str, base_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
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
