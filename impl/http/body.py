"""Request bodies: the raw JSON validated by the generated model in one pass, strictly.

Pydantic's JSON mode with strict=True gives JSON Schema's types exactly (no "yes" for a boolean,
no number for a string), and parsing and validation happen together in Rust, with no dict in
between. Errors come out as FastAPI's RequestValidationError, located under `body`, so the
error handlers treat them like any other validation error (unparseable JSON -> 400).

One difference from Pydantic's strict mode: JSON Schema counts a number with a zero fraction as
an integer (`977.0` is an integer), so where the model wants an int, a whole float is taken as
that int. Only on the failure path: a body of exact types costs nothing more.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

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
            errors = error.errors(include_url=False)
        if any(_whole_float(e) for e in errors):
            try:  # the stdlib's parser: integers of any size, like Pydantic's
                document = json.loads(raw)
            except (ValueError, RecursionError):
                document = None
            whole = [e for e in errors if _whole_float(e)]
            if document is not None and all(_set(document, e["loc"], int(e["input"])) for e in whole):
                try:  # JSON mode again: strict Python mode would refuse an enum's value
                    return model.model_validate_json(json.dumps(document), strict=True)
                except ValidationError as again:
                    errors = again.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors])

    parse.__name__ = f"parse_{model.__name__}"
    return parse


def _whole_float(error: Any) -> bool:
    value = error["input"]
    return bool(
        error["type"] == "int_type" and isinstance(value, float) and value.is_integer()
    )


def _set(document: Any, location: tuple[int | str, ...], value: int) -> bool:
    """Replace the value at an error's location; False when the location is not a path in the
    document (a union's member name, say): then the first errors stand."""
    try:
        for key in location[:-1]:
            document = document[key]
        if document[location[-1]] != value:
            return False
        document[location[-1]] = value
    except (KeyError, IndexError, TypeError):
        return False
    return True
