//! A model of one node's PostgreSQL: what the HA logic can observe and
//! what a client can lose.
//!
//! The WAL is a list of records, each with a globally unique id (a commit,
//! or a timeline switch at a promotion). Two data directories share
//! history exactly as far as their WALs share a prefix, so divergence,
//! `pg_rewind` and "this replica has every acknowledged commit" are exact
//! comparisons, not estimates. Positions are `BYTES_PER_RECORD` apart so
//! that byte-based settings (`maximum_lag_on_failover`) mean what they
//! mean on a real cluster writing ten 8 KiB commits a second.

use pgha_core::ha::PgRole;
use pgha_core::ha::sync::{Method, StandbyNames};

/// The WAL bytes one record stands for.
pub const BYTES_PER_RECORD: u64 = 8192;

/// One WAL record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Unique across the whole simulation.
    pub id: u64,
    pub timeline: u64,
}

/// What is on disk: survives crashes and restarts of the node.
#[derive(Clone, Debug)]
pub struct DataDir {
    pub system_id: u64,
    pub wal: Vec<Record>,
    /// Timeline switches: (timeline that ended, position where it ended).
    pub history: Vec<(u64, u64)>,
    /// pg_controldata says it last ran as a primary.
    pub was_primary: bool,
    /// `pgha.sync.conf`: the `synchronous_standby_names` pgha manages.
    pub sync_conf: Option<String>,
}

impl DataDir {
    pub fn lsn(&self) -> u64 {
        self.wal.len() as u64 * BYTES_PER_RECORD
    }

    pub fn timeline(&self) -> u64 {
        self.wal.last().map_or(1, |r| r.timeline)
    }

    /// Whether everything in this WAL is also in `other`'s, at the same
    /// places (so this node can stream from `other`). Record ids are unique
    /// and WAL only ever grows by appending or by copying a prefix, so the
    /// last record decides.
    pub fn is_prefix_of(&self, other: &DataDir) -> bool {
        self.system_id == other.system_id
            && self.wal.len() <= other.wal.len()
            && self
                .wal
                .last()
                .is_none_or(|r| other.wal[self.wal.len() - 1] == *r)
    }
}

/// The postmaster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    Down,
    /// Up, not answering queries yet, will run in this role.
    Starting(PgRole),
    Up(PgRole),
}

/// A commit waiting for its synchronous standbys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub id: u64,
    /// Where its record ends.
    pub lsn: u64,
}

/// One node's PostgreSQL.
#[derive(Clone, Debug)]
pub struct Postgres {
    pub data: Option<DataDir>,
    pub process: Process,
    /// The node `primary_conninfo` points at.
    pub follows: Option<usize>,
    /// The node the WAL receiver streams from now.
    pub streaming_from: Option<usize>,
    /// This node's WAL senders are frozen: connected standbys get nothing.
    pub senders_frozen: bool,
    /// Commits waiting for synchronous standbys (a primary's).
    pub waiting: Vec<Waiting>,
}

impl Postgres {
    pub fn empty() -> Self {
        Postgres {
            data: None,
            process: Process::Down,
            follows: None,
            streaming_from: None,
            senders_frozen: false,
            waiting: Vec::new(),
        }
    }

    pub fn is_primary(&self) -> bool {
        self.process == Process::Up(PgRole::Primary)
    }

    pub fn is_replica(&self) -> bool {
        self.process == Process::Up(PgRole::Replica)
    }

    pub fn is_up(&self) -> bool {
        matches!(self.process, Process::Up(_))
    }

    pub fn lsn(&self) -> u64 {
        self.data.as_ref().map_or(0, DataDir::lsn)
    }

    /// The postmaster is gone (crash, kill, immediate stop): its sessions
    /// end, and a commit waiting for standbys is never acknowledged.
    pub fn stop(&mut self) {
        self.process = Process::Down;
        self.streaming_from = None;
        self.waiting.clear();
    }

    /// The `synchronous_standby_names` PostgreSQL runs with.
    pub fn sync_names(&self) -> &str {
        self.data
            .as_ref()
            .and_then(|d| d.sync_conf.as_deref())
            .unwrap_or("")
    }
}

/// A WAL sender of a primary: a standby streaming from it.
#[derive(Clone, Debug)]
pub struct Sender {
    pub name: String,
    pub flush: u64,
}

