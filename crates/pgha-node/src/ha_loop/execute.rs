//! Carrying out a decision: each [`Action`] against the DCS or PostgreSQL.

use std::time::Duration;

use pgha_core::clock::Clock;
use pgha_core::dcs::{DcsError, DcsExt, SharedKey};
use pgha_core::ha::{self, Action, Job, LockCall, Outcome, StopMode};
use pgha_core::model::{Cluster, Expect};

use super::HaLoop;
use super::jobs::JobError;
use crate::postgres::{ConfRole, PgError, ShutdownMode};

/// Why an action failed, as far as the next decision cares.
pub(super) enum Failure {
    /// Renewing (or taking) the lock failed: decide again without it.
    /// `stale`: the DCS answered that the key is not what the snapshot
    /// said (another holder, a key written by hand), so the next decision
    /// needs a fresh snapshot.
    Lock { why: String, stale: bool },
    /// The agent must stop.
    Exit(String),
    /// Someone else got there first (the lock, `initialize`): the next
    /// cycle follows them.
    LostRace(String),
    /// Anything else: logged; the next cycle observes again.
    Other(String),
}

/// How long a `pre_promote` script may take before it counts as a veto.
const PRE_PROMOTE_TIMEOUT: Duration = Duration::from_secs(60);

impl HaLoop {
    /// Carries out `actions` in order, stopping at the first failure.
    pub(super) async fn execute(
        &mut self,
        actions: &[Action],
        cluster: Option<&Cluster>,
    ) -> Result<(), Failure> {
        for action in actions {
            self.execute_one(action, cluster).await?;
        }
        Ok(())
    }

