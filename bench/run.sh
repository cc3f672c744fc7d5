#!/usr/bin/env bash
# pgha and Patroni side by side: failover, rejoin, agent death, switchover
# write gap, idle CPU/RSS, REST checks per second (and, asked for, a DCS
# outage with failsafe_mode off and on). Prints one table and
# writes it to docs/benchmarks.md (with date, machine and load).
#
#   bench/run.sh                  # 5 runs of everything, both settings
#                                 # (47 minutes on 2 cores on 2026-11-21)
#   bench/run.sh --runs 1 --setting fastest --idle-seconds 20 --rest-runs 1
#                                 # a quick look (about 6 minutes)
#   bench/run.sh --only node,switchover
#   bench/run.sh --modes on,strict,quorum --only node,switchover   # synchronous modes
#   bench/run.sh --only outage    # a 60 s etcd outage (SIGSTOP), failsafe_mode off
#                                 # and on, both systems at once (about 3.5 minutes
#                                 # per setting; not in the default run)
#   bench/run.sh --budget-minutes 80   # start no new run past 80 minutes
#
# Arguments go to bench/bench.py (see its --help). Run as root on a quiet
# machine: the figures are wall-clock times. It installs what it needs
# (scripts/install-deps.sh, plus wrk), builds pgha in release mode, and
# cleans up after itself. Nothing here is asserted; the tests check
# behaviour, this measures speed. PGHA_BENCH_OUT chooses the output file;
# it is overwritten, so the hand-written sections of docs/benchmarks.md
# (notes, previous run) have to be carried over by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
if ! command -v wrk >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q wrk >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }
fi
venv="${PGHA_VENV:-/opt/pgha-venv}"

# The dist profile: what scripts/package.sh installs (built for size).
cargo build --profile dist --locked -p pgha-agent --bin pgha --bin pg-fence-guard
export PGHA_BIN="$PWD/target/dist/pgha"

out="${PGHA_BENCH_OUT:-docs/benchmarks.md}"
table=$(mktemp)
trap 'rm -f "$table"' EXIT
"$venv/bin/python" bench/bench.py --markdown "$table" "$@"
{
  cat <<'EOF'
# Benchmarks: pgha and Patroni side by side

Produced by `bench/run.sh` (`bench/bench.py` says exactly what each figure
measures and how). Both systems run the same YAML file against the same
etcd with the same PostgreSQL binaries, each as a 3-node cluster on one
machine; both clusters run at the same time and each measurement is taken
on one while the other idles. Two settings of ttl / loop_wait /
retry_timeout: "ttl 30" is Patroni's default for both, "fastest" is each
system's smallest allowed timing (Patroni raises ttl below 20 to 20 and
retry_timeout below 3 to 3, with a warning; pgha allows ttl 5).

What the figures mean, all measured by clients outside the cluster:

- **node death failover**: the leader's host dies: its agent, pgha's fence
  guard, the postmaster and its backends are all frozen with SIGSTOP, then
  all killed with SIGKILL, so that none of them outlives the others (a
  surviving guard would release the lock: that is agent death, below).
  Measured until a writer (an INSERT every 10 ms through a multi-host
  connection string with `target_session_attrs=read-write`, retrying every
  50 ms while it cannot connect) gets its first write acknowledged by the
  new primary. Mostly the leader key's ttl running out, plus up to one
  loop_wait for a replica to notice, plus the promotion.
- **rejoin of the old primary**: the killed node's agent started again, until
  its PostgreSQL (rewound with `pg_rewind` if needed) streams from the new
  leader and the cluster is whole again.
- **agent death failover**: `kill -9` of the leader's agent process only;
  PostgreSQL, and pgha's fence guard (`pg-fence-guard`, docs/fencing.md),
  keep running. Same writer, knowing only the two other nodes. pgha's
  guard stops PostgreSQL and releases the dead agent's leader lock at
  once; Patroni (run here without a watchdog) has nothing that does, so
  its replicas wait for the ttl.
- **writes acknowledged by the old primary**: during agent death, a second
  writer pinned to the old primary keeps writing; these are the writes the
  old primary acknowledged in the 5 s after the new primary's first one:
  split-brain writes, lost when the old primary is rewound. Without a fence
  (watchdog, or a guard process outside the agent) the old primary stays a
  writable primary until its agent comes back, so this is simply the
  writer's rate times 5 s.
- **switchover write gap**: `POST /switchover` to the leader, the longest
  time between two acknowledged writes of the writer.
- **idle**: agent resident memory, and CPU seconds (its own and its reaped
  children's) over the idle period, per node (PostgreSQL not included).
  pgha's figures include its fence guard (agent + guard, two processes);
  the guard's resident memory is also shown alone.
- **REST GET /primary**: `wrk -t2 -c16 -d10s` on the leader's
  `GET /primary`, the check a load balancer makes.

## Latest run

EOF
  cat "$table"
} >"$out"
echo "written to $out"
