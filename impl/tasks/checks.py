"""The table's CHECK constraints that a valid request can still break, as 422s.

A PATCH is checked field by field before it reaches the database; what depends on the stored
row too (a recurrence rule needs a due date, which the PATCH may remove) is the table's CHECK
(impl/tasks/tables.py), seen here by the constraint's name.
"""

from __future__ import annotations

import asyncpg

from impl.platform.errors import InvalidInput
from impl.tasks.tables import RECURRENCE_NEEDS_DUE_DATE, RELATIVE_REMINDER_NEEDS_DUE_DATE

BROKEN = {
    RECURRENCE_NEEDS_DUE_DATE: (
        "body.recurrence",
        ("A recurring task needs a due_date (its first occurrence) and a time_zone (an IANA "
        "name such as Europe/Berlin)"),
        "recurrence_needs_due_date",
    ),
    RELATIVE_REMINDER_NEEDS_DUE_DATE: (
        "body.reminders",
        'A reminder with "minutes_before" needs the task to have a due_date',
        "reminder_needs_due_date",
    ),
}


class refusing_broken_checks:  # lower case: used as `with refusing_broken_checks():`
    """A class, not @contextmanager: it wraps every write, and a generator costs more."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: object) -> None:
        if isinstance(error, asyncpg.CheckViolationError):
            found = BROKEN.get(error.constraint_name or "")
            if found is not None:
                raise InvalidInput(*found) from None