    async fn execute_one(
        &mut self,
        action: &Action,
        cluster: Option<&Cluster>,
    ) -> Result<(), Failure> {
        let dcs = self.dcs.clone();
        match action {
            Action::AcquireLock | Action::RenewLock | Action::ReclaimLock { .. } => {
                if matches!(action, Action::AcquireLock)
                    && let Err(w) = self.failsafe.claim_lock()
                {
                    return Err(Failure::LostRace(format!(
                        "not taking the lock: I confirmed {} as the leader in failsafe mode meanwhile",
                        w.leader.as_deref().unwrap_or("a leader")
                    )));
                }
                let sent = self.clock.now();
                let (call, r) = match action {
                    Action::AcquireLock => (LockCall::Acquire, dcs.acquire_leader().await),
                    Action::ReclaimLock { lock } => {
                        (LockCall::Reclaim, dcs.take_leader_from(lock).await)
                    }
                    _ => (LockCall::Renew, dcs.renew_leader().await),
                };
                let now = self.clock.now();
                match r {
                    Ok(lease) => {
                        let deadline = sent + lease.valid_for;
                        self.node.handle(
                            now,
                            Outcome::LockGranted {
                                call,
                                sent,
                                valid_for: lease.valid_for,
                            },
                        );
                        if self.dynamic.pause() {
                            // Maintenance mode: no automatic action, the fence's included.
                            self.fence.disarm();
                        } else {
                            self.fence.arm(deadline);
                        }
                        Ok(())
                    }
                    Err(e) => {
                        self.node
                            .handle(now, Outcome::LockFailed { call, error: &e });
                        if e.is_lost_race() && call != LockCall::Renew {
                            return Err(Failure::LostRace(format!("lost the race: {action}: {e}")));
                        }
                        Err(Failure::Lock {
                            why: format!("{action}: {e}"),
                            stale: !e.is_unreachable(),
                        })
                    }
                }
            }
            Action::ReleaseLock => {
                match dcs.release_leader().await {
                    Ok(()) | Err(DcsError::NotOwner { .. }) => {}
                    Err(e) => return Err(Failure::Other(format!("release lock: {e}"))),
                }
                self.node.handle(self.clock.now(), Outcome::LockReleased);
                self.fence.disarm();
                Ok(())
            }
            Action::RemoveUnownedLock { lock } => match dcs.remove_leader_at(lock).await {
                Ok(()) => {
                    tracing::warn!(
                        holder = %lock.name,
                        "removed a leader key that no lease or session backed"
                    );
                    self.node
                        .handle(self.clock.now(), Outcome::UnownedLockRemoved);
                    Ok(())
                }
                Err(e) if e.is_lost_race() => Err(Failure::LostRace(format!(
                    "the unowned leader key changed meanwhile: {e}"
                ))),
                Err(e) => Err(Failure::Other(format!(
                    "removing the unowned leader key: {e}"
                ))),
            },
            Action::RaceInitialize => dcs.race_initialize().await.map(drop).map_err(|e| {
                if e.is_lost_race() {
                    Failure::LostRace(format!("another node is bootstrapping the cluster ({e})"))
                } else {
                    Failure::Other(format!("initialize race: {e}"))
                }
            }),
            Action::RecordSystemId { system_id } => {
                let expect = Expect::from_read(
                    cluster
                        .and_then(|c| c.initialize.as_ref())
                        .map(|v| &v.version),
                );
                dcs.set_initialize(system_id, expect)
                    .await
                    .map(drop)
                    .map_err(|e| Failure::Other(format!("recording the system ID: {e}")))
            }
            Action::WriteConfig => {
                let config = match &self.config.bootstrap {
                    Some(b) if !self.dynamic_known => b.clone(),
                    _ => self.dynamic.clone(),
                };
                match dcs.write_config(&config, Expect::Absent).await {
                    Ok(_) => {
                        if self.dynamic_known {
                            tracing::info!(
                                "the DCS had no dynamic configuration: wrote back the last one read from it"
                            );
                        }
                        Ok(())
                    }
                    Err(DcsError::Conflict { .. }) => Ok(()),
                    Err(e) => Err(Failure::Other(format!(
                        "writing the dynamic configuration: {e}"
                    ))),
                }
            }
            Action::ClearFailover => {
                let Some(version) = cluster
                    .and_then(|c| c.failover.as_ref())
                    .map(|f| f.version.clone())
                else {
                    return Ok(());
                };
                match dcs
                    .delete(SharedKey::Failover, Expect::Version(version))
                    .await
                {
                    // Changed meanwhile: a new request; the next cycle reads it.
                    Ok(()) | Err(DcsError::Conflict { .. }) => Ok(()),
                    Err(e) => Err(Failure::Other(format!("removing the failover key: {e}"))),
                }
            }
            Action::Bootstrap => {
                let (pg, dynamic) = (self.pg.clone(), self.dynamic.clone());
                if let Some(standby) = dynamic.standby_cluster() {
                    // A standby cluster starts as a copy of its source.
                    let source = self.standby_source()?;
                    self.spawn_job(Job::Bootstrap, async move {
                        let methods = standby.create_replica_methods.as_deref();
                        pg.create_standby_leader(&source, methods).await?;
                        pg.start(&ConfRole::Replica(Some(source)), &dynamic).await
                    });
                } else {
                    self.spawn_job(Job::Bootstrap, async move { pg.bootstrap(&dynamic).await });
                }
                Ok(())
            }
            Action::Clone { source } => {
                let upstream = self.upstream(cluster, source)?;
                let pg = self.pg.clone();
                self.spawn_job(
                    Job::Clone {
                        source: source.clone(),
                    },
                    async move { pg.create_replica(Some(&upstream)).await.map(drop) },
                );
                Ok(())
            }
            Action::CloneWithoutLeader => {
                let pg = self.pg.clone();
                self.spawn_job(
                    Job::Clone {
                        source: pgha_core::ha::NO_LEADER_SOURCE.into(),
                    },
                    async move { pg.create_replica(None).await.map(drop) },
                );
                Ok(())
            }
            Action::Reinitialize { source } => {
                let upstream = self.upstream(cluster, source)?;
                self.spawn_reinitialize(upstream);
                Ok(())
            }
            Action::Rewind { source } => {
                let upstream = self.upstream(cluster, source)?;
                let pg = self.pg.clone();
                let timeout = self.config.postgresql.pg_ctl_timeout;
                // A diverged replica still runs: pg_rewind needs it cleanly
                // stopped (a replica's fast stop is clean).
                self.spawn_job(
                    Job::Rewind {
                        source: source.clone(),
                    },
                    async move {
                        pg.stop(ShutdownMode::Fast, timeout).await?;
                        pg.rewind(&upstream).await
                    },
                );
                Ok(())
            }
            Action::StartPrimary => {
                self.watchdog_ready()
                    .await
                    .map_err(|e| Failure::Other(e.to_string()))?;
                self.sync_before_primary(cluster).await?;
                let (pg, dynamic) = (self.pg.clone(), self.dynamic.clone());
                self.spawn_job(Job::Start { as_primary: true }, async move {
                    pg.start(&ConfRole::Primary, &dynamic).await
                });
                Ok(())
            }
            Action::StartReplica { leader } => {
                let upstream = match leader {
                    Some(l) => Some(self.upstream(cluster, l)?),
                    None => None,
                };
                let (pg, dynamic) = (self.pg.clone(), self.dynamic.clone());
                self.spawn_job(Job::Start { as_primary: false }, async move {
                    pg.start(&ConfRole::Replica(upstream), &dynamic).await
                });
                Ok(())
            }
            Action::Follow { leader } => {
                let upstream = match leader {
                    Some(l) => Some(self.upstream(cluster, l)?),
                    None => None,
                };
                self.pg
                    .follow(upstream.as_ref(), &self.dynamic)
                    .await
                    .map_err(|e| Failure::Other(format!("follow: {e}")))?;
                self.node.handle(self.clock.now(), Outcome::Followed);
                Ok(())
            }
            Action::StartStandbyLeader { rewind, .. } => {
                let source = self.standby_source()?;
                let (pg, dynamic, rewind) = (self.pg.clone(), self.dynamic.clone(), *rewind);
                self.spawn_job(Job::Start { as_primary: false }, async move {
                    if rewind {
                        // Started either way: without the rewind it replays
                        // nothing from a source it diverged from, and says
                        // so (not streaming), which an operator can see.
                        match pg.rewind(&source).await {
                            Ok(()) => tracing::info!(
                                source = source.name,
                                "rewound from the standby cluster's source"
                            ),
                            Err(e) => tracing::error!(
                                source = source.name,
                                "pg_rewind from the standby cluster's source failed: {e}"
                            ),
                        }
                    }
                    pg.start(&ConfRole::Replica(Some(source)), &dynamic).await
                });
                Ok(())
            }
            Action::FollowSource { .. } => {
                let source = self.standby_source()?;
                self.pg
                    .follow(Some(&source), &self.dynamic)
                    .await
                    .map_err(|e| {
                        Failure::Other(format!("follow the standby cluster's source: {e}"))
                    })?;
                self.node.handle(self.clock.now(), Outcome::Followed);
                Ok(())
            }
            Action::Promote => {
                self.watchdog_ready()
                    .await
                    .map_err(|e| Failure::Other(e.to_string()))?;
                self.sync_before_primary(cluster).await?;
                self.record_promotion(cluster).await?;
                let (pg, dynamic) = (self.pg.clone(), self.dynamic.clone());
                let pre_promote = self.config.ha.pre_promote.clone();
                let scope = self.config.scope().to_string();
                // The other members' slots, made before the promotion: the
                // replicas repoint to this node as soon as they see it hold
                // the lock, and one that finds no slot retries only after
                // PostgreSQL's wal_retrieve_retry_interval (5 s).
                let slots = match cluster {
                    Some(c) if self.use_slots() => self.member_slots(c),
                    _ => Vec::new(),
                };
                // A timeline no member used, so that a replica of another
                // member's timeline is seen to have diverged (see
                // `pgha_core::ha::divergence::next_timeline`).
                let at_least = cluster.map_or(0, ha::divergence::next_timeline);
                self.spawn_job(Job::Promote, async move {
                    if let Some(script) = pre_promote {
                        crate::callbacks::run(
                            &script,
                            &["pre_promote", "replica", &scope],
                            PRE_PROMOTE_TIMEOUT,
                        )
                        .await
                        .map_err(JobError::Vetoed)?;
                    }
                    super::leader::create_slots(&pg, &slots).await;
                    pg.promote(&dynamic, at_least).await?;
                    Ok::<(), JobError>(pg.checkpoint().await?)
                });
                Ok(())
            }
            Action::Demote { mode } => self.demote(*mode).await,
            Action::Exit { reason } => Err(Failure::Exit(reason.clone())),
        }
    }

