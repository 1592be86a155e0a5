#!/usr/bin/env bash
# Everything CI checks, in the order a failure is cheapest to read. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
step() { printf '\n== %s\n' "$*"; }

step "generated/ is what openapi.yaml yields"
scripts/regen.sh --check

step "contract lint: openapi-spec-validator, @redocly/cli and Spectral (OAS + OWASP API Security)"
"$UV" run --locked openapi-spec-validator openapi.yaml
# Node.js from Debian when missing; `npm ci` only where a package-lock.json changed since the
# last install (stamped by its hash): the root tools, the hey-api client proof's own folder and
# the MCP Inspector's command line (tests/mcp/test_mcp.py).
scripts/ensure_npm.sh . clients/hey-api clients/mcp-inspector
node_modules/.bin/redocly lint openapi.yaml
# .spectral.yaml: spectral:oas and the OWASP ruleset; any warning fails too (waivers are there,
# each with its reason).
node_modules/.bin/spectral lint openapi.yaml --ruleset .spectral.yaml --fail-severity warn

step "client generators: Java (Debian) and the Python generators' locked environment"
scripts/ensure_java.sh
scripts/ensure_clients_env.sh >/dev/null

step "headless Chromium for the browser tests (Debian package)"
scripts/ensure_chromium.sh

step "PgBouncer for the pooler tests, HAProxy for the deploy recipe's, Prometheus for the metrics' (Debian packages)"
scripts/ensure_pgbouncer.sh
scripts/ensure_debian_package.sh haproxy haproxy
scripts/ensure_prometheus.sh

step "ruff"
"$UV" run --locked ruff check impl tests scripts bench

step "mypy (strict on impl/; generated/ and bench/ too)"
"$UV" run --locked mypy

step "pytest (real PostgreSQL, real HTTP)"
"$UV" run --locked pytest "$@"

step "pytest through PgBouncer (transaction mode, as Neon's pooler)"
# Debian's pgbouncer on a loopback port in front of the test PostgreSQL; the API servers go
# through it (statement cache off), migrations and direct checks do not. Tests that do not use
# the session database are deselected: they ran above (tests/conftest.py).
# The 100-user load runs 20 s here (60 s in the direct pass).
TEST_THROUGH_PGBOUNCER=1 LOAD_SECONDS="${LOAD_SECONDS:-20}" "$UV" run --locked pytest -q "$@"
