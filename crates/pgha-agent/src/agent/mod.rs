//! The HA loop: observe, decide, act, publish; every `loop_wait`, or at
//! once when the leader key changes or a background job ends.
//!
//! Long operations (bootstrap, clone, rewind, start, promote) run as
//! background jobs so the loop keeps renewing the lock and publishing the
//! member key meanwhile. The leader lock's lifetime is tracked on the
//! monotonic clock from the moment each lock call was *sent*; the
//! [`fence`] enforces it even if this loop stalls.

pub mod fence;
pub mod peers;
pub mod status;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pgha_core::clock::{Clock, MonotonicClock};
use pgha_core::dcs::{Dcs, DcsError, DcsExt};
use pgha_core::ha::{
    self, Action, DataDir, Decision, HaMemory, Job, LocalPostgres, NodeSettings, Observation,
    PgRole, StopMode,
};
use pgha_core::model::{
    Cluster, DynamicConfig, Expect, History, HistoryEntry, MemberData, PATRONI_COMPAT_VERSION,
    PGHA_VERSION, PgState, Role, Status, Timing, Version,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::postgres::{ConfRole, Observed, PgError, Postgres, ShutdownMode, Upstream, files};
pub use fence::Fence;
pub use peers::PeerClient;
pub use status::NodeStatus;

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentExit {
    /// A condition the agent must not run under (system ID mismatch, ...).
    #[error("{0}")]
    Refused(String),
}

/// A background job and what it was for.
#[derive(Debug)]
struct RunningJob {
    kind: Job,
    handle: JoinHandle<Result<(), PgError>>,
}

/// Why an action failed, as far as the next decision cares.
enum Failure {
    /// Renewing (or taking) the lock failed: decide again without it.
    Lock(String),
    /// The agent must stop.
    Exit(String),
    /// Someone else got there first (the lock, `initialize`): the next
    /// cycle follows them.
    LostRace(String),
    /// Anything else: logged; the next cycle observes again.
    Other(String),
}

/// One node's agent.
#[derive(Debug)]
pub struct Agent {
    config: Arc<Config>,
    dcs: Arc<dyn Dcs>,
    pg: Arc<Postgres>,
    clock: Arc<MonotonicClock>,
    fence: Fence,
    peers: PeerClient,
    status: watch::Sender<Arc<NodeStatus>>,
    memory: HaMemory,
    job: Option<RunningJob>,
    job_done: Arc<Notify>,
    /// The last good dynamic configuration.
    dynamic: DynamicConfig,
    timing: Timing,
    /// PostgreSQL should be running (we started it or saw it run), so its
    /// absence is a crash.
    expect_running: bool,
    /// The last start failed.
    start_failed: bool,
    /// Stopped by a demotion (shown as role `demoted`).
    demoted: bool,
    /// A post-promotion checkpoint is still due.
    checkpoint_pending: bool,
    last_status: Option<Status>,
    /// Slots of members gone from the cluster, since when (monotonic).
    slot_orphaned_since: HashMap<String, Duration>,
    last_reason: String,
    dcs_last_seen: Option<i64>,
}

/// The monotonic time a cycle's lock calls are measured on.
fn elapsed(clock: &MonotonicClock) -> Duration {
    clock.now()
}

impl Agent {
    pub fn new(
        config: Arc<Config>,
        dcs: Arc<dyn Dcs>,
        status: watch::Sender<Arc<NodeStatus>>,
    ) -> Self {
        let clock = Arc::new(MonotonicClock::new());
        let pg = Arc::new(Postgres::new(config.clone()));
        let fence = Fence::start(pg.ctl.clone(), clock.clone());
        let dynamic = config
            .bootstrap
            .as_ref()
            .map(|b| b.dcs.clone())
            .unwrap_or_default();
        let (timing, _) = dynamic.timing();
        dcs.set_timing(timing);
        Agent {
            config,
            dcs,
            pg,
            clock,
            fence,
            peers: PeerClient::default(),
            status,
            memory: HaMemory::default(),
            job: None,
            job_done: Arc::new(Notify::new()),
            dynamic,
            timing,
            expect_running: false,
            start_failed: false,
            demoted: false,
            checkpoint_pending: false,
            last_status: None,
            slot_orphaned_since: HashMap::new(),
            last_reason: String::new(),
            dcs_last_seen: None,
        }
    }

    /// Runs until `shutdown` turns true (then stops PostgreSQL and gives the
    /// lock up) or until the agent must refuse to go on.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), AgentExit> {
        tracing::info!(
            "pgha {PGHA_VERSION} starting: member {} of cluster {} ({}), ttl {:?}, loop_wait {:?}, retry_timeout {:?}",
            self.config.name,
            self.config.scope,
            self.config.layout().base(),
            self.timing.ttl,
            self.timing.loop_wait,
            self.timing.retry_timeout
        );
        loop {
            let started = self.clock.now();
            let cursor = match self.cycle().await {
                Ok(c) => c,
                Err(reason) => {
                    tracing::error!("refusing to go on: {reason}");
                    return Err(AgentExit::Refused(reason));
                }
            };
            let wake_at = self.next_cycle_at(started);
            let job_done = self.job_done.clone();
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => {
                    self.shut_down().await;
                    return Ok(());
                }
                _ = job_done.notified() => {}
                _ = self.wait(cursor, wake_at) => {}
            }
        }
    }

    /// Waits for the next cycle: a replica watches the leader key so it
    /// wakes at once when it changes; the leader just sleeps.
    async fn wait(&self, cursor: Option<Version>, wake_at: Duration) {
        let remaining = wake_at.saturating_sub(self.clock.now());
        match cursor {
            Some(cursor) if !self.holds_lock() && !remaining.is_zero() => {
                match self.dcs.watch_leader(&cursor, remaining).await {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!("watch failed: {e}");
                        tokio::time::sleep(wake_at.saturating_sub(self.clock.now())).await;
                    }
                }
            }
            _ => tokio::time::sleep(remaining).await,
        }
    }

    /// When the next cycle starts: `loop_wait` after this one started, or
    /// earlier if the lock we hold would otherwise run out before a renewal
    /// that takes up to `retry_timeout` could land. (A lease shorter than
    /// `loop_wait + retry_timeout` happens with Consul, whose sessions are
    /// only guaranteed for ttl/2.)
    fn next_cycle_at(&self, started: Duration) -> Duration {
        let regular = started + self.timing.loop_wait;
        match self.memory.lock_deadline.filter(|_| self.holds_lock()) {
            Some(deadline) => {
                let renew_by = deadline.saturating_sub(self.timing.retry_timeout + ha::FENCE_MARGIN);
                regular.min(renew_by.max(self.clock.now() + Duration::from_millis(100)))
            }
            None => regular,
        }
    }

    fn holds_lock(&self) -> bool {
        self.memory
            .lock_deadline
            .is_some_and(|d| d > self.clock.now())
    }

    /// One cycle. Returns the watch cursor of the snapshot it read.
    async fn cycle(&mut self) -> Result<Option<Version>, String> {
        self.reap_job().await;
        let cluster = match self.dcs.load().await {
            Ok(c) => {
                self.dcs_last_seen = Some(jiff::Timestamp::now().as_second());
                Some(c)
            }
            Err(e) => {
                tracing::warn!("cannot read the cluster from the DCS: {e}");
                None
            }
        };
        if let Some(c) = &cluster {
            self.adopt_dynamic(c);
            for p in &c.problems {
                tracing::warn!("DCS key {p}");
            }
        }
        let mut observed = self.pg.observe().await;
        let mut acted = false;
        let mut renew_failed: Option<String> = None;
        for _ in 0..3 {
            let local = self.local_view(&observed);
            let peers = match &cluster {
                Some(c) if c.leader.is_none() && local.running && self.memory.job.is_none() => {
                    self.peers
                        .statuses(c, &self.config.name, peer_timeout(self.timing))
                        .await
                }
                _ => Vec::new(),
            };
            let settings = self.settings();
            let decision = self.decide_now(
                &settings,
                cluster.as_ref(),
                &local,
                &peers,
                &observed,
                renew_failed.clone(),
            );
            self.log_decision(&decision);
            if decision.actions.is_empty() {
                break;
            }
            acted = true;
            match self.execute(&decision.actions, cluster.as_ref()).await {
                Ok(()) => break,
                Err(Failure::Lock(why)) if renew_failed.is_none() => {
                    tracing::warn!("leader lock: {why}");
                    renew_failed = Some(why);
                    observed = self.pg.observe().await;
                }
                Err(Failure::Lock(why)) | Err(Failure::Other(why)) => {
                    tracing::warn!("action failed: {why}");
                    break;
                }
                Err(Failure::LostRace(why)) => {
                    tracing::info!("{why}");
                    break;
                }
                Err(Failure::Exit(reason)) => return Err(reason),
            }
        }
        if acted {
            observed = self.pg.observe().await;
        }
        let member = self.member_data(&observed);
        if let Some(c) = &cluster {
            if let Err(e) = self.dcs.touch_member(&member).await {
                tracing::warn!("cannot publish the member key: {e}");
            }
            if c.is_leader(&self.config.name) && self.holds_lock() {
                self.leader_duties(c, &observed).await;
            }
        }
        self.publish(cluster.as_ref(), observed, member);
        Ok(cluster.map(|c| c.watch_cursor.clone()))
    }

    fn decide_now(
        &self,
        settings: &NodeSettings,
        cluster: Option<&Cluster>,
        local: &LocalPostgres,
        peers: &[ha::PeerStatus],
        observed: &Observed,
        renew_failed: Option<String>,
    ) -> Decision {
        // A postmaster that is up but not answering yet is starting (or in
        // crash recovery): treat it like a start job in progress.
        let mut memory = self.memory.clone();
        if memory.job.is_none() && observed.postmaster.is_some() && observed.db.is_none() {
            memory.job = Some(Job::Start {
                as_primary: !self.pg.data_dir().join("standby.signal").exists(),
            });
        }
        ha::decide(&Observation {
            now: self.clock.now(),
            settings,
            cluster,
            local,
            memory: &memory,
            peers,
            renew_failed,
        })
    }

    fn log_decision(&mut self, d: &Decision) {
        let actions: Vec<String> = d.actions.iter().map(ToString::to_string).collect();
        if actions.is_empty() {
            tracing::info!(target: "pgha::ha", "{}", d.reason);
        } else {
            tracing::info!(target: "pgha::ha", "{} [{}]", d.reason, actions.join(", "));
        }
        self.last_reason = d.reason.clone();
    }

    fn settings(&self) -> NodeSettings {
        let pg = &self.config.postgresql;
        NodeSettings {
            name: self.config.name.clone(),
            tags: self.config.tags.clone(),
            can_bootstrap: self.config.bootstrap.is_some(),
            use_pg_rewind: pg
                .use_pg_rewind
                .unwrap_or_else(|| self.dynamic.use_pg_rewind()),
            remove_data_directory_on_rewind_failure: pg.remove_data_directory_on_rewind_failure,
            maximum_lag_on_failover: self.dynamic.maximum_lag_on_failover(),
            primary_start_timeout: Duration::from_secs(self.dynamic.primary_start_timeout()),
            paused: self.dynamic.pause(),
        }
    }

    fn use_slots(&self) -> bool {
        self.config
            .postgresql
            .use_slots
            .unwrap_or_else(|| self.dynamic.use_slots())
    }

    /// Adopts the cluster's dynamic configuration (keeping the last good one
    /// when it is unreadable) and its timings.
    fn adopt_dynamic(&mut self, cluster: &Cluster) {
        let Some(cfg) = &cluster.config else { return };
        if cfg.value == self.dynamic {
            return;
        }
        for p in cfg.value.problems() {
            tracing::warn!("dynamic configuration: {p}");
        }
        let (timing, notes) = cfg.value.timing();
        for n in notes {
            tracing::warn!("dynamic configuration: {n}");
        }
        if timing != self.timing {
            tracing::info!(
                "timings changed: ttl {:?}, loop_wait {:?}, retry_timeout {:?}",
                timing.ttl,
                timing.loop_wait,
                timing.retry_timeout
            );
            self.dcs.set_timing(timing);
            self.timing = timing;
        }
        self.dynamic = cfg.value.clone();
    }

    /// What `decide` needs to know about PostgreSQL.
    fn local_view(&mut self, o: &Observed) -> LocalPostgres {
        let db = o.db.as_ref();
        if db.is_some() {
            self.expect_running = true;
            self.start_failed = false;
        }
        let crashed = self.expect_running && o.postmaster.is_none();
        let role = db.map(|d| {
            if d.in_recovery {
                PgRole::Replica
            } else {
                PgRole::Primary
            }
        });
        if role == Some(PgRole::Primary) {
            self.memory.primary_start_since = None;
        }
        LocalPostgres {
            data_dir: o.data_dir.clone(),
            running: db.is_some(),
            crashed,
            role,
            timeline: db
                .and_then(|d| d.timeline)
                .or(o.controldata.as_ref().map(|c| c.timeline)),
            wal_position: db.and_then(|d| d.wal_position()),
            following: o.following.clone(),
            replication_state: db.and_then(replication_state),
        }
    }

    /// The upstream for following `leader`, from its member key.
    fn upstream(&self, cluster: Option<&Cluster>, leader: &str) -> Result<Upstream, Failure> {
        let member = cluster
            .and_then(|c| c.member(leader))
            .ok_or_else(|| Failure::Other(format!("leader {leader} has no member key yet")))?;
        let (host, port) = member.data.conn_host_port().ok_or_else(|| {
            Failure::Other(format!("member {leader} publishes no usable conn_url"))
        })?;
        Ok(Upstream {
            name: leader.to_string(),
            host,
            port,
            slot: self
                .use_slots()
                .then(|| files::slot_name(&self.config.name)),
        })
    }

    /// Carries out `actions` in order, stopping at the first failure.
    async fn execute(
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
            Action::AcquireLock | Action::RenewLock | Action::TakeLock => {
                let sent = elapsed(&self.clock);
                let r = match action {
                    Action::AcquireLock => dcs.acquire_leader().await,
                    Action::RenewLock => dcs.renew_leader().await,
                    _ => dcs.take_leader().await,
                };
                match r {
                    Ok(lease) => {
                        let deadline = sent + lease.valid_for;
                        self.memory.lock_deadline = Some(deadline);
                        self.fence.arm(deadline);
                        Ok(())
                    }
                    Err(e) => {
                        if e.is_lost_race() && !matches!(action, Action::RenewLock) {
                            return Err(Failure::LostRace(format!("lost the race: {action}: {e}")));
                        }
                        if !e.is_unreachable() {
                            // The lock is not ours: no lifetime left to rely on.
                            self.memory.lock_deadline = None;
                        }
                        Err(Failure::Lock(format!("{action}: {e}")))
                    }
                }
            }
            Action::ReleaseLock => {
                match dcs.release_leader().await {
                    Ok(()) | Err(DcsError::NotOwner { .. }) => {}
                    Err(e) => return Err(Failure::Other(format!("release lock: {e}"))),
                }
                self.memory.lock_deadline = None;
                self.fence.disarm();
                Ok(())
            }
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
            Action::WriteBootstrapConfig => {
                let config = self
                    .config
                    .bootstrap
                    .as_ref()
                    .map(|b| b.dcs.clone())
                    .unwrap_or_else(|| self.dynamic.clone());
                match dcs.write_config(&config, Expect::Absent).await {
                    Ok(_) | Err(DcsError::Conflict { .. }) => Ok(()),
                    Err(e) => Err(Failure::Other(format!(
                        "writing the bootstrap configuration: {e}"
                    ))),
                }
            }
            Action::Bootstrap => {
                let (pg, dynamic) = (self.pg.clone(), self.dynamic.clone());
                self.spawn_job(Job::Bootstrap, async move { pg.bootstrap(&dynamic).await });
                Ok(())
            }
            Action::Clone { source } => {
                let upstream = self.upstream(cluster, source)?;
                let pg = self.pg.clone();
                self.spawn_job(
                    Job::Clone {
                        source: source.clone(),
                    },
                    async move { pg.create_replica(&upstream).await.map(drop) },
                );
                Ok(())
            }
            Action::Reinitialize { source } => {
                let upstream = self.upstream(cluster, source)?;
                let pg = self.pg.clone();
                let timeout = self.config.postgresql.pg_ctl_timeout;
                self.spawn_job(
                    Job::Clone {
                        source: source.clone(),
                    },
                    async move {
                        pg.stop(ShutdownMode::Immediate, timeout).await?;
                        pg.wipe()?;
                        pg.create_replica(&upstream).await.map(drop)
                    },
                );
                Ok(())
            }
            Action::Rewind { source } => {
                let upstream = self.upstream(cluster, source)?;
                let pg = self.pg.clone();
                self.spawn_job(
                    Job::Rewind {
                        source: source.clone(),
                    },
                    async move { pg.rewind(&upstream).await },
                );
                Ok(())
            }
            Action::StartPrimary => {
                if self.memory.primary_start_since.is_none() {
                    self.memory.primary_start_since = Some(self.clock.now());
                }
                let (pg, dynamic) = (self.pg.clone(), self.dynamic.clone());
                self.demoted = false;
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
                    .map_err(|e| Failure::Other(format!("follow: {e}")))
            }
            Action::Promote => {
                let (pg, dynamic) = (self.pg.clone(), self.dynamic.clone());
                self.checkpoint_pending = true;
                self.spawn_job(Job::Promote, async move {
                    pg.promote(&dynamic).await?;
                    pg.checkpoint().await
                });
                Ok(())
            }
            Action::Demote { mode } => {
                let (mode, timeout) = match mode {
                    StopMode::Immediate => (ShutdownMode::Immediate, Duration::from_secs(5)),
                    StopMode::Fast => {
                        // Never past the lock's lifetime: a fast stop that
                        // hangs in its checkpoint becomes immediate.
                        let left = self
                            .memory
                            .lock_deadline
                            .map(|d| {
                                d.saturating_sub(self.clock.now())
                                    .saturating_sub(ha::FENCE_MARGIN)
                            })
                            .unwrap_or(self.config.postgresql.pg_ctl_timeout);
                        (
                            ShutdownMode::Fast,
                            left.clamp(
                                Duration::from_secs(1),
                                self.config.postgresql.pg_ctl_timeout,
                            ),
                        )
                    }
                };
                self.expect_running = false;
                self.demoted = true;
                let r = self.pg.stop(mode, timeout).await;
                self.fence.disarm();
                r.map_err(|e| Failure::Other(format!("demote: {e}")))
            }
            Action::Exit { reason } => Err(Failure::Exit(reason.clone())),
        }
    }

    fn spawn_job<F>(&mut self, kind: Job, fut: F)
    where
        F: std::future::Future<Output = Result<(), PgError>> + Send + 'static,
    {
        let done = self.job_done.clone();
        let handle = tokio::spawn(async move {
            let r = fut.await;
            done.notify_one();
            r
        });
        self.memory.job = Some(kind.clone());
        self.job = Some(RunningJob { kind, handle });
    }

    /// Collects a finished job and records what it means.
    async fn reap_job(&mut self) {
        let Some(job) = self.job.take_if(|j| j.handle.is_finished()) else {
            return;
        };
        self.memory.job = None;
        let result = match job.handle.await {
            Ok(r) => r,
            Err(e) => Err(PgError::Unexpected(format!("job panicked: {e}"))),
        };
        match (&job.kind, result) {
            (Job::Bootstrap, Ok(())) => {
                tracing::info!("bootstrapped a new cluster");
                self.memory.bootstrapped_here = true;
                self.expect_running = true;
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
                if let Err(e) = self.dcs.cancel_initialize().await {
                    tracing::error!("cannot remove the initialize key: {e}");
                }
            }
            (Job::Clone { source }, Ok(())) => tracing::info!("replica created from {source}"),
            (Job::Clone { source }, Err(e)) => {
                tracing::error!("creating a replica from {source} failed: {e}")
            }
            (Job::Rewind { source }, Ok(())) => {
                tracing::info!("rewound from {source}");
                self.memory.rewound_against = Some(source.clone());
            }
            (Job::Rewind { source }, Err(e)) => {
                tracing::error!("pg_rewind from {source} failed: {e}");
                self.memory.rewind_failed_against = Some(source.clone());
            }
            (Job::Start { .. }, Ok(())) => {
                self.expect_running = true;
                self.start_failed = false;
            }
            (Job::Start { .. }, Err(e)) => {
                tracing::error!("starting PostgreSQL failed: {e}");
                self.start_failed = true;
            }
            (Job::Promote, Ok(())) => {
                tracing::info!("promoted; checkpoint after promotion done");
                self.checkpoint_pending = false;
                self.demoted = false;
            }
            (Job::Promote, Err(e)) => {
                tracing::error!("promotion failed: {e}");
                self.checkpoint_pending = false;
            }
            (Job::Stop, r) => {
                if let Err(e) = r {
                    tracing::error!("stopping PostgreSQL failed: {e}");
                }
            }
        }
        if self.memory.bootstrapped_here && self.holds_lock() {
            self.memory.bootstrapped_here = false;
        }
    }

    /// The member key this node publishes, field for field as Patroni does.
    fn member_data(&self, o: &Observed) -> MemberData {
        let db = o.db.as_ref();
        let mut data = MemberData {
            conn_url: Some(self.config.conn_url()),
            api_url: Some(self.config.api_url()),
            state: Some(self.pg_state(o)),
            role: Some(self.role(o)),
            version: Some(PATRONI_COMPAT_VERSION.to_string()),
            tags: self.config.tags.published(),
            ..Default::default()
        };
        if db.is_none() {
            // Stopped: where its WAL ends, so that a node with less WAL does
            // not win the leader race while this one is away.
            if let Some(cd) = &o.controldata {
                data.xlog_location = cd.checkpoint_lsn;
                data.timeline = Some(cd.timeline);
            }
        }
        if let Some(d) = db {
            data.xlog_location = d.wal_position();
            data.timeline = d.timeline;
            if d.in_recovery {
                data.replay_lsn = d.replay_lsn;
                data.receive_lsn = d.receive_lsn;
                data.replication_state = replication_state(d);
            }
        }
        if self.checkpoint_pending && self.holds_lock() {
            data.checkpoint_after_promote = Some(false);
        }
        if self.dynamic.pause() {
            data.pause = Some(true);
        }
        data.extra
            .insert("pgha_version".into(), PGHA_VERSION.into());
        data
    }

    fn pg_state(&self, o: &Observed) -> PgState {
        match &self.memory.job {
            Some(Job::Bootstrap) => return PgState::InitializingNewCluster,
            Some(Job::Clone { .. }) => return PgState::CreatingReplica,
            Some(Job::Start { .. }) if o.db.is_none() => return PgState::Starting,
            Some(Job::Stop) => return PgState::Stopping,
            _ => {}
        }
        if o.db.is_some() {
            PgState::Running
        } else if o.postmaster.is_some() {
            PgState::Starting
        } else if self.start_failed {
            PgState::StartFailed
        } else if self.expect_running {
            PgState::Crashed
        } else {
            PgState::Stopped
        }
    }

    fn role(&self, o: &Observed) -> Role {
        match (&o.db, &o.data_dir) {
            (Some(d), _) => {
                if d.in_recovery {
                    Role::Replica
                } else {
                    Role::Primary
                }
            }
            (None, DataDir::Empty) => Role::Uninitialized,
            (None, _) if self.demoted => Role::Demoted,
            (
                None,
                DataDir::Initialized {
                    was_primary: true, ..
                },
            ) => Role::Primary,
            (None, _) => Role::Replica,
        }
    }

    /// What the leader keeps up to date: `status` (its WAL position and
    /// slots), `history` after a promotion, and the members' slots.
    async fn leader_duties(&mut self, cluster: &Cluster, o: &Observed) {
        let Some(db) = o.db.as_ref().filter(|d| !d.in_recovery) else {
            return;
        };
        let slots = if self.use_slots() {
            self.ensure_slots(cluster).await
        } else {
            None
        };
        let status = Status {
            optime: db.write_lsn,
            retain_slots: slots,
            ..Default::default()
        };
        if self.last_status.as_ref() != Some(&status) {
            match self.dcs.write_status(&status).await {
                Ok(_) => self.last_status = Some(status),
                Err(e) => tracing::warn!("cannot write the status key: {e}"),
            }
        }
        if let Some(timeline) = db.timeline {
            self.sync_history(cluster, timeline).await;
        }
    }

    /// Creates a physical slot for every other member; drops slots of
    /// members gone for longer than `member_slots_ttl` (inactive ones only).
    /// Returns the member slots kept.
    async fn ensure_slots(&mut self, cluster: &Cluster) -> Option<Vec<String>> {
        let me = &self.config.name;
        let wanted: Vec<String> = cluster
            .members
            .iter()
            .filter(|m| &m.name != me)
            .map(|m| files::slot_name(&m.name))
            .collect();
        let existing = match self
            .pg
            .query_texts("SELECT slot_name::text || ':' || active::text FROM pg_replication_slots WHERE slot_type = 'physical'")
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!("cannot list replication slots: {e}");
                return None;
            }
        };
        let existing: Vec<(String, bool)> = existing
            .iter()
            .filter_map(|r| {
                r.rsplit_once(':')
                    .map(|(n, a)| (n.to_string(), a == "true"))
            })
            .collect();
        for slot in &wanted {
            if !existing.iter().any(|(n, _)| n == slot) {
                let sql = format!(
                    "SELECT pg_catalog.pg_create_physical_replication_slot('{}', true)",
                    slot.replace('\'', "''")
                );
                match self.pg.execute(&sql).await {
                    Ok(()) => tracing::info!("created replication slot {slot}"),
                    Err(e) => tracing::warn!("cannot create replication slot {slot}: {e}"),
                }
            }
        }
        let now = self.clock.now();
        let ttl = Duration::from_secs(self.dynamic.member_slots_ttl());
        let mut kept = wanted.clone();
        for (slot, active) in &existing {
            if wanted.contains(slot) {
                self.slot_orphaned_since.remove(slot);
                continue;
            }
            let since = *self.slot_orphaned_since.entry(slot.clone()).or_insert(now);
            if !active && now.saturating_sub(since) >= ttl {
                let sql = format!(
                    "SELECT pg_catalog.pg_drop_replication_slot('{}')",
                    slot.replace('\'', "''")
                );
                match self.pg.execute(&sql).await {
                    Ok(()) => {
                        tracing::info!(
                            "dropped replication slot {slot}: its member has been gone for {ttl:?}"
                        );
                        self.slot_orphaned_since.remove(slot);
                    }
                    Err(e) => tracing::warn!("cannot drop replication slot {slot}: {e}"),
                }
            } else {
                kept.push(slot.clone());
            }
        }
        kept.sort();
        kept.dedup();
        Some(kept)
    }

    /// After a promotion, appends the new timeline switch to `history`
    /// from PostgreSQL's timeline history file.
    async fn sync_history(&mut self, cluster: &Cluster, timeline: u64) {
        if timeline <= 1 {
            return;
        }
        let known = cluster
            .history
            .as_ref()
            .map(|h| h.value.0.clone())
            .unwrap_or_default();
        if known.iter().any(|e| e.timeline + 1 >= timeline) {
            return;
        }
        let path = self
            .pg
            .data_dir()
            .join("pg_wal")
            .join(format!("{timeline:08X}.history"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let mut entries = known;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let mut parts = line.splitn(3, '\t');
            let (Some(tl), Some(lsn)) = (parts.next(), parts.next()) else {
                continue;
            };
            let (Ok(tl), Some(lsn)) = (tl.trim().parse::<u64>(), parse_lsn(lsn.trim())) else {
                continue;
            };
            if entries.iter().any(|e| e.timeline == tl) {
                continue;
            }
            let newest = tl + 1 == timeline;
            entries.push(HistoryEntry {
                timeline: tl,
                lsn,
                reason: parts.next().unwrap_or_default().trim().to_string(),
                timestamp: newest.then(|| jiff::Timestamp::now().to_string()),
                new_leader: newest.then(|| self.config.name.clone()),
            });
        }
        entries.sort_by_key(|e| e.timeline);
        if let Err(e) = self.dcs.write_history(&History(entries)).await {
            tracing::warn!("cannot write the history key: {e}");
        }
    }

    fn publish(&self, cluster: Option<&Cluster>, observed: Observed, member: MemberData) {
        let holds_lock =
            cluster.is_some_and(|c| c.is_leader(&self.config.name)) && self.holds_lock();
        let status = NodeStatus {
            name: self.config.name.clone(),
            scope: self.config.scope.clone(),
            cluster: cluster
                .map(|c| Arc::new(c.clone()))
                .or_else(|| self.status.borrow().cluster.clone()),
            dcs_last_seen: self.dcs_last_seen,
            observed: Some(observed),
            member,
            holds_lock,
            paused: self.dynamic.pause(),
            dynamic: self.dynamic.clone(),
            timing: self.timing,
            last_cycle: Some(self.clock.now()),
            last_reason: self.last_reason.clone(),
        };
        self.status.send_replace(Arc::new(status));
    }

    /// A clean stop: PostgreSQL stops (a checkpoint first), then the lock is
    /// given up so a replica takes over at once instead of after `ttl`.
    async fn shut_down(&mut self) {
        tracing::info!("shutting down: stopping PostgreSQL");
        if let Some(job) = self.job.take() {
            job.handle.abort();
        }
        let timeout = self.config.postgresql.pg_ctl_timeout;
        if let Err(e) = self.pg.stop(ShutdownMode::Fast, timeout).await {
            tracing::error!("stopping PostgreSQL failed: {e}");
        }
        self.fence.disarm();
        self.expect_running = false;
        let stopped = self.pg.observe().await;
        let member = self.member_data(&stopped);
        if let Err(e) = self.dcs.touch_member(&member).await {
            tracing::debug!("could not publish the stopped state: {e}");
        }
        if self.memory.lock_deadline.is_some() {
            match self.dcs.release_leader().await {
                Ok(()) => {}
                Err(DcsError::NotOwner { .. }) => {}
                Err(e) => tracing::warn!("could not release the leader lock: {e}"),
            }
        }
        tracing::info!("pgha stopped");
    }
}

/// `streaming` when the WAL receiver streams, `in archive recovery` for a
/// replica without one, as Patroni reports it.
fn replication_state(d: &crate::postgres::DbState) -> Option<String> {
    if !d.in_recovery {
        return None;
    }
    Some(if d.receiver_status.as_deref() == Some("streaming") {
        "streaming".into()
    } else {
        "in archive recovery".into()
    })
}

/// How long to wait for a peer's `GET /patroni` during the leader race.
fn peer_timeout(t: Timing) -> Duration {
    (t.retry_timeout / 2).clamp(Duration::from_millis(500), Duration::from_secs(2))
}

/// `0/3000060` → bytes.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Bytes → `0/3000060`.
pub fn format_lsn(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_round_trip() {
        assert_eq!(parse_lsn("0/3000060"), Some(0x3000060));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(format_lsn(0x1_0300_0060), "1/3000060");
        assert_eq!(parse_lsn("nope"), None);
    }
}
