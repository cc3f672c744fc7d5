//! Is this replica really replicating? (Scenario M1: a replica configured
//! to follow a node that does not exist, or not streaming at all, must not
//! pass for a healthy replica.)
//!
//! Three things, all pure:
//! - [`streams_from_upstream`] / [`published_state`]: what this replica is
//!   *now*: `streaming` only when its WAL receiver streams and is connected
//!   to the current leader (the host and port of the leader's `conn_url`).
//!   That is what the member key, `GET /patroni`, `/replica?replication_state=streaming`,
//!   `/readiness` and `pghactl list` show; it changes at once, as in Patroni.
//! - [`StreamingWatch`]: for how long this replica has not been streaming
//!   from the current leader, counted only while that leader's member key
//!   says its PostgreSQL runs and is still being rewritten (a leader
//!   restarting in place, a dead leader whose key the DCS has not expired
//!   yet, or a cluster without a leader, does not make its replicas
//!   "broken"; the count is frozen meanwhile).
//! - [`not_streaming_limit`]: past it, the replica's replication is
//!   *broken*: `decide` repairs `primary_conninfo` when it points elsewhere
//!   than at the leader, and `healthiest` keeps the node out of the leader
//!   race (and does not let a broken peer hold a healthy node back).

use std::fmt;
use std::time::Duration;

use super::observation::LocalPostgres;
use crate::model::{Cluster, Member, Timing, Version};

/// The value of `replication_state` for a replica that streams.
pub const STREAMING: &str = "streaming";
/// The value pgha publishes for a replica that does not stream from the
/// leader (the other value Patroni uses).
pub const NOT_STREAMING: &str = "in archive recovery";

/// A PostgreSQL server's network address, as written in a connection
/// string or a `conn_url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    /// `host:port` (`::1:5432` too: the port is after the last colon).
    pub fn parse(s: &str) -> Option<Self> {
        let (host, port) = s.trim().rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return None;
        }
        Some(Endpoint::new(host, port.parse().ok()?))
    }

    /// Where a libpq connection string (`key=value` pairs, or a
    /// `postgres://` URI) points: `None` when it names no host (an empty
    /// `primary_conninfo`, or the local Unix socket). The port defaults to
    /// 5432, as in libpq.
    pub fn from_conninfo(conninfo: &str) -> Option<Self> {
        let conninfo = conninfo.trim();
        if conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://") {
            let rest = conninfo.split_once("://")?.1;
            let authority = rest.split(['/', '?']).next()?;
            let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
            if host_port.is_empty() {
                return None;
            }
            if let Some(bracketed) = host_port.strip_prefix('[') {
                let (host, after) = bracketed.split_once(']')?;
                let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
                return Some(Endpoint::new(host, port.unwrap_or(5432)));
            }
            return Some(match host_port.rsplit_once(':') {
                Some((h, p)) => Endpoint::new(h, p.parse().ok()?),
                None => Endpoint::new(host_port, 5432),
            });
        }
        let pairs = conninfo_pairs(conninfo)?;
        let get = |k: &str| pairs.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v);
        let host = get("host")
            .or_else(|| get("hostaddr"))
            .filter(|h| !h.is_empty() && !h.starts_with('/'))?;
        let port = match get("port").filter(|p| !p.is_empty()) {
            Some(p) => p.parse().ok()?,
            None => 5432,
        };
        Some(Endpoint::new(host.clone(), port))
    }

    /// The same server: same port, host names compared without case.
    pub fn same_as(&self, other: &Endpoint) -> bool {
        self.port == other.port && self.host.eq_ignore_ascii_case(&other.host)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The `key=value` pairs of a libpq connection string (values may be
/// single-quoted, with `\'` and `\\` escapes). `None` if it cannot be read.
fn conninfo_pairs(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') || key.is_empty() {
            return None;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => value.push(chars.next()?),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    chars.next();
                    value.push(chars.next()?);
                } else {
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.push((key, value));
    }
}

/// Where the running replica's `primary_conninfo` (the value PostgreSQL
/// runs with, whichever file set it) points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfiguredUpstream {
    /// Empty, or no host in it.
    Nowhere,
    At(Endpoint),
}

