"""The SQL of the benchmarked operations, for the baseline app and the SQL-only timings.

The fixed statements and column lists are imported from impl/store.py, so both servers send the
same text. The store builds its list statement for any filters and sort; the baseline serves only
the default sort and `status`, so that statement is spelled out here for those cases (same
columns, casts, ORDER BY, total from the task_counts row of migration 0002, page and total in
one round trip). scripts/bench.py checks before every run that the baseline's answers equal the
API's, so a drift in columns or results shows up."""

from __future__ import annotations

from impl.store import COLUMNS, DIAGNOSE_SQL, GET_SQL, INSERT_SQL, TASK_FIELDS, WRITABLE

SORT_KEYS = ("created_at", "updated_at", "title", "priority", "due_date")
CURSOR_KEYS = ", ".join(f"(tasks.{name})::text AS key_{name}" for name in SORT_KEYS)
# meta.total from the per-user counters (migration 0002) when only `status` filters.
COUNTER_TOTALS = {"all": "total", "pending": "total - completed", "completed": "completed"}
STATUS_CLAUSES = {
    "all": "", "pending": " AND completed = false", "completed": " AND completed = true",
}
ORDER = "tasks.created_at DESC, tasks.id ASC"
# The first page in one round trip: the total and the page together. $1 user, $2 limit + 1.
LIST_SQL = {
    status: (
        "SELECT page.*, counted.total FROM (SELECT coalesce((SELECT "
        f"{COUNTER_TOTALS[status]} FROM task_counts WHERE user_id = $1), 0)) AS counted(total) "
        f"LEFT JOIN LATERAL (SELECT {COLUMNS}, {CURSOR_KEYS}, "
        f"row_number() OVER (ORDER BY {ORDER}) AS ordinal "
        f"FROM tasks WHERE user_id = $1{clause} ORDER BY {ORDER} LIMIT $2) AS page "
        "ON true ORDER BY page.ordinal"
    )
    for status, clause in STATUS_CLAUSES.items()
}
# What the total cost before the counters: for the SQL-only timings, not served.
COUNT_SQL = {
    status: f"SELECT count(*) FROM tasks WHERE user_id = $1{clause}"
    for status, clause in STATUS_CLAUSES.items()
}
CASTS = {"priority": "::task_priority", "due_date": "::text::timestamptz"}

__all__ = [
    "CASTS", "COLUMNS", "COUNT_SQL", "DIAGNOSE_SQL", "GET_SQL", "INSERT_SQL", "LIST_SQL",
    "SORT_KEYS", "TASK_FIELDS", "WRITABLE",
]
