#!/usr/bin/env python3
"""pgha and Patroni side by side, in one run, on the same machine.

Both run the same YAML file (pgha reads Patroni's configuration), against
the same etcd, with the same PostgreSQL 15 binaries and the same ttl,
loop_wait and retry_timeout. Each figure is measured the way a user would
feel it, by clients outside the cluster:

  node death      the leader's host dies: its agent, pgha's fence guard,
                  the postmaster and its backends all frozen (SIGSTOP),
                  then all killed (SIGKILL), so none acts on another's
                  death -> the first
                  write acknowledged by the new primary (a writer inserting
                  every 10 ms through a multi-host connection with
                  target_session_attrs=read-write; 50 ms between attempts
                  while it cannot connect)
  rejoin          the killed node's agent started again -> its PostgreSQL
                  streams from the new leader (pg_rewind included) and the
                  cluster is whole again
  agent death     kill -9 of the leader's agent only (pgha's guard lives
                  on and fences; that is what it is for) -> the first write
                  acknowledged by the new primary; and how many writes the
                  *old* primary acknowledged in the SPLIT_WINDOW seconds
                  after the new primary's first (a second writer pinned to
                  it): those are split-brain writes, lost
  switchover      POST /switchover -> the longest gap between acknowledged
                  writes
  idle            agent RSS and CPU seconds (its own and its reaped
                  children's) over --idle-seconds idle seconds, each of the
                  3 nodes one value; pgha's figure includes its fence
                  guard (agent + guard), and the guard's RSS alone too
  REST checks     requests per second on GET /primary of the leader (wrk,
                  2 threads, 16 connections, 10 s)
  DCS outage      (--only outage; not in the default list: it adds about
                  3.5 minutes per setting at --outage-seconds 60) for
                  failsafe_mode off, then on (PATCH /config on both
                  clusters, waited for: GET /config shows it, and with it
                  on the leader's GET /failsafe names 3 members): a writer
                  on each cluster, the shared etcd frozen (SIGSTOP) for
                  --outage-seconds, resumed (SIGCONT), until each cluster
                  is whole again -> the longest gap between acknowledged
                  writes, the sum of the gaps over OUTAGE_GAP s (time
                  without acknowledged writes), whether the leader is the
                  same member as before, and whether its timeline changed.
                  etcd is shared: both clusters suffer the same outage at
                  the same moment, and both writers are measured in it

Both systems' clusters run at the same time (so both see the same machine),
and each measurement is taken on one while the other idles (but the DCS
outage, taken on both at once). Settings run in
the order given by --setting; --budget-minutes stops starting new runs once
the next one would not fit (the table's n= says how many each cell has).
A measurement that times out is counted as failed, listed under the table,
and the cluster is brought back before the next one. A replica that does
not stream from the leader on its timeline again (90 s after an agent
death, 120 s after a failure) is reinitialized through POST /reinitialize,
outside the measured time, and that too is listed under the table.

Everything listens on 127.0.0.1 only; every wait is bounded in time. This
prints figures; it asserts nothing. Run it as root on a quiet machine (see
bench/run.sh): PostgreSQL and both agents run as the unprivileged postgres
user. Usage: bench.py [--runs N] [--only a,b] [--setting fastest,ttl30]
[--outage-seconds S] [--budget-minutes M] [--markdown FILE]
"""

import argparse
import base64
import datetime
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import psycopg

PG_BIN = "/usr/lib/postgresql/15/bin"
API_USER, API_PASSWORD = "admin", "admin-pass"
SU_PASSWORD = "su-pass"
VENV = os.environ.get("PGHA_VENV", "/opt/pgha-venv")
SPLIT_WINDOW = 5  # seconds of old-primary writes counted after agent death
WRITER_MAX_SECONDS = 900  # a writer thread stops by itself after this
OUTAGE_GAP = 0.5  # seconds: a longer gap between writes counts as unavailability
NOTES = []  # what the bench had to do by hand, printed under the table

# (key, label, pgha timing, Patroni timing) as ttl/loop_wait/retry_timeout:
# the same at Patroni's defaults, then each system at its smallest allowed
# setting (Patroni raises ttl < 20 to 20 and retry_timeout < 3 to 3).
SETTINGS = {
    "ttl30": ("ttl 30 (both 30/10/10)", (30, 10, 10), (30, 10, 10)),
    "fastest": ("fastest (pgha 5/1/2, Patroni 20/1/3)", (5, 1, 2), (20, 1, 3)),
}

# Replication modes (--modes): the dynamic configuration each adds.
MODES = {
    "async": ("", ""),
    "on": ("synchronous_mode: true", "    synchronous_mode: true\n"),
    "strict": ("synchronous_mode_strict",
               "    synchronous_mode: true\n    synchronous_mode_strict: true\n"),
    "quorum": ("synchronous_mode: quorum", "    synchronous_mode: quorum\n"),
}

M_NODE = "node death failover (s)"
M_REJOIN = "rejoin of the old primary (s)"
M_AGENT = "agent death failover (s)"
M_SPLIT = f"writes acknowledged by the old primary in the {SPLIT_WINDOW} s after the new one's first"
M_SWITCH = "switchover write gap (s)"
M_RSS = "agent RSS per node (MiB; pgha: agent + guard)"
M_GUARD_RSS = "of which pgha's fence guard (MiB)"
M_REST = "REST GET /primary requests per second"