impl fmt::Display for ConfiguredUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfiguredUpstream::Nowhere => f.write_str("nowhere"),
            ConfiguredUpstream::At(e) => write!(f, "{e}"),
        }
    }
}

/// How long a replica may go without streaming from the current leader
/// before its replication counts as broken: `ttl + loop_wait +
/// retry_timeout` (50 s with Patroni's defaults, 8 s with the test
/// cluster's 5/1/2).
///
/// Why this long, and not shorter: when the leader dies, every replica
/// stops streaming at once, yet the leader key (and the leader's member
/// key, still saying `running`) stays up to `ttl`; the replica then sees
/// the key gone within `loop_wait` (at once with a working watch), in a
/// cycle whose DCS read takes up to `retry_timeout`. A limit above that sum
/// means a replica that was streaming when its leader died is never
/// counted as broken when the race starts, so a failover is never held up
/// by this check. Why not longer: a replica that follows the wrong host is
/// repaired, and dropped as a candidate, within one more `loop_wait`.
/// (The *reported* state, what load balancers and `list` see, does not
/// wait for this limit: it says `streaming` only while the replica
/// streams from the leader.)
pub fn not_streaming_limit(t: Timing) -> Duration {
    t.ttl + t.loop_wait + t.retry_timeout
}

/// How long the upstream's member key may stay unrewritten before a
/// replica stops counting its own not-streaming time: `loop_wait +
/// retry_timeout`.
///
/// Every agent rewrites its member key once a cycle (every `loop_wait`,
/// plus the cycle's DCS calls, each bounded by `retry_timeout`), and every
/// backend gives each write a new [`Version`](crate::model::Version)
/// (etcd revision, znode version, Consul index, the Pod's
/// `resourceVersion` with pgha's heartbeat). A key that stops changing
/// belongs to an agent that is dead or frozen, whatever it says.
///
/// Why it matters: a dead leader's key is meant to vanish within `ttl`,
/// and [`not_streaming_limit`] leaves room for exactly that; but an etcd
/// under load has been seen to keep a killed leader's lease for 12 s at
/// `ttl` 5, so every replica passed the limit, stayed out of the race, and
/// nobody took over. With this bound a replica that streamed until its
/// leader died counts at most `2 × (loop_wait + retry_timeout)` (the last
/// write is seen up to one cycle late), which is below the limit because
/// `loop_wait + 2 × retry_timeout <= ttl` always holds — however long the
/// key lingers.
pub fn upstream_silence_limit(t: Timing) -> Duration {
    t.loop_wait + t.retry_timeout
}

/// The current leader's address, from its member key's `conn_url`.
pub fn leader_endpoint(cluster: &Cluster) -> Option<Endpoint> {
    let (host, port) = cluster.leader_member()?.data.conn_host_port()?;
    Some(Endpoint::new(host, port))
}

/// The member a replica streams from: the one its `replicatefrom` tag
/// names while that member's key says its PostgreSQL runs and gives an
/// address (cascading replication), else the leader. A cascade whose
/// middle member dies falls back to the leader as soon as the member's key
/// says so (or expires). So does one whose chain of `replicatefrom` tags
/// loops (two replicas naming each other): it would never reach the
/// leader, and every member in the loop would stream nothing.
pub fn upstream<'a>(cluster: &'a Cluster, replicate_from: Option<&str>) -> Option<&'a str> {
    replicate_from
        .and_then(|from| cascade_member(cluster, from))
        .filter(|m| reaches_the_leader(cluster, m))
        .map(|m| m.name.as_str())
        .or_else(|| cluster.leader_name())
}

/// `name`, if it can feed a cascade: its key says its PostgreSQL runs and
/// gives an address.
fn cascade_member<'a>(cluster: &'a Cluster, name: &str) -> Option<&'a Member> {
    cluster
        .member(name)
        .filter(|m| m.data.is_running() && m.data.conn_host_port().is_some())
}

/// Following `replicatefrom` tags from `member` ends at the leader or at a
/// member that streams from it (no tag, or one naming a member that cannot
/// feed a cascade), not in a loop.
fn reaches_the_leader(cluster: &Cluster, member: &Member) -> bool {
    let mut seen = vec![member.name.as_str()];
    let mut at = member;
    loop {
        if cluster.leader_name() == Some(at.name.as_str()) {
            return true;
        }
        let Some(next) = at
            .data
            .tags
            .replicatefrom()
            .and_then(|n| cascade_member(cluster, n))
        else {
            return true;
        };
        if seen.contains(&next.name.as_str()) {
            return false;
        }
        seen.push(next.name.as_str());
        at = next;
    }
}

