#!/usr/bin/env bash
# Checks monitoring/: the alerting rules load (`promtool check rules`),
# their unit tests pass (`promtool test rules`), and the Grafana dashboard
# is valid JSON. (That every metric the rules and the dashboard read is one
# pgha exports is a unit test in pgha-rest; that /metrics itself passes
# `promtool check metrics` is an end-to-end test in tests/service.rs.)
# promtool comes from Debian's prometheus package (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v promtool >/dev/null || { echo "check-monitoring: promtool not found (scripts/install-deps.sh installs it)" >&2; exit 1; }
promtool check rules monitoring/alerts.yml
promtool test rules monitoring/alerts.test.yml
python3 -m json.tool monitoring/grafana-dashboard.json >/dev/null
echo "monitoring: rules, rule tests and dashboard OK"
