//! The `Cluster` snapshot: everything under `/<namespace>/<scope>/` at one
//! moment, typed, with each value's version for compare-and-set.

use std::fmt;

use super::dynamic_config::DynamicConfig;
use super::failover::Failover;
use super::failsafe::Failsafe;
use super::history::History;
use super::keys::ClusterKey;
use super::member::{Member, MemberData};
use super::status::Status;
use super::sync::SyncState;
use super::version::{Version, Versioned};

/// The leader lock as read: who holds it and which lease or session keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderLock {
    /// The member name stored in the `leader` key.
    pub name: String,
    pub version: Version,
    /// The lease or session the key is attached to (etcd lease id, ZooKeeper
    /// session id, Consul session id); `None` where the engine has none.
    pub owner: Option<String>,
}

/// A key whose stored value could not be read. The rest of the cluster loads;
/// the problem is reported so people can see and repair it.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyProblem {
    /// The key, relative to the cluster's base path (`members/node9`).
    pub key: String,
    /// The version of the unreadable value, so it can be replaced by
    /// compare-and-set.
    pub version: Option<Version>,
    pub reason: String,
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// One stored value as a backend found it, before pgha interprets it.
///
/// Backends list raw entries; [`Cluster::from_entries`] turns them into a
/// snapshot, so every engine reads values by the same rules.
#[derive(Clone, Debug, PartialEq)]
pub struct RawEntry {
    pub key: ClusterKey,
    pub value: Vec<u8>,
    pub version: Version,
    /// The lease or session the key is attached to, if any.
    pub owner: Option<String>,
}

/// Everything known about one cluster at one moment.
///
/// Invariants:
/// - `members` is sorted by name and holds only members whose value parsed;
///   the others are in `problems`, named by key.
/// - A key that is present but unreadable is `None` here *and* listed in
///   `problems`: callers must check [`Cluster::problem`] before treating
///   `None` as "absent" where the difference matters (`initialize`,
///   `config`).
/// - `leader` is never hidden by a problem: any stored bytes name a holder,
///   so a garbled leader key still reads as held, never as free.
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    /// The system identifier; `""` while the first node runs initdb.
    pub initialize: Option<Versioned<String>>,
    pub config: Option<Versioned<DynamicConfig>>,
    pub leader: Option<LeaderLock>,
    pub members: Vec<Member>,
    pub failover: Option<Versioned<Failover>>,
    pub sync: Option<Versioned<SyncState>>,
    pub history: Option<Versioned<History>>,
    pub status: Option<Versioned<Status>>,
    pub failsafe: Option<Versioned<Failsafe>>,
    pub problems: Vec<KeyProblem>,
    /// Where a watch started from this snapshot begins, so that no leader
    /// change between the load and the watch is missed.
    pub watch_cursor: Version,
}

impl Cluster {
    /// An empty cluster (nothing stored yet).
    pub fn empty(watch_cursor: Version) -> Self {
        Cluster {
            initialize: None,
            config: None,
            leader: None,
            members: Vec::new(),
            failover: None,
            sync: None,
            history: None,
            status: None,
            failsafe: None,
            problems: Vec::new(),
            watch_cursor,
        }
    }

