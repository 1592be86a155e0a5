#!/usr/bin/env bash
# Installs Debian's Prometheus when it is missing: the metrics test (tests/platform/test_prometheus.py)
# runs its own prometheus on a loopback port, scraping two replicas of the deploy recipe; never the
# system service.
exec "$(dirname "$0")/ensure_debian_package.sh" prometheus prometheus
