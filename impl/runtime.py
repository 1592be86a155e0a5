"""The process-wide resources the handlers use, installed once by the app's lifespan.

The generated stubs pass handlers only what the contract defines (principal, parameters, body),
so shared resources are reached through here rather than through extra arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

from impl.cursor import CursorCodec
from impl.db import Database
from impl.errors import ServiceUnavailable
from impl.settings import Settings
from impl.store import TaskStore


@dataclass
class Runtime:
    settings: Settings
    database: Database
    cursors: CursorCodec

    @property
    def tasks(self) -> TaskStore:
        return TaskStore(self.database.pool)


_current: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise ServiceUnavailable("Server is starting or stopping")
    return _current
