"""PgBouncer for the suite's pooler pass: the runner lives with the deploy recipe's parts."""

from scripts.local_stack.pgbouncer import (
    PgBouncer,
    Upstream,
    pgbouncer_binary,
    psql_binary,
    running_pgbouncer,
)

__all__ = ["PgBouncer", "Upstream", "pgbouncer_binary", "psql_binary", "running_pgbouncer"]