    /// Records in the `history` key, before promoting, the timeline this
    /// node leaves ([`ha::divergence::reservation`]): a node that promotes
    /// after it then takes a later timeline even if this one loses the
    /// lock and the DCS before publishing anything else. Failing, the
    /// promotion waits for the next cycle.
    async fn record_promotion(&mut self, cluster: Option<&Cluster>) -> Result<(), Failure> {
        let db = self
            .pg
            .state()
            .await
            .map_err(|e| Failure::Other(format!("before promoting: {e}")))?;
        let (Some(timeline), Some(lsn)) = (db.timeline, db.wal_position()) else {
            return Err(Failure::Other(
                "before promoting: PostgreSQL reports no timeline or WAL position".into(),
            ));
        };
        let known = cluster.and_then(|c| c.history.as_ref()).map(|h| &h.value);
        let taking = cluster.map_or(0, ha::divergence::next_timeline);
        let history = ha::divergence::reservation(known, timeline, taking, lsn, &self.config.name);
        self.dcs
            .write_history(&history)
            .await
            .map(drop)
            .map_err(|e| {
                Failure::Other(format!(
                    "cannot record the promotion in the history key: {e}"
                ))
            })
    }

    /// Stops PostgreSQL so it accepts no more writes, never past the lock's
    /// lifetime: a fast stop that hangs in its checkpoint becomes immediate.
    async fn demote(&mut self, mode: StopMode) -> Result<(), Failure> {
        let left = self
            .node
            .memory()
            .lock_deadline
            .map(|d| {
                d.saturating_sub(self.clock.now())
                    .saturating_sub(ha::FENCE_MARGIN)
            })
            .unwrap_or(self.config.postgresql.pg_ctl_timeout)
            .clamp(
                Duration::from_secs(1),
                self.config.postgresql.pg_ctl_timeout,
            );
        let (shutdown, timeout) = match mode {
            StopMode::Immediate => (ShutdownMode::Immediate, Duration::from_secs(5)),
            StopMode::Fast => (ShutdownMode::Fast, left),
            StopMode::Graceful => {
                // A checkpoint now makes the shutdown checkpoint, and so the
                // time without a writable primary, short.
                let started = self.clock.now();
                if let Err(e) = tokio::time::timeout(left / 2, self.pg.checkpoint())
                    .await
                    .unwrap_or_else(|_| {
                        Err(PgError::Timeout {
                            what: "CHECKPOINT before switchover".into(),
                            after: left / 2,
                        })
                    })
                {
                    tracing::warn!("checkpoint before the switchover: {e}");
                }
                (
                    ShutdownMode::Fast,
                    left.saturating_sub(self.clock.now() - started)
                        .max(Duration::from_secs(1)),
                )
            }
        };
        self.node.handle(self.clock.now(), Outcome::Demoting);
        let r = self.pg.stop(shutdown, timeout).await;
        self.fence.disarm();
        self.callbacks.fire("on_stop", "primary");
        r.map_err(|e| Failure::Other(format!("demote: {e}")))
    }
}
