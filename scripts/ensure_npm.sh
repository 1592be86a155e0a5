#!/usr/bin/env bash
# `npm ci` in each folder given (default: the repository root), only when its package-lock.json
# changed since the last install there (stamped by its hash in node_modules/.lock-sha256).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "ensure_npm: npm is missing and this is not root: install the Debian packages 'nodejs npm'" >&2
    exit 1
  fi
  echo "ensure_npm: npm not found: installing Node.js from Debian" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
for dir in "${@:-.}"; do
  lock_hash=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [[ "$(cat "$dir/node_modules/.lock-sha256" 2>/dev/null)" != "$lock_hash" ]]; then
    echo "ensure_npm: npm ci in $dir" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --silent)
    echo "$lock_hash" > "$dir/node_modules/.lock-sha256"
  fi
done
