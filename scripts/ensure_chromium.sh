#!/usr/bin/env bash
# Installs Debian's Chromium when it is missing (the browser tests drive it headless).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "ensure_chromium: chromium is missing and this is not root: install the Debian package 'chromium'" >&2
  exit 1
fi
echo "ensure_chromium: installing chromium from Debian" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