/// The address of [`upstream`], from its member key's `conn_url`.
pub fn upstream_endpoint(cluster: &Cluster, replicate_from: Option<&str>) -> Option<Endpoint> {
    let name = upstream(cluster, replicate_from)?;
    let (host, port) = cluster.member(name)?.data.conn_host_port()?;
    Some(Endpoint::new(host, port))
}

/// Whether the local replica streams from its upstream now (the leader,
/// or the member its `replicatefrom` tag names: [`upstream`]): `None` when
/// it is not a running replica. Without an upstream (or without a usable
/// `conn_url` for it, or without a known sender) streaming is enough.
pub fn streams_from_upstream(local: &LocalPostgres, cluster: Option<&Cluster>) -> Option<bool> {
    local.is_replica().then(|| {
        streams_from(
            local.replication_state.as_deref(),
            local.receiver_sender.as_ref(),
            cluster,
            local.replicate_from.as_deref(),
        )
    })
}

/// Whether a WAL receiver in `status` (`pg_stat_wal_receiver.status`)
/// connected to `sender` streams from its upstream in `cluster`.
pub fn streams_from(
    status: Option<&str>,
    sender: Option<&Endpoint>,
    cluster: Option<&Cluster>,
    replicate_from: Option<&str>,
) -> bool {
    if status != Some(STREAMING) {
        return false;
    }
    match (
        cluster.and_then(|c| upstream_endpoint(c, replicate_from)),
        sender,
    ) {
        (Some(upstream), Some(sender)) => upstream.same_as(sender),
        _ => true,
    }
}

/// [`published_state`] from the raw observations of a PostgreSQL that is
/// `in_recovery` (or not).
pub fn state_of(
    in_recovery: bool,
    status: Option<&str>,
    sender: Option<&Endpoint>,
    cluster: Option<&Cluster>,
    replicate_from: Option<&str>,
) -> Option<String> {
    in_recovery.then(|| {
        if streams_from(status, sender, cluster, replicate_from) {
            STREAMING
        } else {
            NOT_STREAMING
        }
        .to_string()
    })
}

/// The `replication_state` a running replica publishes: `streaming` when it
/// streams from its upstream (the leader, or its `replicatefrom` member), `in archive recovery` otherwise;
/// `None` for anything but a running replica.
pub fn published_state(local: &LocalPostgres, cluster: Option<&Cluster>) -> Option<String> {
    streams_from_upstream(local, cluster).map(|s| if s { STREAMING } else { NOT_STREAMING }.into())
}

/// The pgha-only field of the member key and `GET /patroni` saying the
/// replica's replication is broken (see [`StreamingWatch::broken`]); peers
/// read it during the leader race. Patroni ignores fields it does not know.
pub const BROKEN_FIELD: &str = "replication_broken";

/// For how long this replica has not been streaming from the current
/// leader; kept in [`super::HaMemory`] and updated by the agent once a
/// cycle with [`StreamingWatch::update`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamingWatch {
    /// The upstream the count is about: the leader, or the member the
    /// `replicatefrom` tag names ([`upstream`]).
    pub upstream: Option<String>,
    /// Time counted without streaming from `leader` while it ran.
    pub not_streaming_for: Duration,
    /// When (monotonic) the last update was.
    pub updated_at: Option<Duration>,
    /// The last update found the replica not streaming from a running
    /// leader: only time between two such updates is counted (never the
    /// time before, when it may still have been streaming).
    pub counting: bool,
    /// The version of the upstream's member key last seen, and when
    /// (monotonic) it was first seen: see [`upstream_silence_limit`].
    pub upstream_key: Option<(Version, Duration)>,
}

