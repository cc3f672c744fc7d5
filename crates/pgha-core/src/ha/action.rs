//! What the HA decision asks the agent to do.

use std::fmt;

use super::rule::Rule;
use crate::model::LeaderLock;

/// How to stop a primary that must stop accepting writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// `pg_ctl stop -m fast`, bounded by the lock deadline, then immediate:
    /// for a primary that can no longer prove it holds the lock.
    Fast,
    /// `pg_ctl stop -m immediate`: another node holds the lock, or the
    /// lock's lifetime is (nearly) over. Every moment counts.
    Immediate,
    /// A planned switchover: `CHECKPOINT` first (so the shutdown checkpoint
    /// is short), then a fast stop, which sends every WAL record to the
    /// connected replicas before it ends; bounded by the lock's lifetime.
    Graceful,
}

/// The source a replica created while no leader runs is named by: the
/// replica methods marked `no_leader` (`Job::Clone`'s source).
pub const NO_LEADER_SOURCE: &str = "a no_leader replica method";

/// One step. The agent runs a decision's actions in order and stops at the
/// first that fails; then it observes again and asks for a new decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    // --- the DCS
    /// Take the leader lock if nobody holds it.
    AcquireLock,
    /// Extend the lock we hold.
    RenewLock,
    /// Give the lock up.
    ReleaseLock,
    /// Replace the leader key, if it is still exactly this one, with our
    /// lock: a key no lease or session backs, which overwrote ours.
    ReclaimLock { lock: LeaderLock },
    /// Delete the leader key if it is still exactly this one: a key no
    /// lease or session backs, which nobody holds and which never expires.
    RemoveUnownedLock { lock: LeaderLock },
    /// Race to create `initialize`; the winner bootstraps.
    RaceInitialize,
    /// Store our system identifier in `initialize` (it is absent or `""`).
    RecordSystemId { system_id: String },
    /// Write the cluster's `config` (it is absent): the last dynamic
    /// configuration this node read from the DCS (or its cache in the data
    /// directory), else its `bootstrap.dcs`. A configuration lost from the
    /// DCS comes back as it was, not as it was at bootstrap.
    WriteConfig,
    /// Remove the `failover` key (the switchover is done, impossible, or
    /// stale), if it is still the version that was read.
    ClearFailover,

    // --- PostgreSQL
    /// initdb, configure, start as primary, create the roles.
    Bootstrap,
    /// Create this replica from `source` (pg_basebackup or a custom method).
    Clone { source: String },
    /// Create this replica while no leader runs, with the replica methods
    /// marked `no_leader` (a restore from a backup), as Patroni; carried
    /// out as [`super::Job::Clone`] from [`NO_LEADER_SOURCE`].
    CloneWithoutLeader,
    /// Wipe the data directory and clone again from `source`.
    Reinitialize { source: String },
    /// pg_rewind against `source`, the new leader.
    Rewind { source: String },
    /// Start PostgreSQL as a primary (it ran as one and we hold the lock).
    StartPrimary,
    /// Start PostgreSQL as a replica of `leader` (or of nobody yet).
    StartReplica { leader: Option<String> },
    /// Point the running replica at `leader`.
    Follow { leader: Option<String> },
    /// Promote the running replica.
    Promote,
    /// Start PostgreSQL as the standby leader of a standby cluster:
    /// a replica of the cluster's `standby_cluster` source. `rewind`: the
    /// data directory was a primary's (`pghactl demote-cluster`), which may
    /// have written past the point where the source's history forked from
    /// it: pg_rewind against the source first (a no-op when nothing
    /// diverged), as Patroni does.
    StartStandbyLeader { source: String, rewind: bool },
    /// Point the running replica at the `standby_cluster` source.
    FollowSource { source: String },
    /// Stop accepting writes now.
    Demote { mode: StopMode },
    /// Refuse to go on: the agent exits with this reason.
    Exit { reason: String },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::AcquireLock => f.write_str("acquire lock"),
            Action::RenewLock => f.write_str("renew lock"),
            Action::ReleaseLock => f.write_str("release lock"),
            Action::ReclaimLock { lock } => {
                write!(
                    f,
                    "reclaim the lock from an unowned key naming {:?}",
                    lock.name
                )
            }
            Action::RemoveUnownedLock { lock } => {
                write!(f, "remove the unowned leader key naming {:?}", lock.name)
            }
            Action::RaceInitialize => f.write_str("race for initialize"),
            Action::RecordSystemId { system_id } => write!(f, "record system id {system_id}"),
            Action::WriteConfig => f.write_str("write config"),
            Action::ClearFailover => f.write_str("clear failover key"),
            Action::Bootstrap => f.write_str("bootstrap"),
            Action::Clone { source } => write!(f, "clone from {source}"),
            Action::CloneWithoutLeader => write!(f, "clone from {NO_LEADER_SOURCE}"),
            Action::Reinitialize { source } => write!(f, "reinitialize from {source}"),
            Action::Rewind { source } => write!(f, "rewind from {source}"),
            Action::StartPrimary => f.write_str("start as primary"),
            Action::StartReplica { leader: Some(l) } => write!(f, "start as replica of {l}"),
            Action::StartReplica { leader: None } => f.write_str("start as replica"),
            Action::Follow { leader: Some(l) } => write!(f, "follow {l}"),
            Action::Follow { leader: None } => f.write_str("follow nobody"),
            Action::Promote => f.write_str("promote"),
            Action::StartStandbyLeader { source, rewind } => {
                write!(f, "start as standby leader replicating from {source}")?;
                if *rewind {
                    write!(f, " after pg_rewind from it")?;
                }
                Ok(())
            }
            Action::FollowSource { source } => {
                write!(f, "follow the standby cluster's source {source}")
            }
            Action::Demote { mode } => write!(f, "demote ({mode:?})"),
            Action::Exit { reason } => write!(f, "exit: {reason}"),
        }
    }
}

/// The outcome of one HA decision: what to do, which rule decided it, and
/// one line saying why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub rule: Rule,
    pub reason: String,
    /// What this node waits for is due within a moment (the leader is
    /// about to publish its post-promotion checkpoint): the agent looks
    /// again within a second instead of after `loop_wait`.
    pub look_again_soon: bool,
}

impl Decision {
    pub fn new(rule: Rule, actions: Vec<Action>, reason: impl Into<String>) -> Self {
        Decision {
            actions,
            rule,
            reason: reason.into(),
            look_again_soon: false,
        }
    }

    /// Nothing to do, and why.
    pub fn idle(rule: Rule, reason: impl Into<String>) -> Self {
        Decision::new(rule, Vec::new(), reason)
    }

    /// The same decision, to be looked at again within a second.
    pub fn soon(mut self) -> Self {
        self.look_again_soon = true;
        self
    }
}
