//! Background jobs, and the REST API's requests that start them.
//!
//! One job at a time: bootstrap, clone, rewind, start, restart, promote or
//! reinitialize. While it runs, `decide` sees it in `HaMemory::job` and
//! only keeps the lock renewed; when it ends, [`HaLoop::reap_job`] records
//! what it means and answers the REST request that asked for it, if any.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgha_core::clock::Clock;
use pgha_core::ha::{Job, JobResult, Outcome};
use pgha_core::model::Cluster;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::HaLoop;
use crate::callbacks::CallbackError;
use crate::command::{
    Command, ReinitializeAnswer, RestartAnswer, RestartRequest, Unmet, version_number,
};
use crate::postgres::{ConfRole, Observed, PgError, ShutdownMode, Upstream};

/// Why a background job failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum JobError {
    #[error(transparent)]
    Postgres(#[from] PgError),
    /// The `pre_promote` script refused (failed or timed out): this node
    /// must not become primary now.
    #[error("pre_promote vetoed the promotion: {0}")]
    Vetoed(CallbackError),
    /// The job's task panicked or was cancelled.
    #[error("job failed: {0}")]
    Aborted(String),
}

/// A background job and what it was for.
#[derive(Debug)]
pub(super) struct RunningJob {
    pub(super) kind: Job,
    pub(super) handle: JoinHandle<Result<(), JobError>>,
    /// Set by the job as it ends, before it wakes the loop: the task's
    /// handle may not read as finished yet when the loop looks, and a job
    /// left unreaped then would wait a whole loop_wait.
    ended: Arc<AtomicBool>,
    /// The restart request waiting for this job's outcome.
    reply: Option<oneshot::Sender<RestartAnswer>>,
    /// When it was started (the loop's clock).
    started: std::time::Duration,
}

