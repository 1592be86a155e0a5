#!/usr/bin/env bash
# Installs Debian's Java runtime when it is missing (openapi-generator runs on it: the PyPI wheel
# openapi-generator-cli bundles the generator's jar).
exec "$(dirname "$0")/ensure_debian_package.sh" java default-jre-headless
