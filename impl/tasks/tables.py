"""The database schema as SQLModel tables: the source of Alembic's migrations.

Queries do not go through the ORM (see store.py); these classes describe columns, constraints
and indexes, which the database enforces whatever the code above it does.
"""

from __future__ import annotations

import uuid
from datetime import datetime, time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel

from impl.platform import user_ids

PRIORITIES = ("low", "medium", "high")


# How a column of `Task` says that the API does not write it (impl/tasks/columns.py derives the
# returned and writable fields from the table): the server or the database sets it, or it never
# leaves the database. A column without either is a field a client reads and writes.
SET_BY_SERVER = {"set_by": "server"}
INTERNAL = {"internal": True}


def is_set_by_server(column: sa.Column[object]) -> bool:
    return bool(column.info.get("set_by") == "server")


def is_internal(column: sa.Column[object]) -> bool:
    return bool(column.info.get("internal"))


# User ids (impl/platform/user_ids.py) are stored as text in the "C" collation: compared byte for byte, as
# an identifier must be, and cheaper to compare and index than a locale's rules.
def user_id_column(*, primary_key: bool = False) -> sa.Column[str]:
    return sa.Column(
        "user_id", sa.Text(collation="C"), primary_key=primary_key, nullable=False,
        info=SET_BY_SERVER,
    )


def user_id_check() -> sa.CheckConstraint:
    return sa.CheckConstraint(user_ids.SQL_CHECK, name="user_id_valid")


# Index expressions are written as PostgreSQL prints them back (pg_get_indexdef), so that
# autogenerate finds them unchanged.
# The sort expressions of due_date (list_sql.py sorts by exactly these; the indexes match them).
# A CASE, not COALESCE: under row-level security only a leakproof condition may serve as an
# index condition, and PostgreSQL counts COALESCE as leaky, CASE with IS NULL not
# (migration 0011, docs/row-security.md "The price in plans").
DUE_ASC = """
CASE
    WHEN due_date IS NULL THEN 'infinity'::timestamp with time zone
    ELSE due_date
END"""
DUE_DESC = DUE_ASC.replace("'infinity'", "'-infinity'")
# Priority as its rank (1, 2, 3 in PRIORITIES' order), the key the indexes hold and the lists
# filter and sort on: comparisons of the enum are not leakproof, so under row-level security
# `priority = 'high'` could not be checked on an index entry, nor a cursor's `(priority, id) >`
# bound its range; integer comparisons are leakproof. (The enum's equality inside `CASE priority
# WHEN` tests no column of the row directly, which PostgreSQL accepts: migration 0011.)
PRIORITY_RANK = "\nCASE priority\n" + "".join(
    f"    WHEN '{name}'::task_priority THEN {rank}\n" for rank, name in enumerate(PRIORITIES, 1)
) + "    ELSE NULL::integer\nEND"
# The filters a sort index's entries also hold, after its order (migrations 0006, 0011).
# (An expression in an index's column list is parenthesized; autogenerate strips the parentheses
# before comparing.)
RANK_KEY = f"({PRIORITY_RANK})"
FILTERED = (sa.text(RANK_KEY), "completed")
# What `q` and `tag` search (migration 0004 explains it; its functions task_search_words,
# task_search_scope, task_search_query and task_tag_query build the queries): every word of
# title and description and every tag, each behind the user's scope (8 hex digits of md5).
SEARCH_TERMS = r"""array_to_tsvector(string_to_array(regexp_replace(btrim(regexp_replace(
    regexp_replace(lower(title || ' ' || coalesce(description, '')), '[^[:alnum:]]+', ' ', 'g'),
    '([[:alnum:]]{100})[[:alnum:]]+', '\1', 'g')), '([^ ]+)', left(md5(user_id), 8) || '\1', 'g'
), ' ')) || regexp_replace(
    array_to_tsvector(tags::text[])::text,
    '''((?:[^'']|'''')*)''', '''' || left(md5(user_id), 8) || '#\1''', 'g'
)::tsvector"""


