"""tasks and idempotency keys

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

priority = postgresql.ENUM("low", "medium", "high", name="task_priority", create_type=False)


def upgrade() -> None:
    priority.create(op.get_bind(), checkfirst=True)
    op.create_table(
        "tasks",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("completed", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("priority", priority, nullable=False, server_default="medium"),
        sa.Column("due_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "tags", postgresql.ARRAY(sa.String(32)), nullable=False,
            server_default=sa.text("'{}'"),
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        sa.CheckConstraint(
            "char_length(title) BETWEEN 1 AND 255 AND btrim(title) <> ''", name="title_length"
        ),
        sa.CheckConstraint(
            "description IS NULL OR char_length(description) <= 2000", name="description_length"
        ),
        sa.CheckConstraint("cardinality(tags) <= 10", name="tag_count"),
        sa.CheckConstraint("completed = (completed_at IS NOT NULL)", name="completed_at_matches"),
        sa.CheckConstraint("version >= 1", name="version_positive"),
    )
    op.create_index("ix_tasks_user_created", "tasks", ["user_id", sa.text("created_at DESC"), "id"])
    op.create_index(
        "ix_tasks_user_completed_created", "tasks",
        ["user_id", "completed", sa.text("created_at DESC"), "id"],
    )
    op.create_index("ix_tasks_user_updated", "tasks", ["user_id", sa.text("updated_at DESC"), "id"])
    op.create_index("ix_tasks_user_due", "tasks", ["user_id", "due_date", "id"])
    op.create_index("ix_tasks_user_priority", "tasks", ["user_id", "priority", "id"])
    op.create_index("ix_tasks_user_title", "tasks", ["user_id", "title", "id"])
    op.create_index("ix_tasks_tags", "tasks", ["tags"], postgresql_using="gin")
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_table("tasks")
    priority.drop(op.get_bind(), checkfirst=True)
