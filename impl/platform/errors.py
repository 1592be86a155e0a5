"""The errors that code below the http layer raises: what went wrong in the domain's terms, never
an HTTP status. impl/http/errors.py alone turns each kind into its envelope (status, code,
headers); a resource subclasses them with its own messages (impl/tasks/errors.py)."""

from __future__ import annotations

from typing import Any

import asyncpg


class DomainError(Exception):
    message = "Internal server error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.message
        super().__init__(self.message)


class NotFound(DomainError):
    message = "Not found"


class Forbidden(DomainError):
    """The resource exists but belongs to another user."""

    message = "This resource belongs to another user"


class Stale(DomainError):
    """The resource's version is not one the caller named (If-Match)."""

    message = "The resource has changed since the given ETag"


class Conflict(DomainError):
    message = "Conflict"


class QuotaExceeded(DomainError):
    message = "Quota reached"


class SyncTokenExpired(DomainError):
    """A sync token older than what the server keeps (tombstones), or from a database that has
    since been reset: the client must start over."""

    message = "The sync token has expired: sync again without a token"


class TooManyOpen(DomainError):
    """The caller already holds as many long-lived resources (streams) as allowed."""

    message = "Too many open streams"
    retry_after_seconds = 5


class InvalidInput(DomainError):
    """A value the request's schema could not refuse (a day that does not exist, a tampered
    cursor): `field` names it as the envelope's details do (`body.due_date`, `query.cursor`)."""

    message = "Request validation failed"

    def __init__(self, field: str, message: str, kind: str) -> None:
        super().__init__()
        self.details: list[dict[str, Any]] = [{"field": field, "message": message, "type": kind}]


class Unauthenticated(DomainError):
    """A credential was presented and refused; the message says why (never the credential)."""

    message = "Invalid token"


class Unavailable(DomainError):
    """A dependency (the database, the token keys' server) cannot be reached right now."""

    message = "Database unavailable"


# Exceptions that mean "the database is not reachable right now", not "our bug".
DATABASE_DOWN = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
)
