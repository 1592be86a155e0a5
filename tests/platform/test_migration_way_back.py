"""Every migration's way back: upgrading one revision at a time from an empty database to head,
then downgrading one at a time, each downgrade leaves the schema exactly as the upgrade found it
(tables, columns, constraints, indexes, triggers, functions, policies, row-level security,
grants to the API's role). The migration tests of their own (test_migration_*.py) check the
rows each keeps; this one catches a downgrade that leaves something behind or takes too much,
for every revision, the ones still to come included."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import pytest
from alembic import command
from alembic.script import ScriptDirectory

from impl.platform.database import connect_options
from impl.platform.migrate import alembic_config, upgrade
from tests.support.factories import THROUGH_PGBOUNCER

# What a schema is, as PostgreSQL prints it back (so spelling does not count, meaning does).
# Each query returns rows of text; the schema is the set of (query name, row).
SCHEMA_QUERIES = {
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attnum > 0
          AND NOT a.attisdropped""",
    "constraints": """
        SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE n.nspname = 'public'""",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "triggers": """
        SELECT t.tgrelid::regclass::text, t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND NOT t.tgisinternal""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), p.prosecdef,
               p.prosrc, coalesce(p.proacl::text, '')
        FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace""",
    "types": """
        SELECT t.typname, coalesce(string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder), '')
        FROM pg_type t LEFT JOIN pg_enum e ON e.enumtypid = t.oid
        WHERE t.typnamespace = 'public'::regnamespace AND t.typtype = 'e' GROUP BY 1""",
    "row_security": """
        SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')""",
    "policies": """
        SELECT p.polrelid::regclass::text, p.polname, p.polcmd::text, p.polroles::text,
               coalesce(pg_get_expr(p.polqual, p.polrelid), ''),
               coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')
        FROM pg_policy p""",
    "grants": """
        SELECT table_name, grantee, privilege_type FROM information_schema.role_table_grants
        WHERE table_schema = 'public' AND grantee NOT IN ('postgres', 'PUBLIC')
          AND grantee <> current_user""",
}


COMMENT = re.compile(r"--[^\n]*")
PUNCTUATION = re.compile(r" ?([(),;]) ?")


def _body(source: str) -> str:
    """A function's body as it behaves: without comments, whitespace collapsed (a downgrade
    restores the earlier function's statements, not its indentation or its notes)."""
    return PUNCTUATION.sub(r"\1", " ".join(COMMENT.sub("", source).split()))


async def _schema(dsn: str) -> set[tuple[str, tuple[object, ...]]]:
    connection = await asyncpg.connect(dsn)
    try:
        schema: set[tuple[str, tuple[object, ...]]] = set()
        for name, query in SCHEMA_QUERIES.items():
            for row in await connection.fetch(query):
                values = tuple(row)
                if values[0] == "alembic_version":  # Alembic's, made at the first upgrade
                    continue
                if name == "functions":
                    values = (*values[:3], _body(values[3]), *values[4:])
                schema.add((name, values))
        return schema
    finally:
        await connection.close()


def _revisions() -> list[str]:
    """Every revision, oldest first (one line of history: each revises the one before)."""
    script = ScriptDirectory.from_config(alembic_config("postgresql://unused"))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


@pytest.mark.skipif(THROUGH_PGBOUNCER, reason="no server involved: runs in the direct pass")
async def test_every_downgrade_restores_the_schema_its_upgrade_found(fresh_database: str) -> None:
    revisions = _revisions()
    assert revisions[:1] == ["0001"] and len(revisions) >= 12  # 0011, 0012 included
    dsn = connect_options(fresh_database).dsn
    before: dict[str, set[tuple[str, tuple[object, ...]]]] = {}
    for revision in revisions:
        before[revision] = await _schema(dsn)
        await asyncio.to_thread(upgrade, fresh_database, revision)
    config = alembic_config(fresh_database)
    for revision in reversed(revisions):
        await asyncio.to_thread(command.downgrade, config, "-1")
        after = await _schema(dsn)
        assert after == before[revision], (
            f"downgrade of {revision}: left behind {sorted(after - before[revision])}, "
            f"took away {sorted(before[revision] - after)}"
        )
