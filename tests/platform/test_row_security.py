"""Row-level security, the second wall (migration 0011, impl/platform/row_scope.py,
docs/row-security.md): the store with its user conditions removed, a simulated bug, still
reads, changes and deletes nothing of another user; the API's role cannot take the wall down;
every table with a `user_id` is behind it; the servers connect as that role; and the doors
for cross-user work open for an owner that is not a superuser, whom the wall holds otherwise.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from impl.platform.database import Database, connect_options
from impl.platform.embedded import api_role_url
from impl.platform.migrate import upgrade
from impl.platform.row_scope import API_ROLE, CALLER_SETTING, DOOR_SETTING, as_caller
from impl.tasks.errors import ForeignTask
from impl.tasks.list_sql import ListQuery
from impl.tasks.store import TaskStore
from impl.webhooks.errors import ForeignWebhook
from impl.webhooks.store import WebhookStore
from tests.support.servers import direct_connection, random_user_id, settings

# Every table of users' rows today; a later one is found by its user_id column.
KNOWN_USER_TABLES = {
    "tasks", "idempotency_keys", "task_counts", "task_tag_counts", "task_tags", "task_tombstones",
    "task_reminders", "webhook_subscriptions", "webhook_deliveries", "task_words",
}
# Every door (SECURITY DEFINER function) of migration 0011.
KNOWN_DOORS = {
    "task_api_locate_task", "task_api_locate_webhook", "task_api_purge_changes",
    "task_api_claim_reminders", "task_api_next_reminder_in", "task_api_claim_deliveries",
    "task_api_finish_delivery", "task_api_purge_deliveries", "task_api_changed_users",
    "task_api_any_subscribed",
}
# A user condition of the store's statements, in each form they take (`user_id = $2`,
# `tasks.user_id = $1`, `tagged.user_id = $1`...).
USER_CONDITION = re.compile(r"\b(?:\w+\.)?user_id = (\$\d+)")
FIELDS = {"title": "alice", "description": None, "completed": False, "priority": "high",
          "due_date": None, "tags": ["home"], "recurrence": None, "time_zone": None,
          "reminders": []}


class ForgetfulConnection:
    """A connection whose statements lose every user condition before they run: the bug the
    wall is for. Counts what it removed, so a test cannot pass with nothing removed."""

    def __init__(self, connection: asyncpg.Connection, removed: list[int]) -> None:
        self._connection = connection
        self._removed = removed

    def _forget(self, sql: str) -> str:
        # The parameter stays in the statement (as a text that is never NULL), so that its
        # type is still known: only the condition on the rows goes.
        forgotten, count = USER_CONDITION.subn(r"(\1::text IS NOT NULL)", sql)
        # A door, the caller, an insert of the caller's own row: no condition to remove.
        if not sql.startswith(("SELECT task_api_", "SELECT set_config", "INSERT INTO idem",
                               "SELECT pg_notify")):
            self._removed.append(count)
        return forgotten

    async def execute(self, sql: str, *args: Any) -> str:
        return await self._connection.execute(self._forget(sql), *args)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self._connection.fetch(self._forget(sql), *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self._connection.fetchrow(self._forget(sql), *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._connection.fetchval(self._forget(sql), *args)

    def transaction(self) -> Any:
        return self._connection.transaction()


class ForgetfulDatabase:
    """What TaskStore needs of a Database, on one connection that forgets user conditions."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.removed: list[int] = []
        self._connection = ForgetfulConnection(connection, self.removed)

    def connection(self) -> ForgetfulDatabase:
        return self

    async def __aenter__(self) -> ForgetfulConnection:
        return self._connection

    async def __aexit__(self, *_: object) -> None:
        return None


async def _tasks_of(db: asyncpg.Connection, user: str) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT id, title, version FROM tasks WHERE user_id = $1 ORDER BY id",
                          user)
    return [dict(row) for row in rows]


@pytest.fixture
async def api_connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """Straight to PostgreSQL as the API's role (never through PgBouncer: one connection, with
    a statement cache, is all these tests need)."""
    connection = await asyncpg.connect(connect_options(api_role_url(database_url)).dsn)
    try:
        yield connection
    finally:
        await connection.close()


