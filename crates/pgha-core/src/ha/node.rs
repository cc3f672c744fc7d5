//! The HA state machine of one node: the memory [`decide`] reads, and
//! every change to it.
//!
//! The shell (the agent's loop) observes, asks [`HaNode::decide`] what to
//! do, carries the actions out, and reports each result with
//! [`HaNode::handle`]; it asks [`HaNode::poll_timeout`] when to look
//! again. It never changes the HA memory itself: it only ever sees it
//! through [`HaNode::memory`]. So every transition is one arm of
//! `handle`, unit-tested here without a database or a DCS, and the same
//! code runs in production and in a simulation that feeds it outcomes on
//! a simulated clock (as quinn-proto's `Connection` or raft-rs's
//! `RawNode` are driven).
//!
//! Time is always an argument: `now` is the monotonic clock, in the
//! shell's epoch.

use std::borrow::Cow;
use std::time::Duration;

use super::action::{Action, Decision};
use super::decide::{FENCE_MARGIN, decide};
use super::observation::{HaMemory, Inputs, Job, Observation, PgRole};
use crate::dcs::DcsError;
use crate::model::Timing;

/// How soon a replica that should start streaming is looked at again.
pub const QUICK_CHECK: Duration = Duration::from_secs(1);

/// Which lock call a result is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockCall {
    /// Take a free lock.
    Acquire,
    /// Extend the lock held.
    Renew,
    /// Take the lock back from a key no lease or session backs.
    Reclaim,
}

/// How a background job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobResult {
    Succeeded,
    Failed,
    /// A promotion that the `pre_promote` script refused.
    Vetoed,
}

/// What happened, as the shell reports it to the state machine.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome<'a> {
    /// A lock call sent at `sent` (monotonic) succeeded, and the DCS
    /// promised the lock for `valid_for` from then.
    LockGranted {
        call: LockCall,
        sent: Duration,
        valid_for: Duration,
    },
    /// A lock call failed.
    LockFailed { call: LockCall, error: &'a DcsError },
    /// The lock was released (or found not to be ours any more).
    LockReleased,
    /// A leader key no lease or session backed was deleted.
    UnownedLockRemoved,
    /// A background job started.
    JobStarted(Job),
    /// The background job ended.
    JobEnded(Job, JobResult),
    /// The background job was abandoned (a forced reinitialize).
    JobCancelled,
    /// The running replica was pointed at a (new) leader.
    Followed,
    /// A demotion is stopping PostgreSQL.
    Demoting,
    /// The agent is shutting down and stops PostgreSQL.
    ShuttingDown,
    /// PostgreSQL was looked at: whether it answered queries, and in which
    /// role.
    PostgresSeen { role: Option<PgRole> },
    /// The member key about to be published says this replica streams
    /// from the leader.
    StreamsFromLeader,
    /// Every member of the `failsafe` key confirmed this primary in a
    /// round sent at `sent` (monotonic): none takes the lock before
    /// `sent + valid_for` ([`super::failsafe`]).
    FailsafeConfirmed { sent: Duration, valid_for: Duration },
}

/// One node's HA state machine. See the module docs.
#[derive(Clone, Debug)]
pub struct HaNode {
    memory: HaMemory,
    timing: Timing,
    /// When (monotonic) the current cycle started.
    cycle_started: Duration,
    /// This cycle took or removed the leader key: the next starts at once.
    lock_changed: bool,
    /// Until when (monotonic) the loop looks again every [`QUICK_CHECK`].
    quick_checks_until: Option<Duration>,
}

impl HaNode {
    pub fn new(timing: Timing) -> Self {
        HaNode {
            memory: HaMemory::default(),
            timing,
            cycle_started: Duration::ZERO,
            lock_changed: false,
            quick_checks_until: None,
        }
    }

    /// What the node remembers, read-only: changes go through
    /// [`HaNode::handle`].
    pub fn memory(&self) -> &HaMemory {
        &self.memory
    }

