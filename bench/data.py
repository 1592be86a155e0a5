"""Realistic tasks for the benchmark and the query-plan guard (tests/tasks/test_query_plans.py), and a
fast way to load many of them."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

COPY_COLUMNS = ["id", "user_id", "title", "description", "completed", "completed_at",
                "priority", "due_date", "tags", "created_at", "updated_at", "version"]

VERBS = ["Buy", "Call", "Email", "Review", "Fix", "Write", "Plan", "Book", "Renew", "Pay",
         "Clean", "Prepare", "Update", "Schedule", "Order", "Read", "Finish", "Submit",
         "Organize", "Check", "Draft", "Return", "Cancel", "Confirm", "Back up"]
OBJECTS = ["groceries", "the quarterly report", "a dentist appointment", "the bike tyre",
           "the electricity bill", "slides for the team demo", "the passport", "the car insurance",
           "the garden shed", "the kitchen sink", "flights to Lisbon", "the tax return",
           "the onboarding docs", "the API changelog", "grandma", "the landlord", "the gym plan",
           "the laptop", "photos from the trip", "the birthday present", "the budget sheet",
           "the release notes", "the pull request", "the library books", "the school forms"]
DETAILS = [None, None, None, "Before the end of the week", "Ask Sam for the numbers first",
           "Milk, eggs, bread, coffee", "Check the confirmation email for the reference",
           "Compare at least three offers", "Needs the signed copy",
           "Keep the receipt for the expense report", "Low effort, do it between meetings",
           "Follow up if there is no answer by Friday"]
TAGS = ["home", "work", "health", "admin", "travel", "errands", "finance", "family", "leisure",
        "urgent"]
PRIORITY_WEIGHTS = (("low", 3), ("medium", 5), ("high", 2))
# A rare tag at the far end of the recent-first sorts: the oldest RARE_COUNT tasks of a user
# (one in RARE_EVERY of its oldest tenth, if that is fewer) carry it, chosen by position,
# drawing nothing from the random generator, so every other value is what it was without it.
RARE_TAG, RARE_COUNT, RARE_EVERY = "archive", 40, 3


def task_rows(user_id: str, count: int, rng: random.Random,
              now: dt.datetime) -> list[tuple[Any, ...]]:
    """`count` realistic tasks, created over the past months (newest a minute ago)."""
    priorities = [p for p, weight in PRIORITY_WEIGHTS for _ in range(weight)]
    span = dt.timedelta(days=max(30, count // 50))
    step = span / count
    rows = []
    for index in range(count):
        created = now - dt.timedelta(minutes=1) - step * index - dt.timedelta(
            seconds=rng.random() * step.total_seconds() * 0.9)
        completed = rng.random() < 0.35
        completed_at = min(now, created + dt.timedelta(hours=rng.uniform(1, 240))) if completed \
            else None
        due = created + dt.timedelta(days=rng.uniform(-3, 30)) if rng.random() < 0.6 else None
        updated = completed_at or created + dt.timedelta(minutes=rng.uniform(0, 60))
        rows.append((
            uuid.UUID(int=rng.getrandbits(128), version=4), user_id,
            f"{rng.choice(VERBS)} {rng.choice(OBJECTS)}", rng.choice(DETAILS), completed,
            completed_at, rng.choice(priorities), due, rng.sample(TAGS, rng.choice((0, 1, 1, 2, 3))),
            created, min(now, updated), rng.choice((1, 1, 1, 2, 3)),
        ))
    oldest = count - min(RARE_COUNT * RARE_EVERY, max(1, count // 10))
    for index in range(oldest, count, RARE_EVERY):
        row = rows[index]
        rows[index] = (*row[:8], [*row[8], RARE_TAG], *row[9:])
    return rows



_COUNTS = ", ".join([
    "count(*)", "count(*) FILTER (WHERE completed)",
    *(f"count(*) FILTER (WHERE priority = '{p}')" for p in ("low", "medium", "high")),
    *(f"count(*) FILTER (WHERE completed AND priority = '{p}')" for p in ("low", "medium", "high")),
])
# What task_tags (migration 0005) holds for the tasks, in its column order (also what the tests
# compare it with, tests/support/factories.py).
TAG_ROWS = (
    "SELECT DISTINCT user_id, unnest(tags) AS tag, created_at, id AS task_id, "
    "task_word_bits(title || ' ' || coalesce(description, '')) AS word_bits FROM tasks"
)
# What task_words (migration 0012) holds for the tasks, in its column order.
WORD_ROWS = ("SELECT user_id, substr(lexeme, 9) AS word, id AS task_id FROM tasks, "
             "unnest(search) WHERE substr(lexeme, 9, 1) <> '#'")
# The triggers an INSERT fires (migrations 0002, 0005, 0012): off while copying, their work
# done once.
TRIGGERS = ("tasks_count_writes", "tasks_tags_insert", "tasks_words_insert")
_COUNTERS = ("total, completed, low, medium, high, low_completed, medium_completed, "
             "high_completed")


async def copy_tasks(connection: asyncpg.Connection, users: Sequence[str],
                     rows: list[tuple[Any, ...]]) -> None:
    """COPY rows (COPY_COLUMNS) of new users in one transaction, with the insert triggers off,
    then count them and list their tags (task_tags) once: with the triggers on, every row would
    update its user's counter row again, and a row updated thousands of times in one
    transaction gets slower at each update.
    Only for a database of its own (the table stays locked until the commit)."""
    async with connection.transaction():
        for trigger in TRIGGERS:
            await connection.execute(f"ALTER TABLE tasks DISABLE TRIGGER {trigger}")
        await connection.copy_records_to_table("tasks", records=rows, columns=COPY_COLUMNS)
        for trigger in TRIGGERS:
            await connection.execute(f"ALTER TABLE tasks ENABLE TRIGGER {trigger}")
        await connection.execute(
            f"INSERT INTO task_tags (user_id, tag, created_at, task_id, word_bits) {TAG_ROWS} "
            "WHERE user_id = ANY($1::text[])", list(users),
        )
        await connection.execute(
            f"INSERT INTO task_words (user_id, word, task_id) {WORD_ROWS} "
            "AND user_id = ANY($1::text[])", list(users),
        )
        await connection.execute(
            f"INSERT INTO task_counts (user_id, {_COUNTERS}) SELECT user_id, {_COUNTS} "
            "FROM tasks WHERE user_id = ANY($1::text[]) GROUP BY user_id", list(users),
        )
        await connection.execute(
            f"INSERT INTO task_tag_counts (user_id, tag, {_COUNTERS}) SELECT user_id, tag, "
            f"{_COUNTS} FROM (SELECT DISTINCT id, user_id, completed, priority, unnest(tags) "
            "AS tag FROM tasks WHERE user_id = ANY($1::text[])) AS tagged GROUP BY user_id, tag",
            list(users),
        )