async def _two_users(database_url: str) -> tuple[str, str, TaskStore, list[uuid.UUID]]:
    """alice with two tasks (one tagged, one overdue), bob with one, written by the real store
    as the API's role; returns (alice, bob, a store of alice's, bob's task ids)."""
    alice, bob = random_user_id(), random_user_id()
    database = Database(api_role_url(database_url), settings(database_url))
    await database.open()
    try:
        store = TaskStore(database, max_tasks_per_user=100)
        fields = dict(FIELDS)
        await store.create(user_id=alice, fields=fields)
        await store.create(user_id=alice, fields={**fields, "tags": []},
                           idempotency_key="k1", request_hash="0" * 64)
        bob_task = await store.create(user_id=bob, fields={**fields, "title": "bob"},
                                      idempotency_key="k1", request_hash="1" * 64)
    finally:
        await database.close()
    return alice, bob, store, [bob_task["id"]]


async def test_the_store_without_its_user_conditions_reaches_nothing_of_another_user(
    database_url: str, api_connection: asyncpg.Connection, db: asyncpg.Connection,
) -> None:
    alice, bob, _, (bob_task,) = await _two_users(database_url)
    bob_before = await _tasks_of(db, bob)
    counts_sql = "SELECT * FROM task_counts WHERE user_id = $1 ORDER BY slot"  # every slot
    bob_counts = await db.fetch(counts_sql, bob)
    assert bob_counts
    forgetful = ForgetfulDatabase(api_connection)
    store = TaskStore(forgetful, max_tasks_per_user=100)  # type: ignore[arg-type]

    # Reads: bob's task by id is out of sight (403 through the door, never its row); alice's
    # list and counters hold only her own tasks.
    with pytest.raises(ForeignTask):
        await store.get(user_id=alice, task_id=bob_task)
    page = await store.page(user_id=alice, query=ListQuery(limit=50), after=None)
    assert {row["user_id"] for row in page.rows} == {alice} and page.total == 2
    tagged = await store.page(user_id=alice, query=ListQuery(tag="home", limit=50), after=None)
    assert {row["user_id"] for row in tagged.rows} == {alice} and tagged.total == 1
    stats = await store.stats(user_id=alice)
    assert (stats["total"], stats["by_priority"]["high"]) == (2, 2)
    # Updates and deletes: bob's task is neither changed nor deleted.
    with pytest.raises(ForeignTask):
        await store.update(user_id=alice, task_id=bob_task, changes={"title": "mine now"},
                           versions=None)
    with pytest.raises(ForeignTask):
        await store.delete(user_id=alice, task_id=bob_task, versions=None)
    # A replayed Idempotency-Key that bob used too finds alice's own task, not bob's.
    again = await store.create(user_id=alice, fields={**FIELDS, "tags": []},
                               idempotency_key="k1", request_hash="0" * 64)
    assert again["user_id"] == alice
    assert all(forgetful.removed), "a statement kept its user condition: nothing was tested"

    # Statements with no user condition at all, on every table: only alice's rows.
    caller = as_caller("$1")
    for table in sorted(KNOWN_USER_TABLES):
        users = await api_connection.fetch(f"SELECT DISTINCT user_id FROM {table} WHERE {caller}",
                                           alice)
        assert {row["user_id"] for row in users} <= {alice}, table
    changed = await api_connection.fetch(
        f"UPDATE tasks SET title = 'everyone', version = version + 1, "
        f"change_xid = pg_current_xact_id() WHERE {caller} RETURNING user_id", alice)
    assert {row["user_id"] for row in changed} == {alice}
    # The counters: a user has up to 16 slot rows in each (migration 0010), alice's only.
    for counters in ("task_counts", "task_tag_counts"):
        counted = await api_connection.fetch(
            f"UPDATE {counters} SET total = total WHERE {caller} RETURNING user_id", alice)
        assert counted and {row["user_id"] for row in counted} == {alice}, counters
    deleted = await api_connection.fetch(f"DELETE FROM tasks WHERE {caller} RETURNING user_id",
                                         alice)
    assert {row["user_id"] for row in deleted} == {alice}
    # Writing a row for another user is refused.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await api_connection.execute(
            f"INSERT INTO tasks (id, user_id, title) SELECT $2, $3, 'x' WHERE {caller}",
            alice, uuid.uuid4(), bob)

    assert await _tasks_of(db, bob) == bob_before
    assert await db.fetch(counts_sql, bob) == bob_counts


async def test_without_the_wall_the_same_bug_reaches_the_other_user(
    database_url: str, db: asyncpg.Connection,
) -> None:
    """The control: the same forgetful store on a connection that row-level security does not
    hold (the superuser's) hands bob's task to alice. The wall is what stopped it above."""
    alice, _, _, (bob_task,) = await _two_users(database_url)
    store = TaskStore(ForgetfulDatabase(db))  # type: ignore[arg-type]
    leaked = await store.get(user_id=alice, task_id=bob_task)
    assert leaked["id"] == bob_task and leaked["user_id"] != alice