/// `pg_stat_replication.sync_state` of each sender, as PostgreSQL assigns
/// it for `names`.
pub fn sync_states(names: &str, senders: &[Sender]) -> Vec<&'static str> {
    let parsed = StandbyNames::parse(names).filter(|n| !n.is_none());
    let Some(n) = parsed else {
        return vec!["async"; senders.len()];
    };
    let priority = |s: &Sender| priority(&n, &s.name);
    match n.method {
        Method::Any => senders
            .iter()
            .map(|s| {
                if priority(s).is_some() {
                    "quorum"
                } else {
                    "async"
                }
            })
            .collect(),
        Method::First => {
            let chosen = first_chosen(&n, senders);
            senders
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    if chosen.contains(&i) {
                        "sync"
                    } else if priority(s).is_some() {
                        "potential"
                    } else {
                        "async"
                    }
                })
                .collect()
        }
    }
}

/// Up to where commits are acknowledged under `names` with these senders:
/// `None` when nothing is required (empty names: asynchronous).
pub fn acknowledged_up_to(names: &str, senders: &[Sender]) -> Option<u64> {
    let n = StandbyNames::parse(names).filter(|n| !n.is_none())?;
    let mut flushes: Vec<u64> = match n.method {
        Method::First => first_chosen(&n, senders)
            .into_iter()
            .map(|i| senders[i].flush)
            .collect(),
        Method::Any => senders
            .iter()
            .filter(|s| priority(&n, &s.name).is_some())
            .map(|s| s.flush)
            .collect(),
    };
    if flushes.len() < n.num {
        return Some(0);
    }
    flushes.sort_unstable_by(|a, b| b.cmp(a));
    Some(flushes[n.num.saturating_sub(1)])
}

/// The senders `FIRST num (...)` waits for: the `num` of highest priority
/// (lowest list position) among those listed.
fn first_chosen(n: &StandbyNames, senders: &[Sender]) -> Vec<usize> {
    let mut listed: Vec<(usize, usize)> = senders
        .iter()
        .enumerate()
        .filter_map(|(i, s)| priority(n, &s.name).map(|p| (p, i)))
        .collect();
    listed.sort_unstable();
    listed.into_iter().take(n.num).map(|(_, i)| i).collect()
}

/// The sender's priority: the position of the first list entry naming it
/// (or `*`).
fn priority(n: &StandbyNames, name: &str) -> Option<usize> {
    n.names
        .iter()
        .position(|x| x == "*" || x.eq_ignore_ascii_case(name))
}

/// How long each PostgreSQL operation takes in the simulation (drawn per
/// operation between these bounds).
pub mod durations {
    use std::time::Duration;

    pub const BOOTSTRAP: (Duration, Duration) =
        (Duration::from_millis(800), Duration::from_secs(3));
    pub const CLONE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(8));
    pub const REWIND: (Duration, Duration) = (Duration::from_millis(300), Duration::from_secs(3));
    pub const START: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(3));
    pub const PROMOTE: (Duration, Duration) =
        (Duration::from_millis(100), Duration::from_millis(1500));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, flush: u64) -> Sender {
        Sender {
            name: name.into(),
            flush,
        }
    }

    #[test]
    fn first_waits_for_the_highest_priority_standbys() {
        let senders = [s("c", 30), s("b", 20), s("a", 10)];
        assert_eq!(
            sync_states("FIRST 1 (a, b)", &senders),
            ["async", "potential", "sync"]
        );
        assert_eq!(acknowledged_up_to("FIRST 1 (a, b)", &senders), Some(10));
        assert_eq!(acknowledged_up_to("FIRST 2 (a, b)", &senders), Some(10));
        assert_eq!(acknowledged_up_to("FIRST 2 (a, d)", &senders), Some(0));
        assert_eq!(acknowledged_up_to("", &senders), None);
    }

    #[test]
    fn any_waits_for_the_kth_most_advanced() {
        let senders = [s("a", 10), s("b", 20), s("c", 30)];
        assert_eq!(
            sync_states("ANY 2 (a, b)", &senders),
            ["quorum", "quorum", "async"]
        );
        assert_eq!(acknowledged_up_to("ANY 1 (a, b)", &senders), Some(20));
        assert_eq!(acknowledged_up_to("ANY 2 (a, b, c)", &senders), Some(20));
        assert_eq!(acknowledged_up_to("ANY 3 (a, b)", &senders), Some(0));
    }

    #[test]
    fn prefixes_decide_who_can_stream_from_whom() {
        let r = |id| Record { id, timeline: 1 };
        let d = |wal: Vec<Record>| DataDir {
            system_id: 1,
            wal,
            history: vec![],
            was_primary: false,
            sync_conf: None,
        };
        let a = d(vec![r(1), r(2)]);
        let b = d(vec![r(1), r(2), r(3)]);
        let c = d(vec![r(1), r(4)]);
        assert!(a.is_prefix_of(&b));
        assert!(!b.is_prefix_of(&a));
        assert!(!c.is_prefix_of(&b));
        assert!(d(vec![]).is_prefix_of(&a));
    }
}
