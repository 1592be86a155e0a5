#!/usr/bin/env bash
# ensure_debian_package.sh COMMAND PACKAGE: installs PACKAGE from Debian when COMMAND is not on
# the PATH (what the test command drives: Chromium, Java). Needs root only to install.
set -euo pipefail
command_name=$1
package=$2
if command -v "$command_name" >/dev/null 2>&1; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "ensure: $command_name is missing and this is not root: install the Debian package '$package'" >&2
  exit 1
fi
echo "ensure: installing $package from Debian (for $command_name)" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