async def test_the_webhook_store_without_its_user_conditions_reaches_nothing_of_another_user(
    database_url: str, api_connection: asyncpg.Connection, db: asyncpg.Connection,
) -> None:
    """The same simulated bug in the webhooks' store: bob's subscription and its deliveries
    stay out of alice's sight and reach, and her own are all she lists."""
    alice, bob = random_user_id(), random_user_id()
    database = Database(api_role_url(database_url), settings(database_url))
    await database.open()
    try:
        honest = WebhookStore(database, max_per_user=10, secret_grace_seconds=60)
        mine = await honest.create(user_id=alice, url="https://a.example.com/h",
                                   event_types=["task.created"], description=None, enabled=True)
        theirs = await honest.create(user_id=bob, url="https://b.example.com/h",
                                     event_types=["task.created"], description=None,
                                     enabled=True)
    finally:
        await database.close()
    # A delivery of bob's, recorded as the outbox records it (in bob's own write).
    await api_connection.execute(
        f"SELECT webhook_record_event($1, 'task.created', '{{}}'::jsonb) WHERE {as_caller('$1')}",
        bob)
    bob_before = [dict(row) for row in await db.fetch(
        "SELECT * FROM webhook_subscriptions WHERE user_id = $1", bob)]
    deliveries_before = await db.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE user_id = $1", bob)
    assert deliveries_before == 1
    forgetful = ForgetfulDatabase(api_connection)
    store = WebhookStore(forgetful, max_per_user=10,  # type: ignore[arg-type]
                         secret_grace_seconds=60)

    assert [w["id"] for w in await store.all(user_id=alice)] == [mine["id"]]
    with pytest.raises(ForeignWebhook):
        await store.get(user_id=alice, webhook_id=theirs["id"])
    with pytest.raises(ForeignWebhook):
        await store.update(user_id=alice, webhook_id=theirs["id"],
                           changes={"url": "https://evil.example.com/"})
    with pytest.raises(ForeignWebhook):
        await store.rotate_secret(user_id=alice, webhook_id=theirs["id"])
    with pytest.raises(ForeignWebhook):
        await store.deliveries(user_id=alice, webhook_id=theirs["id"], limit=10)
    with pytest.raises(ForeignWebhook):
        await store.delete(user_id=alice, webhook_id=theirs["id"])
    assert all(forgetful.removed), "a statement kept its user condition: nothing was tested"

    caller = as_caller("$1")
    changed = await api_connection.fetch(
        f"UPDATE webhook_deliveries SET attempts = attempts WHERE {caller} RETURNING user_id",
        alice)
    assert changed == []
    assert await api_connection.fetch(
        f"DELETE FROM webhook_subscriptions WHERE {caller} RETURNING user_id", alice) == [
            (alice,)]
    assert [dict(row) for row in await db.fetch(
        "SELECT * FROM webhook_subscriptions WHERE user_id = $1", bob)] == bob_before
    assert await db.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE user_id = $1", bob) == deliveries_before


@pytest.mark.parametrize("statement", [
    "ALTER TABLE tasks DISABLE ROW LEVEL SECURITY",
    "ALTER TABLE tasks NO FORCE ROW LEVEL SECURITY",
    "DROP POLICY caller_rows ON tasks",
    "CREATE POLICY everything ON tasks USING (true)",
    "ALTER TABLE task_counts DISABLE ROW LEVEL SECURITY",
    f"ALTER ROLE {API_ROLE} BYPASSRLS",
    "SET ROLE postgres",
    "SET row_security = off; SELECT count(*) FROM tasks",
    "SELECT set_config('task_api.door', 'locate_task', false); SELECT count(*) FROM tasks",
])
async def test_the_api_role_cannot_take_the_wall_down(
    api_connection: asyncpg.Connection, db: asyncpg.Connection, statement: str,
) -> None:
    assert await db.fetchval("SELECT count(*) > 0 FROM tasks"), "no rows: nothing to hide"
    try:
        await api_connection.execute(statement)
    except asyncpg.InsufficientPrivilegeError:
        return
    # The door's setting alone opens nothing for the API's role (the door is the owner's).
    assert statement.startswith("SELECT set_config")
    assert await api_connection.fetchval("SELECT count(*) FROM tasks") == 0


