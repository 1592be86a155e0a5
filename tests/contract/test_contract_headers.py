"""The promises the Spectral (OWASP) pass added to openapi.yaml, held against a real server:
- every documented 4xx of a secured operation (400, 401, 403, 404, 409, 412, 413, 415, 422, 429)
  carries RateLimit and RateLimit-Policy; the public probes carry neither;
- with CORS_ORIGINS set, every one of those answers (and the probes') carries
  Access-Control-Allow-Origin for an allowed Origin, and none for another;
- every header value and error body keeps the contract's maxLength, pattern and maxItems, even
  when a request is built to make them long (hundreds of unknown members, a 10 kB member name,
  a 5 kB method).
The schemas are read from openapi.yaml, so a bound changed there is the bound tested here."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from impl.http.errors import MethodNotAllowed, error_response
from tests.support.factories import User, new_user
from tests.support.servers import running_server, settings

CONTRACT = yaml.safe_load((Path(__file__).resolve().parents[2] / "openapi.yaml").read_text())
HEADERS = CONTRACT["components"]["headers"]
SCHEMAS = CONTRACT["components"]["schemas"]
TASKS = "/api/tasks"
ORIGIN = "http://app.example.test:3000"
RATE, BURST = 3.0, 30


def assert_string(value: str, schema: dict[str, Any], what: str) -> None:
    assert len(value) <= schema["maxLength"], (what, len(value))
    if "pattern" in schema:
        assert re.search(schema["pattern"], value), (what, value[:200])


def assert_header(response: httpx.Response, name: str) -> str:
    value = response.headers.get(name)
    assert value is not None, (name, response.status_code, dict(response.headers))
    schema = HEADERS[name]["schema"]
    if schema["type"] == "integer":
        assert schema["minimum"] <= int(value) <= schema["maximum"], (name, value)
    else:
        assert_string(value, schema, name)
    return value


def assert_error_body(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    assert_string(error["message"], SCHEMAS["ApiError"]["properties"]["message"], "message")
    details = error.get("details", [])
    assert len(details) <= SCHEMAS["ApiError"]["properties"]["details"]["maxItems"]
    for detail in details:
        for key in ("field", "message", "type"):
            assert_string(detail[key], SCHEMAS["ErrorDetail"]["properties"][key], key)
    return error


@pytest.fixture(scope="module")
def api(base_url: str, database_url: str) -> Iterator[str]:
    assert base_url
    app_settings = settings(
        database_url, rate_limit_per_second=RATE, rate_limit_burst=BURST, cors_origins=[ORIGIN]
    )
    with running_server(app_settings) as url:
        yield url


async def create(http: httpx.AsyncClient, user: User, **headers: str) -> httpx.Response:
    response = await http.post(TASKS, json={"title": "t"}, headers={**user.headers, **headers})
    assert response.status_code == 201, response.text
    return response


async def documented_4xx(http: httpx.AsyncClient) -> dict[int, httpx.Response]:
    """One answer of each documented 4xx status of the secured operations, each user its own
    bucket."""
    owner, other = new_user(), new_user()
    task = (await create(http, owner)).json()["data"]
    one = f"{TASKS}/{task['id']}"
    json_type = {"Content-Type": "application/json"}
    answers = {
        400: await http.post(TASKS, content=b"{", headers={**new_user().headers, **json_type}),
        401: await http.get(TASKS),
        403: await http.get(one, headers=other.headers),
        404: await http.get(f"{TASKS}/{uuid.uuid4()}", headers=new_user().headers),
        412: await http.patch(one, json={"completed": True},
                              headers={**owner.headers, "If-Match": '"999"'}),
        413: await http.post(TASKS, content=b'{"title": "' + b"x" * 70_000 + b'"}',
                             headers={**new_user().headers, **json_type}),
        415: await http.post(TASKS, content=b"{}", headers={**new_user().headers,
                                                            "Content-Type": "text/plain"}),
        422: await http.get(TASKS, params={"limit": "0"}, headers=new_user().headers),
    }
    reuser = new_user()
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    await create(http, reuser, **key)
    answers[409] = await http.post(TASKS, json={"title": "another"},
                                   headers={**reuser.headers, **key})
    greedy = new_user()
    burst = await asyncio.gather(*(http.get(TASKS, headers=greedy.headers)
                                   for _ in range(BURST + 10)))
    answers[429] = next(r for r in burst if r.status_code == 429)
    return answers


async def test_every_documented_4xx_carries_the_rate_limit_and_cors_headers(api: str) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=30, headers={"Origin": ORIGIN}) as http:
        answers = await documented_4xx(http)
        success = await create(http, new_user())
    for status, response in answers.items():
        assert response.status_code == status, (status, response.text[:300])
        assert_header(response, "RateLimit")
        assert_header(response, "RateLimit-Policy")
        assert_header(response, "X-Request-ID")
        assert assert_header(response, "Access-Control-Allow-Origin") == ORIGIN
        assert_error_body(response)
    assert_header(answers[401], "WWW-Authenticate")
    assert_header(answers[429], "Retry-After")
    for name in ("RateLimit", "RateLimit-Policy", "Location", "ETag",
                 "Access-Control-Allow-Origin"):
        assert_header(success, name)


async def test_probes_carry_cors_but_no_rate_limit(api: str) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=30, headers={"Origin": ORIGIN}) as http:
        for path in ("/api/health", "/api/ready"):
            response = await http.get(path)
            assert response.status_code == 200, response.text
            assert assert_header(response, "Access-Control-Allow-Origin") == ORIGIN
            assert "ratelimit" not in response.headers and "ratelimit-policy" not in response.headers


async def test_another_origin_gets_no_cors_header(api: str) -> None:
    user = new_user()
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        foreign = await http.get(TASKS, headers={**user.headers, "Origin": "http://evil.test"})
        without = await http.get(TASKS, headers=user.headers)
    for response in (foreign, without):
        assert response.status_code == 200, response.text
        assert "access-control-allow-origin" not in response.headers


async def test_error_bodies_keep_their_bounds_whatever_the_request(api: str) -> None:
    user = new_user()
    many = "{" + ", ".join(f'"unknown{n}": {n}' for n in range(500)) + "}"
    long_key = '{"title": "x", "' + "k" * 10_000 + '": 1}'
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        too_many = await http.post(TASKS, content=many, headers={
            **user.headers, "Content-Type": "application/json"})
        long_field = await http.post(TASKS, content=long_key, headers={
            **user.headers, "Content-Type": "application/json"})
    assert too_many.status_code == 422, too_many.text[:300]
    details = assert_error_body(too_many)["details"]
    assert len(details) == SCHEMAS["ApiError"]["properties"]["details"]["maxItems"]
    assert long_field.status_code == 422, long_field.text[:300]
    fields = [d["field"] for d in assert_error_body(long_field)["details"]]
    assert "body." + "k" * 195 in fields, fields


def test_a_message_quoting_a_long_input_is_cut() -> None:
    """The 405 message names the request's method. httptools (uvicorn's default parser) only
    takes the methods it knows, but h11 takes any token: the one place that encodes errors cuts
    the message to the contract's bound."""
    response = error_response(MethodNotAllowed("X" * 5000, "GET"))
    body = json.loads(bytes(response.body))
    message = body["error"]["message"]
    assert message.startswith("Method XXX") and len(message) == 1000
    assert_string(message, SCHEMAS["ApiError"]["properties"]["message"], "message")
