#!/usr/bin/env bash
# Installs Debian's PgBouncer when it is missing (the test suite runs a second time through it,
# in transaction mode, as Neon's pooled endpoint does). Only the binary is used: the tests start
# their own pgbouncer on a loopback port with a generated configuration, never the system service.
set -euo pipefail
if command -v pgbouncer >/dev/null 2>&1 || [[ -x /usr/sbin/pgbouncer ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "ensure_pgbouncer: pgbouncer is missing and this is not root: install the Debian package 'pgbouncer'" >&2
  exit 1
fi
echo "ensure_pgbouncer: installing pgbouncer from Debian" >&2
apt-get update -qq
# policy-rc.d 101: the package must not start (or enable) its own system-wide service.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
fi
trap '[[ $created_policy -eq 1 ]] && rm -f "$policy"' EXIT
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null