impl HaLoop {
    pub(super) fn spawn_job<F, E>(&mut self, kind: Job, fut: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<JobError>,
    {
        self.spawn_job_replying(kind, fut, None);
    }

    fn spawn_job_replying<F, E>(
        &mut self,
        kind: Job,
        fut: F,
        reply: Option<oneshot::Sender<RestartAnswer>>,
    ) where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<JobError>,
    {
        let done = self.job_done.clone();
        let ended = Arc::new(AtomicBool::new(false));
        let flag = ended.clone();
        let handle = tokio::spawn(async move {
            let r = fut.await.map_err(Into::into);
            flag.store(true, Ordering::Release);
            done.notify_one();
            r
        });
        let started = self.clock.now();
        self.node.handle(started, Outcome::JobStarted(kind.clone()));
        self.job = Some(RunningJob {
            kind,
            handle,
            ended,
            reply,
            started,
        });
    }

    /// Wipes the data directory and clones from `upstream`.
    pub(super) fn spawn_reinitialize(&mut self, upstream: Upstream) {
        let pg = self.pg.clone();
        let timeout = self.config.postgresql.pg_ctl_timeout;
        let source = upstream.name.clone();
        self.spawn_job(Job::Reinitialize { source }, async move {
            pg.stop(ShutdownMode::Immediate, timeout).await?;
            pg.wipe()?;
            pg.create_replica(Some(&upstream)).await.map(drop)
        });
    }

    /// Collects a finished job and records what it means.
    pub(super) async fn reap_job(&mut self) {
        let Some(job) = self
            .job
            .take_if(|j| j.ended.load(Ordering::Acquire) || j.handle.is_finished())
        else {
            return;
        };
        let result = match job.handle.await {
            Ok(r) => r,
            Err(e) => Err(JobError::Aborted(e.to_string())),
        };
        let outcome = match &result {
            Ok(()) => JobResult::Succeeded,
            Err(JobError::Vetoed(_)) => JobResult::Vetoed,
            Err(_) => JobResult::Failed,
        };
        self.node.handle(
            self.clock.now(),
            Outcome::JobEnded(job.kind.clone(), outcome),
        );
        let role = self.last_role.clone().unwrap_or_else(|| "replica".into());
        if let Some(tx) = job.reply {
            let _ = tx.send(match &result {
                Ok(()) => RestartAnswer::Restarted,
                Err(e) => RestartAnswer::Failed(e.to_string()),
            });
        }
        match (&job.kind, result) {
            (Job::Bootstrap, Ok(())) => {
                tracing::info!("bootstrapped a new cluster");
                self.callbacks.fire("on_start", "primary");
            }
            (Job::Bootstrap, Err(e)) => {
                tracing::error!(
                    "bootstrap failed: {e}; giving the initialize key up and removing the data directory"
                );
                let _ = self
                    .pg
                    .stop(ShutdownMode::Immediate, Duration::from_secs(10))
                    .await;
                if let Err(e) = self.pg.wipe() {
                    tracing::error!("cannot empty the data directory: {e}");
                }
                if let Err(e) = pgha_core::dcs::DcsExt::cancel_initialize(&*self.dcs).await {
                    tracing::error!("cannot remove the initialize key: {e}");
                }
            }
            (Job::Clone { source } | Job::Reinitialize { source }, Ok(())) => {
                tracing::info!("replica created from {source}");
            }
            (Job::Clone { source } | Job::Reinitialize { source }, Err(e)) => {
                tracing::error!("creating a replica from {source} failed: {e}");
            }
            (Job::Rewind { source }, Ok(())) => {
                tracing::info!("rewound from {source}");
            }
            (Job::Rewind { source }, Err(e)) => {
                tracing::error!("pg_rewind from {source} failed: {e}");
            }
            (Job::Start { as_primary }, Ok(())) => {
                self.callbacks
                    .fire("on_start", if *as_primary { "primary" } else { "replica" });
            }
            (Job::Start { .. }, Err(e)) => {
                tracing::error!("starting PostgreSQL failed: {e}");
            }
            (Job::Restart, Ok(())) => {
                tracing::info!("PostgreSQL restarted");
                self.callbacks.fire("on_restart", &role);
            }
            (Job::Restart, Err(e)) => {
                tracing::error!("restarting PostgreSQL failed: {e}");
            }
            (Job::Promote, Ok(())) => {
                self.last_promotion = Some(self.clock.now().saturating_sub(job.started));
                tracing::info!("promoted; checkpoint after promotion done");
            }
            (Job::Promote, Err(e)) => {
                if outcome == JobResult::Vetoed {
                    tracing::error!("{e}; giving the leader lock up");
                    if let Err(e) = self.dcs.release_leader().await {
                        tracing::warn!("could not release the leader lock: {e}");
                    }
                    self.fence.disarm();
                    self.withdraw_as_candidate().await;
                } else {
                    tracing::error!("promotion failed: {e}");
                }
            }
            (Job::Stop, Ok(())) => {}
            (Job::Stop, Err(e)) => tracing::error!("stopping PostgreSQL failed: {e}"),
        }
    }

    /// A requested switchover that names this node cannot happen (its
    /// `pre_promote` refused): remove the request, so the other members'
    /// normal election resumes instead of waiting for this candidate.
    async fn withdraw_as_candidate(&self) {
        let status = self.status.borrow().clone();
        let Some(f) = status.cluster.as_ref().and_then(|c| c.failover.as_ref()) else {
            return;
        };
        if f.value.member.as_deref() == Some(self.config.name.as_str()) {
            let expect = pgha_core::model::Expect::Version(f.version.clone());
            if let Err(e) = self
                .dcs
                .delete(pgha_core::dcs::SharedKey::Failover, expect)
                .await
            {
                tracing::warn!("could not withdraw the switchover request naming me: {e}");
            }
        }
    }

    /// Takes a request from the REST API. Requests that need the current
    /// cluster or PostgreSQL state are carried out by the next cycle, which
    /// starts as soon as this returns.
    pub(super) async fn accept(&mut self, command: Command) {
        // A job that ended since the last cycle must not look in progress.
        self.reap_job().await;
        match command {
            Command::Wakeup => {}
            Command::Reload(config) => self.pending_reload = Some(*config),
            Command::CancelRestart { reply } => {
                let _ = reply.send(self.scheduled_restart.take().is_some());
            }
            Command::Restart { request, reply } => {
                if request.schedule.is_some() {
                    if self.scheduled_restart.is_some() {
                        let _ = reply.send(RestartAnswer::AlreadyScheduled);
                    } else {
                        tracing::info!("restart scheduled at {:?}", request.schedule);
                        self.scheduled_restart = Some(request);
                        let _ = reply.send(RestartAnswer::Scheduled);
                    }
                } else if let Some((_, old)) =
                    self.pending_restart_request.replace((request, reply))
                {
                    let _ = old.send(RestartAnswer::Superseded);
                }
            }
            Command::Reinitialize {
                force,
                from_leader,
                reply,
            } => {
                let _ = reply.send(self.reinitialize(force, from_leader));
            }
        }
    }

    /// `POST /reinitialize`: wipe and reclone this replica.
    fn reinitialize(&mut self, force: bool, from_leader: bool) -> ReinitializeAnswer {
        let status = self.status.borrow().clone();
        let Some(cluster) = status.cluster.as_deref() else {
            return ReinitializeAnswer::ClusterUnknown;
        };
        let Some(leader) = cluster.leader_name() else {
            return ReinitializeAnswer::NoLeader;
        };
        if leader == self.config.name {
            return ReinitializeAnswer::IsLeader;
        }
        if let Some(job) = &self.job {
            if !force {
                return ReinitializeAnswer::Busy(job_name(&job.kind));
            }
            tracing::warn!("reinitialize (force): cancelling {}", job_name(&job.kind));
            if let Some(job) = self.job.take() {
                job.handle.abort();
            }
            self.node.handle(self.clock.now(), Outcome::JobCancelled);
        }
        let source = if from_leader {
            leader.to_string()
        } else {
            cluster
                .members
                .iter()
                .find(|m| {
                    m.name != self.config.name && m.data.tags.clonefrom() && m.data.is_running()
                })
                .map_or_else(|| leader.to_string(), |m| m.name.clone())
        };
        match self.upstream(Some(cluster), &source) {
            Ok(upstream) => {
                tracing::info!("reinitializing from {source} as requested");
                self.spawn_reinitialize(upstream);
                ReinitializeAnswer::Started
            }
            Err(super::execute::Failure::Other(why)) => ReinitializeAnswer::Impossible(why),
            Err(_) => ReinitializeAnswer::Impossible("cannot reinitialize now".into()),
        }
    }

    /// Starts a requested restart (now, or a scheduled one that is due) if
    /// its conditions hold. Returns whether it started one.
    pub(super) async fn start_requested_restart(
        &mut self,
        cluster: Option<&Cluster>,
        observed: &Observed,
    ) -> bool {
        let due = self
            .scheduled_restart
            .as_ref()
            .and_then(|r| r.schedule)
            .is_some_and(|at| at <= jiff::Timestamp::now());
        let (request, reply) = if let Some((request, reply)) = self.pending_restart_request.take() {
            (request, Some(reply))
        } else if due {
            match self.scheduled_restart.take() {
                Some(request) => (request, None),
                None => return false,
            }
        } else {
            return false;
        };
        let answer = |reply: Option<oneshot::Sender<RestartAnswer>>, r: RestartAnswer| {
            if let Some(tx) = reply {
                let _ = tx.send(r);
            }
        };
        let Some(db) = observed.db.as_ref() else {
            answer(reply, RestartAnswer::NotRunning);
            return false;
        };
        if let Err(why) = restart_matches(&request, db) {
            tracing::info!("restart not done: {why}");
            answer(reply, RestartAnswer::ConditionsNotMet(why));
            return false;
        }
        let role = self.running_role(cluster, observed);
        tracing::info!("restarting PostgreSQL as requested");
        let (pg, dynamic) = (self.pg.clone(), self.dynamic.clone());
        let timeout = request
            .timeout
            .unwrap_or(self.config.postgresql.pg_ctl_timeout);
        self.spawn_job_replying(
            Job::Restart,
            async move {
                pg.stop(ShutdownMode::Fast, timeout).await?;
                pg.start(&role, &dynamic).await
            },
            reply,
        );
        true
    }
}

impl HaLoop {
    /// The role PostgreSQL runs in now, to start it again in the same one
    /// after a restart: a replica keeps following whom it follows.
    pub(super) fn running_role(&self, cluster: Option<&Cluster>, observed: &Observed) -> ConfRole {
        if observed.db.as_ref().is_some_and(|d| !d.in_recovery) {
            return ConfRole::Primary;
        }
        match observed.following.as_deref() {
            Some(l) => ConfRole::Replica(self.upstream(cluster, l).ok()),
            None => ConfRole::Replica(None),
        }
    }
}

/// Whether a restart's conditions (role, version, pending restart) hold.
fn restart_matches(r: &RestartRequest, db: &crate::postgres::DbState) -> Result<(), Unmet> {
    let role = if db.in_recovery { "replica" } else { "primary" };
    if let Some(wanted) = r.role.as_deref() {
        let wanted = if wanted == "master" {
            "primary"
        } else {
            wanted
        };
        if wanted != role {
            return Err(Unmet::Role {
                is: role,
                wanted: wanted.to_string(),
            });
        }
    }
    if let Some(v) = r.postgres_version.as_deref() {
        let wanted = version_number(v)?;
        if db.server_version >= wanted {
            return Err(Unmet::NotOlder {
                running: db.server_version,
                wanted: v.to_string(),
            });
        }
    }
    if r.restart_pending && db.pending_restart.is_empty() {
        return Err(Unmet::NothingPending);
    }
    Ok(())
}

fn job_name(job: &Job) -> &'static str {
    match job {
        Job::Bootstrap => "bootstrap",
        Job::Clone { .. } => "replica creation",
        Job::Rewind { .. } => "rewind",
        Job::Start { .. } => "start",
        Job::Stop => "stop",
        Job::Promote => "promote",
        Job::Restart => "restart",
        Job::Reinitialize { .. } => "reinitialize",
    }
}
