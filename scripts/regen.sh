#!/usr/bin/env bash
# Regenerates generated/ from openapi.yaml with fastapi-code-generator and our templates/visitor.
#   scripts/regen.sh          replace generated/ with what the contract yields
#   scripts/regen.sh --check  exit 1 when generated/ is stale (CI)
# The generator lives in its own pinned, hash-locked environment (.venv-codegen): its pins
# (click<8.2, datamodel-code-generator<0.66) must never reach the runtime environment.
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
[[ "${1:-}" == "--check" ]] && check=1

lock=scripts/codegen/requirements.txt
venv=.venv-codegen
stamp="$venv/.lock-sha256"
want=$(sha256sum "$lock" | cut -d' ' -f1)
if [[ ! -x "$venv/bin/fastapi-codegen" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  # uv from PATH, else the one bootstrap.sh installs into .tools/ (a fresh clone has neither).
  UV=$(command -v uv || true)
  [[ -n "$UV" ]] || source scripts/bootstrap.sh
  "$UV" venv --quiet --allow-existing --python 3.11 "$venv"
  VIRTUAL_ENV="$PWD/$venv" "$UV" pip sync --quiet --require-hashes "$lock"
  echo "$want" > "$stamp"
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Run from the repo root: black and isort read their settings from pyproject.toml here. The
# model template dir must be absolute: the generator changes directory while it renders models.
"$venv/bin/fastapi-codegen" \
  --input openapi.yaml \
  --output "$out/generated" \
  --template-dir scripts/codegen/templates \
  --custom-visitor scripts/codegen/visitor.py \
  --model-template-dir "$PWD/scripts/codegen/model_templates" \
  --use-annotated \
  --strict-nullable \
  --disable-timestamp \
  2> >(grep -v -e 'FutureWarning' -e 'warn_deprecated' >&2)
printf '"""Generated from openapi.yaml by scripts/regen.sh: never edit by hand."""\n' \
  > "$out/generated/__init__.py"

if (( check )); then
  if ! diff -ru --exclude=__pycache__ generated "$out/generated"; then
    echo "regen --check: generated/ is stale; run scripts/regen.sh and commit the result" >&2
    exit 1
  fi
  echo "regen --check: generated/ matches openapi.yaml"
else
  rm -rf generated
  cp -r "$out/generated" generated
  echo "regen: generated/ rebuilt from openapi.yaml"
fi
