"""The SQL of the benchmarked operations, copied from impl/store.py as of commit 4acf69e (same
text, same columns, casts and ORDER BY; the list's total from the task_counts row of migration
0002, page and total in one round trip), for the baseline app and the SQL-only timings.

scripts/bench.py checks before every run that the baseline's answers equal the API's, so a drift
in columns or results shows up; a change of SQL in impl/store.py must be copied here by hand."""

from __future__ import annotations

COLUMNS = (
    "id, user_id, title, description, completed, completed_at, priority::text AS priority, "
    "due_date, tags::text[] AS tags, created_at, updated_at, version"
)
SORT_KEYS = ("created_at", "updated_at", "title", "priority", "due_date")
CURSOR_KEYS = ", ".join(f"(tasks.{name})::text AS key_{name}" for name in SORT_KEYS)
TASK_FIELDS = (
    "id", "user_id", "title", "description", "completed", "completed_at", "priority",
    "due_date", "tags", "created_at", "updated_at", "version",
)
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
GET_SQL = f"SELECT {COLUMNS} FROM tasks WHERE id = $1 AND user_id = $2"
INSERT_SQL = (
    "INSERT INTO tasks (id, user_id, title, description, completed, completed_at, "
    "priority, due_date, tags) VALUES ($1, $2, $3, $4, $5, "
    "CASE WHEN $5 THEN now() END, $6::task_priority, $7::text::timestamptz, $8) "
    f"RETURNING {COLUMNS}"
)
WRITABLE = ("title", "description", "completed", "priority", "due_date", "tags")
CASTS = {"priority": "::task_priority", "due_date": "::text::timestamptz"}
DIAGNOSE_SQL = "SELECT user_id, version FROM tasks WHERE id = $1"