def m_cpu(seconds):
    return f"agent CPU seconds per node over {seconds} idle s (pgha: agent + guard)"


def m_outage(seconds, failsafe, what):
    return f"DCS outage {seconds} s, failsafe {'on' if failsafe else 'off'}: {what}"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


_given_ports = set()


def free_port():
    """A port free on 127.0.0.1, never the same twice in one run, and below
    the kernel's ephemeral range: binding port 0 instead may hand out the
    same port to two nodes (it is free again once the probe closes it), or
    one that a client connection takes as its local port before the server
    binds it."""
    low = 20000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = min(low, int(f.read().split()[0]) - 2000)
    except (OSError, ValueError, IndexError):
        pass
    for port in range(low, low + 2000):
        if port in _given_ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given_ports.add(port)
        return port
    raise RuntimeError(f"no free port in {low}..{low + 1999}")


def wait_for(what, within, check, every=0.2):
    """Polls `check` until it returns something truthy, at most `within` s."""
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        try:
            r = check()
            if r:
                return r
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {within} s (last error: {last!r})")


def http(method, url, body=None, auth=False, timeout=3):
    req = urllib.request.Request(url, method=method, data=body)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if auth:
        token = base64.b64encode(f"{API_USER}:{API_PASSWORD}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def pg(port, sql, timeout=2):
    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", password=SU_PASSWORD,
        dbname="postgres", connect_timeout=timeout, autocommit=True,
    ) as c:
        with c.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else []


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def processes_under(base):
    """Every process of the postgres user whose command line names `base`
    or whose working directory is inside it (PostgreSQL's backends rewrite
    their command line but keep the data directory as working directory)."""
    uid = pwd.getpwnam("postgres").pw_uid
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{p}").st_uid != uid:
                continue
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read()
            try:
                cwd = os.readlink(f"/proc/{p}/cwd")
            except OSError:
                cwd = ""
        except OSError:
            continue
        if base.encode() in cmd or cwd == base or cwd.startswith(base + "/"):
            found.append(int(p))
    return found


def sweep(base, what):
    """kill -9 whatever still runs under `base`; a few bounded passes."""
    for _ in range(20):
        pids = processes_under(base)
        if not pids:
            return
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.25)
    log(f"{what}: processes still there after cleanup: {processes_under(base)}")


