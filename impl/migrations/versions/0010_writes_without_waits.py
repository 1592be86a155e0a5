"""concurrent writes stop waiting for each other: no NOTIFY in a write, counters in slots

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

Under 16 concurrent writers two parts of the schema made writes wait for each other, and cost
most of the gap to the write ceiling (issue 33, docs/perf/write-cost.md):

- NOTIFY in the writing transaction (0007's task_change_record, 0009's webhook_record_event):
  PostgreSQL serialises the commits of every transaction that notified (async.c,
  PreCommit_Notify takes a database-wide lock and holds it through the commit's WAL flush), so
  every writer of every user committed one at a time. The functions no longer notify. The
  application sends the wake-ups after its writes commit, from a statement of its own
  (impl/platform/wake_ups.py), and every replica also polls the feed for the users whose
  streams it holds (impl/tasks/feed_watch.py), so a write by anyone else (psql, a migration)
  or one whose wake-up was lost (a crash between commit and NOTIFY) still reaches the open
  streams within that poll's interval. The webhook workers poll every second as before.
  Without its NOTIFY the change trigger has nothing to do for an INSERT: it now fires for a
  DELETE (the tombstone) and, by a WHEN clause, only for an UPDATE that did not stamp change_xid
  (to refuse it), so the API's writes call no PL/pgSQL for it.
- One counter row per user (task_counts) and per user and tag (task_tag_counts), updated by
  every write of the user and locked until it commits: one user's writes went one at a time.
  Each row is now one of up to SLOTS per user (or user and tag): the trigger adds a write's
  counts to the slot of its database session (pg_backend_pid() % SLOTS), so writes on
  different connections touch different rows, and a reader sums the user's rows (at most SLOTS,
  read from the primary key: still a cost that does not grow with the user's tasks). Within a
  slot a write still takes the user's row, then the tags' rows in tag order (no deadlocks).
  The quota (impl/tasks/store.py) now reads the sum without taking any lock, so concurrent
  creates of one user may overshoot it by the creates in flight (docs/abuse-controls.md).

The existing counter rows become slot 0 of their user (same sums): adding the column with a
constant default rewrites nothing; the primary keys are rebuilt (under an exclusive lock on the
two counter tables, for the time it takes to index them). The downgrade folds each user's slots
back into one row.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Counter rows per user (and per user and tag): concurrent writes of one user share a row only
# when their sessions' process ids are equal modulo this (a pool's connections are usually
# consecutive), and a reader sums at most this many rows.
SLOTS = 16

# Frozen here (a migration is a snapshot): migration 0004's counters, by slot.
PRIORITIES = ("low", "medium", "high")
COUNTS = ("total", "completed", *PRIORITIES, *(f"{p}_completed" for p in PRIORITIES))


def _vector(row: str) -> list[str]:
    return [
        "1", f"{row}.completed::int",
        *(f"({row}.priority = '{p}')::int" for p in PRIORITIES),
        *(f"({row}.completed AND {row}.priority = '{p}')::int" for p in PRIORITIES),
    ]


_ADD = ", ".join(f"{name} = c.{name} + EXCLUDED.{name}" for name in COUNTS)
_NEW = _vector("NEW")
_OLD = _vector("OLD")
_NEGATED_OLD = [f"-{value}" for value in _OLD]
_DIFF = [f"{new} - {old}" for new, old in zip(_NEW, _OLD, strict=True)]
_SUMS = ", ".join(f"sum(sign * {name})" for name in COUNTS)
_LIST = ", ".join(COUNTS)


def _user_upsert(user: str, values: list[str]) -> str:
    return (
        f"INSERT INTO task_counts AS c (user_id, slot, {_LIST}) "
        f"VALUES ({user}, counter_slot, {', '.join(values)}) "
        f"ON CONFLICT (user_id, slot) DO UPDATE SET {_ADD};"
    )


def _tag_upsert(user: str, tags: str, values: list[str]) -> str:
    """Add `values` to the slot's counters of each distinct tag, in tag order."""
    return (
        f"INSERT INTO task_tag_counts AS c (user_id, tag, slot, {_LIST}) "
        f"SELECT {user}, tag, counter_slot, {', '.join(values)} "
        f"FROM (SELECT DISTINCT unnest({tags}) AS tag) AS distinct_tags ORDER BY tag "
        f"ON CONFLICT (user_id, tag, slot) DO UPDATE SET {_ADD};"
    )


