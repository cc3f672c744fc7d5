//! What the HA decision is given: everything the loop observed this cycle.

use std::time::Duration;

use super::replication::{ConfiguredUpstream, Endpoint, StreamingWatch};
use crate::model::{Cluster, Tags, Version};

/// The node's own settings that shape decisions (from its YAML file and
/// the cluster's dynamic configuration).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSettings {
    pub name: String,
    pub tags: Tags,
    /// The YAML has a `bootstrap` section: this node may create the cluster.
    pub can_bootstrap: bool,
    /// A `create_replica_methods` entry is marked `no_leader`: this node
    /// can create its replica (from a backup) while no leader runs.
    pub can_clone_without_leader: bool,
    /// Why this node must not create a new cluster although it could: its
    /// file or the cluster's configuration sets a key pgha refuses
    /// (`standby_cluster`, `synchronous_mode`, ...), so the cluster would
    /// not be what was asked for (a writable primary where a read-only
    /// standby cluster was meant).
    pub new_cluster_refused: Option<String>,
    /// `postgresql.use_pg_rewind`.
    pub use_pg_rewind: bool,
    /// `postgresql.remove_data_directory_on_rewind_failure`: reclone when
    /// pg_rewind failed.
    pub remove_data_directory_on_rewind_failure: bool,
    /// `postgresql.remove_data_directory_on_diverged_timelines`: reclone a
    /// node whose WAL diverged from the leader's when pg_rewind is off.
    pub remove_data_directory_on_diverged_timelines: bool,
    /// `maximum_lag_on_failover`, bytes.
    pub maximum_lag_on_failover: u64,
    /// `synchronous_mode`: who may take a free lock
    /// ([`super::sync::promotion_problem`]).
    pub sync_mode: super::sync::SyncMode,
    /// `primary_start_timeout`: how long a leader whose PostgreSQL will not
    /// start keeps the lock before giving it up.
    pub primary_start_timeout: Duration,
    /// Maintenance mode (`pause` in the dynamic configuration).
    pub paused: bool,
    /// `failsafe_mode`: a primary that loses the DCS keeps running while
    /// every member of the `failsafe` key confirms it
    /// ([`super::failsafe`]).
    pub failsafe_mode: bool,
    /// The cluster's `ttl`: no lock outlives it past its last renewal.
    pub ttl: Duration,
    /// How long a replica may go without streaming from the leader before
    /// its replication counts as broken
    /// ([`super::replication::not_streaming_limit`]).
    pub not_streaming_limit: Duration,
    /// How long the upstream's member key may go unrewritten before the
    /// not-streaming count stops
    /// ([`super::replication::upstream_silence_limit`]).
    pub upstream_silence_limit: Duration,
    /// `standby_cluster` is set: the cluster is a standby of another one,
    /// named here as the upstream label its standby leader follows
    /// (`host:port`, or `restore_command` for archive only). The lock
    /// holder then never promotes: it runs as the standby leader,
    /// replicating from that source, and the other members follow it.
    pub standby_cluster: Option<String>,
}

/// What is in the data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataDir {
    /// Missing or empty: this node must bootstrap or clone.
    Empty,
    /// A PostgreSQL cluster with this system identifier.
    Initialized {
        system_id: String,
        /// pg_controldata says it last ran as a primary (`in production`,
        /// `shut down`, ...), not as a standby (`... in recovery`).
        was_primary: bool,
        /// Its timeline per pg_controldata.
        timeline: u64,
    },
    /// Not empty, but not a usable PostgreSQL data directory.
    Unusable(String),
}

/// The PostgreSQL role, as PostgreSQL itself reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgRole {
    Primary,
    Replica,
}

/// The local PostgreSQL, as observed this cycle.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalPostgres {
    pub data_dir: DataDir,
    /// The postmaster runs and answers queries.
    pub running: bool,
    /// Was running at the previous cycle (or was started by us) and is now
    /// gone without us stopping it.
    pub crashed: bool,
    /// Set when `running`.
    pub role: Option<PgRole>,
    pub timeline: Option<u64>,
    /// Primary: current write position; replica: the furthest of received
    /// and replayed.
    pub wal_position: Option<u64>,
    /// The member our `primary_conninfo` points at, as the agent wrote it.
    pub following: Option<String>,
    /// From `pg_stat_wal_receiver`: `streaming` when connected.
    pub replication_state: Option<String>,
    /// From `pg_stat_wal_receiver`: the server the WAL receiver is
    /// connected to (`sender_host`, `sender_port`).
    pub receiver_sender: Option<Endpoint>,
    /// Where the `primary_conninfo` PostgreSQL runs with points (whichever
    /// file set it: a hand edit, `ALTER SYSTEM`); `None` when unknown.
    pub configured_upstream: Option<ConfiguredUpstream>,
    /// The postmaster is up but does not answer queries yet (starting up,
    /// or in crash recovery), and will run in this role: a start in
    /// progress, whoever began it.
    pub starting: Option<PgRole>,
    /// The member this node's `replicatefrom` tag names: a replica streams
    /// from it while it runs, else from the leader
    /// ([`super::replication::upstream`]). Carried with the local view so
    /// that every "does it stream from its upstream" answer sees it.
    pub replicate_from: Option<String>,
    /// The `nostream` tag: this replica replays WAL from the archive only
    /// (no `primary_conninfo`), so not streaming is what it should do, not
    /// a broken replication ([`super::replication::StreamingWatch`]).
    pub archive_only: bool,
}

