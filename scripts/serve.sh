#!/usr/bin/env bash
# Start the API. With no DATABASE_URL, an embedded PostgreSQL under .data/ is started, migrated
# and seeded, and a bearer token for the demo user is printed. Extra arguments go to
# `task-api serve` (--host, --port, --workers).
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
exec "$UV" run --locked task-api serve "$@"