class Xid8(sa.types.UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id (never wraps): which transaction wrote a row, which the
    change feed compares with a sync token's snapshot (impl/tasks/changes.py)."""

    cache_ok = True

    def get_col_spec(self, **_: object) -> str:
        return "xid8"


# The id of the writing transaction, as a column default (insert) and by trigger (update).
CURRENT_XID = sa.text("pg_current_xact_id()")


# The CHECK constraints a PATCH can break with the row's other values: the store answers 422
# naming the field (impl/tasks/store.py).
RECURRENCE_NEEDS_DUE_DATE = "recurrence_needs_due_date_and_zone"
RELATIVE_REMINDER_NEEDS_DUE_DATE = "relative_reminder_needs_due_date"

# A PostgreSQL enum sorts in declaration order: ORDER BY priority ranks low < medium < high.
priority_type = postgresql.ENUM(*PRIORITIES, name="task_priority", create_type=False)


class Task(SQLModel, table=True):
    __tablename__ = "tasks"
    __table_args__ = (
        user_id_check(),
        sa.CheckConstraint(
            "char_length(title) BETWEEN 1 AND 255 AND btrim(title) <> ''", name="title_length"
        ),
        sa.CheckConstraint(
            "description IS NULL OR char_length(description) <= 2000", name="description_length"
        ),
        sa.CheckConstraint("cardinality(tags) <= 10", name="tag_count"),
        sa.CheckConstraint("completed = (completed_at IS NOT NULL)", name="completed_at_matches"),
        sa.CheckConstraint("version >= 1", name="version_positive"),
        sa.CheckConstraint("due_date IS NULL OR isfinite(due_date)", name="due_date_finite"),
        # Recurrence and reminders (migration 0008; impl/tasks/recurrence.py and reminders.py
        # check each value, these the combinations a PATCH can make with the stored row).
        sa.CheckConstraint(
            "recurrence IS NULL OR (due_date IS NOT NULL AND time_zone IS NOT NULL)",
            name=RECURRENCE_NEEDS_DUE_DATE,
        ),
        sa.CheckConstraint(
            "due_date IS NOT NULL OR NOT jsonb_path_exists(reminders, '$[*].minutes_before')",
            name=RELATIVE_REMINDER_NEEDS_DUE_DATE,
        ),
        sa.CheckConstraint(
            "jsonb_typeof(reminders) = 'array' AND jsonb_array_length(reminders) <= 5",
            name="reminder_count",
        ),
        sa.CheckConstraint("char_length(recurrence) <= 500", name="recurrence_length"),
        sa.CheckConstraint("char_length(time_zone) <= 64", name="time_zone_length"),
        # One index per sort key, (user_id, key, id): ties break on id in the sort's direction,
        # so a descending sort reads the same index backwards (list_sql.py, migration 0004).
        # Then priority and completed (migration 0006): a walk in the key's order that filters
        # on them checks them on the index entry, and reads only the matching tasks' rows.
        sa.Index("ix_tasks_user_created", "user_id", "created_at", "id", *FILTERED),
        sa.Index("ix_tasks_user_completed_created", "user_id", "completed", "created_at", "id",
                 sa.text(RANK_KEY)),
        sa.Index("ix_tasks_user_updated", "user_id", "updated_at", "id", *FILTERED),
        # Tasks without a due date come last in both directions: one expression per direction.
        sa.Index("ix_tasks_user_due", "user_id", sa.text(f"({DUE_ASC})"), "id", *FILTERED),
        sa.Index("ix_tasks_user_due_desc", "user_id", sa.text(f"({DUE_DESC})"), "id",
                 *FILTERED),
        sa.Index("ix_tasks_user_priority", "user_id", sa.text(RANK_KEY), "id", "completed"),
        sa.Index("ix_tasks_user_title", "user_id", "title", "id", *FILTERED),
        # The change feed's order: a user's tasks by the transaction that last wrote them.
        sa.Index("ix_tasks_user_change", "user_id", "change_xid", "id"),
        # No index on `search`: under row-level security no GIN operator may serve a query
        # (none is leakproof); a word's tasks are a range of task_words (migration 0012).
    )

    id: uuid.UUID = Field(primary_key=True, sa_column_kwargs={"info": SET_BY_SERVER})
    user_id: str = Field(sa_column=user_id_column())
    title: str = Field(sa_column=sa.Column(sa.String(255), nullable=False))
    description: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    completed: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false())
    )
    completed_at: datetime | None = Field(
        default=None,
        sa_column=sa.Column(sa.DateTime(timezone=True), nullable=True, info=SET_BY_SERVER),
    )
    priority: str = Field(
        default="medium",
        sa_column=sa.Column(priority_type, nullable=False, server_default="medium"),
    )
    due_date: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=True)
    )
    tags: list[str] = Field(
        default_factory=list,
        sa_column=sa.Column(
            postgresql.ARRAY(sa.String(32)), nullable=False, server_default=sa.text("'{}'")
        ),
    )
    # An RFC 5545 RRULE (impl/tasks/recurrence.py says which parts) in `time_zone`, an IANA name.
    recurrence: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    time_zone: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    # Up to 5 of {"at": instant} or {"minutes_before": n} (impl/tasks/reminders.py); a trigger
    # schedules them in task_reminders (migration 0008).
    reminders: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=sa.Column(
            postgresql.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")
        ),
    )
    # The first task of a recurring series (its own id for the first one), and the occurrence
    # its completion created: set once, so a task never creates two.
    series_id: uuid.UUID | None = Field(
        default=None, sa_column=sa.Column(sa.Uuid, nullable=True, info=SET_BY_SERVER)
    )
    next_occurrence_id: uuid.UUID | None = Field(
        default=None, sa_column=sa.Column(sa.Uuid, nullable=True, info=SET_BY_SERVER)
    )
    # The series' local time of day when the due date cannot show it (a time that did not exist
    # that day: impl/tasks/recurrence.py Occurrence.wall_time); null when the due date does.
    wall_time: time | None = Field(
        default=None, sa_column=sa.Column(sa.Time, nullable=True, info=INTERNAL)
    )
    created_at: datetime = Field(
        sa_column=sa.Column(
            sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(),
            info=SET_BY_SERVER,
        )
    )
    updated_at: datetime = Field(
        sa_column=sa.Column(
            sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(),
            info=SET_BY_SERVER,
        )
    )
    version: int = Field(
        default=1,
        sa_column=sa.Column(sa.Integer, nullable=False, server_default="1", info=SET_BY_SERVER),
    )
    # The transaction that last wrote the task (migration 0007): the change feed's position.
    change_xid: int = Field(
        sa_column=sa.Column(Xid8(), nullable=False, server_default=CURRENT_XID, info=INTERNAL)
    )
    # What `q` and `tag` search (SEARCH_TERMS).
    search: str = Field(
        sa_column=sa.Column(
            postgresql.TSVECTOR,
            sa.Computed(SEARCH_TERMS, persisted=True),
            nullable=False,
            info=INTERNAL,
        )
    )


