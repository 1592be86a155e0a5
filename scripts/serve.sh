#!/usr/bin/env bash
# Start the API. With no DATABASE_URL, an embedded PostgreSQL under .data/ is started, migrated
# and seeded, and a bearer token for the demo user is printed. Extra arguments go to
# `task-api serve` (--host, --port, --workers).
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
# The environment's own console script, not `uv run`: uv passes a SIGINT on to its child, so one
# sent to the whole process group (a supervisor, `timeout -s INT`, `kill -INT -PGID`) reached
# the server twice, and uvicorn takes a second SIGINT as "force exit" (an ERROR CancelledError
# traceback). Now SIGINT reaches the server once, and it stops as on SIGTERM.
exec .venv/bin/task-api serve "$@"