    /// Builds a snapshot from raw entries, reading each value as Patroni
    /// does. A value that cannot be read becomes a [`KeyProblem`]; it never
    /// fails the whole load.
    pub fn from_entries(
        entries: impl IntoIterator<Item = RawEntry>,
        watch_cursor: Version,
    ) -> Self {
        let mut c = Cluster::empty(watch_cursor);
        let mut legacy_optime = None;
        for entry in entries {
            let key_name = entry.key.relative();
            let text = match String::from_utf8(entry.value) {
                Ok(t) => t,
                Err(e) => {
                    if entry.key == ClusterKey::Leader {
                        // Bytes that are not UTF-8 still mean "held".
                        let name = String::from_utf8_lossy(e.as_bytes()).into_owned();
                        c.problems.push(KeyProblem {
                            key: key_name,
                            version: Some(entry.version.clone()),
                            reason: "value is not UTF-8".into(),
                        });
                        c.leader = Some(LeaderLock {
                            name,
                            version: entry.version,
                            owner: entry.owner,
                        });
                    } else {
                        c.problems.push(KeyProblem {
                            key: key_name,
                            version: Some(entry.version),
                            reason: "value is not UTF-8".into(),
                        });
                    }
                    continue;
                }
            };
            let version = entry.version;
            let mut problem = |e: super::ValueError, version: &Version| {
                c.problems.push(KeyProblem {
                    key: key_name.clone(),
                    version: Some(version.clone()),
                    reason: e.to_string(),
                });
            };
            match entry.key {
                ClusterKey::Initialize => {
                    c.initialize = Some(Versioned::new(text.trim().to_string(), version))
                }
                ClusterKey::Leader => {
                    c.leader = Some(LeaderLock {
                        name: text,
                        version,
                        owner: entry.owner,
                    })
                }
                ClusterKey::Config => match DynamicConfig::parse(&text) {
                    Ok(v) => c.config = Some(Versioned::new(v, version)),
                    Err(e) => problem(e, &version),
                },
                ClusterKey::Member(name) => match parse_member(&text) {
                    Ok(data) => c.members.push(Member {
                        name,
                        version,
                        owner: entry.owner,
                        data,
                    }),
                    Err(e) => problem(e, &version),
                },
                ClusterKey::Failover => match Failover::parse(&text) {
                    Ok(v) => c.failover = Some(Versioned::new(v, version)),
                    Err(e) => problem(e, &version),
                },
                ClusterKey::Sync => match SyncState::parse(&text) {
                    Ok(v) => c.sync = Some(Versioned::new(v, version)),
                    Err(e) => problem(e, &version),
                },
                ClusterKey::History => match History::parse(&text) {
                    Ok(v) => c.history = Some(Versioned::new(v, version)),
                    Err(e) => problem(e, &version),
                },
                ClusterKey::Status => match Status::parse(&text) {
                    Ok(v) => c.status = Some(Versioned::new(v, version)),
                    Err(e) => problem(e, &version),
                },
                ClusterKey::LegacyOptime => match Status::parse(&text) {
                    Ok(v) => legacy_optime = Some(Versioned::new(v, version)),
                    Err(e) => problem(e, &version),
                },
                ClusterKey::Failsafe => match Failsafe::parse(&text) {
                    Ok(v) => c.failsafe = Some(Versioned::new(v, version)),
                    Err(e) => problem(e, &version),
                },
            }
        }
        if c.status.is_none() {
            c.status = legacy_optime;
        }
        c.members.sort_by(|a, b| a.name.cmp(&b.name));
        c.problems.sort_by(|a, b| a.key.cmp(&b.key));
        c
    }

    /// The member called `name`, if its key exists and parsed.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The name of the leader lock's holder.
    pub fn leader_name(&self) -> Option<&str> {
        self.leader.as_ref().map(|l| l.name.as_str())
    }

    /// The leader's member entry, when both the lock and the member key exist.
    pub fn leader_member(&self) -> Option<&Member> {
        self.leader_name().and_then(|n| self.member(n))
    }

    /// Whether `name` holds the leader lock.
    pub fn is_leader(&self, name: &str) -> bool {
        self.leader_name() == Some(name)
    }

    /// Every member is a Patroni node (none announces a pgha version), so
    /// the dynamic configuration means what Patroni makes of it. `false`
    /// for a cluster without members: nobody can say.
    pub fn run_by_patroni_only(&self) -> bool {
        !self.members.is_empty() && self.members.iter().all(|m| m.data.pgha_version().is_none())
    }

    /// The problem reported for `key`, if its value could not be read.
    pub fn problem(&self, key: &ClusterKey) -> Option<&KeyProblem> {
        let name = key.relative();
        self.problems.iter().find(|p| p.key == name)
    }

    /// The dynamic configuration, or Patroni's defaults when none is stored.
    pub fn dynamic_config(&self) -> DynamicConfig {
        self.config
            .as_ref()
            .map(|c| c.value.clone())
            .unwrap_or_default()
    }

    /// The leader's last known WAL position: `status.optime`, else the leader
    /// member's `xlog_location`.
    pub fn last_leader_lsn(&self) -> Option<u64> {
        self.status
            .as_ref()
            .and_then(|s| s.value.optime)
            .or_else(|| self.leader_member().and_then(|m| m.data.xlog_location))
    }
}