async def test_every_table_with_a_user_id_is_behind_the_wall(db: asyncpg.Connection) -> None:
    tables = await db.fetch(
        """
        SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
               pg_get_userbyid(c.relowner) AS owner,
               (SELECT array_agg(p.polname || ':' || p.polcmd::text || ':'
                                 || pg_get_expr(p.polqual, p.polrelid) || ':'
                                 || pg_get_expr(p.polwithcheck, p.polrelid))
                FROM pg_policy p WHERE p.polrelid = c.oid AND p.polroles = '{0}') AS policies
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
          AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid
                      AND a.attname = 'user_id' AND NOT a.attisdropped)
        """
    )
    assert {row["relname"] for row in tables} >= KNOWN_USER_TABLES
    caller = f"current_setting('{CALLER_SETTING}'::text, true)"
    for row in tables:
        name = row["relname"]
        assert row["relrowsecurity"] and row["relforcerowsecurity"], f"{name}: RLS not forced"
        assert row["owner"] != API_ROLE, f"{name} is owned by the API's role"
        expected = f"caller_rows:*:(user_id = {caller}):(user_id = {caller})"
        assert expected in (row["policies"] or []), f"{name}: {row['policies']}"
    api = await db.fetchrow("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1",
                            API_ROLE)
    assert api is not None and not api["rolsuper"] and not api["rolbypassrls"]
    # The doors (SECURITY DEFINER functions): the API's role may call them, nobody else.
    doors = await db.fetch(
        "SELECT proname, proacl::text[] AS acl FROM pg_proc WHERE prosecdef "
        "AND pronamespace = 'public'::regnamespace"
    )
    assert {row["proname"] for row in doors} >= KNOWN_DOORS
    for row in doors:
        grants = row["acl"] or []
        assert any(g.startswith(f"{API_ROLE}=X/") for g in grants), row
        assert not any(g.startswith("=") for g in grants), f"PUBLIC may call {row['proname']}"


async def test_the_servers_connect_as_the_api_role(
    client: Any, alice: Any, db: asyncpg.Connection,
) -> None:
    response = await client.get("/api/tasks", headers=alice.headers)
    assert response.status_code == 200
    users = await db.fetch(
        "SELECT DISTINCT usename FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'"
    )
    assert API_ROLE in {row["usename"] for row in users}


def _as_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}@{parts.netloc.rsplit('@', 1)[-1]}"))


async def test_the_doors_open_for_an_owner_that_is_not_a_superuser_and_only_for_them(
    fresh_database: str, database_url: str,
) -> None:
    """As on Neon: the tables' owner is an ordinary role, which forced RLS holds too (a
    deployment that gives the API the owner's URL keeps the wall); the doors still work."""
    owner = f"owner_{uuid.uuid4().hex[:8]}"
    name = urlsplit(fresh_database).path.lstrip("/")
    async with direct_connection(database_url) as admin:
        await admin.execute(f"CREATE ROLE {owner} LOGIN")
        await admin.execute(f'ALTER DATABASE "{name}" OWNER TO {owner}')
    try:
        await _check_doors(_as_user(fresh_database, owner))
    finally:
        async with direct_connection(database_url) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f"DROP ROLE {owner}")


async def _check_doors(owner_url: str) -> None:
    await asyncio.to_thread(upgrade, owner_url)
    alice, bob = random_user_id(), random_user_id()
    api = await asyncpg.connect(connect_options(api_role_url(owner_url)).dsn)
    owner = await asyncpg.connect(connect_options(owner_url).dsn)
    try:
        task = await api.fetchval(
            f"INSERT INTO tasks (id, user_id, title) SELECT $2, $1, 't' WHERE {as_caller('$1')} "
            "RETURNING id", alice, uuid.uuid4())
        assert await api.fetchval("SELECT task_api_locate_task($1, $2)", task, bob) == "foreign"
        assert await api.fetchval("SELECT task_api_locate_task($1, $2)", task, alice) == "own"
        assert await api.fetchval("SELECT task_api_locate_task($1, $2)", uuid.uuid4(), bob) is None
        # The owner sees nothing without a caller, and only the caller's rows with one.
        assert await owner.fetchval("SELECT count(*) FROM tasks") == 0
        assert await owner.fetchval(f"SELECT count(*) FROM tasks WHERE {as_caller('$1')}",
                                    bob) == 0
        assert await owner.fetchval(f"SELECT count(*) FROM tasks WHERE {as_caller('$1')}",
                                    alice) == 1
        await _check_reminder_and_webhook_doors(api, owner, alice, bob, task)
        await api.execute(f"DELETE FROM tasks WHERE id = $2 AND {as_caller('$1')}", alice, task)
        assert await owner.fetchval(
            f"SELECT count(*) FROM task_tombstones WHERE {as_caller('$1')}", alice) == 1
        # The tombstone and the fired reminder.
        assert await api.fetchval("SELECT task_api_purge_changes('0 s')") == 2
        assert await owner.fetchval(
            f"SELECT count(*) FROM task_reminders WHERE {as_caller('$1')}", alice) == 0
        assert await owner.fetchval(
            f"SELECT count(*) FROM task_tombstones WHERE {as_caller('$1')}", alice) == 0
        # The door closes behind its function: nothing more for the owner in the transaction.
        async with owner.transaction():
            await owner.fetchval("SELECT task_api_locate_task($1, $2)", task, bob)
            assert await owner.fetchval(f"SELECT current_setting('{DOOR_SETTING}', true)") == ""
    finally:
        await api.close()
        await owner.close()


