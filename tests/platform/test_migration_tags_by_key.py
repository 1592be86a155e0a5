"""Migration 0013: deleting a tagged task, or editing its title, reads the same few pages of
task_tags whatever the number of its user's tasks. Under 0005's trigger (`tag = ANY (...)`), in a
session planning with values (these connections ask for no plan mode, as a pooler's cannot;
before migration 0014 nothing else decided it), for a user the statistics do not know yet while
they know every other (fewer than about a hundred users, as in a young deployment: here
twenty), PostgreSQL read the user's whole range of task_tags' primary key to find the task's
rows; that is checked here too, so the check can fail. At head (0013 and 0014) it is counted
again.

Counted, not timed: the index pages each write's trigger asked for
(pg_stat_get_xact_blocks_fetched, this transaction's own counts), as the API's role.
"""

from __future__ import annotations

import asyncio

import asyncpg

from impl.platform.database import connect_options
from impl.platform.embedded import api_role_url
from impl.platform.migrate import upgrade
from impl.platform.row_scope import enter_as
from impl.tasks.store import DELETE_SQL

USER = "tags-by-key-user"
USER_TASKS = 3_000
OTHERS, OTHER_TASKS = 20, 200
WRITES = 10  # more than the five runs PL/pgSQL plans with the row's values before it may switch
# The index pages one write may ask for: per tag a descent of the primary key (two or three
# levels) to its row, and for an edit one more to the row's new entry (word_bits is in the key's
# INCLUDE, so the update is not HOT): measured 6 per delete and 14 per edit for two tags.
BOUNDED = 20
RETITLE_SQL = (
    "UPDATE tasks SET title = title || ' (edited)', version = version + 1, updated_at = now(), "
    "change_xid = pg_current_xact_id() WHERE id = $1 AND user_id = $2"
)
ADD_TASKS_SQL = (
    "INSERT INTO tasks (id, user_id, title, description, tags) "
    "SELECT gen_random_uuid(), $1, 'Task ' || n || ' about the garden', 'Water the ficus', "
    "'{home,work}' FROM generate_series(1, $2) AS n"
)
PAGES_SQL = "SELECT pg_stat_get_xact_blocks_fetched('task_tags_pkey'::regclass)"


async def _pages_per_write(api: asyncpg.Connection) -> tuple[float, float]:
    """Index pages of task_tags per DELETE, then per title edit, of the user's tagged tasks;
    rolled back, so the next measure finds the same tasks."""
    transaction = api.transaction()
    await transaction.start()
    try:
        await enter_as(api, USER)
        tasks = [row["id"] for row in await api.fetch(
            "SELECT id FROM tasks WHERE user_id = $1 ORDER BY id LIMIT $2", USER, 2 * WRITES)]
        assert len(tasks) == 2 * WRITES
        start = await api.fetchval(PAGES_SQL)
        for task_id in tasks[:WRITES]:
            assert await api.fetchval(DELETE_SQL, task_id, USER, None) == task_id
        middle = await api.fetchval(PAGES_SQL)
        for task_id in tasks[WRITES:]:
            assert await api.execute(RETITLE_SQL, task_id, USER) == "UPDATE 1"
        end = await api.fetchval(PAGES_SQL)
        # What the writes left is right: the deleted tasks' rows are gone, the edited ones' bits
        # are those of their new words.
        assert await api.fetchval(
            "SELECT count(*) FROM task_tags WHERE task_id = ANY($1::uuid[])", tasks[:WRITES]) == 0
        assert await api.fetchval(
            "SELECT count(*) FROM task_tags AS t JOIN tasks ON tasks.id = t.task_id "
            "WHERE t.task_id = ANY($1::uuid[]) "
            "AND t.word_bits = task_word_bits(tasks.title || ' ' || tasks.description)",
            tasks[WRITES:]) == 2 * WRITES
    finally:
        await transaction.rollback()
    return (middle - start) / WRITES, (end - middle) / WRITES


async def test_a_tagged_tasks_delete_and_edit_read_a_bounded_part_of_task_tags(
        fresh_database: str) -> None:
    await asyncio.to_thread(upgrade, fresh_database, "0012")
    dsn = connect_options(fresh_database).dsn
    owner = await asyncpg.connect(dsn)
    try:
        # The statistics must not learn the user (as for a user whose tasks grew since the last
        # ANALYZE): no autovacuum on this database's tables while the test runs.
        for table in ("tasks", "task_tags"):
            await owner.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
        for index in range(OTHERS):
            await owner.execute(ADD_TASKS_SQL, f"tags-by-key-other-{index}", OTHER_TASKS)
        await owner.execute("ANALYZE")
        await owner.execute(ADD_TASKS_SQL, USER, USER_TASKS)

        measured = {}
        for revision in ("0012", "head"):
            await asyncio.to_thread(upgrade, fresh_database, revision)
            api = await asyncpg.connect(api_role_url(dsn))  # a new session: no cached plans
            try:
                measured[revision] = await _pages_per_write(api)
            finally:
                await api.close()
    finally:
        await owner.close()

    before, after = measured["0012"], measured["head"]
    # Under 0005's trigger: the user's range, USER_TASKS * 2 rows (measured 76 pages a delete,
    # 83 an edit).
    assert min(before) > 2 * BOUNDED, measured
    assert max(after) <= BOUNDED, measured
