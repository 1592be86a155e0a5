"""The resources the handlers use (settings, database, cursor codec), per app.

The generated stubs pass handlers only what the contract defines (principal, parameters, body),
so the handlers reach these through a context variable that the request-context middleware
binds to the serving app's runtime for each request. Two apps in one process (tests) therefore
never see each other's pools.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass

from impl.http.errors import ServiceUnavailable
from impl.platform.database import Database
from impl.platform.settings import Settings
from impl.tasks.cursor import CursorCodec
from impl.tasks.store import TaskStore


@dataclass
class Runtime:
    settings: Settings
    database: Database
    cursors: CursorCodec

    @property
    def tasks(self) -> TaskStore:
        return TaskStore(self.database, self.settings.max_tasks_per_user)


_current: ContextVar[Runtime | None] = ContextVar("runtime", default=None)


def bind(runtime: Runtime | None) -> Token[Runtime | None]:
    return _current.set(runtime)


def unbind(token: Token[Runtime | None]) -> None:
    _current.reset(token)


def current() -> Runtime:
    runtime = _current.get()
    if runtime is None:  # before the lifespan opened it, or after it closed it
        raise ServiceUnavailable("Server is starting or stopping")
    return runtime
