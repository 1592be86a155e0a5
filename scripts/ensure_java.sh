#!/usr/bin/env bash
# Installs Debian's Java runtime when it is missing (openapi-generator runs on it: the PyPI wheel
# openapi-generator-cli bundles the generator's jar).
set -euo pipefail
if command -v java >/dev/null 2>&1; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "ensure_java: java is missing and this is not root: install the Debian package 'default-jre-headless'" >&2
  exit 1
fi
echo "ensure_java: installing default-jre-headless from Debian" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null