impl StreamingWatch {
    /// Counts the time since the last update (when that one counted too):
    /// - reset when this node leads or runs as a primary, when the leader
    ///   changed, when the replica streams from the leader, and on a
    ///   replica fed from the archive only (`nostream`: it never streams);
    /// - added when the replica runs, does not stream from the leader, and
    ///   the leader's member key says its PostgreSQL runs and was rewritten
    ///   within `silence_limit` ([`upstream_silence_limit`]);
    /// - frozen otherwise: the DCS could not be read, there is no leader
    ///   (so the last verdict before the leader was lost is what the race
    ///   sees), the leader is not running (restarting in place, ...) or its
    ///   agent has gone silent (dead or frozen, its key not yet expired),
    ///   or this node's PostgreSQL is not running or busy with a job.
    pub fn update(
        &mut self,
        now: Duration,
        me: &str,
        cluster: Option<&Cluster>,
        local: &LocalPostgres,
        job_running: bool,
        silence_limit: Duration,
    ) {
        let elapsed = match self.updated_at {
            Some(t) if self.counting => now.saturating_sub(t),
            _ => Duration::ZERO,
        };
        self.updated_at = Some(now);
        self.counting = false;
        let Some(cluster) = cluster else { return };
        if local.is_primary() || cluster.is_leader(me) || local.archive_only {
            self.reset(None);
            return;
        }
        if cluster.leader_name().is_none() {
            return;
        }
        let Some(upstream) = upstream(cluster, local.replicate_from.as_deref()) else {
            return;
        };
        let key = cluster.member(upstream);
        let rewritten_at = match (&self.upstream_key, key) {
            (Some((seen, at)), Some(m)) if *seen == m.version => *at,
            _ => now,
        };
        self.upstream_key = key.map(|m| (m.version.clone(), rewritten_at));
        if self.upstream.as_deref() != Some(upstream) {
            self.reset(Some(upstream.to_string()));
            return;
        }
        if job_running {
            return;
        }
        let live = key.is_some_and(|m| m.data.is_running())
            && now.saturating_sub(rewritten_at) <= silence_limit;
        match streams_from_upstream(local, Some(cluster)) {
            Some(true) => self.not_streaming_for = Duration::ZERO,
            Some(false) if live => {
                self.not_streaming_for += elapsed;
                self.counting = true;
            }
            _ => {}
        }
    }

    fn reset(&mut self, upstream: Option<String>) {
        if upstream.is_none() {
            self.upstream_key = None;
        }
        self.upstream = upstream;
        self.not_streaming_for = Duration::ZERO;
    }

