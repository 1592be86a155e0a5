#!/usr/bin/env bash
# Installs the Python client generators and what their clients need (clients/python/requirements.txt,
# hash-locked) into .venv-clients, only when that lock changed since the last install (stamped by
# its hash). Their pins never reach the runtime environment. Prints the environment's path.
set -euo pipefail
cd "$(dirname "$0")/.."
uv_bin=${UV:-$(command -v uv || echo .tools/bin/uv)}
lock=clients/python/requirements.txt
venv=.venv-clients
stamp="$venv/.lock-sha256"
want=$(sha256sum "$lock" | cut -d' ' -f1)
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "ensure_clients_env: installing $lock into $venv" >&2
  "$uv_bin" venv --quiet --allow-existing --python 3.11 "$venv"
  VIRTUAL_ENV="$PWD/$venv" "$uv_bin" pip sync --quiet --require-hashes "$lock"
  echo "$want" > "$stamp"
fi
echo "$PWD/$venv"
