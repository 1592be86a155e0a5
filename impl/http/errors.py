"""The one place that turns every exception into an error envelope: the HTTP layer's own errors
(ApiError: malformed bodies, auth headers, guards, rate limits) and the platform's domain errors
(impl/platform/errors.py), each kind mapped to its status and code here, once."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from impl.http.contract_paths import documented_methods
from impl.http.envelope import error_body
from impl.platform.errors import (
    DATABASE_DOWN,
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    Stale,
    SyncTokenExpired,
    TooManyOpen,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger("task_api.errors")

RETRY_AFTER_SECONDS = "2"
# Bounds the contract promises for every error body (ApiError, ErrorDetail), kept here where every
# error is encoded: a body with thousands of unknown members, or a made-up member name or HTTP
# method of kilobytes, must not make the answer outgrow them.
MAX_MESSAGE_CHARS = 1000
MAX_DETAILS = 50
MAX_FIELD_CHARS = 200


class ApiError(HTTPException):
    """An error with a stable code. A subclass of Starlette's HTTPException so that FastAPI passes
    it through untouched even when raised while it reads the request body."""

    status_code = 500
    code = "INTERNAL_ERROR"
    message = "Internal server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(self.status_code, message or self.message, headers)
        self.message = message or self.message
        self.details = details


class MalformedRequest(ApiError):
    status_code, code, message = 400, "MALFORMED_REQUEST", "Request body is not valid JSON"


class Unauthorized(ApiError):
    status_code, code, message = 401, "UNAUTHORIZED", "Invalid token"

    def __init__(self, message: str | None = None) -> None:
        challenge = 'Bearer realm="task-api"'
        if message != "Authorization header required":
            challenge += f', error="invalid_token", error_description="{message or self.message}"'
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class RouteNotFound(ApiError):
    status_code, code, message = 404, "NOT_FOUND", "Not found"


class MethodNotAllowed(ApiError):
    status_code, code = 405, "METHOD_NOT_ALLOWED"

    def __init__(self, method: str, allow: str) -> None:
        super().__init__(f"Method {method} is not allowed on this path", headers={"Allow": allow})


def method_not_allowed(method: str, path: str, routed_allow: str = "") -> MethodNotAllowed | None:
    """The one 405: for a path of the contract, every method it documents in `Allow` (a method
    it documents, or HEAD where it documents GET, is no 405); for another path (the docs), the
    methods its route takes (`routed_allow`, Starlette's)."""
    methods = documented_methods(path)
    if methods is None:
        return MethodNotAllowed(method, routed_allow) if routed_allow else None
    if method in methods or (method == "HEAD" and "GET" in methods):
        return None
    return MethodNotAllowed(method, ", ".join(sorted(methods)))


class PayloadTooLarge(ApiError):
    status_code, code = 413, "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(ApiError):
    status_code, code = 415, "UNSUPPORTED_MEDIA_TYPE"
    message = "Content-Type must be application/json"


class ValidationFailed(ApiError):
    status_code, code, message = 422, "VALIDATION_ERROR", "Request validation failed"

    @classmethod
    def field(cls, field: str, message: str, type_: str) -> ValidationFailed:
        return cls(details=[{"field": field, "message": message, "type": type_}])


class TooManyRequests(ApiError):
    status_code, code = 429, "TOO_MANY_REQUESTS"

    def __init__(self, retry_after: int, rate_headers: dict[str, str]) -> None:
        super().__init__(
            f"Too many requests: retry after {retry_after} s",
            headers={"Retry-After": str(retry_after), **rate_headers},
        )


class ServiceUnavailable(ApiError):
    status_code, code, message = 503, "SERVICE_UNAVAILABLE", "Database unavailable"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": RETRY_AFTER_SECONDS})



_GENERIC = {
    400: MalformedRequest,
    404: RouteNotFound,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


# Each kind of domain error (impl/platform/errors.py): its status and code. The most specific
# kind first (QuotaExceeded before Conflict).
_KINDS: list[tuple[type[DomainError], int, str]] = [
    (NotFound, 404, "NOT_FOUND"),
    (Forbidden, 403, "FORBIDDEN"),
    (Stale, 412, "PRECONDITION_FAILED"),
    (QuotaExceeded, 409, "QUOTA_EXCEEDED"),
    (Conflict, 409, "CONFLICT"),
    (SyncTokenExpired, 410, "SYNC_TOKEN_EXPIRED"),
]


def api_error(error: DomainError) -> ApiError:
    """The envelope's error for a domain error."""
    if isinstance(error, InvalidInput):
        return ValidationFailed(details=error.details)
    if isinstance(error, Unauthenticated):
        return Unauthorized(error.message)
    if isinstance(error, Unavailable):
        return ServiceUnavailable(error.message)
    if isinstance(error, TooManyOpen):
        refused = ApiError(error.message, headers={"Retry-After": str(error.retry_after_seconds)})
        refused.status_code, refused.code = 429, "TOO_MANY_REQUESTS"
        return refused
    for kind, status_code, code in _KINDS:
        if isinstance(error, kind):
            mapped = ApiError(error.message)
            mapped.status_code, mapped.code = status_code, code
            return mapped
    log.error("unmapped domain error %s: %s", type(error).__name__, error.message)
    return ApiError()


def _bounded(details: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if details is None:
        return None
    return [
        {
            **detail,
            "field": str(detail["field"])[:MAX_FIELD_CHARS],
            "message": str(detail["message"])[:MAX_MESSAGE_CHARS],
        }
        for detail in details[:MAX_DETAILS]
    ]


def error_response(error: ApiError) -> Response:
    return Response(
        error_body(error.code, error.message[:MAX_MESSAGE_CHARS], _bounded(error.details)),
        status_code=error.status_code,
        headers=error.headers,
        media_type="application/json",
    )


def _field_name(loc: tuple[Any, ...]) -> str:
    where = {"path": "path", "query": "query", "header": "header", "body": "body"}
    parts = [str(p) for p in loc]
    if parts and parts[0] in where:
        return ".".join(parts)
    return ".".join(["body", *parts])


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, ApiError):
        return error_response(exc)
    if exc.status_code == 405:
        # Starlette's Allow names the first matching route's methods only.
        routed_allow = (exc.headers or {}).get("Allow", "")
        refused = method_not_allowed(request.method, request.url.path, routed_allow)
        return error_response(refused or MethodNotAllowed(request.method, routed_allow))
    generic = _GENERIC.get(exc.status_code)
    if generic is None:
        log.warning("unmapped HTTP error %s: %s", exc.status_code, exc.detail)
        return error_response(ApiError())
    return error_response(generic())


async def _on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    # The abuse controls' refusals, counted by impl/http/observe.py.
    if isinstance(exc, QuotaExceeded):
        request.state.refused = "quota"
    elif isinstance(exc, TooManyOpen):
        request.state.refused = "streams"
    return error_response(api_error(exc))


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return error_response(MalformedRequest())
    details = [
        {
            "field": _field_name(tuple(error.get("loc", ()))),
            "message": str(error.get("msg", "Invalid value")),
            "type": str(error.get("type", "value_error")),
        }
        for error in errors
    ]
    return error_response(ValidationFailed(details=details))


def unexpected_error_response(exc: Exception, method: str, path: str) -> Response:
    """Called by the request-context middleware for anything the handlers above did not take:
    Starlette would otherwise answer from outside that middleware, without the request id."""
    if isinstance(exc, DomainError):
        return error_response(api_error(exc))
    if isinstance(exc, DATABASE_DOWN):
        log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        return error_response(ServiceUnavailable())
    log.error("unhandled error on %s %s", method, path, exc_info=exc)
    return error_response(ApiError())


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(DomainError, _on_domain_error)
