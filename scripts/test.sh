#!/usr/bin/env bash
# Everything CI checks, in the order a failure is cheapest to read. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
# Every Node tool (and npm's lifecycle scripts) runs on the project's pinned Node (uv.lock,
# scripts/node_tools.py), first on PATH for everything below, pytest's children included.
export PATH="$(.venv/bin/python scripts/node_tools.py):$PATH"
# Every step that may start Node runs as on a machine without Node: the machine's node, npm and
# npx (this image's Node 20, past its end of life) hidden in a private mount namespace, so a
# tool that still reached for them would fail here, not on a fresh Debian.
no_system_node=scripts/without_system_node.sh
step() { printf '\n== %s\n' "$*"; }

step "generated/ is what openapi.yaml yields"
scripts/regen.sh --check

step "contract lint: openapi-spec-validator, @redocly/cli and Spectral (OAS + OWASP API Security)"
"$UV" run --locked openapi-spec-validator openapi.yaml
# `npm ci` only where a package-lock.json (or the pinned Node) changed since the last install
# (stamped by its hash): the root tools, the hey-api client proof's own folder and the MCP
# Inspector (tests/mcp/test_mcp.py).
$no_system_node scripts/ensure_npm.sh . clients/hey-api clients/mcp-inspector
$no_system_node node_modules/.bin/redocly lint openapi.yaml
# .spectral.yaml: spectral:oas and the OWASP ruleset; any warning fails too (waivers are there,
# each with its reason).
$no_system_node node_modules/.bin/spectral lint openapi.yaml --ruleset .spectral.yaml --fail-severity warn

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

step "pytest, two passes at once: directly (real PostgreSQL, real HTTP) and through PgBouncer"
# The second pass sends every API server through Debian's pgbouncer in transaction mode, as
# Neon's pooler (statement cache off); migrations and direct checks do not go through it. It
# runs only what uses the session database (tests/conftest.py): the rest ran in the first pass.
# The two passes share nothing (each its own PostgreSQL, servers and free ports) and spend
# much of their time waiting (servers starting, loads of fixed length, deadlines being proven),
# so they run side by side (docs/tests.md: the figures).
# The PgBouncer pass writes to a log shown after the direct pass; either failing fails the run.
# The 100-user load runs 20 s there (60 s in the direct pass).
pgbouncer_log="$(mktemp -t task-api-pgbouncer-pass.XXXXXX)"
# Its own temporary folder: a pytest session makes /tmp/pytest-of-<user> private again when it
# first uses it, which cuts off an embedded PostgreSQL that the other pass runs there as
# another user (seen as pg_ctl's "Permission denied" when two sessions overlapped).
pgbouncer_tmp="$(mktemp -d -t task-api-pgbouncer-pytest.XXXXXX)"
# Each pass takes its servers' ports from a block of its own (PORT_BLOCK,
# scripts/local_stack/processes.py): a port one pass chose could otherwise be taken by the other.
TEST_STAGE=shared TEST_THROUGH_PGBOUNCER=1 LOAD_SECONDS="${LOAD_SECONDS:-20}" PORT_BLOCK=1 \
  $no_system_node "$UV" run --locked pytest -q --basetemp "$pgbouncer_tmp/basetemp" "$@" \
  >"$pgbouncer_log" 2>&1 &
pgbouncer_pass=$!
# Interrupted (Ctrl-C, CI's timeout): the pass in the background goes too.
trap 'kill "$pgbouncer_pass" 2>/dev/null || true' INT TERM
direct_status=0
TEST_STAGE=shared PORT_BLOCK=0 $no_system_node "$UV" run --locked pytest "$@" || direct_status=$?
pgbouncer_status=0
wait "$pgbouncer_pass" || pgbouncer_status=$?
trap - INT TERM

step "pytest through PgBouncer (transaction mode, as Neon's pooler): what it printed"
cat "$pgbouncer_log"
rm -rf "$pgbouncer_log" "$pgbouncer_tmp"

step "pytest, alone: the tests that load the whole machine on purpose (marked alone)"
# 26,000 slow connections opened in seconds (tests/platform/test_slow_clients_load.py): run
# beside the passes, other tests' servers failed to start while they ran (a webhook receiver,
# five times in one run; how, not proven), and they shared the 2 cores with them.
# Exit 5 is pytest's "nothing selected" (arguments such as -k that match none of them).
alone_status=0
TEST_STAGE=alone $no_system_node "$UV" run --locked pytest "$@" || alone_status=$?
(( alone_status == 5 )) && alone_status=0
if (( direct_status != 0 || pgbouncer_status != 0 || alone_status != 0 )); then
  printf '\ntest.sh: pytest failed (direct pass: exit %d, PgBouncer pass: exit %d, alone: exit %d)\n' \
    "$direct_status" "$pgbouncer_status" "$alone_status" >&2
  exit 1
fi
