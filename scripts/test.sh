#!/usr/bin/env bash
# Everything CI checks, in the order a failure is cheapest to read. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
step() { printf '\n== %s\n' "$*"; }

step "generated/ is what openapi.yaml yields"
scripts/regen.sh --check

step "contract lint: openapi-spec-validator and @redocly/cli"
"$UV" run --locked openapi-spec-validator openapi.yaml
if ! command -v npm >/dev/null 2>&1; then
  echo "npm not found: installing Node.js from Debian" >&2
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
# Reinstall only when package-lock.json changed since the last `npm ci` (stamped by its hash).
lock_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ "$(cat node_modules/.lock-sha256 2>/dev/null)" != "$lock_hash" ]]; then
  npm ci --no-audit --no-fund --silent
  echo "$lock_hash" > node_modules/.lock-sha256
fi
node_modules/.bin/redocly lint openapi.yaml

step "headless Chromium for the browser tests (Debian package)"
scripts/ensure_chromium.sh

step "PgBouncer for the pooler tests (Debian package)"
scripts/ensure_pgbouncer.sh

step "ruff"
"$UV" run --locked ruff check impl tests scripts

step "mypy (strict on impl/)"
"$UV" run --locked mypy

step "pytest (real PostgreSQL, real HTTP)"
"$UV" run --locked pytest "$@"

step "pytest through PgBouncer (transaction mode, as Neon's pooler)"
# Debian's pgbouncer on a loopback port in front of the test PostgreSQL; the API servers go
# through it (statement cache off), migrations and direct checks do not. Tests that do not use
# the session database are deselected: they ran above (tests/conftest.py).
# The 100-user load runs 20 s here (60 s in the direct pass).
TEST_THROUGH_PGBOUNCER=1 LOAD_SECONDS="${LOAD_SECONDS:-20}" "$UV" run --locked pytest -q "$@"
