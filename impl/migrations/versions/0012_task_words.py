"""a user's words and their tasks: the task_words table, kept by a trigger, for `q` under
row-level security; the search's GIN index goes

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

Under row-level security (migration 0011) PostgreSQL runs the policy's condition before any
condition of the query that is not leakproof, so only leakproof ones can serve as index
conditions. No GIN operator is leakproof (`@@` included: ts_match_vq), and only a superuser can
mark one so, which Neon does not give. The search's GIN index (ix_tasks_search) then served
nothing but a superuser's queries, while every write still paid for it; and a rare word, which
the listing collects through an index, read every task of the user instead (30,150 rows for
`q=zzznomatch` at 30,000 tasks: docs/row-security.md).

So a user's words get a table of their own, under the same wall: one row per task and distinct
word of its title and description (the words `search` holds: task_search_words),
(user_id, word, task_id) its primary key. A word prefix is a range of it (text comparisons are
leakproof), the matching tasks then looked up by id and tested with the real search. The GIN
index is dropped: a write now inserts the task's words into a B-tree instead of into the GIN
index (with its pending list), and an edit of title or description changes only the words that
changed (scripts/bench_writes.py measures it).

A trigger keeps it, from the words the row's `search` column already holds (no regular
expression runs again): an INSERT adds them, a DELETE removes them (by their whole key), an
UPDATE of title or description applies the difference (an UPDATE that changes neither does
not call it: the trigger's WHEN clause). The table is filled once from the tasks
(under the table lock, the trigger already in place), then put behind the wall like the others.
"""

from __future__ import annotations

from alembic import op

from impl.migrations import row_security

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Frozen here (a migration is a snapshot); impl/tasks/tables.py declares the same table.
TABLE = r"""
CREATE TABLE task_words (
    user_id text COLLATE "C" NOT NULL,
    word text COLLATE "C" NOT NULL,
    task_id uuid NOT NULL,
    PRIMARY KEY (user_id, word, task_id),
    CONSTRAINT user_id_valid CHECK (
        char_length(user_id) BETWEEN 1 AND 255 AND user_id !~ '[\x01-\x1f\x7f-\x9f]'
    )
)
"""
# The words of a row's `search` (lexemes: the user's 8-character scope, then a word, or `#` and
# a tag): distinct already, as a tsvector's lexemes are.
WORDS = """ARRAY(SELECT substr(lexeme, 9) FROM unnest({row}.search)
                 WHERE substr(lexeme, 9, 1) <> '#')"""
# The words that go are deleted one statement each, by the whole primary key: a plan that cannot
# be anything but one probe of the unique index. The one statement it replaced (`word = ANY
# (old_words)` with user_id and task_id) was planned from the table's statistics, and for a user
# they underrate (a new one, or one whose words grew since the last ANALYZE) PostgreSQL scanned
# the primary key on user_id and task_id alone (word skipped), reading every word of the user to
# find the task's: +0.7 ms a title edit and a DELETE at 2,000 tasks of one user, growing with
# them (docs/row-security.md, "What task_words costs"). Nine words a task cost nine short
# statements: measured alike to one statement that probes each key (by ctid), and no planner
# choice is left.
FUNCTION = f"""
CREATE FUNCTION task_words_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_words text[] := CASE WHEN TG_OP <> 'INSERT' THEN {WORDS.format(row="OLD")} END;
    new_words text[] := CASE WHEN TG_OP <> 'DELETE' THEN {WORDS.format(row="NEW")} END;
    gone text;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        FOREACH gone IN ARRAY old_words LOOP
            IF TG_OP = 'DELETE' OR NOT (gone = ANY (new_words)) THEN
                DELETE FROM task_words
                WHERE user_id = OLD.user_id AND word = gone AND task_id = OLD.id;
            END IF;
        END LOOP;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO task_words (user_id, word, task_id)
        SELECT NEW.user_id, w, NEW.id FROM unnest(new_words) AS w
        WHERE NOT (w = ANY (coalesce(old_words, '{{}}')));
    END IF;
    RETURN NULL;
END $$
"""
TRIGGERS = (
    """CREATE TRIGGER tasks_words_insert AFTER INSERT ON tasks FOR EACH ROW
    EXECUTE FUNCTION task_words_apply()""",
    """CREATE TRIGGER tasks_words_delete AFTER DELETE ON tasks FOR EACH ROW
    EXECUTE FUNCTION task_words_apply()""",
    """CREATE TRIGGER tasks_words_update AFTER UPDATE ON tasks FOR EACH ROW
    WHEN (OLD.title IS DISTINCT FROM NEW.title
          OR OLD.description IS DISTINCT FROM NEW.description)
    EXECUTE FUNCTION task_words_apply()""",
)
# bench/data.py does the same for the users it loads with the insert triggers off.
BACKFILL = (
    "INSERT INTO task_words (user_id, word, task_id) "
    "SELECT user_id, substr(lexeme, 9), id FROM tasks, unnest(search) "
    "WHERE substr(lexeme, 9, 1) <> '#'"
)
GIN = ("CREATE INDEX ix_tasks_search ON tasks USING gin (search) "
       "WITH (gin_pending_list_limit = 64)")


def upgrade() -> None:
    op.execute(TABLE)
    op.execute(FUNCTION)
    # The table lock keeps writes out between the backfill and the triggers. The owner reads
    # every user's tasks here: RLS is not forced on `tasks` for the rest of this transaction
    # (DDL is transactional: nobody sees it off).
    op.execute("LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE")
    for trigger in TRIGGERS:
        op.execute(trigger)
    op.execute("ALTER TABLE tasks NO FORCE ROW LEVEL SECURITY")
    op.execute(BACKFILL)
    op.execute("ALTER TABLE tasks FORCE ROW LEVEL SECURITY")
    row_security.protect("task_words")
    op.execute("DROP INDEX ix_tasks_search")


def downgrade() -> None:
    op.execute(GIN)
    row_security.unprotect("task_words")
    for name in ("tasks_words_insert", "tasks_words_delete", "tasks_words_update"):
        op.execute(f"DROP TRIGGER {name} ON tasks")
    op.execute("DROP FUNCTION task_words_apply()")
    op.execute("DROP TABLE task_words")