# Every branch is an upsert into the session's slot (its row may not exist yet, and a slot's
# counters may go below zero: only the sum of a user's slots means anything).
SLOTTED_COUNTS_FUNCTION = f"""
CREATE OR REPLACE FUNCTION task_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    counter_slot smallint := pg_backend_pid() % {SLOTS};
BEGIN
    -- The counters of the user, then of each tag: always in this order (no deadlocks).
    IF TG_OP = 'INSERT' THEN
        {_user_upsert("NEW.user_id", _NEW)}
        IF cardinality(NEW.tags) > 0 THEN
            {_tag_upsert("NEW.user_id", "NEW.tags", _NEW)}
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        {_user_upsert("OLD.user_id", _NEGATED_OLD)}
        IF cardinality(OLD.tags) > 0 THEN
            {_tag_upsert("OLD.user_id", "OLD.tags", _NEGATED_OLD)}
        END IF;
    ELSIF OLD.user_id = NEW.user_id AND OLD.tags = NEW.tags THEN
        -- completed or priority changed (the trigger's WHEN clause): add the differences.
        {_user_upsert("NEW.user_id", _DIFF)}
        IF cardinality(NEW.tags) > 0 THEN
            {_tag_upsert("NEW.user_id", "NEW.tags", _DIFF)}
        END IF;
    ELSE
        -- The tags (or the owner) changed: the old row comes off, the new one goes on, each
        -- table in one statement (one user's row first, then tags in order).
        INSERT INTO task_counts AS c (user_id, slot, {_LIST})
        SELECT user_id, counter_slot, {_SUMS} FROM (
            SELECT OLD.user_id, -1, {", ".join(_OLD)}
            UNION ALL SELECT NEW.user_id, 1, {", ".join(_NEW)}
        ) AS change(user_id, sign, {_LIST})
        GROUP BY user_id ORDER BY user_id
        ON CONFLICT (user_id, slot) DO UPDATE SET {_ADD};
        INSERT INTO task_tag_counts AS c (user_id, tag, slot, {_LIST})
        SELECT user_id, tag, counter_slot, {_SUMS} FROM (
            SELECT OLD.user_id, tag, -1, {", ".join(_OLD)}
            FROM (SELECT DISTINCT unnest(OLD.tags)) AS old_tags(tag)
            UNION ALL
            SELECT NEW.user_id, tag, 1, {", ".join(_NEW)}
            FROM (SELECT DISTINCT unnest(NEW.tags)) AS new_tags(tag)
        ) AS change(user_id, tag, sign, {_LIST})
        GROUP BY user_id, tag ORDER BY user_id, tag
        ON CONFLICT (user_id, tag, slot) DO UPDATE SET {_ADD};
    END IF;
    RETURN NULL;
END $$
"""

# Migration 0004's function (one row per user), for the downgrade.
_PLAIN_ADD_TAGS = (
    "INSERT INTO task_tag_counts AS c (user_id, tag, {list}) SELECT {user}, tag, {values} "
    "FROM (SELECT DISTINCT unnest({tags}) AS tag) AS distinct_tags ORDER BY tag "
    "ON CONFLICT (user_id, tag) DO UPDATE SET {add};"
)


def _plain_tags(user: str, tags: str, values: list[str]) -> str:
    return _PLAIN_ADD_TAGS.format(list=_LIST, user=user, values=", ".join(values), tags=tags,
                                  add=_ADD)


