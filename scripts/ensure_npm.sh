#!/usr/bin/env bash
# `npm ci` in each folder given (default: the repository root), only when its package-lock.json
# or the Node it runs on changed since the last install there (stamped in
# node_modules/.lock-sha256). Node is the project's own, pinned in uv.lock
# (scripts/node_tools.py), never the machine's: the locked environment is installed first.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
export PATH="$(.venv/bin/python scripts/node_tools.py):$PATH"
node_version=$(node --version)
for dir in "${@:-.}"; do
  stamp="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1) node $node_version"
  if [[ "$(cat "$dir/node_modules/.lock-sha256" 2>/dev/null)" != "$stamp" ]]; then
    echo "ensure_npm: npm ci in $dir (Node $node_version)" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --silent)
    echo "$stamp" > "$dir/node_modules/.lock-sha256"
  fi
done