impl LocalPostgres {
    pub fn is_primary(&self) -> bool {
        self.running && self.role == Some(PgRole::Primary)
    }

    pub fn is_replica(&self) -> bool {
        self.running && self.role == Some(PgRole::Replica)
    }

    pub fn system_id(&self) -> Option<&str> {
        match &self.data_dir {
            DataDir::Initialized { system_id, .. } => Some(system_id),
            _ => None,
        }
    }
}

/// Where a peer's WAL position came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerSource {
    /// Its REST API answered `GET /patroni` this cycle.
    Rest,
    /// No answer; taken from its member key (possibly a loop old).
    MemberKey,
}

/// Another member, as seen for the leader race.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerStatus {
    pub name: String,
    pub source: PeerSource,
    /// It runs PostgreSQL as a primary (still alive, not in recovery).
    pub is_primary: bool,
    pub running: bool,
    /// Its PostgreSQL is starting up: it will report its WAL position soon.
    pub starting: bool,
    pub wal_position: Option<u64>,
    /// Its PostgreSQL's timeline (`None`: not reported).
    pub timeline: Option<u64>,
    pub nofailover: bool,
    pub failover_priority: i64,
    /// It says it has not been streaming from the leader for longer than
    /// the limit (the leader it had, when there is none now).
    pub replication_broken: bool,
    /// It says it led until the DCS went away, was demoted for that alone,
    /// and takes the free lock back when the DCS returns
    /// ([`super::failsafe::TAKEBACK_FIELD`]).
    pub takes_lock_back: bool,
}

/// A long operation the agent is carrying out in the background.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    Bootstrap,
    Clone {
        source: String,
    },
    Rewind {
        source: String,
    },
    /// Starting PostgreSQL (waiting for it to accept connections).
    Start {
        as_primary: bool,
    },
    Stop,
    Promote,
    /// Stopping and starting PostgreSQL in its current role.
    Restart,
    /// Wiping the data directory and cloning again.
    Reinitialize {
        source: String,
    },
}