PLAIN_COUNTS_FUNCTION = f"""
CREATE OR REPLACE FUNCTION task_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The counters of the user, then of each tag: always in this order (no deadlocks).
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_counts AS c (user_id, {_LIST})
        VALUES (NEW.user_id, {", ".join(_NEW)})
        ON CONFLICT (user_id) DO UPDATE SET {_ADD};
        IF cardinality(NEW.tags) > 0 THEN
            {_plain_tags("NEW.user_id", "NEW.tags", _NEW)}
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE task_counts SET {", ".join(f"{n} = {n} - {v}" for n, v in zip(COUNTS, _OLD, strict=True))}
        WHERE user_id = OLD.user_id;
        IF cardinality(OLD.tags) > 0 THEN
            {_plain_tags("OLD.user_id", "OLD.tags", _NEGATED_OLD)}
        END IF;
    ELSIF OLD.user_id = NEW.user_id AND OLD.tags = NEW.tags THEN
        UPDATE task_counts SET {", ".join(f"{n} = {n} + {d}" for n, d in zip(COUNTS, _DIFF, strict=True))}
        WHERE user_id = NEW.user_id;
        IF cardinality(NEW.tags) > 0 THEN
            {_plain_tags("NEW.user_id", "NEW.tags", _DIFF)}
        END IF;
    ELSE
        INSERT INTO task_counts AS c (user_id, {_LIST})
        SELECT user_id, {_SUMS} FROM (
            SELECT OLD.user_id, -1, {", ".join(_OLD)}
            UNION ALL SELECT NEW.user_id, 1, {", ".join(_NEW)}
        ) AS change(user_id, sign, {_LIST})
        GROUP BY user_id ORDER BY user_id
        ON CONFLICT (user_id) DO UPDATE SET {_ADD};
        INSERT INTO task_tag_counts AS c (user_id, tag, {_LIST})
        SELECT user_id, tag, {_SUMS} FROM (
            SELECT OLD.user_id, tag, -1, {", ".join(_OLD)}
            FROM (SELECT DISTINCT unnest(OLD.tags)) AS old_tags(tag)
            UNION ALL
            SELECT NEW.user_id, tag, 1, {", ".join(_NEW)}
            FROM (SELECT DISTINCT unnest(NEW.tags)) AS new_tags(tag)
        ) AS change(user_id, tag, sign, {_LIST})
        GROUP BY user_id, tag ORDER BY user_id, tag
        ON CONFLICT (user_id, tag) DO UPDATE SET {_ADD};
    END IF;
    RETURN NULL;
END $$
"""

# 0007's function without its pg_notify: the tombstone and the stamp check stay.
CHANGE_RECORD = """
CREATE OR REPLACE FUNCTION task_change_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO task_tombstones (user_id, task_id) VALUES (OLD.user_id, OLD.id);
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.change_xid IS DISTINCT FROM pg_current_xact_id() THEN
        RAISE EXCEPTION 'an UPDATE of tasks must set change_xid = pg_current_xact_id()'
            USING HINT = 'the change feed finds changed tasks by it (migration 0007)';
    END IF;
    RETURN NULL;
END $$
"""
NOTIFYING_CHANGE_RECORD = """
CREATE OR REPLACE FUNCTION task_change_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO task_tombstones (user_id, task_id) VALUES (OLD.user_id, OLD.id);
        PERFORM pg_notify('task_changes', OLD.user_id);
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.change_xid IS DISTINCT FROM pg_current_xact_id() THEN
        RAISE EXCEPTION 'an UPDATE of tasks must set change_xid = pg_current_xact_id()'
            USING HINT = 'the change feed finds changed tasks by it (migration 0007)';
    END IF;
    PERFORM pg_notify('task_changes', NEW.user_id);
    RETURN NULL;
END $$
"""
# 0009's function, with (downgrade) or without its pg_notify.
_RECORD_EVENT = """
CREATE OR REPLACE FUNCTION webhook_record_event(p_user_id text, p_type text, p_data jsonb)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    recorded integer;
BEGIN
    INSERT INTO webhook_deliveries (id, subscription_id, user_id, event_type, payload)
    SELECT gen_random_uuid(), s.id, p_user_id, p_type,
           jsonb_build_object('type', p_type, 'timestamp', now(), 'data', p_data)
    FROM webhook_subscriptions AS s
    WHERE s.user_id = p_user_id AND s.enabled AND p_type = ANY (s.event_types);
    GET DIAGNOSTICS recorded = ROW_COUNT;{notify}
    RETURN recorded;
END $$
"""
RECORD_EVENT = _RECORD_EVENT.format(notify="")
NOTIFYING_RECORD_EVENT = _RECORD_EVENT.format(notify="""
    IF recorded > 0 THEN
        PERFORM pg_notify('webhook_deliveries', '');
    END IF;""")


