"""Request bodies: the raw JSON validated by the generated model in one pass, strictly.

Pydantic's JSON mode with strict=True gives JSON Schema's types exactly (no "yes" for a boolean,
no number for a string), and parsing and validation happen together in Rust, with no dict in
between. Errors come out as FastAPI's RequestValidationError, located under `body`, so the
error handlers treat them like any other validation error (unparseable JSON -> 400).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def json_body(model: type[Model]) -> Callable[[Request], Awaitable[Model]]:
    async def parse(request: Request) -> Model:
        raw = await request.body()
        try:
            return model.model_validate_json(raw, strict=True)
        except ValidationError as error:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
            ) from None

    parse.__name__ = f"parse_{model.__name__}"
    return parse
