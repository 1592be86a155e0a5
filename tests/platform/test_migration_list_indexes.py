"""Migration 0004 (search column, sort indexes, tag counters) on a database in use: the counters
it fills equal a recount, every task is searchable at once, and the way back restores 0003."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from alembic import command

from impl.platform.database import connect_options
from impl.platform.migrate import alembic_config, upgrade
from tests.support.factories import RECOUNT, RECOUNT_TAGS, RELIST_TAGS

USERS = ("a11ce000-0000-4000-8000-000000000001", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY")
INDEXES = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'tasks' ORDER BY 1"


async def _snapshot(connection: asyncpg.Connection) -> list[str]:
    return [
        row[0]
        for table in ("tasks", "task_counts", "idempotency_keys")
        for row in await connection.fetch(
            f"SELECT to_jsonb(t)::text FROM {table} AS t ORDER BY 1"
        )
    ]


async def test_upgrade_counts_and_indexes_what_was_there_and_downgrade_restores_0003(
    fresh_database: str,
) -> None:
    await asyncio.to_thread(upgrade, fresh_database, "0003")
    connection = await asyncpg.connect(connect_options(fresh_database).dsn)
    try:
        for owner, user in enumerate(USERS):
            for index in range(9):
                await connection.execute(
                    "INSERT INTO tasks (id, user_id, title, description, completed, completed_at, "
                    "priority, tags) VALUES ($1, $2, $3, $4, $5, CASE WHEN $5 THEN now() END, "
                    "$6::task_priority, $7)",
                    uuid.uuid4(), user, f"Quarterly REPORT {owner}-{index}",
                    "l'été: café" if index % 2 else None, index % 3 == 0,
                    ("low", "medium", "high")[index % 3],
                    # Duplicates and quotes too: written before the API merged them, or by hand.
                    [["home", "work", "home"], ["it's"], []][index % 3],
                )
        await connection.execute("UPDATE tasks SET completed = true, completed_at = now() "
                                 "WHERE title LIKE '%-4'")
        before, indexes_before = await _snapshot(connection), await connection.fetch(INDEXES)

        await asyncio.to_thread(upgrade, fresh_database, "head")
        assert await connection.fetch(RECOUNT) == []
        assert await connection.fetch(RECOUNT_TAGS) == []
        assert await connection.fetch(RELIST_TAGS) == []  # 0005 too
        for user in USERS:
            assert await connection.fetchval(
                "SELECT total FROM task_tag_counts WHERE user_id = $1 AND tag = 'home'", user
            ) == 3  # three tasks, each counted once

            async def found(condition: str, value: str, user: str = user) -> int:
                count: int = await connection.fetchval(
                    f"SELECT count(*) FROM tasks WHERE user_id = $1 AND search @@ {condition}",
                    user, value,
                )
                return count

            assert await found("task_search_query($1, $2)", "quart REP") == 9
            assert await found("task_search_query($1, $2)", "CAFÉ été") == 4
            assert await found("task_search_query($1, $2)", "ete") == 0
            assert await found("task_search_query($1, $2)", "%") == 0
            assert await found("task_tag_query($1, $2)", "it's") == 3
            assert await found("task_tag_query($1, $2)", "it") == 0
        # task_tags' word bits (0005) never hide a task that matches q.
        for q in ("quart REP", "CAFÉ été", "l'ét", "report 4"):
            assert await connection.fetchval(
                "SELECT count(*) FROM task_tags JOIN tasks ON tasks.id = task_tags.task_id "
                "WHERE tasks.search @@ task_search_query(tasks.user_id, $1) "
                "AND task_tags.word_bits & task_word_bits($1) <> task_word_bits($1)", q,
            ) == 0, q
        # The trigger computes the bits from `search`; the backfill and q from the text.
        extra = uuid.uuid4()
        await connection.execute(
            "INSERT INTO tasks (id, user_id, title, tags) VALUES ($1, $2, 'Écrire à Zoë', $3)",
            extra, USERS[0], ["home", "it's", "home"],
        )
        await connection.execute(
            "UPDATE tasks SET title = 'ÉTÉ CAFÉ: naïve déjà-vu', description = '123abc x', "
            "change_xid = pg_current_xact_id() WHERE id = $1", extra,
        )
        assert await connection.fetch(RELIST_TAGS) == []
        await connection.execute("DELETE FROM tasks WHERE id = $1", extra)
        assert await connection.fetch(RELIST_TAGS) == []

        config = alembic_config(fresh_database)
        await asyncio.to_thread(command.downgrade, config, "0003")
        assert await _snapshot(connection) == before
        assert await connection.fetch(INDEXES) == indexes_before
        await asyncio.to_thread(upgrade, fresh_database, "head")
        assert await connection.fetch(RECOUNT_TAGS) == []
        assert await connection.fetch(RELIST_TAGS) == []
    finally:
        await connection.close()
