"""The task resource's errors: the platform's kinds (impl/platform/errors.py) with the messages
a client of the tasks sees. The store raises them; the http layer maps the kinds."""

from __future__ import annotations

from impl.platform.errors import Conflict, Forbidden, NotFound, QuotaExceeded, Stale


class TaskNotFound(NotFound):
    message = "Task not found"


class ForeignTask(Forbidden):
    message = "This task belongs to another user"


class StaleTask(Stale):
    message = "The task has changed since the given ETag"


class KeyReused(Conflict):
    """The Idempotency-Key was used before with another body, or its task is gone."""


class OverQuota(QuotaExceeded):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Task quota reached: at most {limit} tasks per user; delete some to create more"
        )
