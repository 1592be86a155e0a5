"""Putting a table of users' rows behind row-level security: one call per table, for this and
every later migration (docs/row-security.md).

    from impl.migrations import row_security
    row_security.protect("task_reminders")          # in upgrade(), after CREATE TABLE
    row_security.unprotect("task_reminders")        # in downgrade(), before DROP TABLE

A protected table has a `user_id` column; the API's role may read and write a row only while
the transaction's caller (impl/platform/row_scope.py) is that row's user. RLS is enabled and
forced: forced, so that the owner, too, is held by the policy (a deployment whose API connects
as the owner keeps the wall). tests/platform/test_row_security.py fails for any table with a
`user_id` column that is not protected.

Work across users (a purge, a scheduler's claim) goes through a door: a SECURITY DEFINER
function owned by the table owner that sets `task_api.door` to the door's name while it runs
(`door_function()`), and a policy that lets the owner through only while that setting names
the door (`door()`). The API's role may call the function, and can do nothing else across
users.
"""

from __future__ import annotations

from alembic import op

from impl.platform.row_scope import API_ROLE, CALLER_SETTING, DOOR_SETTING

CALLER = f"current_setting('{CALLER_SETTING}', true)"
POLICY = "caller_rows"


def create_api_role() -> None:
    """The role the API connects as, if the database has none yet: LOGIN without a password
    (no password login is possible until an operator sets one; trusted local connections, as
    the embedded PostgreSQL's, can). An operator may have created it first, with a password."""
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{API_ROLE}') THEN
                CREATE ROLE {API_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS;
            END IF;
        EXCEPTION
            WHEN duplicate_object THEN NULL;  -- created by a concurrent migration
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role {API_ROLE} does not exist and % may not create it', current_user
                    USING HINT = 'create it first: CREATE ROLE {API_ROLE} LOGIN PASSWORD ''...'' '
                                 '(README, "The database roles")';
        END
        $$
        """
    )


def protect(table: str, *, privileges: str = "SELECT, INSERT, UPDATE, DELETE") -> None:
    """RLS on `table` (enabled, forced), the caller's rows only, and the API role's privileges
    (the role created first if need be: a migration may protect its table before 0011 ran)."""
    create_api_role()
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY {POLICY} ON {table} FOR ALL TO PUBLIC "
        f"USING (user_id = {CALLER}) WITH CHECK (user_id = {CALLER})"
    )
    op.execute(f"GRANT {privileges} ON {table} TO {API_ROLE}")


def unprotect(table: str) -> None:
    op.execute(f"REVOKE ALL ON {table} FROM {API_ROLE}")
    op.execute(f"DROP POLICY IF EXISTS {POLICY} ON {table}")
    op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")


def door(table: str, name: str, commands: tuple[str, ...] = ("SELECT",)) -> None:
    """Let the owner (the migrating role) run `commands` on every user's rows of `table`, but
    only inside a door_function() opening `name`. For UPDATE or DELETE
    with a WHERE clause, include SELECT too (the rows must be readable to be chosen)."""
    opened = f"(current_setting('{DOOR_SETTING}', true) = '{name}')"
    for command in commands:
        # An INSERT policy has only WITH CHECK; SELECT and DELETE only USING; UPDATE both.
        using = "" if command == "INSERT" else f" USING {opened}"
        check = f" WITH CHECK {opened}" if command in ("INSERT", "UPDATE") else ""
        op.execute(
            f"CREATE POLICY door_{name}_{command.lower()} ON {table} FOR {command} "
            f"TO CURRENT_USER{using}{check}"
        )


def close_door(table: str, name: str, commands: tuple[str, ...] = ("SELECT",)) -> None:
    for command in commands:
        op.execute(f"DROP POLICY IF EXISTS door_{name}_{command.lower()} ON {table}")


def door_function(signature: str, door_name: str, returns: str, body: str) -> None:
    """A SECURITY DEFINER PL/pgSQL function that opens `door_name` while its `body` runs; only
    the API role may call it. `signature` is `name(arguments)`. The body assigns `result`
    (`SELECT ... INTO result ...`), or for `returns` "SETOF ..." or "TABLE (...)" uses
    `RETURN QUERY ...` (whose columns must have exactly the declared types: cast them).

    The door is a transaction-local setting the function sets and clears itself (PostgreSQL
    lets only a superuser attach an unknown setting to a function with `SET`); an error in the
    body ends the transaction, which clears it too."""
    name = signature.split("(", 1)[0]
    setof = returns.upper().startswith(("SETOF", "TABLE"))
    declare = "" if setof else f"DECLARE result {returns}; "
    ending = "RETURN;" if setof else "RETURN result;"
    op.execute(
        f"CREATE FUNCTION {signature} RETURNS {returns} LANGUAGE plpgsql "
        "SECURITY DEFINER SET search_path = pg_catalog, public AS $$ "
        # A column and an output column of RETURNS TABLE may share a name: the body means the
        # column (PL/pgSQL would otherwise refuse the reference as ambiguous).
        f"#variable_conflict use_column\n{declare}BEGIN "
        f"PERFORM set_config('{DOOR_SETTING}', '{door_name}', true); "
        f"{body} "
        f"PERFORM set_config('{DOOR_SETTING}', '', true); "
        f"{ending} END $$"
    )
    op.execute(f"REVOKE ALL ON FUNCTION {name} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {name} TO {API_ROLE}")
