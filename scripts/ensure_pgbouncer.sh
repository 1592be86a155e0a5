#!/usr/bin/env bash
# Installs Debian's PgBouncer when it is missing (the test suite runs a second time through it,
# in transaction mode, as Neon's pooled endpoint does; the deploy recipe puts it before the
# replicas). The tests start their own pgbouncer on a loopback port, never the system service.
exec "$(dirname "$0")/ensure_debian_package.sh" pgbouncer pgbouncer
