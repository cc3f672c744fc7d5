"""Drives Patroni's own Consul DCS class (patroni.dcs.consul.Consul) for
pgha's cross-check test (tests/patroni_crosscheck.rs).

Reads one JSON command per line on stdin, runs it with Patroni's client and
answers one JSON line on stdout. Logging goes to stderr. The test starts one
driver per Patroni node it plays and ends it by closing stdin.

Commands: {"op": <name>, ...arguments}; see OPS below.
"""

import json
import logging
import sys
import time

from patroni.dcs.consul import Consul
from patroni.postgresql.mpp import get_mpp


def cluster_summary(cluster):
    """Everything Patroni read, in plain JSON, versions included."""
    def member(m):
        return {"name": m.name, "session": m.session, "version": m.version, "data": m.data}

    out = {
        "initialize": cluster.initialize,
        "config": None,
        "leader": None,
        "members": sorted((member(m) for m in cluster.members), key=lambda m: m["name"]),
        "failover": None,
        "history": None,
        "status": {"last_lsn": cluster.status.last_lsn, "slots": cluster.status.slots,
                   "retain_slots": cluster.status.retain_slots},
        "sync": None,
        "failsafe": cluster.failsafe,
    }
    if cluster.config:
        out["config"] = {"data": cluster.config.data, "version": cluster.config.version}
    if cluster.leader:
        out["leader"] = {"name": cluster.leader.name, "session": cluster.leader.session,
                         "version": cluster.leader.version}
    if cluster.failover:
        f = cluster.failover
        out["failover"] = {"leader": f.leader, "candidate": f.candidate, "version": f.version}
    if cluster.history:
        out["history"] = {"lines": cluster.history.lines, "version": cluster.history.version}
    if cluster.sync and cluster.sync.version is not None:
        s = cluster.sync
        out["sync"] = {"leader": s.leader, "members": sorted(s.members), "quorum": s.quorum,
                       "version": s.version}
    return out


class Driver:
    def __init__(self, config):
        self.dcs = Consul(config, get_mpp({}))
        self.cluster = None

    def op_session(self, _):
        return self.dcs._session

    def op_get_cluster(self, _):
        self.cluster = self.dcs.get_cluster()
        return cluster_summary(self.cluster)

    def op_initialize(self, a):
        return self.dcs.initialize(create_new=a["create_new"], sysid=a.get("sysid", ""))

    def op_cancel_initialization(self, _):
        return self.dcs.cancel_initialization()

    def op_set_config_value(self, a):
        return self.dcs.set_config_value(a["value"], a.get("version"))

    def op_touch_member(self, a):
        return self.dcs.touch_member(a["data"])

    def op_attempt_to_acquire_leader(self, _):
        return self.dcs.attempt_to_acquire_leader()

    def op_update_leader(self, a):
        # With the cluster Patroni loaded last (as its HA loop does).
        return self.dcs.update_leader(self.cluster, a.get("last_lsn"), a.get("slots"))

    def op_delete_leader(self, a):
        return self.dcs.delete_leader(self.cluster.leader, a.get("last_lsn"))

    def op_manual_failover(self, a):
        return self.dcs.manual_failover(a.get("leader"), a.get("candidate"), version=a.get("version"))

    def op_set_history_value(self, a):
        return self.dcs.set_history_value(a["value"])

    def op_write_status(self, a):
        self.dcs.write_status(a["value"])
        return True

    def op_set_sync_state_value(self, a):
        return self.dcs.set_sync_state_value(a["value"], a.get("version"))

    def op_write_failsafe(self, a):
        self.dcs.write_failsafe(a["value"])
        return True

    def op_watch(self, a):
        start = time.monotonic()
        changed = self.dcs.watch(a["leader_version"], a["timeout"])
        return {"changed": changed, "elapsed": time.monotonic() - start}

    def op_delete_cluster(self, _):
        return self.dcs.delete_cluster()

    def op_refresh_session(self, _):
        """One session refresh (renew, or create); reports what happened."""
        try:
            created = self.dcs._do_refresh_session(force=True)
            return {"ok": True, "created": created, "session": self.dcs._session,
                    "ttl": self.dcs._client.http.ttl}
        except Exception as e:  # noqa: BLE001 - reported to the test
            return {"ok": False, "error": f"{type(e).__name__}: {e}",
                    "session": self.dcs._session, "ttl": self.dcs._client.http.ttl}


def main():
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="patroni-driver %(levelname)s %(name)s: %(message)s")
    config = json.loads(sys.argv[1])
    driver = Driver(config)
    print(json.dumps({"ready": True, "session": driver.dcs._session}), flush=True)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        try:
            result = getattr(driver, "op_" + cmd["op"])(cmd)
            print(json.dumps({"ok": True, "result": result}), flush=True)
        except Exception as e:  # noqa: BLE001 - reported to the test
            logging.exception("command %s failed", cmd["op"])
            print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}), flush=True)


if __name__ == "__main__":
    main()
