"""every session on the API's database plans its statements generically, behind a pooler too

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08

The API writes every statement so that its generic plan (made once, without the parameters'
values) is the right one, and the query-plan guard checks those plans for every list shape
(tests/tasks/test_query_plans.py). A direct connection asks for them at startup
(`plan_cache_mode = force_generic_plan`, impl/platform/database.py). Behind PgBouncer in
transaction mode or Neon's pooler it cannot: the pooler refuses unknown startup parameters, so
those sessions planned each statement with its values, and so did the PL/pgSQL of the triggers
on them. That is where a user the statistics have not seen (new, or grown since the last
ANALYZE) got plans made for one row while the user had thousands: in a database whose
statistics hold every user (under about a hundred), with 30,000 such tasks, `priority=high`
read all 30,000 where its generic plan reads 21, `tag=urgent` ran for minutes, and 0005's
trigger read the user's whole range of task_tags on every delete (migration 0013). The
generic plans do not depend on whose tasks they read: all 50 list shapes stay within the guard's
bound for such a user.

So the database itself now gives every new session `plan_cache_mode = force_generic_plan`
(ALTER DATABASE ... SET, which the database's owner, who runs the migrations, may do; setting it
on the role instead would need CREATEROLE, which Neon's owner has but an owner made as README
says has not). It holds for every role
on this database (the owner's and a psql session's prepared statements too: harmless, and a
session can still SET it). Sessions already open keep what they had until they reconnect:
PgBouncer's server connections live up to its `server_lifetime` (an hour by default), so
restart or RECONNECT the pooler after migrating to have it at once. The downgrade resets it.
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# Run as the database's owner (or a superuser), as every migration is.
SET = ("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET plan_cache_mode = force_generic_plan', "
       "current_database()); END $$")
RESET = ("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET plan_cache_mode', "
         "current_database()); END $$")


def upgrade() -> None:
    op.execute(SET)


def downgrade() -> None:
    op.execute(RESET)
