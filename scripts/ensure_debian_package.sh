#!/usr/bin/env bash
# ensure_debian_package.sh COMMAND PACKAGE: installs PACKAGE from Debian when COMMAND is missing
# (what the test command and the deploy recipe drive: Chromium, Java, PgBouncer, HAProxy).
# Needs root only to install. Only the binaries are used: the package must not start (or enable)
# a system-wide service of its own (pgbouncer, haproxy), hence policy-rc.d answering 101.
set -euo pipefail
command_name=$1
package=$2
# /usr/sbin is not on every user's PATH (pgbouncer and haproxy live there).
if command -v "$command_name" >/dev/null 2>&1 || [[ -x /usr/sbin/$command_name ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "ensure: $command_name is missing and this is not root: install the Debian package '$package'" >&2
  exit 1
fi
echo "ensure: installing $package from Debian (for $command_name)" >&2
apt-get update -qq
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
fi
trap '[[ $created_policy -eq 1 ]] && rm -f "$policy"' EXIT
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
