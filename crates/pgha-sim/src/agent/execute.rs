//! Carrying out a decision (the HA loop's `execute`): each action against
//! the DCS link or the simulated PostgreSQL, every result reported to the
//! state machine; background jobs and what they leave behind.

use std::time::Duration;

use pgha_core::dcs::{Dcs, DcsError, DcsExt, SharedKey};
use pgha_core::ha::{Action, Job, JobResult, LockCall, Outcome, PgRole, StopMode};
use pgha_core::model::{Cluster, Expect};

use super::{Agent, Failure, RunningJob};
use crate::postgres::{DataDir, Process, durations};
use crate::world::{AgentState, Event, World};

impl World {
    // --- carrying out decisions (the HA loop's `execute`)

    pub(super) fn execute(
        &mut self,
        i: usize,
        a: &mut Agent,
        actions: &[Action],
        cluster: Option<&Cluster>,
    ) -> Result<(), Failure> {
        for action in actions {
            self.execute_one(i, a, action, cluster)?;
        }
        Ok(())
    }

    pub(super) fn execute_one(
        &mut self,
        i: usize,
        a: &mut Agent,
        action: &Action,
        cluster: Option<&Cluster>,
    ) -> Result<(), Failure> {
        match action {
            Action::AcquireLock | Action::RenewLock | Action::ReclaimLock { .. } => {
                // pgha-node's FailsafeGate::claim_lock (the sim's calls are
                // instants, so the decision's view still holds; checked
                // all the same, as the agent does).
                if matches!(action, Action::AcquireLock) {
                    if self.witness(i, a).is_some() {
                        return Err(Failure::LostRace);
                    }
                    a.candidate = true;
                }
                let sent = self.local(i);
                let (call, r) = match action {
                    Action::AcquireLock => (
                        LockCall::Acquire,
                        self.call(i, &a.dcs, "acquire_leader", |d| d.acquire_leader()),
                    ),
                    Action::ReclaimLock { lock } => (
                        LockCall::Reclaim,
                        self.call(i, &a.dcs, "take_leader_from", |d| d.take_leader_from(lock)),
                    ),
                    _ => (
                        LockCall::Renew,
                        self.call(i, &a.dcs, "renew_leader", |d| d.renew_leader()),
                    ),
                };
                let now = self.local(i);
                match r {
                    Ok(lease) => {
                        a.node.handle(
                            now,
                            Outcome::LockGranted {
                                call,
                                sent,
                                valid_for: lease.valid_for,
                            },
                        );
                        if a.dynamic.pause() {
                            a.fence_deadline = None;
                            self.disarm_guard(i);
                        } else {
                            self.arm_agent(i, a, sent + lease.valid_for);
                        }
                        Ok(())
                    }
                    Err(e) => {
                        a.node.handle(now, Outcome::LockFailed { call, error: &e });
                        if e.is_lost_race() && call != LockCall::Renew {
                            return Err(Failure::LostRace);
                        }
                        Err(Failure::Lock {
                            why: format!("{action}: {e}"),
                            stale: !e.is_unreachable(),
                        })
                    }
                }
            }
            Action::ReleaseLock => {
                match self.call(i, &a.dcs, "release_leader", |d| d.release_leader()) {
                    Ok(()) | Err(DcsError::NotOwner { .. }) => {}
                    Err(_) => return Err(Failure::Other),
                }
                a.node.handle(self.local(i), Outcome::LockReleased);
                a.fence_deadline = None;
                self.disarm_guard(i);
                Ok(())
            }
            Action::RemoveUnownedLock { lock } => {
                match self.call(i, &a.dcs, "remove_leader_at", |d| d.remove_leader_at(lock)) {
                    Ok(()) => {
                        a.node.handle(self.local(i), Outcome::UnownedLockRemoved);
                        Ok(())
                    }
                    Err(e) if e.is_lost_race() => Err(Failure::LostRace),
                    Err(_) => Err(Failure::Other),
                }
            }
            Action::RaceInitialize => {
                match self.call(i, &a.dcs, "race_initialize", |d| d.race_initialize()) {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_lost_race() => Err(Failure::LostRace),
                    Err(_) => Err(Failure::Other),
                }
            }
            Action::RecordSystemId { system_id } => {
                let expect = Expect::from_read(
                    cluster
                        .and_then(|c| c.initialize.as_ref())
                        .map(|v| &v.version),
                );
                self.call(i, &a.dcs, "set_initialize", |d| {
                    d.set_initialize(system_id, expect)
                })
                .map(drop)
                .map_err(|_| Failure::Other)
            }
            Action::WriteConfig => {
                let cfg = a.dynamic.clone();
                match self.call(i, &a.dcs, "write_config", |d| {
                    d.write_config(&cfg, Expect::Absent)
                }) {
                    Ok(_) | Err(DcsError::Conflict { .. }) => Ok(()),
                    Err(_) => Err(Failure::Other),
                }
            }
            Action::ClearFailover => {
                let Some(version) = cluster
                    .and_then(|c| c.failover.as_ref())
                    .map(|f| f.version.clone())
                else {
                    return Ok(());
                };
                match self.call(i, &a.dcs, "delete", |d| {
                    d.delete(SharedKey::Failover, Expect::Version(version))
                }) {
                    Ok(()) | Err(DcsError::Conflict { .. }) => Ok(()),
                    Err(_) => Err(Failure::Other),
                }
            }
            Action::Bootstrap => {
                self.spawn_job(i, a, Job::Bootstrap, durations::BOOTSTRAP);
                Ok(())
            }
            // Simulated nodes have no backup to restore (their settings
            // never allow it): decided only if that changed.
            Action::CloneWithoutLeader => Err(Failure::Other),
            Action::Clone { source } => {
                upstream(cluster, source)?;
                self.spawn_job(
                    i,
                    a,
                    Job::Clone {
                        source: source.clone(),
                    },
                    durations::CLONE,
                );
                Ok(())
            }
            Action::Reinitialize { source } => {
                upstream(cluster, source)?;
                self.stop_pg(i);
                self.nodes[i].pg.data = None;
                self.spawn_job(
                    i,
                    a,
                    Job::Reinitialize {
                        source: source.clone(),
                    },
                    durations::CLONE,
                );
                Ok(())
            }
            Action::Rewind { source } => {
                upstream(cluster, source)?;
                // A diverged replica still runs: pg_rewind needs it stopped.
                if self.nodes[i].pg.process != Process::Down {
                    self.stop_pg(i);
                }
                self.spawn_job(
                    i,
                    a,
                    Job::Rewind {
                        source: source.clone(),
                    },
                    durations::REWIND,
                );
                Ok(())
            }
            Action::StartPrimary => {
                self.sync_before_primary(i, a, cluster)?;
                self.start_pg(i, a, PgRole::Primary, None);
                Ok(())
            }
            Action::StartReplica { leader } => {
                let up = match leader {
                    Some(l) => Some(upstream(cluster, l)?),
                    None => None,
                };
                let follows = up.and_then(|l| self.index_of(&l));
                self.start_pg(i, a, PgRole::Replica, follows);
                Ok(())
            }
            Action::Follow { leader } => {
                let follows = match leader {
                    Some(l) => Some(upstream(cluster, l)?),
                    None => None,
                }
                .and_then(|l| self.index_of(&l));
                self.nodes[i].pg.follows = follows;
                a.node.handle(self.local(i), Outcome::Followed);
                Ok(())
            }
            Action::Promote => {
                self.sync_before_primary(i, a, cluster)?;
                // The history key records the timeline left, first
                // (pgha-node's `record_promotion`).
                let (tl, lsn) = self.nodes[i]
                    .pg
                    .data
                    .as_ref()
                    .map_or((1, 0), |d| (d.timeline(), d.lsn()));
                let known = cluster.and_then(|c| c.history.as_ref()).map(|h| &h.value);
                let name = self.nodes[i].name.clone();
                let taking = cluster.map_or(0, pgha_core::ha::divergence::next_timeline);
                let history = pgha_core::ha::divergence::reservation(known, tl, taking, lsn, &name);
                self.call(i, &a.dcs, "write", |d| d.write_history(&history))
                    .map_err(|_| Failure::Other)?;
                let d = self.rng.between(durations::PROMOTE.0, durations::PROMOTE.1);
                self.nodes[i].pg_op += 1;
                let op = self.nodes[i].pg_op;
                // PostgreSQL finishes the promotion whatever happens to the
                // agent from now on; the job ends with its checkpoint. It
                // takes a timeline no member used (pgha-postgres's
                // placeholder history files).
                let at_least = cluster.map_or(0, pgha_core::ha::divergence::next_timeline);
                self.schedule(
                    self.t + d,
                    Event::PgPromoted {
                        node: i,
                        op,
                        at_least,
                    },
                );
                self.spawn_job_for(i, a, Job::Promote, d + Duration::from_millis(50));
                Ok(())
            }
            Action::Demote { mode } => {
                a.node.handle(self.local(i), Outcome::Demoting);
                if *mode != StopMode::Immediate {
                    // A fast shutdown sends every WAL record to the
                    // connected standbys before it ends.
                    self.flush_to_standbys(i);
                }
                self.stop_pg(i);
                a.fence_deadline = None;
                self.disarm_guard(i);
                Ok(())
            }
            Action::Exit { reason } => Err(Failure::Exit(reason.clone())),
            // The simulated clusters are never standby clusters
            // (NodeSettings::standby_cluster is None).
            Action::StartStandbyLeader { .. } | Action::FollowSource { .. } => Err(Failure::Other),
        }
    }