class Etcd:
    def __init__(self, base):
        self.dir = os.path.join(base, "etcd")
        os.makedirs(self.dir)
        self.port, peer = free_port(), free_port()
        binary = os.environ.get("PGHA_ETCD_BIN", "etcd")
        self.proc = subprocess.Popen(
            [binary, "--name", "bench", "--data-dir", self.dir,
             "--listen-client-urls", f"http://127.0.0.1:{self.port}",
             "--advertise-client-urls", f"http://127.0.0.1:{self.port}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"bench=http://127.0.0.1:{peer}"],
            stdout=open(os.path.join(base, "etcd.log"), "w"), stderr=subprocess.STDOUT,
        )
        wait_for("etcd", 30, lambda: http("GET", f"http://127.0.0.1:{self.port}/health")[0] == 200)

    def freeze(self):
        """The DCS outage: etcd stopped (SIGSTOP), its connections open and
        unanswered, as with a host that hangs."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        self.proc.kill()
        self.proc.wait(10)


class Node:
    def __init__(self, cluster, name):
        self.cluster, self.name = cluster, name
        self.pg_port, self.api_port = free_port(), free_port()
        self.data = os.path.join(cluster.dir, f"{name}-data")
        self.config = os.path.join(cluster.dir, f"{name}.yml")
        self.log = os.path.join(cluster.dir, f"{name}.log")
        self.proc = None

    def api(self, path):
        return f"http://127.0.0.1:{self.api_port}{path}"

    def postmaster_pid(self):
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None

    def start(self):
        # As the unprivileged postgres user, without root's supplementary
        # groups (extra_groups=[]), in a session of its own.
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(
                self.cluster.command(self), user="postgres", group="postgres", extra_groups=[],
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
                     "HOME": self.cluster.dir, "PGHA_LOG": "info"},
                cwd=self.cluster.dir, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill_agent(self):
        """kill -9 of the agent process alone (PostgreSQL keeps running)."""
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def guard_pids(self):
        """pgha's fence guard(s) of this node: `pg-fence-guard`, whose
        arguments name the configuration file (to hand a dead agent's lock
        over), in a process group of its own, outliving the agent."""
        pids = []
        for p in self.agent_pids():
            try:
                with open(f"/proc/{p}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if comm == "pg-fence-guard":
                pids.append(p)
        return pids

    def kill_node(self):
        """The host dies: every process of this node (agent, pgha's guard,
        the postmaster and its backends) frozen with SIGSTOP, so that none
        of them can act on another's death (a surviving guard would stop
        PostgreSQL and release the leader lock: that is agent death), then
        all killed with SIGKILL."""
        frozen = []
        for _ in range(5):  # bounded: catch a process forked meanwhile
            new = [p for p in set(self.agent_pids()) | set(processes_under(self.data)) if p not in frozen]
            if not new:
                break
            for p in new:
                try:
                    os.kill(p, signal.SIGSTOP)
                    frozen.append(p)
                except ProcessLookupError:
                    pass
        for p in frozen:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            self.proc.wait(10)
        self.proc = None
        wait_for(f"{self.name}'s processes gone", 30,
                 lambda: not self.agent_pids() and not port_open(self.pg_port))
        return frozen

    def agent_pids(self):
        """The agent's processes: every process (but PostgreSQL's) whose
        command line names this node's configuration file. Patroni is one
        Python process; pgha's count includes any helper process it starts."""
        pids = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
                with open(f"/proc/{p}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if comm != "postgres" and self.config.encode() in args:
                pids.append(int(p))
        return pids


class Cluster:
    """Three nodes of one system (`pgha` or `patroni`) with one timing."""

    def __init__(self, kind, label, base, etcd, ttl, loop_wait, retry_timeout, mode="async"):
        self.kind, self.label, self.mode = kind, label, mode
        self.dir = os.path.join(base, f"{kind}-ttl{ttl}-{mode}")
        os.makedirs(self.dir)
        shutil.chown(self.dir, "postgres", "postgres")
        self.scope = f"bench-{kind}-ttl{ttl}-{mode}"
        self.etcd = etcd
        self.timing = (ttl, loop_wait, retry_timeout)
        self.nodes = [Node(self, f"node{i}") for i in (1, 2, 3)]
        for n in self.nodes:
            self.write_config(n)

    def command(self, node):
        if self.kind == "pgha":
            return [os.environ["PGHA_BIN"], node.config]
        return [os.path.join(VENV, "bin/patroni"), node.config]

    def write_config(self, n):
        ttl, loop_wait, retry = self.timing
        hosts = f"127.0.0.1:{n.pg_port}"
        text = f"""scope: {self.scope}
namespace: /service/
name: {n.name}
log: {{level: INFO}}
restapi:
  listen: 127.0.0.1:{n.api_port}
  connect_address: 127.0.0.1:{n.api_port}
  authentication: {{username: {API_USER}, password: {API_PASSWORD}}}
etcd3:
  hosts: 127.0.0.1:{self.etcd.port}
bootstrap:
  dcs:
    ttl: {ttl}
    loop_wait: {loop_wait}
    retry_timeout: {retry}
    maximum_lag_on_failover: 1048576
{MODES[self.mode][1]}    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_keep_size: 64MB
        max_connections: 50
        shared_buffers: 16MB
  initdb:
  - encoding: UTF8
  - data-checksums
postgresql:
  listen: {hosts}
  connect_address: {hosts}
  data_dir: {n.data}
  bin_dir: {PG_BIN}
  pgpass: {os.path.join(self.dir, n.name + '.pgpass')}
  authentication:
    replication: {{username: replicator, password: rep-pass}}
    superuser: {{username: postgres, password: {SU_PASSWORD}}}
    rewind: {{username: rewind_user, password: rewind-pass}}
  parameters:
    unix_socket_directories: {self.dir}
  pg_hba:
  - local all all trust
  - host all all 127.0.0.1/32 md5
  - host replication replicator 127.0.0.1/32 md5
"""
        with open(n.config, "w") as f:
            f.write(text)
        shutil.chown(n.config, "postgres", "postgres")

    def start(self):
        for n in self.nodes:
            n.start()
        self.wait_healthy(180)
        pg(self.leader().pg_port, "CREATE TABLE IF NOT EXISTS bench(id bigserial PRIMARY KEY, v int)")

    def stop(self):
        # Each node as a host dying (agent, guard and PostgreSQL at once):
        # killing an agent alone would make its guard act while the others
        # are being stopped.
        for n in self.nodes:
            try:
                n.kill_node()
            except Exception as e:  # noqa: BLE001 - the sweep below still runs
                log(f"{self.kind} {n.name}: {e}")
        sweep(self.dir, f"{self.kind} cluster")

    def recover(self):
        """After a failed measurement: every agent running again, and the
        cluster whole (one primary, two streaming replicas)."""
        for n in self.nodes:
            if not n.alive():
                n.start()
        return self.settle(120, "a failed measurement")

    def settle(self, within, after):
        """Waits for the cluster to be whole again. A replica that does not
        stream from the leader within `within` s is stuck (for instance one
        that received the old primary's split-brain WAL and was never
        rewound): the bench reinitializes it through the REST API, as an
        operator would, and says so under the table."""
        try:
            return self.wait_healthy(within)
        except TimeoutError:
            pass
        lead = wait_for(f"{self.kind} leader", 60, self.leader, every=0.5)
        stuck = []
        for n in self.nodes:
            if n is lead:
                continue
            try:
                walfile = pg(lead.pg_port, "SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]
                ok = self.streams_from(n, lead, int(walfile[:8], 16))
            except Exception:  # noqa: BLE001
                ok = False
            if not ok:
                stuck.append(n)
        for n in stuck:
            code, body = http("POST", n.api("/reinitialize"), b'{"force": true}', auth=True, timeout=30)
            log(f"{self.kind}: reinitialize {n.name}: {code} {body.strip()}")
        NOTES.append(
            f"{self.label}, {self.kind}: after {after}, {', '.join(n.name for n in stuck) or 'nothing'} "
            f"did not stream from the leader {lead.name} within {within} s; the bench reinitialized it "
            f"(POST /reinitialize)")
        log(NOTES[-1])
        return self.wait_healthy(240)

    def leader(self):
        up = [n for n in self.nodes if port_open(n.api_port) and http("GET", n.api("/primary"))[0] == 200]
        return up[0] if len(up) == 1 else None

    def healthy(self):
        """The leader, if it runs as primary and both replicas stream from
        it on its current timeline (a replica whose history forked off
        before its own position keeps reconnecting, streaming for an
        instant on the old timeline, and never catches up)."""
        lead = self.leader()
        if not lead:
            return None
        recovery, walfile = pg(lead.pg_port, "SELECT pg_is_in_recovery(), "
                               "CASE WHEN NOT pg_is_in_recovery() THEN pg_walfile_name(pg_current_wal_lsn()) END")[0]
        if recovery:
            return None
        timeline = int(walfile[:8], 16)
        for n in self.nodes:
            if n is lead:
                continue
            if not self.streams_from(n, lead, timeline):
                return None
        if self.mode != "async" and not self.sync_standby(lead):
            return None
        return lead

    def sync_standby(self, lead):
        """In a synchronous mode, a replica that says it is a synchronous
        (quorum) standby: the measurements start from a cluster whose
        commits wait for one."""
        path = "/quorum" if self.mode == "quorum" else "/sync"
        for n in self.nodes:
            if n is not lead:
                try:
                    if http("GET", n.api(path))[0] == 200:
                        return n
                except Exception:  # noqa: BLE001
                    pass
        return None

    @staticmethod
    def streams_from(n, lead, timeline):
        rows = pg(n.pg_port, "SELECT status, sender_port, received_tli FROM pg_stat_wal_receiver")
        return bool(rows) and rows[0] == ("streaming", lead.pg_port, timeline)

    def wait_healthy(self, within):
        return wait_for(f"{self.kind} cluster healthy", within, self.healthy, every=0.5)

    def conninfo(self, nodes=None, read_write=True):
        nodes = nodes or self.nodes
        hosts = ",".join("127.0.0.1" for _ in nodes)
        ports = ",".join(str(n.pg_port) for n in nodes)
        text = (f"host={hosts} port={ports} user=postgres password={SU_PASSWORD} "
                f"dbname=postgres connect_timeout=2")
        return text + (" target_session_attrs=read-write" if read_write else "")


class Writer(threading.Thread):
    """Inserts a row every 10 ms; records (client monotonic time, server
    port, server clock_timestamp as epoch seconds) of every acknowledged
    insert. Reconnects on any error (50 ms apart); stops when told to, or
    after WRITER_MAX_SECONDS."""

    def __init__(self, conninfo):
        super().__init__(daemon=True)
        self.conninfo = conninfo
        self.acks = []
        self.stopping = threading.Event()

    def run(self):
        conn = None
        deadline = time.monotonic() + WRITER_MAX_SECONDS
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = psycopg.connect(self.conninfo, autocommit=True)
                    conn.execute("SET statement_timeout = '2s'")
                row = conn.execute(
                    "INSERT INTO bench(v) VALUES (1) RETURNING inet_server_port(), "
                    "extract(epoch FROM clock_timestamp())::float8"
                ).fetchone()
                self.acks.append((time.monotonic(), row[0], row[1]))
                time.sleep(0.01)
            except Exception:  # noqa: BLE001 - any error: reconnect
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                conn = None
                time.sleep(0.05)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    def stop(self):
        self.stopping.set()
        self.join(15)


def first_ack_after(writer, t0, not_port, within):
    def check():
        for t, port, _ in list(writer.acks):
            if t > t0 and port != not_port:
                return t
        return None
    return wait_for("a write acknowledged by a new primary", within, check, every=0.05)


def node_death(c, results):
    lead = c.wait_healthy(120)
    w = Writer(c.conninfo())
    w.start()
    try:
        wait_for("writer's first write", 30, lambda: w.acks)
        time.sleep(2)
        t0 = time.monotonic()
        lead.kill_node()
        t1 = first_ack_after(w, t0, lead.pg_port, 3 * c.timing[0] + 60)
    finally:
        w.stop()
    results.setdefault(M_NODE, []).append(t1 - t0)
    t2 = time.monotonic()
    lead.start()
    c.wait_healthy(240)
    results.setdefault(M_REJOIN, []).append(time.monotonic() - t2)


def agent_death(c, results):
    lead = c.wait_healthy(120)
    others = [n for n in c.nodes if n is not lead]
    # The writer only knows the other two nodes: an old primary that keeps
    # running as primary would otherwise keep its connection forever.
    w = Writer(c.conninfo(others))
    pinned = Writer(c.conninfo([lead], read_write=False))
    pinned.start()
    try:
        wait_for("pinned writer's first write", 30, lambda: pinned.acks)
        w.start()
        time.sleep(2)
        guards = lead.guard_pids()
        if c.kind == "pgha" and not guards:
            NOTES.append(f"{c.label}, pgha: {lead.name} had no fence guard running at an agent death")
            log(NOTES[-1])
        t0 = time.monotonic()
        lead.kill_agent()  # the agent alone: its guard (pgha) lives on
        t1 = first_ack_after(w, t0, lead.pg_port, 3 * c.timing[0] + 60)
        time.sleep(SPLIT_WINDOW + 1)
    finally:
        w.stop()
        pinned.stop()
    promoted_at = min(s for t, p, s in w.acks if t > t0)
    stale = sum(1 for _, p, s in pinned.acks
                if p == lead.pg_port and promoted_at <= s <= promoted_at + SPLIT_WINDOW)
    results.setdefault(M_AGENT, []).append(t1 - t0)
    results.setdefault(M_SPLIT, []).append(stale)
    # Back to a healthy cluster: restart the agent as a service manager
    # would (the old primary is still running as a primary here; its agent
    # demotes and rewinds it).
    lead.start()
    c.settle(90, "agent death")


def switchover(c, results):
    lead = c.wait_healthy(120)
    # In a synchronous mode, to the synchronous standby (a switchover to
    # an asynchronous one is refused).
    cand = c.sync_standby(lead) or next(n for n in c.nodes if n is not lead)
    w = Writer(c.conninfo())
    w.start()
    try:
        wait_for("writer's first write", 30, lambda: w.acks)
        time.sleep(2)
        t0 = time.monotonic()
        code, body = http("POST", lead.api("/switchover"),
                          json.dumps({"leader": lead.name, "candidate": cand.name}).encode(),
                          auth=True, timeout=90)
        if code != 200:
            raise RuntimeError(f"switchover answered {code}: {body.strip()}")
        first_ack_after(w, t0, lead.pg_port, 90)
        time.sleep(2)
    finally:
        w.stop()
    times = [t for t, _, _ in w.acks if t >= t0 - 1]
    gap = max((b - a for a, b in zip(times, times[1:])), default=float("nan"))
    results.setdefault(M_SWITCH, []).append(gap)
    c.wait_healthy(240)


def idle(clusters, results_by_kind, seconds):
    tck = os.sysconf("SC_CLK_TCK")

    def cpu(pids):
        total = 0
        for p in pids:
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                # utime, stime, cutime, cstime (children the agent reaped)
                total += sum(int(x) for x in fields[11:15])
            except OSError:
                pass
        return total / tck

    def rss(pids):
        total = 0
        for p in pids:
            try:
                with open(f"/proc/{p}/status") as f:
                    m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
                total += int(m.group(1)) if m else 0
            except OSError:
                pass
        return total / 1024

    for c in clusters:
        c.wait_healthy(120)
    # Every process naming the node's configuration: Patroni's one Python
    # process; pgha's agent and its fence guard (`pg-fence-guard`).
    pids = {(c.kind, n.name): n.agent_pids() for c in clusters for n in c.nodes}
    guards = {(c.kind, n.name): n.guard_pids() for c in clusters if c.kind == "pgha" for n in c.nodes}
    for k, g in guards.items():
        if not g:
            NOTES.append(f"pgha {k[1]}: no fence guard running during the idle measurement")
            log(NOTES[-1])
    before = {k: cpu(v) for k, v in pids.items()}
    log(f"idle for {seconds} s")
    time.sleep(seconds)
    for c in clusters:
        r = results_by_kind[c.kind]
        for n in c.nodes:
            k = (c.kind, n.name)
            r.setdefault(m_cpu(seconds), []).append(cpu(pids[k]) - before[k])
            r.setdefault(M_RSS, []).append(rss(pids[k]))
            if k in guards:
                r.setdefault(M_GUARD_RSS, []).append(rss(guards[k]))


def rest_rps(c, results):
    lead = c.wait_healthy(120)
    out = subprocess.run(["wrk", "-t2", "-c16", "-d10s", "--timeout", "5s", lead.api("/primary")],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"no Requests/sec in wrk's output: {out!r}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        log(f"{c.kind}: wrk saw {non2xx.group(1)} non-2xx answers")
    results.setdefault(M_REST, []).append(float(m.group(1)))


def timeline(port):
    """A primary's timeline: pg_control_checkpoint()'s, or its current WAL
    file's if that is newer (after a promotion the control file names the
    old timeline until the next checkpoint, which PostgreSQL spreads over
    minutes)."""
    checkpoint, walfile = pg(port, "SELECT (SELECT timeline_id FROM pg_control_checkpoint()), "
                             "pg_walfile_name(pg_current_wal_lsn())")[0]
    return max(checkpoint, int(walfile[:8], 16))


def set_failsafe(clusters, on):
    """failsafe_mode on or off in both clusters' dynamic configuration
    (PATCH /config), waited for: GET /config shows it and, with it on, the
    leader's GET /failsafe names all three members (the leader writes that
    key only in failsafe mode); then one loop_wait more, for the replicas
    (which answer POST /failsafe only in failsafe mode) to read it too."""
    body = json.dumps({"failsafe_mode": on}).encode()
    for c in clusters:
        lead = c.wait_healthy(120)
        code, text = http("PATCH", lead.api("/config"), body, auth=True, timeout=10)
        if code != 200:
            raise RuntimeError(f"{c.kind}: PATCH /config failsafe_mode {on}: {code} {text.strip()}")
    for c in clusters:
        def took(c=c):
            lead = c.leader()
            if lead is None:
                return False
            code, text = http("GET", lead.api("/config"))
            if code != 200 or bool(json.loads(text).get("failsafe_mode")) != on:
                return False
            if not on:
                return True
            code, text = http("GET", lead.api("/failsafe"))
            return code == 200 and len(json.loads(text)) == 3
        wait_for(f"{c.kind}: failsafe_mode {on} in effect", 3 * c.timing[1] + 30, took, every=0.5)
    time.sleep(max(c.timing[1] for c in clusters) + 1)


def dcs_outage(clusters, results_by_kind, etcd, seconds, failsafe):
    """Both clusters, each with a writer, through one outage of the etcd
    they share: frozen for `seconds`, then resumed; measured until each is
    whole again and its writer had a write acknowledged since."""
    set_failsafe(clusters, failsafe)
    before = {}
    for c in clusters:
        lead = c.wait_healthy(120)
        before[c.kind] = (lead.name, timeline(lead.pg_port))
    writers = {c.kind: Writer(c.conninfo()) for c in clusters}
    for w in writers.values():
        w.start()
    after = {}
    try:
        for kind, w in writers.items():
            wait_for(f"{kind} writer's first write", 30, lambda w=w: w.acks)
        time.sleep(2)
        log(f"etcd frozen for {seconds} s (failsafe_mode {'on' if failsafe else 'off'})")
        t0 = time.monotonic()
        etcd.freeze()
        try:
            # Near the end, who answers GET /primary (for the log only).
            time.sleep(max(0.0, seconds - 5))
            for c in clusters:
                up = []
                for n in c.nodes:
                    try:
                        if http("GET", n.api("/primary"), timeout=1)[0] == 200:
                            up.append(n.name)
                    except Exception:  # noqa: BLE001 - not answering: not a primary
                        pass
                log(f"{c.kind}: {', '.join(up) or 'no node'} answering GET /primary "
                    f"{time.monotonic() - t0:.0f} s into the outage (before: {before[c.kind][0]})")
            time.sleep(max(0.0, t0 + seconds - time.monotonic()))
        finally:
            etcd.resume()
        t1 = time.monotonic()
        log("etcd resumed")
        for c in clusters:
            lead = c.settle(4 * c.timing[0] + 120, f"a {seconds} s DCS outage")
            w = writers[c.kind]
            wait_for(f"{c.kind}: a write acknowledged after the outage", 60,
                     lambda w=w: any(t > t1 for t, _, _ in list(w.acks)), every=0.1)
            after[c.kind] = (lead.name, timeline(lead.pg_port))
            log(f"{c.kind}: whole again {time.monotonic() - t1:.0f} s after the outage, leader "
                f"{lead.name} on timeline {after[c.kind][1]} (before: {before[c.kind][0]} on "
                f"timeline {before[c.kind][1]})")
        time.sleep(2)
    finally:
        for w in writers.values():
            w.stop()
    for c in clusters:
        times = [t for t, _, _ in writers[c.kind].acks if t >= t0 - 1]
        gaps = [b - a for a, b in zip(times, times[1:])]
        r = results_by_kind[c.kind]
        r.setdefault(m_outage(seconds, failsafe, "longest write gap (s)"), []).append(
            max(gaps, default=float("nan")))
        r.setdefault(m_outage(seconds, failsafe, f"time without acknowledged writes (s, gaps over {OUTAGE_GAP} s)"),
                     []).append(sum(g for g in gaps if g > OUTAGE_GAP))
        r.setdefault(m_outage(seconds, failsafe, "same leader afterwards"), []).append(
            after[c.kind][0] == before[c.kind][0])
        r.setdefault(m_outage(seconds, failsafe, "timeline changed"), []).append(
            after[c.kind][1] != before[c.kind][1])


def summary(values):
    if not values:
        return "-"
    if all(isinstance(v, bool) for v in values):
        yes = sum(values)
        word = "yes" if yes == len(values) else "no" if yes == 0 else f"yes in {yes} of {len(values)}"
        return f"{word} (n={len(values)})"
    fmt = (lambda v: f"{v:.0f}") if max(values) >= 100 else (lambda v: f"{v:.2f}")
    return f"{fmt(min(values))} / {fmt(statistics.median(values))} / {fmt(max(values))} (n={len(values)})"


class LoadSampler(threading.Thread):
    """Every 5 s: the 1-minute load average, and whether compilers not ours
    (rustc, cc1, ld) were running, to say how quiet the machine was."""

    def __init__(self):
        super().__init__(daemon=True)
        self.loads, self.busy = [], 0
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.wait(5):
            try:
                with open("/proc/loadavg") as f:
                    self.loads.append(float(f.read().split()[0]))
            except OSError:
                continue
            names = set()
            for p in os.listdir("/proc"):
                if p.isdigit():
                    try:
                        with open(f"/proc/{p}/comm") as f:
                            names.add(f.read().strip())
                    except OSError:
                        pass
            if names & {"rustc", "cc1", "cc1plus", "ld", "ld.lld", "ld.gold"}:
                self.busy += 1

    def text(self):
        if not self.loads:
            return "load not sampled"
        return (f"1-minute load average during the run {min(self.loads):.2f} / "
                f"{statistics.median(self.loads):.2f} / {max(self.loads):.2f} (min / median / max "
                f"of {len(self.loads)} samples); other compilations (rustc, cc, ld) were running in "
                f"{self.busy} of them")


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        return "?"


def machine():
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, AttributeError):
        pass
    osname = "Linux"
    try:
        with open("/etc/os-release") as f:
            osname = re.search(r'PRETTY_NAME="([^"]*)"', f.read()).group(1)
    except (OSError, AttributeError):
        pass
    return f"{os.cpu_count()} cores, {mem}, {osname}, kernel {platform.release()}"


def render(table, failures, notes, header, settings_order):
    metrics = list(dict.fromkeys(m for m, _, _, _ in table))
    lines = [header, "", "| metric | setting | pgha | Patroni |", "|---|---|---|---|"]
    for m in metrics:
        for s in settings_order:
            for mm, ss, a, b in table:
                if mm == m and ss == s:
                    lines.append(f"| {m} | {s} | {a} | {b} |")
    if failures:
        lines += ["", "Measurements that failed (not in the figures above):", ""]
        lines += [f"- {f}" for f in failures]
    if notes:
        lines += ["", "What the bench had to do to bring a cluster back (outside the measured time):", ""]
        lines += [f"- {n}" for n in notes]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs of node/agent/switchover per setting")
    ap.add_argument("--rest-runs", type=int, help="wrk runs per system and setting (default: --runs)")
    ap.add_argument("--only", default="node,agent,switchover,idle,rest",
                    help="comma-separated: node, agent, switchover, idle, rest, outage "
                         "(outage is not in the default: it adds about 3.5 minutes per setting)")
    ap.add_argument("--idle-seconds", type=int, default=120)
    ap.add_argument("--outage-seconds", type=int, default=60, help="how long etcd stays frozen (outage)")
    ap.add_argument("--outage-runs", type=int, default=1,
                    help="outages per failsafe setting (off, on) and setting")
    ap.add_argument("--setting", default="all",
                    help="comma-separated, in the order to run: fastest, ttl30; all = fastest,ttl30")
    ap.add_argument("--budget-minutes", type=float,
                    help="start no new run once the next would end past this (idle and rest still run)")
    ap.add_argument("--modes", default="async",
                    help="comma-separated replication modes: async, on, strict, quorum")
    ap.add_argument("--markdown", help="also write the table to this file (after every setting)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (logs) at the end")
    args = ap.parse_args()
    only = set(args.only.split(","))
    rest_runs = args.rest_runs if args.rest_runs is not None else args.runs
    keys = ["fastest", "ttl30"] if args.setting == "all" else args.setting.split(",")
    for k in keys:
        if k not in SETTINGS:
            sys.exit(f"unknown setting {k!r}: use fastest, ttl30 or all")
    modes = args.modes.split(",")
    for m in modes:
        if m not in MODES:
            sys.exit(f"unknown mode {m!r}: use async, on, strict or quorum")
    if os.geteuid() != 0:
        sys.exit("run as root: PostgreSQL and the agents run as the postgres user")
    if "PGHA_BIN" not in os.environ:
        sys.exit("set PGHA_BIN to the pgha binary (bench/run.sh builds it)")

    # A SIGTERM or SIGHUP unwinds through the `finally` blocks below, so
    # nothing is left running.
    def stop_on_signal(signum, _frame):
        raise SystemExit(f"stopped by signal {signum}")
    signal.signal(signal.SIGTERM, stop_on_signal)
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:  # not under nohup
        signal.signal(signal.SIGHUP, stop_on_signal)

    base = tempfile.mkdtemp(prefix="pgha-bench-")
    os.chmod(base, 0o755)
    log(f"working directory {base}")
    started_wall, started = datetime.datetime.now(datetime.timezone.utc), time.monotonic()
    deadline = started + args.budget_minutes * 60 if args.budget_minutes else None
    sampler = LoadSampler()
    sampler.start()
    table, failures, completed = [], [], []
    versions = {
        "pgha": version([os.environ["PGHA_BIN"], "--version"]),
        "patroni": version([os.path.join(VENV, "bin/patroni"), "--version"]),
        "postgres": version([os.path.join(PG_BIN, "postgres"), "--version"]),
    }
    commit = version(["git", "-C", os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "rev-parse", "--short", "HEAD"])

    def write_out():
        header = (
            f"Measured {started_wall:%Y-%m-%d} (started {started_wall:%H:%M} UTC, took "
            f"{(time.monotonic() - started) / 60:.0f} min) on {machine()}; {sampler.text()}. "
            f"{versions['pgha']} (commit {commit}) vs {versions['patroni']}, {versions['postgres']}, "
            f"{version(['etcd', '--version'])} on 127.0.0.1. Settings run: {', '.join(completed) or 'none'}. "
            f"Figures: min / median / max (n = measurements; for the idle rows, n = nodes)."
        )
        if any(m.startswith("DCS outage") for m, _, _, _ in table):
            header += (
                f"\n\nThe DCS outage rows: failsafe_mode set on both clusters (PATCH /config), a "
                f"writer on each (as for the failovers: an INSERT every 10 ms, multi-host, read-write), "
                f"then the one etcd both clusters share frozen with SIGSTOP for {args.outage_seconds} s "
                f"and resumed with SIGCONT. Both clusters go through the same outage at the same moment, "
                f"and both writers are measured in it. Measured from the freeze until the cluster is whole "
                f"again (one leader, both replicas streaming from it) and its writer had a write "
                f"acknowledged since: the longest time between two acknowledged writes, and the sum of "
                f"those gaps longer than {OUTAGE_GAP} s (time without acknowledged writes); then whether "
                f"the leader is the member it was before the outage, and whether its timeline changed "
                f"(pg_control_checkpoint()'s, or the current WAL file's if newer). With failsafe_mode "
                f"off, a primary that cannot reach etcd demotes (both systems); with it on, it keeps "
                f"running while every member confirms it over POST /failsafe."
            )
        order = [SETTINGS[k][0] for k in ("ttl30", "fastest")]
        order += [s for s in dict.fromkeys(s for _, s, _, _ in table) if s not in order]
        text = render(table, failures, NOTES, header, order)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(text + "\n")
        return text

    etcd = None
    ok = False
    try:
        etcd = Etcd(base)
        for key, mode in [(k, m) for k in keys for m in modes]:
            label, pgha_t, patroni_t = SETTINGS[key]
            if mode != "async":
                label = f"{label}, {MODES[mode][0]}"
            clusters = [Cluster("pgha", label, base, etcd, *pgha_t, mode=mode),
                        Cluster("patroni", label, base, etcd, *patroni_t, mode=mode)]
            results = {c.kind: {} for c in clusters}
            broken = set()
            try:
                for c in clusters:
                    log(f"starting {c.kind} with ttl/loop_wait/retry_timeout {c.timing}")
                    try:
                        c.start()
                    except Exception as e:  # noqa: BLE001
                        failures.append(f"{label}, {c.kind}: cluster did not start: {e}")
                        log(failures[-1])
                        broken.add(c.kind)
                parts = [(p, f) for p, f in (("node", node_death), ("agent", agent_death),
                                             ("switchover", switchover)) if p in only]
                reserve = (args.idle_seconds + 30 if "idle" in only else 0) + \
                    (2 * rest_runs * 15 if "rest" in only else 0) + \
                    (2 * args.outage_runs * (args.outage_seconds + 90) if "outage" in only else 0)
                last_run = 0.0
                for i in range(args.runs if parts else 0):
                    if deadline and i > 0 and time.monotonic() + last_run + reserve > deadline:
                        log(f"{label}: budget reached, {i} runs done")
                        break
                    t_run = time.monotonic()
                    for c in clusters:
                        if c.kind in broken:
                            continue
                        for part, fn in parts:
                            log(f"{label}: run {i + 1}/{args.runs}, {part} on {c.kind}")
                            try:
                                fn(c, results[c.kind])
                            except Exception as e:  # noqa: BLE001
                                failures.append(f"{label}, {c.kind}, run {i + 1}, {part}: {e}")
                                log(f"FAILED: {failures[-1]}")
                                try:
                                    c.recover()
                                except Exception as e2:  # noqa: BLE001
                                    failures.append(f"{label}, {c.kind}: not recovered ({e2}); its remaining runs skipped")
                                    log(failures[-1])
                                    broken.add(c.kind)
                                    break
                    last_run = time.monotonic() - t_run
                    log(f"{label}: run {i + 1} took {last_run:.0f} s")
                live = [c for c in clusters if c.kind not in broken]
                if "outage" in only and live:
                    for i in range(args.outage_runs):
                        for failsafe in (False, True):
                            log(f"{label}: run {i + 1}/{args.outage_runs}, DCS outage, "
                                f"failsafe {'on' if failsafe else 'off'}, on {', '.join(c.kind for c in live)}")
                            try:
                                dcs_outage(live, results, etcd, args.outage_seconds, failsafe)
                            except Exception as e:  # noqa: BLE001
                                failures.append(f"{label}, run {i + 1}, DCS outage, failsafe "
                                                f"{'on' if failsafe else 'off'}: {e}")
                                log(f"FAILED: {failures[-1]}")
                                for c in live:
                                    try:
                                        c.recover()
                                    except Exception as e2:  # noqa: BLE001
                                        failures.append(f"{label}, {c.kind}: not recovered ({e2}); "
                                                        f"its remaining runs skipped")
                                        log(failures[-1])
                                        broken.add(c.kind)
                                live = [c for c in live if c.kind not in broken]
                            if not live:
                                break
                    try:  # back to the configuration the other measurements run with
                        set_failsafe(live, False)
                    except Exception as e:  # noqa: BLE001
                        log(f"{label}: failsafe_mode not turned off again: {e}")
                if "idle" in only and live:
                    try:
                        idle(live, results, args.idle_seconds)
                    except Exception as e:  # noqa: BLE001
                        failures.append(f"{label}: idle: {e}")
                        log(failures[-1])
                if "rest" in only:
                    for c in live:
                        for _ in range(rest_runs):
                            try:
                                rest_rps(c, results[c.kind])
                            except Exception as e:  # noqa: BLE001
                                failures.append(f"{label}, {c.kind}: rest: {e}")
                                log(failures[-1])
            finally:
                for c in clusters:
                    c.stop()
            metrics = list(dict.fromkeys(k for r in results.values() for k in r))
            for m in metrics:
                table.append((m, label, summary(results["pgha"].get(m, [])),
                              summary(results["patroni"].get(m, []))))
            completed.append(label)
            write_out()
        ok = True
    finally:
        if etcd is not None:
            etcd.stop()
        sweep(base, "bench")
        sampler.stopping.set()
        if ok and not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            log(f"logs kept in {base}")
    print(write_out())


if __name__ == "__main__":
    main()
