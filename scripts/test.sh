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
if [[ ! -x node_modules/.bin/redocly ]] || ! cmp -s package-lock.json node_modules/.package-lock.json; then
  npm ci --no-audit --no-fund --silent
fi
node_modules/.bin/redocly lint openapi.yaml

step "headless Chromium for the docs test (Debian package)"
scripts/ensure_chromium.sh

step "ruff"
"$UV" run --locked ruff check impl tests scripts

step "mypy (strict on impl/)"
"$UV" run --locked mypy

step "pytest (real PostgreSQL, real HTTP)"
"$UV" run --locked pytest "$@"
