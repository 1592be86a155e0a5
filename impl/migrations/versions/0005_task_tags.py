"""a tag's tasks in creation order: the task_tags table, kept by a trigger

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

A listing with `tag` in the default order (created_at, either direction) reads the tag's own
ordered list instead of walking all the user's tasks and testing each for the tag (issue 11):
one row per task and distinct tag, (user_id, tag, created_at, task_id), the primary key being
that order. A page of `tag=home` is a range of it.

With `q` too, most of the tag's tasks without the words are skipped in the index itself: each
row carries the task's word bits (INCLUDE, read index-only), one of 64 bits per distinct
three-letter start of its title's and description's words (task_word_bits). A task can match
`q` only if its bits hold the bits of q's words, so only those tasks are looked up and tested
with the real search (1 in 25 of the others pass, for a task of 7 words). `tag=home&q=rec` then
costs about the same at 100 tasks and at 100,000.

A trigger keeps it: an INSERT adds the rows of its distinct tags, a DELETE removes them, an
UPDATE of the tags (or of the owner or creation time, which the API never changes) replaces
them, an UPDATE of title or description rewrites their bits. The triggers fire only for tasks
with tags (their WHEN clauses).

Also: the GIN index of `search` keeps at most 64 kB of deferred writes (its pending list, which
every search reads in full) instead of 4 MB (see upgrade()).
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Frozen here (a migration is a snapshot); impl/tasks/tables.py declares the same table.
TABLE = r"""
CREATE TABLE task_tags (
    user_id text COLLATE "C" NOT NULL,
    tag varchar(32) NOT NULL,
    created_at timestamptz NOT NULL,
    task_id uuid NOT NULL,
    word_bits bigint NOT NULL,
    PRIMARY KEY (user_id, tag, created_at, task_id) INCLUDE (word_bits),
    CONSTRAINT user_id_valid CHECK (
        char_length(user_id) BETWEEN 1 AND 255 AND user_id !~ '[\x01-\x1f\x7f-\x9f]'
    )
)
"""

# Words of 3 letters or more (task_search_words: lower-case, letters and digits), each setting the
# bit its first three letters hash to (md5: the same on every server and version). Of q, the
# bits its words must find; a word of one or two letters sets none (it asks for nothing here).
_BIT_OR = "coalesce(bit_or(1::bigint << (get_byte(decode(md5(left(word, 3)), 'hex'), 0) % 64)), 0)"
BITS = f"""(
    SELECT {_BIT_OR}
    FROM unnest(string_to_array(task_search_words({{text}}), ' ')) AS word
    WHERE char_length(word) >= 3
)"""
# For the list query (once per request) and for tests. PL/pgSQL keeps the plan of its query for
# the session; a SQL function with a subquery is never inlined and is planned again at every
# call (measured: 60 us against 20 per call).
BITS_FUNCTION = f"""
CREATE FUNCTION task_word_bits(body text) RETURNS bigint
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    RETURN {BITS.format(text="body")};
END $$
"""
# The same bits, from the words the task's `search` column already holds (lexemes: the user's
# 8-character scope, then a word, or `#` and a tag): no regular expression runs again.
_NEW_BITS = f"""(
    SELECT {_BIT_OR}
    FROM (SELECT substr(lexeme, 9) AS word FROM unnest(NEW.search)) AS words
    WHERE char_length(word) >= 3 AND left(word, 1) <> '#'
)"""

# Rows come off by their whole key (one index probe each); a task's duplicate tags (written
# before the API merged them, or by hand) give one row. An edit of title or description that
# keeps the tags rewrites only the rows whose bits it changed (most edits keep every word's
# first three letters: none).
FUNCTION = f"""
CREATE FUNCTION task_tags_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.tags = NEW.tags AND OLD.user_id = NEW.user_id
        AND OLD.created_at = NEW.created_at THEN
        UPDATE task_tags SET word_bits = new_bits.bits FROM (SELECT {_NEW_BITS} AS bits) AS new_bits
        WHERE user_id = NEW.user_id AND tag = ANY (NEW.tags)
          AND created_at = NEW.created_at AND task_id = NEW.id AND word_bits <> new_bits.bits;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND cardinality(OLD.tags) > 0 THEN
        DELETE FROM task_tags
        WHERE user_id = OLD.user_id AND tag = ANY (OLD.tags)
          AND created_at = OLD.created_at AND task_id = OLD.id;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') AND cardinality(NEW.tags) > 0 THEN
        INSERT INTO task_tags (user_id, tag, created_at, task_id, word_bits)
        SELECT DISTINCT NEW.user_id, tag, NEW.created_at, NEW.id, {_NEW_BITS}
        FROM unnest(NEW.tags) AS tag;
    END IF;
    RETURN NULL;
