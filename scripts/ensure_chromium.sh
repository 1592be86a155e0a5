#!/usr/bin/env bash
# Installs Debian's Chromium when it is missing (the browser tests drive it headless).
exec "$(dirname "$0")/ensure_debian_package.sh" chromium chromium
