"""The server publishes the hand-written contract, not a schema FastAPI derives, and a docs page
that works with no internet access."""

from __future__ import annotations

import uuid
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import yaml

CONTRACT = Path(__file__).resolve().parents[2] / "openapi.yaml"


def _assert_has_request_id(response: httpx.Response) -> None:
    uuid.UUID(response.headers["x-request-id"])


async def test_openapi_json_is_the_yaml_contract_exactly(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    _assert_has_request_id(response)
    served = response.json()
    contract = yaml.safe_load(CONTRACT.read_bytes())
    assert served == contract
    # Not FastAPI's derived schema, which would say 3.1.0 too but lose the hand-written parts.
    assert served["info"]["description"] == contract["info"]["description"]
    assert served["components"]["examples"] == contract["components"]["examples"]
    assert set(served["paths"]) == set(contract["paths"])


async def test_openapi_yaml_is_the_file_verbatim(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.yaml")
    assert response.status_code == 200
    assert "yaml" in response.headers["content-type"]
    _assert_has_request_id(response)
    assert response.content == CONTRACT.read_bytes()
    assert int(response.headers["content-length"]) == CONTRACT.stat().st_size


class _AssetCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []  # (tag, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and (tag, name) in {("script", "src"), ("link", "href"), ("img", "src")}:
                self.refs.append((tag, value))


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc and not url.startswith("//")


async def test_docs_page_references_only_local_assets(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    _assert_has_request_id(response)
    html = response.text
    collector = _AssetCollector()
    collector.feed(html)
    tags = {tag for tag, _ in collector.refs}
    assert {"script", "link"} <= tags, f"expected a script and a stylesheet: {collector.refs}"
    remote = [url for _, url in collector.refs if not _is_local(url)]
    assert remote == [], f"/docs loads assets from the internet: {remote}"
    # No CDN anywhere in script or link tags, however written.
    for tag, url in collector.refs:
        assert "http://" not in url and "https://" not in url, (tag, url)
    # The page points Swagger UI at the served contract.
    assert "/openapi.json" in html


async def _check_assets(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    page = await client.get("/docs")
    collector = _AssetCollector()
    collector.feed(page.text)
    assert len(collector.refs) >= 3, collector.refs  # bundle, stylesheet, favicon
    minimum = {"script": 100_000, "link": 100}
    for tag, url in collector.refs:
        response = await client.get(urljoin(str(page.url), url), headers=headers)
        assert response.status_code == 200, url
        _assert_has_request_id(response)
        body = response.content
        assert len(body) >= minimum.get(tag, 100), f"{url}: only {len(body)} bytes"
        assert int(response.headers["content-length"]) == len(body)
        content_type = response.headers["content-type"]
        if url.endswith(".js"):
            assert "javascript" in content_type, (url, content_type)
            assert b"SwaggerUIBundle" in body
        elif url.endswith(".css"):
            assert content_type.startswith("text/css"), (url, content_type)
            assert b".swagger-ui" in body
        elif url.endswith(".png"):
            assert content_type == "image/png"
            assert body.startswith(b"\x89PNG\r\n\x1a\n")


async def test_docs_assets_are_served_to_a_browser(client: httpx.AsyncClient) -> None:
    """A browser's GET carries no Content-Type. The body guard once refused every request
    without a JSON one from receive(), which Starlette's FileResponse calls to watch for a
    disconnect: each asset was cut off right after its headers."""
    await _check_assets(client, headers={})


async def test_docs_assets_exist_and_are_the_swagger_ui_files(client: httpx.AsyncClient) -> None:
    """The same assets fetched with a JSON Content-Type, which the body guard must ignore on a
    GET too."""
    await _check_assets(client, headers={"Content-Type": "application/json"})


async def test_docs_page_bootstraps_swagger_ui_offline(client: httpx.AsyncClient) -> None:
    html = (await client.get("/docs")).text
    # The bundle defines SwaggerUIBundle; the page calls it, aimed at the local contract.
    assert "SwaggerUIBundle(" in html
    assert "url: '/openapi.json'" in html or '"url": "/openapi.json"' in html


async def test_missing_docs_asset_is_an_error_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs-assets/does-not-exist.js")
    assert response.status_code == 404
    body = response.json()
    assert body["error"]["code"] == "NOT_FOUND"
    assert body["meta"]["request_id"] == response.headers["x-request-id"]
