#!/usr/bin/env bash
# Runs the command given as on a machine without Node: in a private mount namespace (as root,
# with util-linux's unshare) where every node, npm, npx and corepack on PATH, but the project's
# own (.venv/node-bin, scripts/node_tools.py), is covered by /dev/null (which cannot run). The
# rest of the machine is untouched: the mounts exist only for this command and its children.
# A test run under it proves that nothing needs the machine's Node. Where a namespace cannot be
# made (not root, no unshare, a container without the right), the command runs as it is, with
# a note.
set -euo pipefail
if [[ $# -eq 0 ]]; then
  echo "usage: $0 COMMAND [ARG...]" >&2
  exit 2
fi
own="$(cd "$(dirname "$0")/.." && pwd)/.venv/node-bin"
hide=()
IFS=: read -r -a path_dirs <<< "$PATH"
for dir in "${path_dirs[@]}"; do
  [[ -n "$dir" && "$(realpath -m "$dir")" != "$own" ]] || continue
  for name in node nodejs npm npx corepack; do
    [[ -x "$dir/$name" ]] && hide+=("$dir/$name")
  done
done
if [[ ${#hide[@]} -eq 0 ]]; then
  exec "$@"
fi
if [[ $(id -u) -ne 0 ]] || ! unshare --mount true 2>/dev/null; then
  echo "without_system_node: cannot make a mount namespace here: running with ${hide[*]}" >&2
  exec "$@"
fi
# The namespace's own shell binds /dev/null over each one, then becomes the command.
exec unshare --mount bash -c '
  count=$1; shift
  for ((i = 0; i < count; i++)); do mount --bind /dev/null "$1"; shift; done
  exec "$@"' without_system_node "${#hide[@]}" "${hide[@]}" "$@"
