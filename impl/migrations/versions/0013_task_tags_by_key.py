"""a tagged task's task_tags rows are deleted and rewritten one tag at a time, by their whole key

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08

0005's trigger took a task's rows off task_tags with one statement, `tag = ANY (OLD.tags)` next
to the user, the creation time and the task's id. In a session that does not force generic
plans (behind a pooler, which cannot ask for them: migration 0014 makes them the database's
default), PL/pgSQL plans a statement with the row's values for its first five runs, and keeps
doing so while that plan's estimate is cheaper than the generic one's. When every user the statistics saw is in their most-common-values list
(fewer than about a hundred users: a young or small deployment), a user they did not see (new,
or grown since the last ANALYZE) is estimated at one row whatever the plan, and for such a user
PostgreSQL chose the primary key with user_id, created_at and task_id as conditions and the
tags as a filter (one descent instead of one per tag), which reads every row of the user in
task_tags to find the task's (created_at is the third column: it cannot narrow the scan before
the tag). Measured on a user with 6,000 tasks of two tags, as the API's role: 136 buffers for
one task's two rows (EXPLAIN), and a DELETE of a tagged task 940 us of database CPU instead of
400; the cost grew with the user's tasks, so the users with the most paid the most. With 223
users in the statistics, the same kind of new user got the tags in the index condition (10
buffers). An edit of title or description of a tagged task (its rows' word bits, `tag = ANY
(NEW.tags)`) took the same plan. Migration 0012 met the same planner choice in task_words
(`word = ANY`), for the same reason.

Now each tag's row is deleted, or its bits rewritten, by a statement that names all four
columns of the primary key: one probe of a unique index, the only plan there is. Where the
statistics chose well it is cheaper too (scripts/bench_write_scale.py: a DELETE of a tagged
task 50-100 us less, a retitle 100-200 us less, at 1,000 tasks as at 100,000), probably because
PL/pgSQL can keep such a statement's generic plan instead of planning it again at every call.
A task has at most 10 tags (the `tag_count` constraint). The trigger's conditions (WHEN
clauses) and what it writes are unchanged.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# The bits of the row's words (0005: one of 64 bits per distinct three-letter start of a word),
# from the words its `search` column already holds.
_NEW_BITS = """(
    SELECT coalesce(bit_or(1::bigint << (get_byte(decode(md5(left(word, 3)), 'hex'), 0) % 64)), 0)
    FROM (SELECT substr(lexeme, 9) AS word FROM unnest(NEW.search)) AS words
    WHERE char_length(word) >= 3 AND left(word, 1) <> '#'
)"""

# A duplicate tag in the array (written before the API merged them, or by hand) had one row: its
# second statement finds nothing to delete or rewrite.
FUNCTION = f"""
CREATE OR REPLACE FUNCTION task_tags_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tag_name text;
    new_bits bigint;
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.tags = NEW.tags AND OLD.user_id = NEW.user_id
        AND OLD.created_at = NEW.created_at THEN
        new_bits := {_NEW_BITS};
        FOREACH tag_name IN ARRAY NEW.tags LOOP
            UPDATE task_tags SET word_bits = new_bits
            WHERE user_id = NEW.user_id AND tag = tag_name AND created_at = NEW.created_at
              AND task_id = NEW.id AND word_bits <> new_bits;
        END LOOP;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        FOREACH tag_name IN ARRAY OLD.tags LOOP
            DELETE FROM task_tags
            WHERE user_id = OLD.user_id AND tag = tag_name AND created_at = OLD.created_at
              AND task_id = OLD.id;
        END LOOP;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') AND cardinality(NEW.tags) > 0 THEN
        INSERT INTO task_tags (user_id, tag, created_at, task_id, word_bits)
        SELECT DISTINCT NEW.user_id, tag, NEW.created_at, NEW.id, {_NEW_BITS}
        FROM unnest(NEW.tags) AS tag;
    END IF;
    RETURN NULL;
END $$
"""


def _function_0005() -> str:
    """0005's function as 0005 wrote it (a migration is a snapshot: its text stays), for the way
    back, which must restore it exactly (tests/platform/test_migration_way_back.py)."""
    path = Path(__file__).with_name("0005_task_tags.py")
    spec = importlib.util.spec_from_file_location("migration_0005_task_tags", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function: str = module.FUNCTION
    return function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute(_function_0005())