/// What the agent remembers between cycles.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HaMemory {
    /// Until when (monotonic) no other node can hold the lock we renewed
    /// last: the send time of our last successful lock call plus the
    /// lifetime it promised. `None` when we hold nothing.
    pub lock_deadline: Option<Duration>,
    /// A background job in progress.
    pub job: Option<Job>,
    /// Since when (monotonic) the leader's PostgreSQL has been trying to
    /// start; for `primary_start_timeout`.
    pub primary_start_since: Option<Duration>,
    /// This node bootstrapped the cluster (won `initialize`, ran initdb) and
    /// has not held the lock since: it takes a free lock at once, without
    /// the race. Cleared the first time the lock is held
    /// ([`HaMemory::lock_held`]).
    pub bootstrapped_here: bool,
    /// A rewind against this leader succeeded (or found nothing to do): the
    /// data directory may still say "ran as primary" until it starts as a
    /// replica, and must not be rewound again.
    pub rewound_against: Option<String>,
    /// A rewind against this leader failed; do not try it again.
    pub rewind_failed_against: Option<String>,
    /// Until when (monotonic) this node stays out of the leader race (a
    /// `pre_promote` script vetoed its promotion).
    pub no_race_until: Option<Duration>,
    /// Since when (monotonic) this node, whose PostgreSQL crashed as the
    /// synchronous primary, has been waiting for a synchronous standby to
    /// take over instead of starting again ([`crate::ha::Rule::SyncCrash`]).
    pub crash_handover_since: Option<Duration>,
    /// For how long this replica has not been streaming from the leader.
    pub streaming: StreamingWatch,
    /// The cluster's `initialize` key held this data directory's system ID
    /// at some point in this agent's life: the data belongs to the cluster,
    /// and a missing key later means the DCS lost it (deleted by hand,
    /// restored from an old backup), not that the cluster was never
    /// created. See [`HaMemory::observe_initialize`].
    pub belongs_to_cluster: bool,
    /// The leader key attached to no lease or session, at this version,
    /// has been seen since then (monotonic). See
    /// [`HaMemory::observe_unowned_lock`].
    pub unowned_lock_since: Option<(Version, Duration)>,
    /// PostgreSQL should be running (this node started it, or saw it
    /// answer), so finding its postmaster gone is a crash.
    pub expect_running: bool,
    /// When (monotonic) the last start (or restart) of PostgreSQL failed,
    /// until PostgreSQL answers. The next start waits a `loop_wait` after
    /// it ([`super::HaNode::decide`]).
    pub start_failed: Option<Duration>,
    /// PostgreSQL was stopped by a demotion (published as role `demoted`).
    pub demoted: bool,
    /// Since when (monotonic) the lock has been free while a `failover`
    /// request named another member as the candidate. After `ttl` the
    /// candidate is taken to be unable to take over, and the race opens
    /// to everyone (see [`crate::ha::switchover::race_gate`]).
    pub candidate_awaited_since: Option<Duration>,
    /// The member that held the lock while maintenance mode was on, until
    /// a leader is seen again outside maintenance mode. Its lock may have
    /// lapsed during the pause (nothing renews or fences in maintenance
    /// mode) while its PostgreSQL still runs as a primary: nobody races
    /// until it answers that it is not one (see `ha::decide`).
    pub paused_leader: Option<String>,
    /// The version of `paused_leader`'s member key when it was last seen
    /// during the pause: the memory is dropped only once the leader wrote
    /// its key again (a write that failed during the pause leaves an older
    /// key, which says nothing about whether it saw the pause end).
    pub paused_leader_key: Option<Version>,
    /// Since when (monotonic) `lock_deadline` has been extended by failsafe
    /// confirmations instead of lock calls (the DCS is unreachable, or
    /// renewing failed): the right to write stands on the members'
    /// promises, not on the DCS's lease, so a failed renewal does not end
    /// it, and a free leader key is taken back at once. Ends with the next
    /// lock granted, a demotion, or a release.
    pub failsafe_since: Option<Duration>,
    /// PostgreSQL was stopped because the DCS could not be read while this
    /// node was the primary (failsafe mode off, or not confirmed), and has
    /// not run since: when the DCS returns with no leader, this node takes
    /// the lock back and starts in place, keeping its timeline
    /// (`ha::decide`, rule 5).
    pub demoted_offline: bool,
    /// Since when (monotonic) the cluster has been seen without a leader key.
    pub leaderless_since: Option<Duration>,
    /// The leader's member key in the last snapshot that had a leader.
    pub last_leader_member: Option<crate::model::Member>,
    /// The last cycle could not read the DCS.
    pub dcs_lost: bool,
    /// When (monotonic) the DCS was read again after cycles without it.
    pub dcs_back_since: Option<Duration>,
    /// A promotion is under way and its checkpoint is not done yet: a
    /// former primary must not `pg_rewind` against this node before it
    /// (published as `checkpoint_after_promote: false`).
    pub checkpoint_pending: bool,
}

impl HaMemory {
    /// Notes since when the leader key, unchanged, has been attached to no
    /// lease or session (`unowned`). A key rewritten in between starts the
    /// count again: only one seen unchanged for `ttl` can be removed by a
    /// node that did not hold the lock it overwrote (see `ha::decide`).
    pub(crate) fn observe_unowned_lock(
        &mut self,
        cluster: Option<&Cluster>,
        unowned: bool,
        now: Duration,
    ) {
        let Some(cluster) = cluster else { return };
        match cluster.leader.as_ref().filter(|_| unowned) {
            Some(lock) => {
                if self.unowned_lock_since.as_ref().map(|(v, _)| v) != Some(&lock.version) {
                    self.unowned_lock_since = Some((lock.version.clone(), now));
                }
            }
            None => self.unowned_lock_since = None,
        }
    }

