#!/usr/bin/env bash
# Runs the fault matrix (crates/pgha-agent/tests/faults.rs: the rows of
# scenarios.md on a 3-node etcd cluster under a live writer; and
# crates/pgha-agent/tests/failsafe.rs: DCS outages with failsafe mode on
# and off, F1-F6, some on ZooKeeper too) and writes the
# figures it measured to docs/fault-matrix.md. The tests assert what must
# hold (no split brain, convergence, no loss where no failover happens);
# the table records what was measured on this machine this time.
#
#   scripts/fault-matrix.sh            # all rows, then the table
#   scripts/fault-matrix.sh --render   # only re-render from the last results
set -euo pipefail
cd "$(dirname "$0")/.."

results=target/tmp/fault-matrix
if [[ "${1:-}" != "--render" ]]; then
  scripts/install-deps.sh
  rm -rf "$results"
  features=(--features pgha-agent/kubernetes)
  cargo nextest run -p pgha-agent --locked --test faults --test failsafe --no-fail-fast "${features[@]}"
fi

python3 - "$results" docs/fault-matrix.md <<'PY'
import json, os, platform, subprocess, sys, datetime
results, out = sys.argv[1], sys.argv[2]
rows = []
for f in sorted(os.listdir(results)):
    if f.endswith(".json"):
        rows.append(json.load(open(os.path.join(results, f))))
order = {k: i for i, k in enumerate(["S1","S2","S3","S4","P1","P2","P3","P4a","P4b","P4c","P4d","N1","N2","M1",
                                     "F1","F1-zk","F2","F3","F3-zk","F4","F5","F7","F6"])}
rows.sort(key=lambda r: order.get(r["id"], 99))
def ms(v):
    return "–" if v is None else f"{v/1000:.2f} s"
def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()
lines = [
    "# Fault matrix: measured",
    "",
    "Written by `scripts/fault-matrix.sh` from the last run of",
    "`crates/pgha-agent/tests/faults.rs` and `crates/pgha-agent/tests/failsafe.rs`: each row of",
    "the team's scenario list (`shared/reference/scenarios.md`) on a fresh 3-node cluster",
    "(real etcd, PostgreSQL 15, pgha at ttl 5 s / loop_wait 1 s / retry_timeout 2 s,",
    "asynchronous replication) while a writer inserts a row every 10 ms through",
    "`target_session_attrs=read-write` and a second writer stays pinned to the",
    "original primary.",
    "",
    f"Run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} × {cpu()}, "
    f"kernel {platform.release()}, load average {os.getloadavg()[0]:.1f} when rendered. Figures from one run; the tests assert the",
    "properties (no split brain, convergence within 2 × ttl of the fault settling,",
    "no loss where no failover happens, replica faults never interrupt the writer),",
    "not the timings.",
    "",
    "| row | fault | split brain | acknowledged | lost | stale writes on the old primary | longest write gap | new primary accepted writes after | converged after | writer errors |",
    "|---|---|---|---|---|---|---|---|---|---|",
]
for r in rows:
    sb = "none" if not r["split_brain"] else "**YES**: " + "; ".join(r["split_brain"])
    stale = "–" if r["stale_writes"] is None else str(r["stale_writes"])
    lines.append(
        f"| {r['id']} | {r['fault']} | {sb} | {r['acked']} | {r['lost']} | {stale} | "
        f"{ms(r['gap_ms'])} | {ms(r['failover_ms'])} | {ms(r['converged_ms'])} | {r['main_errors']} |"
    )
lines += [
    "",
    "Columns: *stale writes* = rows the old primary acknowledged to the pinned",
    "client after another server had accepted a write (– when no failover);",
    "*longest write gap* = longest time between two acknowledgements of the main",
    "writer after the fault; *writer errors* = failed inserts and connection",
    "attempts of the main writer (it reconnects at once).",
    "",
    "N1 and N2 run in network namespaces (each server in its own, the test's",
    "clients in another; the cut is nftables DROP inside the cut-off node's",
    "namespace, which leaves the clients' path open so the pinned writer sees",
    "what the old primary does). In N1 the old primary keeps acknowledging",
    "writes until it demotes (about retry_timeout after its renewal fails),",
    "and with replication cut too those rows never reach the new primary:",
    "that is the *lost* figure, the price of asynchronous replication (Patroni",
    "loses them the same way; only synchronous replication (`synchronous_mode`,",
    "measured in crates/pgha-agent/tests/synchronous.rs)",
    "avoids it). No row was acknowledged by two primaries at once.",
    "",
    "S4: while the agent is down its member key expires, but the leader keeps its",
    "replication slot, and `pghactl list` shows the node as `unmanaged`.",
    "",
    "F rows: a DCS outage (docs/failsafe.md). F1/F2 (`-zk`: on ZooKeeper): the DCS",
    "frozen (SIGSTOP) or killed for 60 s with `failsafe_mode` on: the tests assert",
    "the writer was never interrupted (0 writer errors), nothing lost, and the same",
    "leader on the same timeline afterwards. F3: the DCS frozen and a replica's host",
    "down too: the primary cannot be confirmed by every member and demotes. F4: N1",
    "with failsafe on: the primary also waits for its confirmation round to time out",
    "(half of retry_timeout) before it demotes, so it acknowledges that much more",
    "that no replica receives (asynchronous replication). F5: the primary cut off",
    "from etcd only: the replicas, which see the leader key expire, confirmed it and",
    "do not take over. F7: as F5, then the primary's agent is frozen: its fence guard",
    "stops PostgreSQL when the last confirmation's right runs out, before a replica",
    "can take over. F6: failsafe off, etcd frozen for 30 s: the primary demotes",
    "and the writer waits for the whole outage; afterwards the old primary takes its",
    "lock back (same leader, same timeline).",
]
open(out, "w").write("\n".join(lines) + "\n")
print(f"written to {out} ({len(rows)} rows)")
PY