    pub(super) fn arm_agent(&mut self, i: usize, a: &mut Agent, deadline: Duration) {
        if self.options.protections.fences {
            a.fence_deadline = Some(deadline);
            let incarnation = self.nodes[i].incarnation;
            let clock = self.nodes[i].clock;
            self.schedule(
                clock.global(deadline.saturating_sub(pgha_core::ha::FENCE_MARGIN)),
                Event::Fence {
                    node: i,
                    incarnation,
                    deadline,
                },
            );
            self.arm_guard(i, deadline);
        }
    }

    pub(super) fn disarm_guard(&mut self, i: usize) {
        self.nodes[i].guard.deadline = None;
    }

    pub(super) fn flush_to_standbys(&mut self, i: usize) {
        if self.nodes[i].pg.senders_frozen {
            return;
        }
        let Some(wal) = self.nodes[i].pg.data.as_ref().map(|d| d.wal.clone()) else {
            return;
        };
        for j in 0..self.nodes.len() {
            let n = &mut self.nodes[j];
            if n.pg.streaming_from == Some(i)
                && n.pg.is_replica()
                && let Some(d) = n.pg.data.as_mut()
            {
                let have = d.wal.len();
                d.wal.extend_from_slice(&wal[have.min(wal.len())..]);
            }
            // (A primary's own history is complete; its standbys already
            // have it: a fast shutdown adds no timeline switch.)
        }
        self.acknowledge(i);
    }

