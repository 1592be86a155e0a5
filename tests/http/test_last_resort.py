"""The last-resort answer: an exception no handler takes is a 500 envelope with the request id,
and a page on an allowed origin can read it (the CORS headers are on it too), instead of the
browser reporting a CORS failure that hides the error and its request id."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.servers import running_server, settings

ORIGIN = "https://app.example"


async def fails(request: Request) -> Response:
    raise RuntimeError("a bug no handler takes")


@pytest.fixture(scope="module")
def api_url(database_url: str) -> Iterator[str]:
    with running_server(settings(database_url, cors_origins=[ORIGIN]),
                        extra_routes=[Route("/test/fails", fails)]) as url:
        yield url


def test_an_unhandled_error_is_a_500_envelope_a_page_on_an_allowed_origin_can_read(
    api_url: str,
) -> None:
    response = httpx.get(f"{api_url}/test/fails", headers={"Origin": ORIGIN})
    assert response.status_code == 500
    body = response.json()
    assert body["error"]["code"] == "INTERNAL_ERROR"
    assert "a bug" not in response.text  # never the exception's text
    assert body["meta"]["request_id"] == response.headers["X-Request-ID"]
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    exposed = response.headers["Access-Control-Expose-Headers"].lower()
    assert "x-request-id" in exposed


def test_an_unhandled_error_gives_no_cors_grant_to_another_origin(api_url: str) -> None:
    response = httpx.get(f"{api_url}/test/fails", headers={"Origin": "https://evil.example"})
    assert response.status_code == 500
    assert "Access-Control-Allow-Origin" not in response.headers