async def _check_reminder_and_webhook_doors(
    api: asyncpg.Connection, owner: asyncpg.Connection, alice: str, bob: str, task: uuid.UUID,
) -> None:
    """The scheduler's and the delivery workers' doors, across users, for the API's role."""
    caller = as_caller("$1")
    hook = await api.fetchval(
        "INSERT INTO webhook_subscriptions (id, user_id, url, event_types, secret) "
        f"SELECT gen_random_uuid(), $1, 'https://a.example.com/', '{{reminder.due}}', 's' "
        f"WHERE {caller} RETURNING id", alice)
    assert await api.fetchval("SELECT task_api_locate_webhook($1, $2)", hook, alice) == "own"
    assert await api.fetchval("SELECT task_api_locate_webhook($1, $2)", hook, bob) == "foreign"
    assert await api.fetchval("SELECT task_api_locate_webhook($1, $2)", uuid.uuid4(),
                              bob) is None
    # A reminder already due (the trigger schedules only future ones: written directly).
    await owner.execute(
        "INSERT INTO task_reminders (user_id, task_id, id, remind_at) "
        f"SELECT $1, $2, gen_random_uuid(), now() - interval '1 s' WHERE {caller}", alice, task)
    assert await api.fetchval("SELECT count(*) FROM task_reminders") == 0  # no caller: none
    assert await api.fetchval("SELECT task_api_next_reminder_in()") < 0
    before = await api.fetchval("SELECT pg_current_snapshot()::text")
    heard: list[str] = []
    await owner.add_listener("task_changes", lambda *args: heard.append(args[3]))
    fired = await api.fetch("SELECT * FROM task_api_claim_reminders(10)")
    assert [(r["user_id"], r["task_id"], r["webhooks"]) for r in fired] == [(alice, task, 1)]
    assert await api.fetchval("SELECT task_api_next_reminder_in()") is None
    # The claim notifies nobody in its transaction (migration 0010: the scheduler does, after).
    await owner.execute("SELECT 1")
    await asyncio.sleep(0.1)
    assert heard == []
    # The feed watch's door sees alice's fired reminder since `before`, nothing of bob's; the
    # wake-ups' door knows alice has a subscription and bob none.
    watched = await api.fetchrow("SELECT * FROM task_api_changed_users($1, $2)",
                                 [alice, bob], before)
    assert watched["changed"] == [alice] and watched["snapshot"] != before
    assert await api.fetchval("SELECT * FROM task_api_changed_users($1, $2)",
                              [alice, bob], watched["snapshot"], column=1) == []
    assert await api.fetchval("SELECT task_api_any_subscribed($1)", [bob, alice]) is True
    assert await api.fetchval("SELECT task_api_any_subscribed($1)", [bob]) is False
    claimed = await api.fetch("SELECT * FROM task_api_claim_deliveries(10, 4, 30)")
    assert [(r["subscription_id"], r["attempts"], r["url"]) for r in claimed] == [
        (hook, 1, "https://a.example.com/")]
    assert '"reminder.due"' in claimed[0]["body"]
    assert await api.fetchval(
        "SELECT task_api_finish_delivery($1, 1, 'succeeded', NULL, 200, 1.5, NULL, 'ok', "
        "NULL)", claimed[0]["id"]) == 1
    assert await api.fetchval(  # a late result of an attempt taken over: fenced off
        "SELECT task_api_finish_delivery($1, 0, 'failed', NULL, 500, 1.5, NULL, '', NULL)",
        claimed[0]["id"]) == 0
    await asyncio.sleep(0.01)
    assert await api.fetchval("SELECT task_api_purge_deliveries(0)") == 1
    assert await owner.fetchval(
        f"SELECT count(*) FROM webhook_deliveries WHERE {caller}", alice) == 0
