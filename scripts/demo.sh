#!/usr/bin/env bash
# pgha demo: a local etcd and three PostgreSQL 15 nodes, each run by a pgha
# agent, all on loopback. Shows `pghactl list`, then kills the primary
# (agent and PostgreSQL, kill -9) and shows the failover.
#
#   scripts/demo.sh           bring the cluster up, show it, fail over
#   scripts/demo.sh list      show the cluster
#   scripts/demo.sh start N   start node N's agent again (it rejoins with pg_rewind)
#   scripts/demo.sh kill      kill the current primary (agent + PostgreSQL)
#   scripts/demo.sh stop      stop everything and remove the demo directory
#
# Everything lives in $PGHA_DEMO_DIR (default /tmp/pgha-demo). Ports: etcd
# 23790, PostgreSQL 25431-25433, REST API 28001-28003 (all 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
dir=${PGHA_DEMO_DIR:-/tmp/pgha-demo}
bin=$repo/target/debug
etcd_port=23790

# PostgreSQL refuses to run as root: as root, run the agents as postgres.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

ctl() { "$bin/pghactl" -c "$dir/ctl.yml" "$@"; }

primary_index() {
  for i in 1 2 3; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:2800$i/primary" || true)
    [ "$code" = 200 ] && { echo "$i"; return 0; }
  done
  return 1
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2; shift 2
  for _ in $(seq 1 $((secs * 4))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  echo "demo: gave up waiting for $what after ${secs}s; logs are in $dir" >&2
  return 1
}

converged() { # converged N: one running leader and N streaming replicas
  local out
  out=$(ctl list -f tsv) || return 1
  [ "$(grep -c $'\tLeader\trunning' <<<"$out")" = 1 ] && [ "$(grep -c $'\tReplica\tstreaming' <<<"$out")" = "$1" ]
}

start_agent() {
  local i=$1
  # In a session of its own: the agent outlives this script and whatever
  # runs it (a terminal closing, a job runner killing the script's group).
  as_pg setsid sh -c "exec '$bin/pgha' '$dir/node$i.yml' >>'$dir/node$i.log' 2>&1" </dev/null >/dev/null 2>&1 &
  disown || true
}

stop_all() {
  pkill -TERM -f "$bin/pgha $dir/" 2>/dev/null || true
  sleep 2
  for i in 1 2 3; do
    [ -f "$dir/node$i/postmaster.pid" ] && as_pg /usr/lib/postgresql/15/bin/pg_ctl stop -D "$dir/node$i" -m immediate >/dev/null 2>&1 || true
  done
  pkill -f "etcd --name pgha-demo" 2>/dev/null || true
}

kill_primary() {
  local p pid
  p=$(primary_index) || { echo "demo: no primary right now"; return 1; }
  pid=$(head -1 "$dir/node$p/postmaster.pid")
  echo "== kill -9 node$p's agent, its fence guard and its PostgreSQL (postmaster $pid), as a host dying would" >&2
  # Frozen first, so the guard cannot react to the agent's death (it would
  # hand the lock over at once: that is an agent death, not a host death).
  # The agent (`pgha CONFIG`) and its guard (`pg-fence-guard ... -- pgha
  # CONFIG --hand-over-lock`) both name the node's file.
  local node="$dir/node$p.yml"
  pkill -STOP -f "$node" || true
  kill -STOP "$pid" || true
  pkill -KILL -f "$node" || true
  # Usually gone already: the guard's death takes its postmaster with it.
  kill -KILL "$pid" 2>/dev/null || true
  echo "$p"
}

case "${1:-up}" in
  list) ctl list; exit 0 ;;
  start) start_agent "${2:?node number}"; echo "started node$2's agent; watch with: $0 list"; exit 0 ;;
  kill) kill_primary; exit 0 ;;
  stop) stop_all; rm -rf "$dir"; echo "demo stopped"; exit 0 ;;
  up) ;;
  *) echo "usage: $0 [up|list|start N|kill|stop]" >&2; exit 2 ;;
esac

scripts/install-deps.sh
echo "== building pgha"
cargo build -q -p pgha-agent

stop_all
rm -rf "$dir"
mkdir -p "$dir"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
chmod 755 "$dir"

echo "== starting etcd on 127.0.0.1:$etcd_port"
setsid etcd --name pgha-demo --data-dir "$dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls http://127.0.0.1:23791 --initial-advertise-peer-urls http://127.0.0.1:23791 \
  --initial-cluster pgha-demo=http://127.0.0.1:23791 </dev/null >"$dir/etcd.log" 2>&1 &
disown || true
wait_for 30 etcd curl -sf "http://127.0.0.1:$etcd_port/health"

printf 'scope: demo\nnamespace: /service/\netcd3:\n  hosts: 127.0.0.1:%s\n' "$etcd_port" >"$dir/ctl.yml"
for i in 1 2 3; do
  # The Patroni example configuration, with this node's name, ports and paths.
  sed -e "s/^name: node1/name: node$i/" \
      -e "s/127.0.0.1:8008/127.0.0.1:2800$i/g" \
      -e "s/127.0.0.1:5432/127.0.0.1:2543$i/g" \
      -e "s/127.0.0.1:2379/127.0.0.1:$etcd_port/" \
      -e "s#/var/lib/pgha/node1#$dir/node$i#" \
      -e "s#/var/lib/pgha/pgpass-node1#$dir/pgpass-node$i#" \
      -e "s#/var/run/postgresql#$dir#" \
      -e "s/ttl: 30/ttl: 10/" -e "s/loop_wait: 10/loop_wait: 2/" -e "s/retry_timeout: 10/retry_timeout: 3/" \
      docs/examples/patroni-node1.yml >"$dir/node$i.yml"
done
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"/*.yml

echo "== starting three pgha agents (logs: $dir/node*.log)"
for i in 1 2 3; do start_agent "$i"; done
wait_for 90 "a primary and two streaming replicas" converged 2
ctl list

old=$(kill_primary | tail -1)
start=$(date +%s%N)
wait_for 60 "a new primary" primary_index
new=$(primary_index)
tenths=$(( ($(date +%s%N) - start) / 100000000 ))
echo "== node$new is the new primary, $((tenths / 10)).$((tenths % 10)) s after the kill (ttl 10 s)"
wait_for 30 "the other replica to follow node$new" converged 1
ctl list

cat <<EOF

The failed node is out of the cluster. Next:
  $0 start $old     start node$old's agent again: it rejoins as a replica (pg_rewind)
  $0 list        show the cluster (or: target/debug/pghactl -c $dir/ctl.yml list -W)
  $0 kill        kill the current primary again
  $0 stop        stop everything and remove $dir
Connect: PGPASSWORD=su-pass psql -h 127.0.0.1 -p 2543$new -U postgres
EOF