    /// A restart an operator asked for, once no job runs (the HA loop's
    /// `start_requested_restart`): PostgreSQL stops (a fast shutdown,
    /// which sends the last WAL to connected standbys) and starts again in
    /// its role. Not running: nothing to restart.
    pub(super) fn start_requested_restart(&mut self, i: usize, a: &mut Agent) {
        let Some(takes) = a.restart_requested.take() else {
            return;
        };
        let Process::Up(role) = self.nodes[i].pg.process else {
            return;
        };
        let name = self.nodes[i].name.clone();
        self.trace(format!("{name}: restarting PostgreSQL as requested"));
        self.flush_to_standbys(i);
        self.stop_pg(i);
        let pg = &mut self.nodes[i].pg;
        pg.process = Process::Starting(role);
        pg.streaming_from = None;
        self.nodes[i].pg_op += 1;
        let op = self.nodes[i].pg_op;
        self.schedule(self.t + takes, Event::PgReady { node: i, op });
        self.spawn_job_for(i, a, Job::Restart, takes);
    }

    pub(super) fn start_pg(
        &mut self,
        i: usize,
        a: &mut Agent,
        role: PgRole,
        follows: Option<usize>,
    ) {
        let d = self.rng.between(durations::START.0, durations::START.1);
        let pg = &mut self.nodes[i].pg;
        pg.process = Process::Starting(role);
        pg.follows = follows;
        pg.streaming_from = None;
        if role == PgRole::Replica
            && let Some(data) = pg.data.as_mut()
        {
            data.was_primary = false;
        }
        self.nodes[i].pg_op += 1;
        let op = self.nodes[i].pg_op;
        self.schedule(self.t + d, Event::PgReady { node: i, op });
        self.spawn_job_for(
            i,
            a,
            Job::Start {
                as_primary: role == PgRole::Primary,
            },
            d,
        );
    }

    pub(super) fn spawn_job(
        &mut self,
        i: usize,
        a: &mut Agent,
        kind: Job,
        (lo, hi): (Duration, Duration),
    ) {
        let d = self.rng.between(lo, hi);
        self.spawn_job_for(i, a, kind, d);
    }