class IdempotencyKey(SQLModel, table=True):
    """Which task a user's Idempotency-Key created, and a hash of the body it came with."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (user_id_check(),)

    user_id: str = Field(sa_column=user_id_column(primary_key=True))
    key: str = Field(sa_column=sa.Column(sa.String(255), primary_key=True))
    request_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    task_id: uuid.UUID = Field(nullable=False)
    created_at: datetime = Field(
        sa_column=sa.Column(
            sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        )
    )


def counter() -> sa.Column[int]:
    return sa.Column(sa.BigInteger, nullable=False, server_default="0")


def counter_slot() -> sa.Column[int]:
    """Which of a user's counter rows (migration 0010): a write adds to the row of its database
    session's slot, so concurrent writes of one user do not queue on one row; the counts are
    the sum of the user's rows."""
    return sa.Column("slot", sa.SmallInteger, primary_key=True, server_default="0")


class TaskCounts(SQLModel, table=True):
    """Per-user counters kept by the `tasks` triggers (migrations 0002, 0004, 0010): what the
    list's total and the dashboard read instead of counting rows, summed over the user's slots."""

    __tablename__ = "task_counts"
    __table_args__ = (user_id_check(),)

    user_id: str = Field(sa_column=user_id_column(primary_key=True))
    slot: int = Field(sa_column=counter_slot())
    total: int = Field(sa_column=counter())
    completed: int = Field(sa_column=counter())
    low: int = Field(sa_column=counter())
    medium: int = Field(sa_column=counter())
    high: int = Field(sa_column=counter())
    low_completed: int = Field(sa_column=counter())
    medium_completed: int = Field(sa_column=counter())
    high_completed: int = Field(sa_column=counter())