# Without its NOTIFY, the change trigger has nothing to do for an INSERT, and for an UPDATE only
# when the statement did not stamp change_xid: a WHEN clause says so, so a write no longer calls
# PL/pgSQL (or queues an after-trigger event) for it.
STAMP_CHECK_TRIGGER = (
    "CREATE TRIGGER tasks_change_stamp_check AFTER UPDATE ON tasks FOR EACH ROW "
    "WHEN (NEW.change_xid IS DISTINCT FROM pg_current_xact_id()) "
    "EXECUTE FUNCTION task_change_record()"
)


def upgrade() -> None:
    op.execute(CHANGE_RECORD)
    op.execute("DROP TRIGGER tasks_change_record ON tasks")
    op.execute("CREATE TRIGGER tasks_change_record AFTER DELETE ON tasks "
               "FOR EACH ROW EXECUTE FUNCTION task_change_record()")
    op.execute(STAMP_CHECK_TRIGGER)
    op.execute(RECORD_EVENT)
    op.execute("LOCK TABLE task_counts, task_tag_counts IN ACCESS EXCLUSIVE MODE")
    op.execute("ALTER TABLE task_counts ADD COLUMN slot smallint NOT NULL DEFAULT 0, "
               "DROP CONSTRAINT task_counts_pkey, ADD PRIMARY KEY (user_id, slot)")
    op.execute("ALTER TABLE task_tag_counts ADD COLUMN slot smallint NOT NULL DEFAULT 0, "
               "DROP CONSTRAINT task_tag_counts_pkey, ADD PRIMARY KEY (user_id, tag, slot)")
    op.execute(SLOTTED_COUNTS_FUNCTION)


def downgrade() -> None:
    op.execute("LOCK TABLE task_counts, task_tag_counts IN ACCESS EXCLUSIVE MODE")
    sums = ", ".join(f"sum({name}) AS {name}" for name in COUNTS)
    for table, key in (("task_counts", "user_id"), ("task_tag_counts", "user_id, tag")):
        op.execute(f"CREATE TEMPORARY TABLE folded ON COMMIT DROP AS "
                   f"SELECT {key}, {sums} FROM {table} GROUP BY {key}")
        op.execute(f"DELETE FROM {table}")
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey, DROP COLUMN slot, "
                   f"ADD PRIMARY KEY ({key})")
        op.execute(f"INSERT INTO {table} ({key}, {_LIST}) SELECT * FROM folded")
        op.execute("DROP TABLE folded")
    op.execute(PLAIN_COUNTS_FUNCTION)
    op.execute(NOTIFYING_RECORD_EVENT)
    op.execute("DROP TRIGGER tasks_change_stamp_check ON tasks")
    op.execute("DROP TRIGGER tasks_change_record ON tasks")
    op.execute("CREATE TRIGGER tasks_change_record AFTER INSERT OR UPDATE OR DELETE ON tasks "
               "FOR EACH ROW EXECUTE FUNCTION task_change_record()")
    op.execute(NOTIFYING_CHANGE_RECORD)
