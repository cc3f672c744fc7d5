//! Which rule of `decide` made a decision.
//!
//! Every [`super::Decision`] names the rule that made it, so tests assert
//! rules rather than the wording of a reason, and each log line of an HA
//! decision carries the rule as a field. The rules are the steps of the
//! safety chain in `decide` (its module docs), in that order; a step with
//! several distinct outcomes has one rule per outcome.

use std::fmt;

/// A rule of `decide`. See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// 1. A primary whose lock lifetime is (nearly) over stops at once.
    LockExpiring,
    /// 1b. A node that could not be fenced if its agent died is no primary
    ///     and holds no lock.
    Unfenced,
    /// 2. The DCS could not be read: a primary demotes, a replica waits.
    NoDcs,
    /// 2, 3, 6. Failsafe mode: a primary without the DCS (or whose renewal
    ///    failed) runs on while every member of the `failsafe` key
    ///    confirms it, and takes a free leader key back at once when the
    ///    DCS returns.
    Failsafe,
    /// 3. A background job runs: the leader keeps renewing, nobody else
    ///    acts.
    JobInProgress,
    /// 3b. A leader key no lease or session backs: taken back or removed.
    UnownedLock,
    /// 4. The data directory is not usable: never started.
    UnusableDataDir,
    /// 4. The data directory is empty, and neither bootstrapping nor
    ///    cloning can start now (a leader gives the lock up).
    EmptyDataDir,
    /// 4. An uninitialized cluster: race to bootstrap it, or wait.
    Bootstrap,
    /// 4. An empty data directory in an initialized cluster: clone, or wait
    ///    for a source.
    Clone,
    /// 4. The data directory belongs to another cluster: refuse.
    SystemIdMismatch,
    /// 4. The cluster has no `initialize` key: record this data's system
    ///    ID, or refuse to run a replica of an unknown cluster.
    NoInitializeKey,
    /// 5. PostgreSQL is not running: start it in the role the lock allows.
    Stopped,
    /// 5. A leader's PostgreSQL did not start within
    ///    `primary_start_timeout`: give the lock up.
    PrimaryStartTimeout,
    /// 5. A synchronous primary's PostgreSQL crashed: restarted in place it
    ///    would show clients commits its standbys never acknowledged, so a
    ///    synchronous standby takes over and this node rejoins (rewound).
    SyncCrash,
    /// 5, 6. This node's WAL may have gone where the leader's did not:
    ///    rewind (or reclone) before following, or wait until it can.
    Rewind,
    /// 6. Right after bootstrapping: take the cluster's free lock.
    AfterBootstrap,
    /// 6. Maintenance mode: no automatic action.
    Paused,
    /// 6. The leader's renewal just failed: a primary demotes.
    RenewFailed,
    /// 6. The leader deals with a switchover or failover request.
    Switchover,
    /// 6. The leader keeps its lock and its primary.
    Leader,
    /// 6. The lock holder runs as a replica: it promotes.
    HolderPromotes,
    /// 6. A standby cluster's lock holder replicates from the cluster's
    ///    source instead of promoting (a primary demotes to do so).
    StandbyLeader,
    /// 6. A primary sees another node hold the lock: it stops at once.
    OtherHolder,
    /// 6. A replica follows the lock holder.
    Follow,
    /// 6. A replica has not streamed from the leader for too long: repair
    ///    `primary_conninfo`, or say why not.
    NotStreaming,
    /// 6. Nobody leads: only the healthiest node races for the lock.
    Race,
}

impl Rule {
    /// A short stable name, for logs and tests.
    pub fn id(self) -> &'static str {
        match self {
            Rule::LockExpiring => "lock-expiring",
            Rule::Unfenced => "unfenced",
            Rule::NoDcs => "no-dcs",
            Rule::Failsafe => "failsafe",
            Rule::JobInProgress => "job-in-progress",
            Rule::UnownedLock => "unowned-lock",
            Rule::UnusableDataDir => "unusable-data-dir",
            Rule::EmptyDataDir => "empty-data-dir",
            Rule::Bootstrap => "bootstrap",
            Rule::Clone => "clone",
            Rule::SystemIdMismatch => "system-id-mismatch",
            Rule::NoInitializeKey => "no-initialize-key",
            Rule::Stopped => "stopped",
            Rule::PrimaryStartTimeout => "primary-start-timeout",
            Rule::SyncCrash => "sync-crash",
            Rule::Rewind => "rewind",
            Rule::AfterBootstrap => "after-bootstrap",
            Rule::Paused => "paused",
            Rule::RenewFailed => "renew-failed",
            Rule::Switchover => "switchover",
            Rule::Leader => "leader",
            Rule::HolderPromotes => "holder-promotes",
            Rule::StandbyLeader => "standby-leader",
            Rule::OtherHolder => "other-holder",
            Rule::Follow => "follow",
            Rule::NotStreaming => "not-streaming",
            Rule::Race => "race",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}
