"""per-user task counters, kept by a trigger

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

The list's `meta.total` and the dashboard's counts read one row per user instead of counting
every task on every request, so they cost the same for 100 tasks as for 100,000. The trigger
updates the row in the same transaction as the write, so the counts are always consistent with
what a query in the same snapshot sees. Filters other than status still count matching rows.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COUNTED = """
    1,
    NEW.completed::int,
    (NEW.priority = 'low')::int,
    (NEW.priority = 'medium')::int,
    (NEW.priority = 'high')::int
"""


def upgrade() -> None:
    op.create_table(
        "task_counts",
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column("total", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("completed", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("low", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("medium", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("high", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.execute(
        """
        CREATE FUNCTION task_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                UPDATE task_counts SET
                    total = total - 1,
                    completed = completed - OLD.completed::int,
                    low = low - (OLD.priority = 'low')::int,
                    medium = medium - (OLD.priority = 'medium')::int,
                    high = high - (OLD.priority = 'high')::int
                WHERE user_id = OLD.user_id;
            END IF;
            IF TG_OP IN ('UPDATE', 'INSERT') THEN
                INSERT INTO task_counts AS c (user_id, total, completed, low, medium, high)
                VALUES (NEW.user_id, """
        + COUNTED
        + """)
                ON CONFLICT (user_id) DO UPDATE SET
                    total = c.total + 1,
                    completed = c.completed + EXCLUDED.completed,
                    low = c.low + EXCLUDED.low,
                    medium = c.medium + EXCLUDED.medium,
                    high = c.high + EXCLUDED.high;
            END IF;
            RETURN NULL;
        END $$;
        """
    )
    op.execute(
        """
        CREATE TRIGGER tasks_count_writes AFTER INSERT OR DELETE ON tasks
        FOR EACH ROW EXECUTE FUNCTION task_counts_apply()
        """
    )
    op.execute(
        """
        CREATE TRIGGER tasks_count_changes AFTER UPDATE ON tasks
        FOR EACH ROW WHEN (
            OLD.user_id IS DISTINCT FROM NEW.user_id
            OR OLD.completed IS DISTINCT FROM NEW.completed
            OR OLD.priority IS DISTINCT FROM NEW.priority
        ) EXECUTE FUNCTION task_counts_apply()
        """
    )
    op.execute(
        """
        INSERT INTO task_counts (user_id, total, completed, low, medium, high)
        SELECT user_id, count(*), count(*) FILTER (WHERE completed),
               count(*) FILTER (WHERE priority = 'low'),
               count(*) FILTER (WHERE priority = 'medium'),
               count(*) FILTER (WHERE priority = 'high')
        FROM tasks GROUP BY user_id
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER tasks_count_changes ON tasks")
    op.execute("DROP TRIGGER tasks_count_writes ON tasks")
    op.execute("DROP FUNCTION task_counts_apply()")
    op.drop_table("task_counts")
