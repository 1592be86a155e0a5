"""Request bodies take integers written as floats with a zero fraction (`977.0`), as JSON Schema
counts them, and nothing else that strict typing refuses. The contract has no integer in a
request body yet, so the real parser (impl/http/body.py) reads a model of its own here, from a
real ASGI request; tests/contract/test_round_trip.py sends every integer field of the contract as a float
over HTTP once there is one."""

from __future__ import annotations

from enum import Enum
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request

from impl.http.body import json_body


class Level(Enum):
    low = "low"
    high = "high"


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int
    counts: list[int] = []
    level: Level | None = None
    ratio: float | None = None


async def parse(raw: bytes) -> Sample:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    request = Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)
    return await json_body(Sample)(request)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"count": 977}', Sample(count=977)),
        (b'{"count": 977.0}', Sample(count=977)),
        (b'{"count": -0.0, "counts": [1, 2.0, 3e2]}', Sample(count=0, counts=[1, 2, 300])),
        (b'{"count": 1.0, "level": "high", "ratio": 2.0}', Sample(count=1, level=Level.high,
                                                               ratio=2.0)),
    ],
)
async def test_whole_floats_are_integers(raw: bytes, expected: Sample) -> None:
    parsed = await parse(raw)
    assert parsed == expected
    assert all(type(n) is int for n in [parsed.count, *parsed.counts])


@pytest.mark.parametrize(
    ("raw", "location"),
    [
        (b'{"count": 977.5}', ("body", "count")),
        (b'{"count": "977"}', ("body", "count")),
        (b'{"count": true}', ("body", "count")),
        (b'{"count": 1e400}', ("body", "count")),
        (b'{"count": 1.0, "counts": [1.5]}', ("body", "counts", 0)),
        (b'{"count": 1.0, "level": "medium"}', ("body", "level")),
        (b'{"count": 1.0, "extra": 1}', ("body", "extra")),
    ],
)
async def test_everything_else_is_still_refused(raw: bytes, location: tuple[Any, ...]) -> None:
    with pytest.raises(RequestValidationError) as refused:
        await parse(raw)
    assert [error["loc"] for error in refused.value.errors()] == [location]