    pub(super) fn spawn_job_for(&mut self, i: usize, a: &mut Agent, kind: Job, d: Duration) {
        self.job_serial += 1;
        let serial = self.job_serial;
        a.node
            .handle(self.local(i), Outcome::JobStarted(kind.clone()));
        a.job = Some(RunningJob {
            kind,
            serial,
            result: None,
        });
        let incarnation = self.nodes[i].incarnation;
        self.schedule(
            self.t + d,
            Event::JobDone {
                node: i,
                incarnation,
                serial,
            },
        );
    }

    /// A background job finished: its effect on PostgreSQL now, its
    /// result for the agent's next cycle (which starts at once).
    pub(crate) fn job_done(&mut self, i: usize, incarnation: u64, serial: u64) {
        if self.nodes[i].incarnation != incarnation {
            return;
        }
        let Some(kind) = self.nodes[i]
            .agent
            .as_ref()
            .and_then(|a| a.job.as_ref())
            .filter(|j| j.serial == serial)
            .map(|j| j.kind.clone())
        else {
            return;
        };
        let result = match &kind {
            Job::Bootstrap => {
                let system_id = 7_000_000_000_000_000_000 + self.rng.below(1 << 40);
                let marker = self.next_marker;
                self.next_marker += 1;
                let pg = &mut self.nodes[i].pg;
                pg.data = Some(DataDir {
                    system_id,
                    wal: vec![crate::postgres::Record {
                        id: marker,
                        timeline: 1,
                    }],
                    history: Vec::new(),
                    was_primary: true,
                    sync_conf: None,
                });
                pg.process = Process::Up(PgRole::Primary);
                self.nodes[i].pg_op += 1;
                JobResult::Succeeded
            }
            Job::Clone { source } | Job::Reinitialize { source } => {
                match self.copy_from(i, source) {
                    Some(mut d) => {
                        d.was_primary = false;
                        d.sync_conf = None;
                        self.nodes[i].pg.data = Some(d);
                        JobResult::Succeeded
                    }
                    None => JobResult::Failed,
                }
            }
            Job::Rewind { source } => {
                let fails = std::mem::take(&mut self.nodes[i].rewind_fails);
                match self.copy_from(i, source) {
                    Some(d) if !fails => {
                        // pg_rewind compares timelines: a source still on
                        // the target's timeline (not promoted yet) means
                        // "no rewind required", whatever the WAL holds.
                        let diverged = self.nodes[i].pg.data.as_ref().is_some_and(|mine| {
                            mine.timeline() != d.timeline() && !mine.is_prefix_of(&d)
                        });
                        if diverged {
                            let mine = self.nodes[i].pg.data.as_mut();
                            if let Some(mine) = mine {
                                mine.wal = d.wal;
                                mine.history = d.history;
                                mine.sync_conf = d.sync_conf;
                                mine.was_primary = false;
                            }
                        }
                        JobResult::Succeeded
                    }
                    _ => JobResult::Failed,
                }
            }
            Job::Start { .. } => {
                if self.nodes[i].pg.is_up() {
                    JobResult::Succeeded
                } else {
                    JobResult::Failed
                }
            }
            Job::Promote => {
                if self.nodes[i].pg.is_primary() {
                    JobResult::Succeeded
                } else {
                    JobResult::Failed
                }
            }
            Job::Restart => {
                if self.nodes[i].pg.is_up() {
                    JobResult::Succeeded
                } else {
                    JobResult::Failed
                }
            }
            Job::Stop => JobResult::Succeeded,
        };
        if let Some(j) = self.nodes[i].agent.as_mut().and_then(|a| a.job.as_mut()) {
            j.result = Some(result);
        }
        if self.nodes[i].agent_state == AgentState::Running {
            self.schedule_wake(i, self.t);
        }
    }

    /// A copy of `source`'s data directory as node `i` can fetch it now
    /// (the source runs and the network links them).
    pub(super) fn copy_from(&self, i: usize, source: &str) -> Option<DataDir> {
        let j = self.index_of(source)?;
        let n = &self.nodes[j];
        (self.linked(i, j) && n.pg.is_up())
            .then(|| n.pg.data.clone())
            .flatten()
    }
}

fn upstream(cluster: Option<&Cluster>, name: &str) -> Result<String, Failure> {
    cluster
        .and_then(|c| c.member(name))
        .map(|m| m.name.clone())
        .ok_or(Failure::Other)
}