/// A member value is a JSON object; Patroni before 1.0 stored a bare
/// `postgres://` URL, which still reads as one.
fn parse_member(text: &str) -> Result<MemberData, super::ValueError> {
    if text.starts_with("postgres") {
        return Ok(MemberData {
            conn_url: Some(text.to_string()),
            ..Default::default()
        });
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v @ serde_json::Value::Object(_)) => {
            serde_json::from_value(v).map_err(|e| super::ValueError::Invalid {
                what: "member status",
                reason: e.to_string(),
            })
        }
        Ok(other) => Err(super::ValueError::wrong_kind("a JSON object", &other)),
        Err(e) => Err(super::ValueError::NotJson(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::member::Role;

    fn e(key: &str, value: &str, v: i64) -> RawEntry {
        RawEntry {
            key: ClusterKey::parse(key).unwrap(),
            value: value.as_bytes().to_vec(),
            version: Version::number(v),
            owner: None,
        }
    }

    #[test]
    fn a_full_patroni_cluster_reads() {
        let c = Cluster::from_entries(
            [
                e("initialize", "7312345678901234567", 1),
                e("config", r#"{"ttl":30,"loop_wait":10}"#, 2),
                e("leader", "node1", 3),
                e(
                    "members/node2",
                    r#"{"role":"replica","state":"running","xlog_location":100}"#,
                    4,
                ),
                e(
                    "members/node1",
                    r#"{"role":"primary","state":"running","xlog_location":120}"#,
                    5,
                ),
                e("failover", r#"{"leader":"node1","member":"node2"}"#, 6),
                e("history", r#"[[1,100,"no recovery target specified"]]"#, 7),
                e("status", r#"{"optime":150}"#, 8),
                e("sync", r#"{"leader":"node1","sync_standby":"node2"}"#, 9),
                e("failsafe", r#"{"node1":"http://h:1/patroni"}"#, 10),
            ],
            Version::number(10),
        );
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(c.initialize.as_ref().unwrap().value, "7312345678901234567");
        assert_eq!(c.leader_name(), Some("node1"));
        assert_eq!(
            c.members
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>(),
            ["node1", "node2"]
        );
        assert_eq!(c.leader_member().unwrap().data.role, Some(Role::Primary));
        assert_eq!(c.last_leader_lsn(), Some(150));
        assert_eq!(c.config.as_ref().unwrap().version, Version::number(2));
        assert!(c.sync.as_ref().unwrap().value.is_standby("node2"));
    }

    #[test]
    fn garbage_is_reported_by_key_and_the_rest_loads() {
        let c = Cluster::from_entries(
            [
                e("members/node1", r#"{"role":"primary"}"#, 1),
                e("members/bad", "{not json", 2),
                e("members/list", "[1,2]", 3),
                e("config", "nope", 4),
                e("failover", "[]", 5),
                e("history", "{}", 6),
                e("sync", "7", 7),
                e("status", "???", 8),
                e("failsafe", "[", 9),
                RawEntry {
                    key: ClusterKey::Initialize,
                    value: vec![0xff, 0xfe],
                    version: Version::number(10),
                    owner: None,
                },
            ],
            Version::number(10),
        );
        let keys: Vec<_> = c.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "config",
                "failover",
                "failsafe",
                "history",
                "initialize",
                "members/bad",
                "members/list",
                "status",
                "sync"
            ]
        );
        assert_eq!(c.members.len(), 1);
        assert!(
            c.problem(&ClusterKey::Config)
                .unwrap()
                .reason
                .contains("invalid JSON")
        );
        assert_eq!(
            c.problem(&ClusterKey::Config).unwrap().version,
            Some(Version::number(4))
        );
        assert!(c.config.is_none() && c.initialize.is_none());
    }

    #[test]
    fn a_garbled_leader_key_still_reads_as_held() {
        let c = Cluster::from_entries(
            [RawEntry {
                key: ClusterKey::Leader,
                value: vec![b'n', 0xff],
                version: Version::number(1),
                owner: None,
            }],
            Version::number(1),
        );
        assert!(c.leader.is_some());
        assert_eq!(c.problems.len(), 1);
    }

    #[test]
    fn legacy_forms_read() {
        let c = Cluster::from_entries(
            [
                e("optime/leader", "4242", 1),
                e("members/old", "postgres://10.0.0.1:5432/postgres", 2),
            ],
            Version::number(2),
        );
        assert_eq!(c.last_leader_lsn(), Some(4242));
        assert_eq!(
            c.member("old").unwrap().data.conn_host_port(),
            Some(("10.0.0.1".into(), 5432))
        );
    }
}
