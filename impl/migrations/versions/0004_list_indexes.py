"""every list query reads an index: word search, sort indexes in both directions, more counters

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

What a list request costs must not grow with the user's number of tasks (issue 11):

- Search: `q` matches word prefixes through a GIN index on a stored tsvector, `search`, instead
  of scanning with ILIKE. Its lexemes are scoped to the user (an 8-hex-digit hash of the user id
  before each word), so a search reads only the caller's entries however many other users use
  the same words, and the planner's statistics are per user and word. Tags are lexemes too
  (scope, `#`, the tag verbatim), which replaces the GIN index on `tags`.
- Sorts: every sort breaks ties on `id` in its own direction, so one index serves a key in both
  directions (scanned backwards for descending). Tasks without a due date come last in both
  directions: each direction has its own index on the COALESCE expression the query sorts by.
- Totals: `task_counts` also counts per priority among completed tasks, and `task_tag_counts`
  counts per user and tag, so `meta.total` for any mix of status, priority and tag is read from
  a row instead of counted. The trigger applies each write as one upsert per table, tag rows in
  tag order (concurrent writers lock them in the same order).

Adding the stored column rewrites `tasks` under an exclusive lock: on a large database, run
`task-api migrate` in a quiet moment.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen here (a migration is a snapshot); impl/tasks/tables.py declares the same column and indexes.
# The words of a text: lower-case runs of letters and digits, each cut to its first 100
# characters, space-separated (regular expressions: no parser, no dictionary, no stemming).
# The scope of a user: 8 hex digits of md5(user_id), before each of the user's lexemes. The
# functions are single SQL expressions that the planner inlines (task_search_query is not STRICT:
# nullif() would keep a STRICT function from being inlined, and a function that is not inlined
# is planned again at every call).
_FUNCTIONS = r"""
CREATE FUNCTION task_search_scope(user_id text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN left(md5(user_id), 8);

CREATE FUNCTION task_search_words(body text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN btrim(regexp_replace(
        regexp_replace(lower(body), '[^[:alnum:]]+', ' ', 'g'),
        '([[:alnum:]]{100})[[:alnum:]]+', '\1', 'g'
    ));

CREATE FUNCTION task_search_query(user_id text, q text) RETURNS tsquery
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN nullif(replace(regexp_replace(
        task_search_words(q), '([^ ]+)', '''' || task_search_scope(user_id) || '\1'':*', 'g'
    ), ' ', ' & '), '')::tsquery;

CREATE FUNCTION task_tag_query(user_id text, tag text) RETURNS tsquery
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN (
        '''' || task_search_scope(user_id) || '#'
        || replace(replace(tag, '\', '\\'), '''', '''''') || ''''
    )::tsquery;
"""
FUNCTIONS = [statement for statement in _FUNCTIONS.split(";\n\n") if statement.strip()]

# The `search` column: the scoped words of title and description, and the scoped tags (`#` and
# the tag verbatim, put in by rewriting the tsvector's text form: no function maps over an
# array). The two functions above, written out: a generated column that calls SQL functions
# pays for inlining them on every INSERT and UPDATE (measured: 60 us of CPU per write).
SEARCH_TERMS = r"""array_to_tsvector(string_to_array(regexp_replace(btrim(regexp_replace(
    regexp_replace(lower(title || ' ' || coalesce(description, '')), '[^[:alnum:]]+', ' ', 'g'),
    '([[:alnum:]]{100})[[:alnum:]]+', '\1', 'g')), '([^ ]+)', left(md5(user_id), 8) || '\1', 'g'
), ' ')) || regexp_replace(
    array_to_tsvector(tags::text[])::text,
    '''((?:[^'']|'''')*)''', '''' || left(md5(user_id), 8) || '#\1''', 'g'
)::tsvector"""

PRIORITIES = ("low", "medium", "high")
COUNTS = ("total", "completed", *PRIORITIES, *(f"{p}_completed" for p in PRIORITIES))


# What one task adds to each counter, in COUNTS order, for a row variable (NEW or OLD).
def _vector(row: str) -> list[str]:
    return [
        "1", f"{row}.completed::int",
        *(f"({row}.priority = '{p}')::int" for p in PRIORITIES),
        *(f"({row}.completed AND {row}.priority = '{p}')::int" for p in PRIORITIES),
    ]


_ADD = ", ".join(f"{name} = c.{name} + EXCLUDED.{name}" for name in COUNTS)
_NEW = _vector("NEW")
_OLD = _vector("OLD")
_DIFF = [f"{new} - {old}" for new, old in zip(_NEW, _OLD, strict=True)]
_SUMS = ", ".join(f"sum(sign * {name})" for name in COUNTS)


def _tag_upsert(user: str, tags: str, values: list[str]) -> str:
    """Add `values` to the counters of each distinct tag, in tag order: concurrent writers of
    one user lock the tag rows in the same order, so they cannot deadlock."""
    return (
        f"INSERT INTO task_tag_counts AS c (user_id, tag, {', '.join(COUNTS)}) "
        f"SELECT {user}, tag, {', '.join(values)} "
        f"FROM (SELECT DISTINCT unnest({tags}) AS tag) AS distinct_tags ORDER BY tag "
        f"ON CONFLICT (user_id, tag) DO UPDATE SET {_ADD};"
    )


TRIGGER_FUNCTION = f"""
CREATE OR REPLACE FUNCTION task_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The counters of the user, then of each tag: always in this order (no deadlocks).
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_counts AS c (user_id, {", ".join(COUNTS)})
        VALUES (NEW.user_id, {", ".join(_NEW)})
        ON CONFLICT (user_id) DO UPDATE SET {_ADD};
        IF cardinality(NEW.tags) > 0 THEN
            {_tag_upsert("NEW.user_id", "NEW.tags", _NEW)}
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE task_counts SET {", ".join(f"{n} = {n} - {v}" for n, v in zip(COUNTS, _OLD, strict=True))}
        WHERE user_id = OLD.user_id;
        IF cardinality(OLD.tags) > 0 THEN
            {_tag_upsert("OLD.user_id", "OLD.tags", [f"-{v}" for v in _OLD])}
        END IF;
    ELSIF OLD.user_id = NEW.user_id AND OLD.tags = NEW.tags THEN
        -- completed or priority changed (the trigger's WHEN clause): add the differences.
        UPDATE task_counts SET {", ".join(f"{n} = {n} + {d}" for n, d in zip(COUNTS, _DIFF, strict=True))}
        WHERE user_id = NEW.user_id;
        IF cardinality(NEW.tags) > 0 THEN
            {_tag_upsert("NEW.user_id", "NEW.tags", _DIFF)}
        END IF;
    ELSE
        -- The tags (or the owner) changed: the old row comes off, the new one goes on, each
        -- table in one statement (one user's row first, then tags in order).
        INSERT INTO task_counts AS c (user_id, {", ".join(COUNTS)})
        SELECT user_id, {_SUMS} FROM (
            SELECT OLD.user_id, -1, {", ".join(_OLD)}
            UNION ALL SELECT NEW.user_id, 1, {", ".join(_NEW)}
        ) AS change(user_id, sign, {", ".join(COUNTS)})
        GROUP BY user_id ORDER BY user_id
        ON CONFLICT (user_id) DO UPDATE SET {_ADD};
        INSERT INTO task_tag_counts AS c (user_id, tag, {", ".join(COUNTS)})
        SELECT user_id, tag, {_SUMS} FROM (
            SELECT OLD.user_id, tag, -1, {", ".join(_OLD)}
            FROM (SELECT DISTINCT unnest(OLD.tags)) AS old_tags(tag)
            UNION ALL
            SELECT NEW.user_id, tag, 1, {", ".join(_NEW)}
            FROM (SELECT DISTINCT unnest(NEW.tags)) AS new_tags(tag)
        ) AS change(user_id, tag, sign, {", ".join(COUNTS)})
        GROUP BY user_id, tag ORDER BY user_id, tag
        ON CONFLICT (user_id, tag) DO UPDATE SET {_ADD};
    END IF;
    RETURN NULL;
END $$;
"""

COUNT_CHANGES_TRIGGER = """
CREATE TRIGGER tasks_count_changes AFTER UPDATE ON tasks
FOR EACH ROW WHEN (
    OLD.user_id IS DISTINCT FROM NEW.user_id
    OR OLD.completed IS DISTINCT FROM NEW.completed
    OR OLD.priority IS DISTINCT FROM NEW.priority
    OR OLD.tags IS DISTINCT FROM NEW.tags
) EXECUTE FUNCTION task_counts_apply()
"""

BACKFILL = f"""
INSERT INTO {{table}} AS c (user_id, {{key}}{", ".join(COUNTS)})
SELECT user_id, {{key}}count(*), count(*) FILTER (WHERE completed),
       {", ".join(f"count(*) FILTER (WHERE priority = '{p}')" for p in PRIORITIES)},
       {", ".join(f"count(*) FILTER (WHERE completed AND priority = '{p}')" for p in PRIORITIES)}
FROM {{source}} GROUP BY user_id{{group}}
"""

# Sort indexes: (user_id, key, id), one direction serving both. The old ones broke ties on id
# ascending in both directions.
SORT_INDEXES = {
    "ix_tasks_user_created": "user_id, created_at, id",
    "ix_tasks_user_completed_created": "user_id, completed, created_at, id",
    "ix_tasks_user_updated": "user_id, updated_at, id",
    "ix_tasks_user_due": "user_id, COALESCE(due_date, 'infinity'::timestamptz), id",
    "ix_tasks_user_due_desc": "user_id, COALESCE(due_date, '-infinity'::timestamptz), id",
}
OLD_SORT_INDEXES = {
    "ix_tasks_user_created": "user_id, created_at DESC, id",
    "ix_tasks_user_completed_created": "user_id, completed, created_at DESC, id",
    "ix_tasks_user_updated": "user_id, updated_at DESC, id",
    "ix_tasks_user_due": "user_id, due_date, id",
}


def upgrade() -> None:
    # The API never stores an infinite due date (RFC 3339 instants only); the indexes use
    # +-infinity for "no due date", so a real one must not exist.
    op.execute(
        "ALTER TABLE tasks ADD CONSTRAINT due_date_finite "
        "CHECK (due_date IS NULL OR isfinite(due_date))"
    )
    for statement in FUNCTIONS:
        op.execute(statement)
    op.execute(
        "ALTER TABLE tasks ADD COLUMN search tsvector NOT NULL "
        f"GENERATED ALWAYS AS ({SEARCH_TERMS}) STORED"
    )
    op.execute("CREATE INDEX ix_tasks_search ON tasks USING gin (search)")
    op.execute("DROP INDEX ix_tasks_tags")
    for name, columns in SORT_INDEXES.items():
        op.execute(f"DROP INDEX IF EXISTS {name}")
        op.execute(f"CREATE INDEX {name} ON tasks ({columns})")

    for p in PRIORITIES:
        op.execute(
            f"ALTER TABLE task_counts ADD COLUMN {p}_completed bigint NOT NULL DEFAULT 0"
        )
    op.execute(
        """
        CREATE TABLE task_tag_counts (
            user_id text COLLATE "C" NOT NULL,
            tag varchar(32) NOT NULL,
        """
        + "".join(f"{name} bigint NOT NULL DEFAULT 0,\n" for name in COUNTS)
        + r"""
            PRIMARY KEY (user_id, tag),
            CONSTRAINT user_id_valid CHECK (
                char_length(user_id) BETWEEN 1 AND 255 AND user_id !~ '[\x01-\x1f\x7f-\x9f]'
            )
        )
        """
    )
    op.execute("DROP TRIGGER tasks_count_changes ON tasks")
    op.execute(TRIGGER_FUNCTION)
    op.execute(COUNT_CHANGES_TRIGGER)
    # Recount under the table lock the column rewrite took: no write can slip in between.
    op.execute("DELETE FROM task_counts")
    op.execute(BACKFILL.format(table="task_counts", key="", source="tasks", group=""))
    op.execute(
        BACKFILL.format(
            table="task_tag_counts", key="tag, ",
            source="(SELECT DISTINCT id, user_id, completed, priority, unnest(tags) AS tag "
            "FROM tasks) AS tagged",
            group=", tag",
        )
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER tasks_count_changes ON tasks")
    op.execute("DROP TABLE task_tag_counts")
    for p in PRIORITIES:
        op.execute(f"ALTER TABLE task_counts DROP COLUMN {p}_completed")
    op.execute(
        """
        CREATE OR REPLACE FUNCTION task_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
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
                VALUES (NEW.user_id, 1, NEW.completed::int, (NEW.priority = 'low')::int,
                        (NEW.priority = 'medium')::int, (NEW.priority = 'high')::int)
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
        CREATE TRIGGER tasks_count_changes AFTER UPDATE ON tasks
        FOR EACH ROW WHEN (
            OLD.user_id IS DISTINCT FROM NEW.user_id
            OR OLD.completed IS DISTINCT FROM NEW.completed
            OR OLD.priority IS DISTINCT FROM NEW.priority
        ) EXECUTE FUNCTION task_counts_apply()
        """
    )
    op.execute("DROP INDEX ix_tasks_user_due_desc")
    for name, columns in OLD_SORT_INDEXES.items():
        op.execute(f"DROP INDEX {name}")
        op.execute(f"CREATE INDEX {name} ON tasks ({columns})")
    op.execute("CREATE INDEX ix_tasks_tags ON tasks USING gin (tags)")
    op.execute("DROP INDEX ix_tasks_search")
    op.execute("ALTER TABLE tasks DROP COLUMN search")
    op.execute(
        "DROP FUNCTION task_tag_query(text, text), task_search_query(text, text), "
        "task_search_words(text), task_search_scope(text)"
    )
    op.execute("ALTER TABLE tasks DROP CONSTRAINT due_date_finite")
