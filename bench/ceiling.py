"""The write ceiling: the same task rows in a table that keeps nothing but them.

`ceiling_tasks` has the columns the API returns (with their types, from impl/tasks/columns.py),
a primary key and one (user_id, created_at) index: no search column, no sort indexes, no
counters, no task_tags, no change tracking, no CHECKs, no quota. The baseline app run with
BASELINE_TABLE=ceiling_tasks writes there (bench/baseline_app.py), so scripts/bench.py can show
what our schema costs a write: ours against the ceiling, in the same run. Created by the
benchmark in its own database, never by a migration.
"""

from __future__ import annotations

from impl.tasks.columns import FIELDS

TABLE = "ceiling_tasks"
ENV = "BASELINE_TABLE"  # the baseline app's switch: "tasks" (default) or TABLE
_COLUMNS = ", ".join(FIELDS)

# The row's columns and types copied from tasks (no rows), then what an INSERT of the store's
# statement needs (defaults) and the two indexes a plain task table would have.
CREATE = (
    f"CREATE TABLE {TABLE} AS SELECT {_COLUMNS} FROM tasks WITH NO DATA",
    f"ALTER TABLE {TABLE} ADD PRIMARY KEY (id)",
    (f"ALTER TABLE {TABLE} ALTER COLUMN completed SET DEFAULT false, "
    "ALTER COLUMN priority SET DEFAULT 'medium', ALTER COLUMN tags SET DEFAULT '{}', "
    "ALTER COLUMN created_at SET DEFAULT now(), ALTER COLUMN updated_at SET DEFAULT now(), "
    "ALTER COLUMN version SET DEFAULT 1"),
    f"CREATE INDEX ix_{TABLE}_user_created ON {TABLE} (user_id, created_at)",
)
# The PATCH runs rotate over the bench user's tasks: the ceiling gets copies of them.
COPY_USER = f"INSERT INTO {TABLE} ({_COLUMNS}) SELECT {_COLUMNS} FROM tasks WHERE user_id = $1"
