# Sourced by serve.sh and test.sh: makes sure uv and the locked environment (.venv) exist.
# Needs only Python 3.11+; uv itself is installed, pinned, into .tools/ when not on PATH.
UV_VERSION=0.13.9
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if command -v uv >/dev/null 2>&1; then
  UV=uv
else
  if [[ ! -x .tools/bin/uv ]]; then
    echo "bootstrap: installing uv $UV_VERSION into .tools/" >&2
    python3 -m venv .tools
    .tools/bin/python -m pip install --quiet "uv==$UV_VERSION"
  fi
  UV="$PWD/.tools/bin/uv"
fi
export PATH="$(dirname "$(command -v "$UV")"):$PATH"
"$UV" sync --locked --quiet