    /// Notes what the race needs to remember across cycles: since when a
    /// requested candidate has had a free lock to take, and who led while
    /// maintenance mode was on.
    pub(crate) fn observe_race(
        &mut self,
        cluster: Option<&Cluster>,
        me: &str,
        paused: bool,
        now: Duration,
    ) {
        let Some(cluster) = cluster else { return };
        let awaited = cluster.leader.is_none()
            && cluster.failover.as_ref().is_some_and(|f| {
                f.value
                    .member
                    .as_deref()
                    .is_some_and(|c| !c.is_empty() && c != me)
            });
        if awaited {
            self.candidate_awaited_since.get_or_insert(now);
        } else {
            self.candidate_awaited_since = None;
        }
        if let Some(l) = cluster.leader_member() {
            self.last_leader_member = Some(l.clone());
        }
        match cluster.leader_name() {
            None => {
                self.leaderless_since.get_or_insert(now);
            }
            Some(l) => {
                self.leaderless_since = None;
                if l != me {
                    // Someone else leads: nothing left to take back.
                    self.demoted_offline = false;
                }
            }
        }
        // The leader's own member key says whether its agent has seen the
        // pause end (and armed its fences again with its next renewal), once
        // it was written again after the pause.
        let member = cluster.leader_member();
        let leader_paused = member.is_some_and(|m| m.data.pause == Some(true));
        match cluster.leader_name() {
            Some(l) if paused || leader_paused => {
                self.paused_leader = Some(l.to_string());
                self.paused_leader_key = member.map(|m| m.version.clone());
            }
            Some(l) => {
                let other_holder = self.paused_leader.as_deref().is_some_and(|p| p != l);
                let rewritten =
                    member.is_some_and(|m| Some(&m.version) != self.paused_leader_key.as_ref());
                if other_holder || rewritten {
                    self.paused_leader = None;
                    self.paused_leader_key = None;
                }
            }
            None => {}
        }
    }

    /// A lock call succeeded: nobody else can hold the lock before
    /// `deadline` (monotonic). Whatever bootstrapping entitled this node
    /// to is spent now.
    pub(crate) fn lock_held(&mut self, deadline: Duration) {
        self.lock_deadline = Some(deadline);
        self.bootstrapped_here = false;
    }

    /// The lock is not ours (released, lost, or never granted): no
    /// lifetime is left to rely on.
    pub(crate) fn lock_gone(&mut self) {
        self.lock_deadline = None;
    }

    /// Notes whether the cluster's `initialize` key holds `system_id` (the
    /// local data directory's). Only ever turns `belongs_to_cluster` on: a
    /// key that disappears afterwards does not make the data a stranger's.
    pub(crate) fn observe_initialize(
        &mut self,
        cluster: Option<&Cluster>,
        system_id: Option<&str>,
    ) {
        let stored = cluster
            .and_then(|c| c.initialize.as_ref())
            .map(|v| v.value.as_str());
        if system_id.is_some_and(|id| stored == Some(id)) {
            self.belongs_to_cluster = true;
        }
    }
}

/// What the shell observed this cycle and hands the HA decision: the
/// cluster snapshot, the local PostgreSQL, the peers, the node's settings.
/// Everything else `decide` looks at is the node's own memory and the time
/// ([`Observation`]), which the state machine ([`super::HaNode`]) supplies.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    pub settings: &'a NodeSettings,
    /// `None`: the DCS could not be read this cycle.
    pub cluster: Option<&'a Cluster>,
    pub local: &'a LocalPostgres,
    /// The other members' status, gathered when the cluster has no leader
    /// or a switchover/failover is requested (empty otherwise).
    pub peers: &'a [PeerStatus],
    /// The lock renewal the loop just tried failed (reason), so this
    /// decision is about what to do without it.
    pub renew_failed: Option<String>,
    /// Wall-clock time, only for comparing with a scheduled switchover's
    /// `scheduled_at` (every deadline uses `now`, the monotonic clock).
    pub wall_now: jiff::Timestamp,
    /// Why this node could not fence itself now if its agent died or froze
    /// (its fence guard is down); `None` when it can. A node that cannot
    /// must not be primary.
    pub unfenced: Option<String>,
    /// The leader key is attached to no lease or session, on an engine
    /// whose locks always are ([`crate::dcs::Dcs::locks_have_owners`]): it
    /// was written by hand or by a tool without a lease, nobody holds it,
    /// and it never expires.
    pub leader_unowned: bool,
    /// The failsafe confirmation round this primary ran this cycle (the
    /// DCS was unreachable, or renewing the lock failed), if it ran one.
    pub failsafe_round: Option<&'a super::failsafe::Round>,
    /// The leader this node confirmed in failsafe mode, while its promise
    /// not to take the lock lasts.
    pub failsafe_witness: Option<super::failsafe::Witness>,
}

/// Everything `decide` looks at: what was observed, what the node
/// remembers, and the monotonic time.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    /// Monotonic time.
    pub now: Duration,
    pub memory: &'a HaMemory,
    pub inputs: Inputs<'a>,
}