    /// The cluster's timings changed (dynamic configuration).
    pub fn set_timing(&mut self, timing: Timing) {
        self.timing = timing;
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// A new cycle starts at `now`.
    pub fn begin_cycle(&mut self, now: Duration) {
        self.cycle_started = now;
        self.lock_changed = false;
    }

    /// This node holds the leader lock at `now`: the lifetime its last
    /// successful lock call promised has not run out. The only test of
    /// leadership the shell may act on (a snapshot naming this node proves
    /// nothing once the lifetime is over).
    pub fn holds_lock(&self, now: Duration) -> bool {
        self.memory.lock_deadline.is_some_and(|d| d > now)
    }

    /// PostgreSQL was expected to run and its postmaster is gone.
    pub fn crashed(&self, postmaster_up: bool) -> bool {
        self.memory.expect_running && !postmaster_up
    }

    /// Notes what this cycle's inputs tell the memory: whether the
    /// `initialize` key names this node's data, since when the leader key
    /// has been unowned, how long this replica has not streamed from the
    /// leader. Called before [`HaNode::decide`], again whenever the inputs
    /// are read anew within a cycle; repeating it with the same inputs
    /// changes nothing. Returns whether the replication counted as broken
    /// before and after (for one log line when that changes).
    pub fn observe(&mut self, now: Duration, inputs: &Inputs<'_>) -> (bool, bool) {
        let m = &mut self.memory;
        match inputs.cluster {
            None => m.dcs_lost = true,
            Some(_) if m.dcs_lost => {
                m.dcs_lost = false;
                m.dcs_back_since = Some(now);
            }
            Some(_) => {}
        }
        m.observe_initialize(inputs.cluster, inputs.local.system_id());
        m.observe_unowned_lock(inputs.cluster, inputs.leader_unowned, now);
        m.observe_race(
            inputs.cluster,
            &inputs.settings.name,
            inputs.settings.paused,
            now,
        );
        let limit = inputs.settings.not_streaming_limit;
        let before = m.streaming.broken(limit);
        let job_running = m.job.is_some();
        m.streaming.update(
            now,
            &inputs.settings.name,
            inputs.cluster,
            inputs.local,
            job_running,
            inputs.settings.upstream_silence_limit,
        );
        (before, m.streaming.broken(limit))
    }

    /// Whether this cycle's decision needs the other members' status (their
    /// REST answers): only for the leader race (no leader, or a requested
    /// switchover/failover), and only when PostgreSQL runs and no job is
    /// under way (neither can race otherwise). Asking costs a round of
    /// calls, so the shell asks only then.
    pub fn needs_peers(
        &self,
        cluster: &crate::model::Cluster,
        local: &super::LocalPostgres,
    ) -> bool {
        (cluster.leader.is_none() || cluster.failover.is_some())
            && (local.running || self.memory.demoted_offline)
            && self.memory.job.is_none()
    }

    /// Whether this node, a primary stopped only because the DCS went
    /// away, will take the free lock back when the DCS returns (published
    /// as [`super::failsafe::TAKEBACK_FIELD`], so the others let it; see
    /// [`super::decide::takes_lock_back`]).
    pub fn takes_lock_back(&self, settings: &super::NodeSettings) -> bool {
        super::decide::takes_lock_back(&self.memory, settings)
    }

    /// Whether this primary should ask the members of the `failsafe` key to
    /// confirm it now (the shell asks when the DCS could not be read, or a
    /// renewal failed): failsafe mode is on, not paused, PostgreSQL runs as
    /// primary and the right to write still holds (a round cannot revive a
    /// lapsed one).
    pub fn failsafe_round_due(
        &self,
        now: Duration,
        settings: &super::NodeSettings,
        local: &super::LocalPostgres,
    ) -> bool {
        settings.failsafe_mode
            && !settings.paused
            && local.is_primary()
            && self
                .memory
                .lock_deadline
                .is_some_and(|d| d > now + FENCE_MARGIN)
    }

    /// Whether the right to write currently stands on failsafe
    /// confirmations (for `GET /patroni`'s `failsafe_mode_is_active`).
    pub fn failsafe_active(&self, now: Duration) -> bool {
        self.memory.failsafe_since.is_some() && self.holds_lock(now)
    }

    /// A member to ask in the leader race although the snapshot has no key
    /// of it: the last leader, when this node has just (within ttl) read
    /// the DCS again after an outage. Its member key may have expired with
    /// its lease during the outage while it still runs, and it may take
    /// its lock back (`failsafe::TAKEBACK_FIELD`) or still run as primary.
    /// Only after an outage of this node's own: a leader whose key expired
    /// while the DCS worked is dead (the usual failover), and asking a dead
    /// host would only slow the race down.
    pub fn missing_leader_to_ask(
        &self,
        now: Duration,
        cluster: &crate::model::Cluster,
    ) -> Option<&crate::model::Member> {
        let back = self.memory.dcs_back_since?;
        if now.saturating_sub(back) >= self.timing.ttl || cluster.leader.is_some() {
            return None;
        }
        self.memory
            .last_leader_member
            .as_ref()
            .filter(|l| cluster.member(&l.name).is_none())
    }

    /// Decides what to do now ([`decide`] on these inputs and the memory).
    /// A postmaster that is up but not answering counts as a start in
    /// progress, whoever began it.
    pub fn decide(&mut self, now: Duration, inputs: Inputs<'_>) -> Decision {
        let mut memory = Cow::Borrowed(&self.memory);
        if memory.job.is_none()
            && let Some(role) = inputs.local.starting
        {
            memory.to_mut().job = Some(Job::Start {
                as_primary: role == PgRole::Primary,
            });
        }
        let mut d = decide(&Observation {
            now,
            memory: &memory,
            inputs,
        });
        self.pace_start_retries(now, &mut d);
        if d.look_again_soon {
            self.look_again_soon(now);
        }
        // A crashed synchronous primary's wait for a standby to take over
        // is bounded: it starts counting at the first such decision.
        if d.rule == super::rule::Rule::SyncCrash {
            self.memory.crash_handover_since.get_or_insert(now);
        }
        // A primary stopped for want of the DCS alone takes the lock back
        // when the DCS returns (decide, rule 5).
        if matches!(
            d.rule,
            super::rule::Rule::NoDcs | super::rule::Rule::Failsafe | super::rule::Rule::RenewFailed
        ) && d
            .actions
            .iter()
            .any(|a| matches!(a, super::Action::Demote { .. }))
        {
            self.memory.demoted_offline = true;
        }
        d
    }

    /// A start that failed is tried again a `loop_wait` later, not at once:
    /// what made it fail (a port in use, no shared memory left, a bad
    /// setting) rarely clears within a moment, and the loop wakes as soon
    /// as a job ends, so it would otherwise run `pg_ctl start` several
    /// times a second. Leaving a start out never makes a second primary.
    fn pace_start_retries(&self, now: Duration, d: &mut Decision) {
        let Some(failed) = self.memory.start_failed else {
            return;
        };
        let retry_at = failed + self.timing.loop_wait;
        let is_start = |a: &Action| matches!(a, Action::StartPrimary | Action::StartReplica { .. });
        if now >= retry_at || !d.actions.iter().any(is_start) {
            return;
        }
        d.actions.retain(|a| !is_start(a));
        d.reason = format!(
            "{}; the last start failed {:.1}s ago, next try in {:.1}s",
            d.reason,
            (now - failed).as_secs_f64(),
            (retry_at - now).as_secs_f64()
        );
    }

    /// Records what happened. Each arm is one transition of the memory.
    pub fn handle(&mut self, now: Duration, outcome: Outcome<'_>) {
        let m = &mut self.memory;
        match outcome {
            Outcome::LockGranted {
                call,
                sent,
                valid_for,
            } => {
                m.lock_held(sent + valid_for);
                m.failsafe_since = None;
                self.lock_changed |= call != LockCall::Renew;
            }
            Outcome::LockFailed { call, error } => {
                if error.is_lost_race() && call != LockCall::Renew {
                    // Someone else holds it: we never did.
                    return;
                }
                if m.failsafe_since.is_some() {
                    // The right to write stands on the members' promises,
                    // not on the lease this call was about.
                    return;
                }
                if !error.is_unreachable() && !matches!(error, DcsError::NotOwner { .. }) {
                    // Our lease or session is gone: no lifetime left to
                    // rely on. (NotOwner keeps it: nothing in the protocol
                    // replaces a live lock, so the key was changed by
                    // hand, and our lifetime, if any is left, is ours.)
                    m.lock_gone();
                }
            }
            Outcome::LockReleased => {
                m.lock_gone();
                m.failsafe_since = None;
            }
            Outcome::FailsafeConfirmed { sent, valid_for } => {
                // Only a right that still holds when the round was sent is
                // extended: it stays one unbroken interval, so no member
                // can have taken the lock in a gap.
                if m.lock_deadline.is_some_and(|d| d > sent + FENCE_MARGIN) {
                    m.lock_deadline = m.lock_deadline.max(Some(sent + valid_for));
                    m.failsafe_since.get_or_insert(sent);
                }
            }
            Outcome::UnownedLockRemoved => self.lock_changed = true,
            Outcome::JobStarted(job) => {
                m.crash_handover_since = None;
                match &job {
                    // Both stop PostgreSQL first: its absence is no crash.
                    Job::Rewind { .. } | Job::Reinitialize { .. } => m.expect_running = false,
                    Job::Start { as_primary: true } => {
                        m.primary_start_since.get_or_insert(now);
                        m.demoted = false;
                    }
                    Job::Promote => m.checkpoint_pending = true,
                    _ => {}
                }
                m.job = Some(job);
            }
            Outcome::JobEnded(job, result) => {
                m.job = None;
                self.job_ended(now, job, result);
            }
            Outcome::JobCancelled => m.job = None,
            Outcome::Followed => self.look_again_soon(now),
            Outcome::Demoting => {
                m.expect_running = false;
                m.demoted = true;
                m.failsafe_since = None;
            }
            Outcome::ShuttingDown => m.expect_running = false,
            Outcome::PostgresSeen { role } => {
                if role.is_some() {
                    m.expect_running = true;
                    m.start_failed = None;
                    m.demoted_offline = false;
                }
                if role == Some(PgRole::Primary) {
                    m.primary_start_since = None;
                }
            }
            Outcome::StreamsFromLeader => self.quick_checks_until = None,
        }
    }

    fn job_ended(&mut self, now: Duration, job: Job, result: JobResult) {
        let m = &mut self.memory;
        let ok = result == JobResult::Succeeded;
        match job {
            Job::Bootstrap if ok => {
                m.bootstrapped_here = true;
                m.expect_running = true;
            }
            Job::Rewind { source } if ok => m.rewound_against = Some(source),
            Job::Rewind { source } => m.rewind_failed_against = Some(source),
            Job::Start { as_primary } if ok => {
                m.expect_running = true;
                m.start_failed = None;
                if !as_primary {
                    self.look_again_soon(now);
                }
            }
            Job::Restart if ok => {
                m.expect_running = true;
                m.start_failed = None;
            }
            // Counted from the cycle that collected it, so that the next
            // regular cycle (a loop_wait after that one began) tries again.
            Job::Start { .. } | Job::Restart => {
                m.start_failed = Some(self.cycle_started.min(now));
            }
            Job::Promote => {
                m.checkpoint_pending = false;
                match result {
                    JobResult::Succeeded => m.demoted = false,
                    JobResult::Vetoed => {
                        // The shell releases the lock; this node stays out
                        // of the race for a ttl so another one wins it.
                        m.no_race_until = Some(now + self.timing.ttl);
                        m.lock_gone();
                    }
                    JobResult::Failed => {}
                }
            }
            Job::Bootstrap | Job::Clone { .. } | Job::Reinitialize { .. } | Job::Stop => {}
        }
    }

    /// From `now` for one `loop_wait`, cycles come every [`QUICK_CHECK`]
    /// (until the replica streams): what this node waits for is due
    /// within a moment.
    fn look_again_soon(&mut self, now: Duration) {
        self.quick_checks_until = Some(now + self.timing.loop_wait);
    }

    /// When (monotonic) the next cycle starts: `loop_wait` after this one
    /// started, or earlier if the lock held would otherwise run out before
    /// a renewal that takes up to `retry_timeout` could land. (A lease
    /// shorter than `loop_wait + retry_timeout` happens with Consul, whose
    /// sessions are only guaranteed for ttl/2.)
    ///
    /// A replica that was just started, or pointed at a new leader, looks
    /// again every second until it streams (for at most one `loop_wait`):
    /// its member key, its REST API and `pghactl list` then say it streams
    /// within a second of it, not a loop later. So does a node whose
    /// decision says what it waits for is due at once
    /// ([`Decision::look_again_soon`]).
    ///
    /// After this cycle changed who holds the lock, the next one starts at
    /// once: what it publishes (the REST API's `/primary`, what HAProxy
    /// checks) must not wait a loop to show it.
    pub fn poll_timeout(&self, now: Duration) -> Duration {
        let started = self.cycle_started;
        if self.lock_changed {
            return started;
        }
        let mut regular = started + self.timing.loop_wait;
        if self.quick_checks_until.is_some_and(|until| until > now) {
            regular = regular.min(started + QUICK_CHECK);
        }
        match self.memory.lock_deadline.filter(|_| self.holds_lock(now)) {
            Some(deadline) => {
                let renew_by = deadline.saturating_sub(self.timing.retry_timeout + FENCE_MARGIN);
                regular.min(renew_by.max(now + Duration::from_millis(100)))
            }
            None => regular,
        }
    }
}

#[cfg(test)]
mod tests;
