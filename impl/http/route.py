"""The route class of the generated stubs: FastAPI's semantics, without its per-request
generality.

FastAPI's generic handler works out again, on every request, how to read and validate each
parameter (it inspects annotations and copies defaults for each one) and runs a general
dependency solver. The generated stubs only use two kinds of input, so this class works out a
plan once per route and runs it:
- dependencies that take nothing but the request (bearer auth, the JSON body parser), in
  signature order, as FastAPI would: a 401 comes before a body error;
- path, query and header parameters, each read as FastAPI reads it and validated by the same
  Pydantic field FastAPI built from the stub's annotations, all errors collected into one
  RequestValidationError with the same locations.
A route using anything else falls back to FastAPI's own handler and ASGI wrapper.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Coroutine, Mapping
from enum import Enum
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_missing_field_error  # type: ignore[attr-defined]
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
_IMMUTABLE = (str, int, float, bool, type(None), Enum)


_SOURCES: dict[str, Callable[[Request], Mapping[str, Any]]] = {
    "path": lambda request: request.path_params,
    "query": lambda request: request.query_params,
    "header": lambda request: request.headers,
}


class _Param:
    __slots__ = ("alias", "default", "field", "location", "name", "required")

    def __init__(self, location: str, field: Any) -> None:
        self.location = location
        self.field = field
        self.name: str = field.name
        self.alias: str = field.alias
        self.required: bool = field.field_info.is_required()
        self.default = None if self.required else field.default


def _plan(dependant: Dependant) -> tuple[list[tuple[str, Any]], list[_Param]] | None:
    if dependant.cookie_params or dependant.body_params or dependant.request_param_name:
        return None
    dependencies = []
    for sub in dependant.dependencies:
        only_request = (
            sub.request_param_name
            and not (sub.path_params or sub.query_params or sub.header_params)
            and not (sub.cookie_params or sub.body_params or sub.dependencies)
        )
        if not only_request or sub.name is None or sub.use_cache is False:
            return None
        dependencies.append((sub.name, sub.call))
    params = [
        _Param(location, field)
        for location, fields in (
            ("path", dependant.path_params),
            ("query", dependant.query_params),
            ("header", dependant.header_params),
        )
        for field in fields
    ]
    return dependencies, params


def _asgi(handler: Handler) -> ASGIApp:
    """The route's ASGI app. FastAPI's wraps each request in two exit stacks (for dependencies
    with `yield`, which the stubs never use) and its own exception wrapper; here exceptions go
    to the app's ExceptionMiddleware, which holds the same handlers (impl/http/errors.py)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await handler(Request(scope, receive, send))
        await response(scope, receive, send)

    return app


class ContractRoute(APIRoute):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.planned = _plan(self.dependant) is not None
        if self.planned:
            self.app = _asgi(self.get_route_handler())

    def get_route_handler(self) -> Handler:
        plan = _plan(self.dependant)
        if plan is None:
            return super().get_route_handler()
        dependencies, params = plan
        endpoint = self.endpoint
        # Only the parts of the request the route reads (parsing the others costs per request).
        used = {param.location for param in params}
        locations = [location for location in _SOURCES if location in used]

        async def handler(request: Request) -> Response:
            values: dict[str, Any] = {}
            for name, call in dependencies:
                values[name] = await call(request)
            sources = {location: _SOURCES[location](request) for location in locations}
            errors: list[Any] = []
            for param in params:
                raw = sources[param.location].get(param.alias)
                if raw is None:
                    if param.required:
                        errors.append(get_missing_field_error(loc=(param.location, param.alias)))
                        continue
                    default = param.default
                    values[param.name] = (
                        default if isinstance(default, _IMMUTABLE) else copy.deepcopy(default)
                    )
                    continue
                value, problems = param.field.validate(raw, values, loc=(param.location, param.alias))
                if problems:
                    errors.extend(problems)
                else:
                    values[param.name] = value
            if errors:
                raise RequestValidationError(errors)
            response: Response = await endpoint(**values)
            return response

        return handler
