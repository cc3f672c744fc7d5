#!/usr/bin/env bash
# Deterministic simulation of whole pgha clusters (crate pgha-sim): the
# real HA state machine and in-memory DCS, a model of PostgreSQL, seeded
# faults, invariants checked at every step.
#   scripts/simulate.sh --seeds N [--from S] [--threads T]   a sweep; ends with
#       "N schedules, K violations, R schedules/s"; exits 1 on any violation
#   scripts/simulate.sh --replay SEED                        one schedule, with
#       every decision (rule, reason) and fault in its trace
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p pgha-sim
exec target/release/pgha-sim "$@"
