#!/usr/bin/env bash
# The deploy recipe on loopback (scripts/deploy_local.py): PostgreSQL (DATABASE_URL or the
# embedded one), PgBouncer in transaction mode, N `task-api serve` replicas, HAProxy in front.
# Installs Debian's haproxy and pgbouncer when missing (as root). Arguments go to the script
# (--replicas N, --port P, --ready-grace S).
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
scripts/ensure_debian_package.sh haproxy haproxy
scripts/ensure_pgbouncer.sh
# The environment's Python itself, not `uv run`: a SIGINT to the process group then reaches the
# recipe once (see serve.sh).
exec .venv/bin/python scripts/deploy_local.py "$@"