END $$
"""

TRIGGERS = (
    """CREATE TRIGGER tasks_tags_insert AFTER INSERT ON tasks FOR EACH ROW
    WHEN (cardinality(NEW.tags) > 0) EXECUTE FUNCTION task_tags_apply()""",
    """CREATE TRIGGER tasks_tags_delete AFTER DELETE ON tasks FOR EACH ROW
    WHEN (cardinality(OLD.tags) > 0) EXECUTE FUNCTION task_tags_apply()""",
    """CREATE TRIGGER tasks_tags_update AFTER UPDATE ON tasks FOR EACH ROW
    WHEN ((cardinality(OLD.tags) > 0 OR cardinality(NEW.tags) > 0) AND (
        OLD.tags IS DISTINCT FROM NEW.tags OR OLD.title IS DISTINCT FROM NEW.title
        OR OLD.description IS DISTINCT FROM NEW.description
        OR OLD.user_id IS DISTINCT FROM NEW.user_id
        OR OLD.created_at IS DISTINCT FROM NEW.created_at
    )) EXECUTE FUNCTION task_tags_apply()""",
)

PENDING_LIST_KB = 64  # the smallest PostgreSQL allows

# bench/data.py does the same for the users it loads with the insert triggers off.
BACKFILL = (
    "INSERT INTO task_tags (user_id, tag, created_at, task_id, word_bits) "
    "SELECT DISTINCT user_id, unnest(tags), created_at, id, "
    "task_word_bits(title || ' ' || coalesce(description, '')) FROM tasks"
)


def upgrade() -> None:
    # The search's GIN index keeps at most 64 kB of writes in its pending list (the default is
    # 4 MB), which every search reads in full until VACUUM or the limit flushes it: on a table
    # written by many users, a q or tag search of a user with 100 tasks took 1.4 ms instead of
    # 0.3 with 457 pending pages (measured), whatever its own size. Writes pay the flushes, about
    # 20-60 us each on average (fastupdate off: 30-80, and more for a PATCH of `completed`).
    op.execute(f"ALTER INDEX ix_tasks_search SET (gin_pending_list_limit = {PENDING_LIST_KB})")
    op.execute("SELECT gin_clean_pending_list('ix_tasks_search')")
    op.execute(BITS_FUNCTION)
    op.execute(TABLE)
    op.execute(FUNCTION)
    # The table lock keeps writes out between the backfill and the triggers.
    op.execute("LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE")
    for trigger in TRIGGERS:
        op.execute(trigger)
    op.execute(BACKFILL)


def downgrade() -> None:
    op.execute("ALTER INDEX ix_tasks_search RESET (gin_pending_list_limit)")
    for name in ("tasks_tags_insert", "tasks_tags_delete", "tasks_tags_update"):
        op.execute(f"DROP TRIGGER {name} ON tasks")
    op.execute("DROP FUNCTION task_tags_apply()")
    op.execute("DROP TABLE task_tags")
    op.execute("DROP FUNCTION task_word_bits(text)")
