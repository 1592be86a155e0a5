"""The SQL of the benchmarked operations, for the baseline app and the SQL-only timings.

The fixed statements and column lists are imported from impl/tasks/store.py, and the list statement
from impl/tasks/list_sql.py, so both servers send the same text. The baseline serves only the
default sort and `status`. scripts/bench.py checks before every run that the baseline's answers
equal the API's, so a drift in columns or results shows up."""

from __future__ import annotations

import re

from impl.tasks import store
from impl.tasks.columns import WRITABLE
from impl.tasks.list_sql import ListQuery, list_statement
from impl.tasks.store import COLUMNS, TASK_FIELDS

# The baseline connects as PostgreSQL's superuser, whom row-level security does not hold, and
# runs the statements as they were before it (migration 0011): without the condition that
# names the caller (impl/platform/row_scope.py). The API's figures against it then carry the
# whole cost of the wall.
_AS_CALLER = re.compile(
    r" (?:AND|WHERE) \(SELECT set_config\('task_api\.user_id', \$\d+::text, true\)\) IS NOT NULL"
)


def without_caller(sql: str) -> str:
    plain = _AS_CALLER.sub("", sql)
    assert "set_config" not in plain, "the caller's condition changed: update _AS_CALLER"
    return plain


GET_SQL = without_caller(store.GET_SQL)
INSERT_SQL = without_caller(store.INSERT_SQL)
QUOTA_INSERT_SQL = without_caller(store.QUOTA_INSERT_SQL)
DELETE_SQL = without_caller(store.DELETE_SQL)
# Whose task it is, read directly (the API asks through a door, migration 0011).
DIAGNOSE_SQL = "SELECT user_id, version FROM tasks WHERE id = $1"

SORT_KEYS = ("created_at", "updated_at", "title", "priority", "due_date")
# The first page of the default sort, for `status` only: the store's own statement (page and
# total, from the task_counts row of migration 0002, in one round trip). $1 user, $2 limit + 1.
LIST_SQL = {
    status: without_caller(list_statement("", ListQuery(status=status), None).sql)
    for status in ("all", "pending", "completed")
}
STATUS_CLAUSES = {
    "all": "", "pending": " AND completed = false", "completed": " AND completed = true",
}
# What the total cost before the counters: for the SQL-only timings, not served.
COUNT_SQL = {
    status: f"SELECT count(*) FROM tasks WHERE user_id = $1{clause}"
    for status, clause in STATUS_CLAUSES.items()
}
CASTS = {"priority": "::task_priority", "due_date": "::text::timestamptz"}

__all__ = [
    "CASTS", "COLUMNS", "COUNT_SQL", "DELETE_SQL", "DIAGNOSE_SQL", "GET_SQL", "INSERT_SQL", "LIST_SQL",
    "QUOTA_INSERT_SQL", "SORT_KEYS", "TASK_FIELDS", "WRITABLE",
]