class TaskTagCounts(SQLModel, table=True):
    """The same counters per user and tag (migrations 0004, 0010), for the total of a tag
    filter."""

    __tablename__ = "task_tag_counts"
    __table_args__ = (user_id_check(),)

    user_id: str = Field(sa_column=user_id_column(primary_key=True))
    tag: str = Field(sa_column=sa.Column(sa.String(32), primary_key=True))
    slot: int = Field(sa_column=counter_slot())
    total: int = Field(sa_column=counter())
    completed: int = Field(sa_column=counter())
    low: int = Field(sa_column=counter())
    medium: int = Field(sa_column=counter())
    high: int = Field(sa_column=counter())
    low_completed: int = Field(sa_column=counter())
    medium_completed: int = Field(sa_column=counter())
    high_completed: int = Field(sa_column=counter())


class TaskTag(SQLModel, table=True):
    """A tag's tasks in creation order (migration 0005, kept by a `tasks` trigger): a listing
    with `tag` in the default order reads this range instead of testing every task for it, and
    with `q` tests the words' bits (task_word_bits) in the index before looking a task up."""

    __tablename__ = "task_tags"
    __table_args__ = (
        user_id_check(),
        sa.PrimaryKeyConstraint(
            "user_id", "tag", "created_at", "task_id", postgresql_include=["word_bits"]
        ),
    )

    user_id: str = Field(sa_column=user_id_column(primary_key=True))
    tag: str = Field(sa_column=sa.Column(sa.String(32), primary_key=True))
    created_at: datetime = Field(
        sa_column=sa.Column(sa.DateTime(timezone=True), primary_key=True)
    )
    task_id: uuid.UUID = Field(primary_key=True)
    word_bits: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))


class TaskWord(SQLModel, table=True):
    """A user's words and their tasks (migration 0012, kept by a `tasks` trigger from the words
    `search` holds): a word prefix's tasks are a range of the primary key, which the listing
    reads for `q` where the GIN index of `search` cannot serve under row-level security."""

    __tablename__ = "task_words"
    __table_args__ = (user_id_check(),)

    user_id: str = Field(sa_column=user_id_column(primary_key=True))
    word: str = Field(sa_column=sa.Column(sa.Text(collation="C"), primary_key=True))
    task_id: uuid.UUID = Field(primary_key=True)


class TaskTombstone(SQLModel, table=True):
    """A deleted task, for the change feed (migration 0007: written by the `tasks` delete
    trigger in the deleting transaction, purged after SYNC_RETENTION_SECONDS)."""

    __tablename__ = "task_tombstones"
    __table_args__ = (
        user_id_check(),
        sa.PrimaryKeyConstraint("user_id", "change_xid", "task_id"),
        sa.Index("ix_task_tombstones_deleted_at", "deleted_at", postgresql_using="brin"),
    )

    user_id: str = Field(sa_column=user_id_column(primary_key=True))
    change_xid: int = Field(
        sa_column=sa.Column(Xid8(), primary_key=True, server_default=CURRENT_XID)
    )
    task_id: uuid.UUID = Field(primary_key=True)
    deleted_at: datetime = Field(
        sa_column=sa.Column(
            sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        )
    )


class TaskReminder(SQLModel, table=True):
    """A reminder to fire (migration 0008): written by the `tasks` trigger from a task's
    `reminders`, claimed when due by the scheduler of any replica (impl/tasks/reminder_scheduler.py),
    which stamps it fired in its own transaction: the change feed then carries it."""

    __tablename__ = "task_reminders"
    __table_args__ = (
        user_id_check(),
        sa.PrimaryKeyConstraint("user_id", "task_id", "id"),
        # What the scheduler claims: the pending ones by time.
        sa.Index("ix_task_reminders_pending", "remind_at",
                 postgresql_where=sa.text("fired_at IS NULL")),
        # The fired ones in the change feed's order.
        sa.Index("ix_task_reminders_user_change", "user_id", "change_xid", "id",
                 postgresql_where=sa.text("change_xid IS NOT NULL")),
        sa.Index("ix_task_reminders_fired_at", "fired_at", postgresql_using="brin"),
    )

    user_id: str = Field(sa_column=user_id_column(primary_key=True))
    task_id: uuid.UUID = Field(primary_key=True)
    id: uuid.UUID = Field(primary_key=True)
    remind_at: datetime = Field(
        sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False)
    )
    fired_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=True)
    )
    change_xid: int | None = Field(default=None, sa_column=sa.Column(Xid8(), nullable=True))