    /// The replica has not been streaming from `leader` for longer than `limit`.
    pub fn broken(&self, limit: Duration) -> bool {
        self.not_streaming_for > limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::observation::{DataDir, PgRole};
    use crate::model::{ClusterKey, RawEntry};
    use serde_json::json;

    fn local() -> LocalPostgres {
        LocalPostgres {
            data_dir: DataDir::Initialized {
                system_id: "1".into(),
                was_primary: false,
                timeline: 1,
            },
            running: true,
            crashed: false,
            role: Some(PgRole::Replica),
            timeline: Some(1),
            wal_position: Some(1),
            following: Some("n1".into()),
            replication_state: Some(STREAMING.into()),
            receiver_sender: Some(Endpoint::new("10.0.0.1", 5432)),
            configured_upstream: Some(ConfiguredUpstream::At(Endpoint::new("10.0.0.1", 5432))),
            starting: None,
            replicate_from: None,
            archive_only: false,
        }
    }

    /// A cluster led by `leader` (if any), whose member key says `state`.
    fn cluster(leader: Option<&str>, state: &str) -> Cluster {
        cluster_at(leader, state, 1)
    }

    /// [`cluster`] with n1's member key at `version` (every rewrite of a
    /// key gives it a new version).
    fn cluster_at(leader: Option<&str>, state: &str, version: i64) -> Cluster {
        let mut entries = vec![(
            "members/n1".to_string(),
            json!({"conn_url": "postgres://10.0.0.1:5432/postgres", "state": state, "role": "primary"})
                .to_string(),
        )];
        entries.push((
            "members/n4".to_string(),
            json!({"conn_url": "postgres://10.0.0.4:5432/postgres", "state": "running", "role": "primary"})
                .to_string(),
        ));
        if let Some(l) = leader {
            entries.push(("leader".into(), l.into()));
        }
        Cluster::from_entries(
            entries.into_iter().enumerate().map(|(i, (k, v))| RawEntry {
                key: ClusterKey::parse(&k).unwrap(),
                value: v.into_bytes(),
                version: Version::number(if i == 0 { version } else { i as i64 + 1000 }),
                owner: None,
            }),
            Version::number(100),
        )
    }

    const S: fn(u64) -> Duration = Duration::from_secs;
    /// A silence limit the tests about other things never reach.
    const NEVER_SILENT: Duration = Duration::from_secs(1_000_000);

    #[test]
    fn endpoints_are_read_from_conninfo_and_urls() {
        let e = |s: &str| Endpoint::from_conninfo(s);
        assert_eq!(
            e(
                "host='127.0.0.1' port=5433 user='replicator' password='it\\'s' application_name='n2'"
            ),
            Some(Endpoint::new("127.0.0.1", 5433))
        );
        assert_eq!(e("host=db1 user=x"), Some(Endpoint::new("db1", 5432)));
        assert_eq!(
            e("hostaddr=10.1.1.1 port = 6000"),
            Some(Endpoint::new("10.1.1.1", 6000))
        );
        assert_eq!(e(""), None);
        assert_eq!(e("host=/var/run/postgresql port=5432"), None);
        assert_eq!(e("user=replicator"), None);
        assert_eq!(e("host='unterminated"), None);
        assert_eq!(
            e("postgres://rep:pw@db2:5434/postgres?sslmode=off"),
            Some(Endpoint::new("db2", 5434))
        );
        assert_eq!(e("postgresql://[::1]/x"), Some(Endpoint::new("::1", 5432)));
        assert_eq!(
            Endpoint::parse("::1:5432"),
            Some(Endpoint::new("::1", 5432))
        );
        assert_eq!(Endpoint::parse("db:x"), None);
        assert!(Endpoint::new("DB1", 1).same_as(&Endpoint::new("db1", 1)));
        assert!(!Endpoint::new("db1", 1).same_as(&Endpoint::new("db1", 2)));
    }

    #[test]
    fn the_limit_outlasts_a_dead_leaders_key() {
        let t = Timing {
            ttl: S(30),
            loop_wait: S(10),
            retry_timeout: S(10),
        };
        assert_eq!(not_streaming_limit(t), S(50));
        assert!(not_streaming_limit(t) > t.ttl + t.loop_wait);
    }

    #[test]
    fn streaming_counts_only_from_the_leader() {
        let c = cluster(Some("n1"), "running");
        let mut l = local();
        assert_eq!(streams_from_upstream(&l, Some(&c)), Some(true));
        assert_eq!(published_state(&l, Some(&c)).as_deref(), Some(STREAMING));
        // Connected to another server (a wrong host, an old primary).
        l.receiver_sender = Some(Endpoint::new("10.0.0.9", 5432));
        assert_eq!(streams_from_upstream(&l, Some(&c)), Some(false));
        assert_eq!(
            published_state(&l, Some(&c)).as_deref(),
            Some(NOT_STREAMING)
        );
        // Without a leader, or a known sender, streaming is enough.
        assert_eq!(
            streams_from_upstream(&l, Some(&cluster(None, "running"))),
            Some(true)
        );
        l.receiver_sender = None;
        assert_eq!(streams_from_upstream(&l, Some(&c)), Some(true));
        // The WAL receiver does not stream.
        l.replication_state = Some("waiting".into());
        assert_eq!(streams_from_upstream(&l, Some(&c)), Some(false));
        l.replication_state = None;
        assert_eq!(published_state(&l, None).as_deref(), Some(NOT_STREAMING));
        // Not a running replica: nothing to say.
        l.running = false;
        assert_eq!(published_state(&l, Some(&c)), None);
        let mut p = local();
        p.role = Some(PgRole::Primary);
        assert_eq!(published_state(&p, Some(&c)), None);
    }

    #[test]
    fn a_cascading_replica_streams_from_its_replicatefrom_member_while_it_runs() {
        // n1 leads; n4 (running) is the member n2's replicatefrom names.
        let c = cluster(Some("n1"), "running");
        assert_eq!(upstream(&c, Some("n4")), Some("n4"));
        assert_eq!(upstream(&c, None), Some("n1"));
        assert_eq!(
            upstream(&c, Some("gone")),
            Some("n1"),
            "no such member: the leader"
        );
        let mut l = local();
        l.replicate_from = Some("n4".into());
        assert_eq!(
            streams_from_upstream(&l, Some(&c)),
            Some(false),
            "from the leader"
        );
        l.receiver_sender = Some(Endpoint::new("10.0.0.4", 5432));
        assert_eq!(streams_from_upstream(&l, Some(&c)), Some(true));
        assert_eq!(published_state(&l, Some(&c)).as_deref(), Some(STREAMING));
        // The middle member stops: the leader is the upstream again.
        let n4_down = Cluster::from_entries(
            [
                ("members/n1", json!({"conn_url": "postgres://10.0.0.1:5432/postgres", "state": "running", "role": "primary"})),
                ("members/n4", json!({"conn_url": "postgres://10.0.0.4:5432/postgres", "state": "stopped", "role": "replica"})),
                ("leader", json!("n1")),
            ]
            .into_iter()
            .enumerate()
            .map(|(i, (k, v))| RawEntry {
                key: ClusterKey::parse(k).unwrap(),
                value: v.as_str().map_or_else(|| v.to_string(), String::from).into_bytes(),
                version: Version::number(i as i64 + 1),
                owner: None,
            }),
            Version::number(100),
        );
        assert_eq!(upstream(&n4_down, Some("n4")), Some("n1"));
        assert_eq!(streams_from_upstream(&l, Some(&n4_down)), Some(false));
    }

    /// Members whose `replicatefrom` tags form a loop would stream from
    /// each other and never get WAL: each streams from the leader instead.
    /// A chain that ends at the leader cascades as tagged.
    #[test]
    fn replicatefrom_loops_fall_back_to_the_leader_and_chains_cascade() {
        let entries = [
            (
                "members/n1",
                json!({"conn_url": "postgres://10.0.0.1:5432/postgres", "state": "running", "role": "primary"}),
            ),
            (
                "members/n2",
                json!({"conn_url": "postgres://10.0.0.2:5432/postgres", "state": "running", "role": "replica", "tags": {"replicatefrom": "n3"}}),
            ),
            (
                "members/n3",
                json!({"conn_url": "postgres://10.0.0.3:5432/postgres", "state": "running", "role": "replica", "tags": {"replicatefrom": "n2"}}),
            ),
            (
                "members/n4",
                json!({"conn_url": "postgres://10.0.0.4:5432/postgres", "state": "running", "role": "replica", "tags": {"replicatefrom": "n5"}}),
            ),
            (
                "members/n5",
                json!({"conn_url": "postgres://10.0.0.5:5432/postgres", "state": "running", "role": "replica", "tags": {"replicatefrom": "n6"}}),
            ),
            (
                "members/n6",
                json!({"conn_url": "postgres://10.0.0.6:5432/postgres", "state": "running", "role": "replica"}),
            ),
            (
                "members/n7",
                json!({"conn_url": "postgres://10.0.0.7:5432/postgres", "state": "running", "role": "replica", "tags": {"replicatefrom": "n2"}}),
            ),
            ("leader", json!("n1")),
        ];
        let c = Cluster::from_entries(
            entries.into_iter().enumerate().map(|(i, (k, v))| RawEntry {
                key: ClusterKey::parse(k).unwrap(),
                value: v
                    .as_str()
                    .map_or_else(|| v.to_string(), String::from)
                    .into_bytes(),
                version: Version::number(i as i64 + 1),
                owner: None,
            }),
            Version::number(100),
        );
        // n2 <-> n3: a loop, both from the leader.
        assert_eq!(upstream(&c, Some("n3")), Some("n1"));
        assert_eq!(upstream(&c, Some("n2")), Some("n1"));
        // n7 names n2, which is in the loop: from the leader too.
        // n4 -> n5 -> n6 -> (leader): a chain, cascaded as tagged.
        assert_eq!(upstream(&c, Some("n5")), Some("n5"));
        assert_eq!(upstream(&c, Some("n6")), Some("n6"));
        // Naming the leader is streaming from the leader.
        assert_eq!(upstream(&c, Some("n1")), Some("n1"));
    }

    fn broken_local() -> LocalPostgres {
        let mut l = local();
        l.replication_state = Some("waiting".into());
        l.receiver_sender = None;
        l
    }

    #[test]
    fn the_watch_counts_while_the_leader_runs_and_resets_when_streaming() {
        let c = cluster(Some("n1"), "running");
        let mut w = StreamingWatch::default();
        w.update(S(0), "n2", Some(&c), &local(), false, NEVER_SILENT);
        assert_eq!(w.upstream.as_deref(), Some("n1"));
        w.update(S(5), "n2", Some(&c), &local(), false, NEVER_SILENT);
        assert_eq!(w.not_streaming_for, S(0));
        // Streaming stopped between 5 and 10: counted from 10 on, not from 5.
        w.update(S(10), "n2", Some(&c), &broken_local(), false, NEVER_SILENT);
        assert_eq!(w.not_streaming_for, S(0));
        w.update(S(20), "n2", Some(&c), &broken_local(), false, NEVER_SILENT);
        w.update(S(35), "n2", Some(&c), &broken_local(), false, NEVER_SILENT);
        assert_eq!(w.not_streaming_for, S(25));
        assert!(w.broken(S(20)));
        assert!(!w.broken(S(25)));
        w.update(S(36), "n2", Some(&c), &local(), false, NEVER_SILENT);
        assert_eq!(w.not_streaming_for, S(0));
    }

    #[test]
    fn an_archive_only_replica_is_never_counted_as_broken() {
        let c = cluster(Some("n1"), "running");
        let mut archive = broken_local();
        archive.replication_state = None;
        archive.configured_upstream = Some(ConfiguredUpstream::Nowhere);
        archive.archive_only = true;
        let mut w = StreamingWatch::default();
        for t in [0, 10, 100, 1000] {
            w.update(S(t), "n2", Some(&c), &archive, false, NEVER_SILENT);
        }
        assert_eq!(w.not_streaming_for, S(0));
        assert!(!w.broken(S(1)));
        // The same replica without the tag: broken.
        archive.archive_only = false;
        for t in [1001, 1010, 1100] {
            w.update(S(t), "n2", Some(&c), &archive, false, NEVER_SILENT);
        }
        assert!(w.broken(S(50)));
        // It still says it is not streaming, as Patroni's nostream node.
        assert_eq!(
            published_state(&archive, Some(&c)).as_deref(),
            Some(NOT_STREAMING)
        );
    }

    #[test]
    fn the_watch_freezes_without_dcs_leader_running_leader_or_own_postgres() {
        let c = cluster(Some("n1"), "running");
        let no_leader = cluster(None, "running");
        let leader_starting = cluster(Some("n1"), "starting");
        let mut w = StreamingWatch::default();
        w.update(S(0), "n2", Some(&c), &broken_local(), false, NEVER_SILENT);
        w.update(S(1), "n2", Some(&c), &broken_local(), false, NEVER_SILENT);
        w.update(S(11), "n2", Some(&c), &broken_local(), false, NEVER_SILENT);
        assert_eq!(w.not_streaming_for, S(10));
        // DCS unreadable.
        w.update(S(20), "n2", None, &broken_local(), false, NEVER_SILENT);
        // The leader key expired: the count is what the race will see.
        w.update(
            S(30),
            "n2",
            Some(&no_leader),
            &broken_local(),
            false,
            NEVER_SILENT,
        );
        // The leader restarts its PostgreSQL in place.
        w.update(
            S(40),
            "n2",
            Some(&leader_starting),
            &broken_local(),
            false,
            NEVER_SILENT,
        );
        // My own PostgreSQL is down, or a job runs.
        let mut stopped = broken_local();
        stopped.running = false;
        w.update(S(50), "n2", Some(&c), &stopped, false, NEVER_SILENT);
        w.update(S(60), "n2", Some(&c), &broken_local(), true, NEVER_SILENT);
        assert_eq!(w.not_streaming_for, S(10));
        assert_eq!(w.upstream.as_deref(), Some("n1"));
        // Counting again, from the first update that counts.
        w.update(S(65), "n2", Some(&c), &broken_local(), false, NEVER_SILENT);
        assert_eq!(w.not_streaming_for, S(10));
        w.update(S(70), "n2", Some(&c), &broken_local(), false, NEVER_SILENT);
        assert_eq!(w.not_streaming_for, S(15));
    }

    #[test]
    fn the_watch_resets_on_a_new_leader_or_when_leading() {
        let c = cluster(Some("n1"), "running");
        let n4 = cluster(Some("n4"), "running");
        let mut w = StreamingWatch::default();
        w.update(S(0), "n2", Some(&c), &broken_local(), false, NEVER_SILENT);
        w.update(S(1), "n2", Some(&c), &broken_local(), false, NEVER_SILENT);
        w.update(S(61), "n2", Some(&c), &broken_local(), false, NEVER_SILENT);
        assert!(w.broken(S(50)));
        w.update(S(62), "n2", Some(&n4), &broken_local(), false, NEVER_SILENT);
        assert_eq!(
            (w.upstream.as_deref(), w.not_streaming_for),
            (Some("n4"), S(0))
        );
        w.update(S(63), "n2", Some(&n4), &broken_local(), false, NEVER_SILENT);
        w.update(S(92), "n2", Some(&n4), &broken_local(), false, NEVER_SILENT);
        assert_eq!(w.not_streaming_for, S(29));
        w.update(S(93), "n4", Some(&n4), &broken_local(), false, NEVER_SILENT);
        assert_eq!((w.upstream.as_deref(), w.not_streaming_for), (None, S(0)));
        let mut primary = local();
        primary.role = Some(PgRole::Primary);
        w.update(S(94), "n2", Some(&c), &primary, false, NEVER_SILENT);
        assert_eq!((w.upstream.as_deref(), w.not_streaming_for), (None, S(0)));
    }

    #[test]
    fn the_watch_freezes_when_the_leaders_key_stops_being_rewritten() {
        // The leader's agent rewrites its key every cycle (a new version
        // each time); it dies at 10 s, its key lingers (a slow etcd) with
        // the last version, still saying "running".
        let silence = S(3);
        let mut w = StreamingWatch::default();
        w.update(
            S(0),
            "n2",
            Some(&cluster_at(Some("n1"), "running", 1)),
            &local(),
            false,
            silence,
        );
        for t in 1..=10 {
            w.update(
                S(t),
                "n2",
                Some(&cluster_at(Some("n1"), "running", t as i64 + 1)),
                &local(),
                false,
                silence,
            );
        }
        assert_eq!(w.not_streaming_for, S(0));
        // Streaming stops at once; the key stays at version 11 for 30 s.
        let lingering = cluster_at(Some("n1"), "running", 11);
        for t in 11..=40 {
            w.update(
                S(t),
                "n2",
                Some(&lingering),
                &broken_local(),
                false,
                silence,
            );
        }
        assert_eq!(
            w.not_streaming_for,
            S(2),
            "counted from 11 s until 13 s, the key's last rewrite (seen at 10 s) + 3 s"
        );
        assert!(
            !w.broken(S(8)),
            "a replica that streamed until its leader died stays a candidate"
        );
        // A live leader rewrites its key again: counting resumes.
        for t in 41..=50 {
            w.update(
                S(t),
                "n2",
                Some(&cluster_at(Some("n1"), "running", t as i64)),
                &broken_local(),
                false,
                silence,
            );
        }
        assert_eq!(w.not_streaming_for, S(11));
        // A leader that keeps rewriting its key while this replica does not
        // stream from it (M1: a wrong host) is counted past the limit.
        assert!(w.broken(S(8)));
    }

    #[test]
    fn a_replica_broken_before_its_leader_died_stays_broken() {
        let silence = S(3);
        let mut w = StreamingWatch::default();
        for t in 0..=20 {
            w.update(
                S(t),
                "n2",
                Some(&cluster_at(Some("n1"), "running", t as i64)),
                &broken_local(),
                false,
                silence,
            );
        }
        assert_eq!(w.not_streaming_for, S(19));
        let lingering = cluster_at(Some("n1"), "running", 20);
        for t in 21..=40 {
            w.update(
                S(t),
                "n2",
                Some(&lingering),
                &broken_local(),
                false,
                silence,
            );
        }
        assert_eq!(w.not_streaming_for, S(22));
        w.update(
            S(41),
            "n2",
            Some(&cluster(None, "running")),
            &broken_local(),
            false,
            silence,
        );
        assert!(w.broken(S(8)), "what the race sees");
    }
}
