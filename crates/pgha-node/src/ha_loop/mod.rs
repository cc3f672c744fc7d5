//! The HA loop: observe, decide, act, publish; every `loop_wait`, or at
//! once when the leader key changes, a background job ends, or the REST
//! API asks.
//!
//! Long operations (bootstrap, clone, rewind, start, restart, promote) run
//! as background jobs ([`jobs`]) so the loop keeps renewing the lock and
//! publishing the member key meanwhile. The leader lock's lifetime is
//! tracked on the monotonic clock from the moment each lock call was
//! *sent*; the [`fence`] enforces it even if this loop stalls.
//!
//! - [`execute`]: carrying out a decision's actions;
//! - [`jobs`]: background jobs, requests from the REST API, restarts;
//! - [`member`]: what this node publishes as its member key;
//! - [`leader`]: what the leader keeps up to date (status, history, slots);
//! - [`sync`]: synchronous replication (`synchronous_standby_names` and
//!   the `sync` key), on the leader and before a promotion;
//! - [`apply`]: applying configuration changes (dynamic config, SIGHUP);
//! - [`callbacks`]: user scripts on events.

mod apply;
mod execute;
mod failsafe;
mod jobs;
mod leader;
mod member;
mod replication;
mod slot_copy;
mod sync;
mod watchdog;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pgha_core::clock::{Clock, MonotonicClock};
use pgha_core::dcs::{Dcs, DcsError};
use pgha_core::ha::{
    self, Decision, HaNode, Inputs, LocalPostgres, NodeSettings, Outcome, PeerStatus, PgRole,
};
use pgha_core::model::{
    Cluster, DynamicConfig, Failsafe, MemberData, PGHA_VERSION, Status, Timing, Unsupported,
    Version,
};
use pgha_rest_client::RestClient;
use tokio::sync::{Notify, mpsc, watch};

use crate::callbacks::Callbacks;
use crate::command::{Command, RestartAnswer, RestartRequest};
use crate::config::NodeConfig;
use crate::failsafe::FailsafeGate;
use crate::fence::Fence;
use crate::guard::{GuardHealth, GuardLink, GuardMode};
use crate::peers;
use crate::postgres::{Observed, Postgres, ShutdownMode, Upstream, files};
use crate::status::NodeStatus;
use execute::Failure;
use jobs::RunningJob;
use pgha_core::model::lsn::parse as parse_lsn;

/// The loop of one node: the I/O around the [`HaNode`] state machine.
#[derive(Debug)]
pub(crate) struct HaLoop {
    config: Arc<NodeConfig>,
    dcs: Arc<dyn Dcs>,
    pg: Arc<Postgres>,
    clock: Arc<MonotonicClock>,
    fence: Fence,
    /// The fence guard process, which fences when this process cannot.
    guard: GuardLink,
    /// Calls to the other members' REST APIs.
    rest: RestClient,
    callbacks: Callbacks,
    status: watch::Sender<Arc<NodeStatus>>,
    /// The HA state machine: what this node remembers, changed only by
    /// the outcomes reported to it.
    node: HaNode,
    job: Option<RunningJob>,
    job_done: Arc<Notify>,
    /// The last good dynamic configuration: `bootstrap.dcs` until one is
    /// read from the DCS (or from the cache in the data directory).
    dynamic: DynamicConfig,
    /// `dynamic` is the cluster's, read from the DCS or its cache, not
    /// `bootstrap.dcs`: what to write back if the DCS loses the key.
    dynamic_known: bool,
    /// The members of the last snapshot that had an `initialize` key (see
    /// [`HaLoop::race_peers`]).
    members_seen: Vec<pgha_core::model::Member>,
    /// What the data directory's cache file was last written with.
    dynamic_cached: Option<DynamicConfig>,
    /// The keys of `dynamic` that pgha refuses, reported every cycle.
    unsupported: Vec<Unsupported>,
    /// The role last reported to `on_role_change`.
    last_role: Option<String>,
    last_status: Option<Status>,
    /// Slots of members gone from the cluster, since when (monotonic).
    slot_orphaned_since: HashMap<String, Duration>,
    /// The permanent-slot conflicts and failures last logged (logged
    /// again only when they change).
    slot_problems: Vec<String>,
    /// The newest timeline this data directory (by system ID) was seen
    /// on: see [`Self::local_view`].
    timeline_seen: Option<(String, u64)>,
    /// The slot name of every member this agent has seen, in any role,
    /// and when (monotonic) it last saw its key: whose slot the leader
    /// keeps, or creates, for `member_slots_ttl`.
    member_seen_at: HashMap<String, Duration>,
    /// The leader's synchronous-replication memory (see
    /// [`pgha_core::ha::sync`]).
    sync: pgha_core::ha::SyncKeeper,
    /// The last synchronous-replication state reported, so a settled one is
    /// logged once, not every cycle.
    sync_said: String,
    /// A restart requested for later (`POST /restart` with `schedule`).
    scheduled_restart: Option<RestartRequest>,
    /// A restart requested now, waiting for the next cycle to start it.
    pending_restart_request: Option<(RestartRequest, tokio::sync::oneshot::Sender<RestartAnswer>)>,
    /// A new configuration to adopt at the start of the next cycle.
    pending_reload: Option<NodeConfig>,
    last_reason: String,
    /// How long this node's last promotion job took (`/metrics`).
    last_promotion: Option<Duration>,
    dcs_last_seen: Option<i64>,
    /// Failsafe mode: the promise this member gave a primary, shared with
    /// the REST API's `POST /failsafe`.
    failsafe: FailsafeGate,
    /// The `failsafe` key as last known: read, or written (a write whose
    /// outcome is unknown adds its members to what was read, since any of
    /// them may race if it was applied): whom a round must ask.
    failsafe_key: Option<Failsafe>,
    /// Whether failsafe mode was active at the last cycle (one log line
    /// per change).
    failsafe_was_active: bool,
    /// Why the configured watchdog timeout cannot fit the timings.
    watchdog_problem: Option<crate::config::WatchdogTimeoutError>,
    /// `required` mode could not get this watchdog: not retried until the
    /// settings change.
    watchdog_refused: Option<watchdog::Refused>,
}

impl HaLoop {
    /// Starts the in-process fence and the fence guard (`guard` says
    /// which program runs it); nothing else runs until [`HaLoop::run`].
    pub(crate) fn new(
        config: Arc<NodeConfig>,
        dcs: Arc<dyn Dcs>,
        guard: GuardMode,
        clock: Arc<MonotonicClock>,
        status: watch::Sender<Arc<NodeStatus>>,
        failsafe: FailsafeGate,
    ) -> Self {
        let pg = Arc::new(Postgres::new(Arc::new(config.postgresql.clone())));
        let fence = Fence::start(pg.ctl.clone(), clock.clone());
        let guard = GuardLink::start(guard, fence.guard_input(), clock.clone());
        pg.set_launcher(Arc::new(guard.clone()));
        // Like Patroni, the last configuration read from the DCS is kept in
        // the data directory: it survives a restart of the agent and is
        // what a leader writes back if the DCS lost it.
        let cached = files::read_dynamic_cache(&config.postgresql.data_dir);
        let dynamic_known = cached.is_some();
        let dynamic = cached.unwrap_or_else(|| config.bootstrap.clone().unwrap_or_default());
        let (timing, _) = dynamic.timing();
        dcs.set_timing(timing);
        let rest = RestClient::new("pgha", config.client_auth.clone(), &config.client_tls);
        let callbacks = Callbacks {
            scripts: config.ha.callbacks.clone(),
            scope: config.scope().to_string(),
        };
        HaLoop {
            config,
            dcs,
            pg,
            clock,
            fence,
            guard,
            rest,
            callbacks,
            status,
            node: HaNode::new(timing),
            job: None,
            job_done: Arc::new(Notify::new()),
            dynamic,
            dynamic_known,
            dynamic_cached: None,
            members_seen: Vec::new(),
            unsupported: Vec::new(),
            last_role: None,
            last_status: None,
            slot_orphaned_since: HashMap::new(),
            slot_problems: Vec::new(),
            timeline_seen: None,
            member_seen_at: HashMap::new(),
            sync: pgha_core::ha::SyncKeeper::default(),
            sync_said: String::new(),
            scheduled_restart: None,
            pending_restart_request: None,
            pending_reload: None,
            last_reason: String::new(),
            last_promotion: None,
            dcs_last_seen: None,
            failsafe,
            failsafe_key: None,
            failsafe_was_active: false,
            watchdog_problem: None,
            watchdog_refused: None,
        }
    }

    /// Runs until `shutdown` turns true (then stops PostgreSQL and gives the
    /// lock up) or until the node must refuse to go on (the reason).
    /// `commands` carries the [`NodeHandle`](crate::NodeHandle)'s requests.
    pub(crate) async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        mut commands: mpsc::Receiver<Command>,
    ) -> Result<(), crate::NodeExit> {
        tracing::info!(
            "pgha {PGHA_VERSION} starting: member {} of cluster {} ({}), ttl {:?}, loop_wait {:?}, retry_timeout {:?}",
            self.config.name,
            self.config.scope(),
            self.config.layout.base(),
            self.node.timing().ttl,
            self.node.timing().loop_wait,
            self.node.timing().retry_timeout
        );
        match crate::config::FrozenNodeTimer::of(
            &self.config.watchdog,
            self.node.timing(),
            crate::guard::service_watchdog::ServiceWatchdog::from_env().as_ref(),
        ) {
            crate::config::FrozenNodeTimer::Missing { why } => tracing::warn!("{why}"),
            timer => tracing::info!("{timer}"),
        }
        self.guard.wait_started(Duration::from_secs(6)).await;
        if let Some(why) = self.guard.unfenced(self.clock.now()) {
            tracing::error!("{why}: this node will not become primary until it runs");
        }
        loop {
            let cursor = match self.cycle().await {
                Ok(c) => c,
                Err(reason) => {
                    // NodeExit says "refusing to go on: ...".
                    tracing::error!("{reason}");
                    // A deliberate stop: the guard leaves PostgreSQL alone,
                    // unless this node holds the lock (then it fences, as
                    // for an agent that died: nobody renews it any more).
                    if !self.holds_lock() {
                        self.guard.exit().await;
                    }
                    return Err(reason);
                }
            };
            let wake_at = self.node.poll_timeout(self.clock.now());
            let job_done = self.job_done.clone();
            // The watch's read guard is dropped inside: held in the select's
            // output it would make this future !Send (no tokio::spawn).
            let stop_asked = async {
                let _ = shutdown.wait_for(|stop| *stop).await;
            };
            tokio::select! {
                () = stop_asked => {
                    self.shut_down().await;
                    return Ok(());
                }
                _ = job_done.notified() => {}
                Some(command) = commands.recv() => self.accept(command).await,
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
                if let Err(e) = self.dcs.watch_leader(&cursor, remaining).await {
                    tracing::debug!("watch failed: {e}");
                    tokio::time::sleep(wake_at.saturating_sub(self.clock.now())).await;
                }
            }
            _ => tokio::time::sleep(remaining).await,
        }
    }

    fn holds_lock(&self) -> bool {
        self.node.holds_lock(self.clock.now())
    }

    /// One cycle. Returns the watch cursor of the snapshot it read.
    async fn cycle(&mut self) -> Result<Option<Version>, crate::NodeExit> {
        self.node.begin_cycle(self.clock.now());
        self.reap_job().await;
        if let Some(new) = self.pending_reload.take() {
            self.reload_config(new);
        }
        let mut cluster = match self.dcs.load().await {
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
            self.keep_dynamic_cache(c);
            self.remember_members(c);
            self.failsafe_key = c.failsafe.as_ref().map(|f| f.value.clone());
            for p in &c.problems {
                tracing::warn!("DCS key {p}");
            }
        }
        self.report_unsupported();
        if cluster.is_some() {
            self.fence.set_paused(self.dynamic.pause());
        }
        self.failsafe
            .configure(self.dynamic.failsafe_mode(), self.node.timing().ttl);
        let want = self.watchdog_want();
        self.fence.set_watchdog(want);
        let mut observed = self.pg.observe().await;
        let mut acted = false;
        let mut renew_failed: Option<String> = None;
        let mut round: Option<ha::failsafe::Round> = None;
        for _ in 0..3 {
            let local = self.local_view(&observed);
            let settings = self.settings();
            // Without the DCS (this cycle's read failed, or the renewal
            // below did), a primary in failsafe mode asks its members.
            if (cluster.is_none() || renew_failed.is_some())
                && round.is_none()
                && self
                    .node
                    .failsafe_round_due(self.clock.now(), &settings, &local)
            {
                round = Some(self.failsafe_round().await);
            }
            let inputs = self.inputs(&settings, cluster.as_ref(), &local, &[], None, None);
            let streaming = self.node.observe(self.clock.now(), &inputs);
            self.log_streaming(streaming, &observed, &local);
            let peers = match &cluster {
                Some(c) if self.node.needs_peers(c, &local) => {
                    peers::statuses(
                        &self.rest,
                        &self.race_peers(c),
                        &self.config.name,
                        peer_timeout(self.node.timing()),
                    )
                    .await
                }
                _ => Vec::new(),
            };
            let inputs = self.inputs(
                &settings,
                cluster.as_ref(),
                &local,
                &peers,
                renew_failed.clone(),
                round.as_ref(),
            );
            let decision = self.node.decide(self.clock.now(), inputs);
            self.log_decision(&decision);
            if decision.actions.is_empty() {
                break;
            }
            acted = true;
            match self.execute(&decision.actions, cluster.as_ref()).await {
                Ok(()) => break,
                Err(Failure::Lock { why, stale }) if renew_failed.is_none() => {
                    tracing::warn!("leader lock: {why}");
                    renew_failed = Some(why);
                    if stale && let Ok(fresh) = self.dcs.load().await {
                        cluster = Some(fresh);
                    }
                    observed = self.pg.observe().await;
                }
                Err(Failure::Lock { why, .. }) | Err(Failure::Other(why)) => {
                    tracing::warn!("action failed: {why}");
                    break;
                }
                Err(Failure::LostRace(why)) => {
                    tracing::info!("{why}");
                    break;
                }
                Err(Failure::Exit(reason)) => return Err(crate::NodeExit::Refused(reason)),
            }
        }
        if acted {
            // What the actions changed (whom we follow, the role) must be
            // what the next steps and the member key see.
            observed = self.pg.observe().await;
        }
        if self.job.is_none() && renew_failed.is_none() {
            let restarted = self
                .start_requested_restart(cluster.as_ref(), &observed)
                .await;
            let reloaded =
                !restarted && self.apply_configuration(cluster.as_ref(), &observed).await;
            if restarted || reloaded {
                observed = self.pg.observe().await;
            }
        }
        self.notice_role_change(&observed);
        let primary = observed.db.as_ref().is_some_and(|d| !d.in_recovery);
        self.failsafe.set_candidate(primary || self.holds_lock());
        let member = self.member_data(&observed, cluster.as_ref());
        if let Some(c) = &cluster {
            if let Err(e) = self.dcs.touch_member(&member).await {
                tracing::warn!("cannot publish the member key: {e}");
            }
            if c.is_leader(&self.config.name) && self.holds_lock() {
                self.leader_duties(c, &observed).await;
            } else {
                self.sync.reset();
                if observed.db.as_ref().is_some_and(|d| d.in_recovery) {
                    self.replica_slot_duties(c, &observed).await;
                }
            }
        }
        if member.replication_state.as_deref() == Some("streaming") {
            self.node
                .handle(self.clock.now(), Outcome::StreamsFromLeader);
        }
        self.publish(cluster.as_ref(), observed, member);
        Ok(cluster.map(|c| c.watch_cursor.clone()))
    }

    /// What this cycle hands the state machine.
    fn inputs<'a>(
        &self,
        settings: &'a NodeSettings,
        cluster: Option<&'a Cluster>,
        local: &'a LocalPostgres,
        peers: &'a [PeerStatus],
        renew_failed: Option<String>,
        failsafe_round: Option<&'a ha::failsafe::Round>,
    ) -> Inputs<'a> {
        Inputs {
            settings,
            cluster,
            local,
            peers,
            renew_failed,
            wall_now: jiff::Timestamp::now(),
            unfenced: self.unfenced(),
            leader_unowned: cluster.is_some_and(|c| self.leader_unowned(c)),
            failsafe_round,
            failsafe_witness: self.failsafe.witness(),
        }
    }

    fn log_decision(&mut self, d: &Decision) {
        let actions: Vec<String> = d.actions.iter().map(ToString::to_string).collect();
        if actions.is_empty() {
            tracing::info!(target: "pgha::ha", rule = %d.rule, "{}", d.reason);
        } else {
            tracing::info!(target: "pgha::ha", rule = %d.rule, "{} [{}]", d.reason, actions.join(", "));
        }
        self.last_reason = d.reason.clone();
    }

    fn settings(&self) -> NodeSettings {
        let pg = &self.config.ha;
        NodeSettings {
            name: self.config.name.clone(),
            tags: self.config.tags.clone(),
            can_bootstrap: self.config.bootstrap.is_some(),
            can_clone_without_leader: self.config.postgresql.can_create_replica_without_leader(),
            new_cluster_refused: self
                .config
                .refused
                .iter()
                .chain(&self.unsupported)
                .map(ToString::to_string)
                .reduce(|a, b| format!("{a}; {b}")),
            use_pg_rewind: pg
                .use_pg_rewind
                .unwrap_or_else(|| self.dynamic.use_pg_rewind()),
            remove_data_directory_on_rewind_failure: pg
                .remove_data_directory_on_rewind_failure
                .unwrap_or_else(|| {
                    self.dynamic
                        .postgresql_flag("remove_data_directory_on_rewind_failure")
                }),
            remove_data_directory_on_diverged_timelines: pg
                .remove_data_directory_on_diverged_timelines
                .unwrap_or_else(|| {
                    self.dynamic
                        .postgresql_flag("remove_data_directory_on_diverged_timelines")
                }),
            maximum_lag_on_failover: self.dynamic.maximum_lag_on_failover(),
            // A standby cluster has no synchronous replication of its own
            // (Patroni ignores synchronous_mode there too).
            sync_mode: if self.dynamic.standby_cluster().is_some() {
                ha::SyncMode::Off
            } else {
                self.dynamic.sync_settings().mode
            },
            primary_start_timeout: Duration::from_secs(self.dynamic.primary_start_timeout()),
            paused: self.dynamic.pause(),
            failsafe_mode: self.dynamic.failsafe_mode(),
            not_streaming_limit: ha::not_streaming_limit(self.node.timing()),
            upstream_silence_limit: ha::upstream_silence_limit(self.node.timing()),
            standby_cluster: self.dynamic.standby_cluster().map(|s| s.source()),
            ttl: self.node.timing().ttl,
        }
    }

    fn use_slots(&self) -> bool {
        self.config
            .ha
            .use_slots
            .unwrap_or_else(|| self.dynamic.use_slots())
    }

    /// Adopts the cluster's dynamic configuration (keeping the last good one
    /// when it is unreadable) and its timings.
    fn adopt_dynamic(&mut self, cluster: &Cluster) {
        let Some(cfg) = &cluster.config else { return };
        if cfg.value == self.dynamic && self.dynamic_known {
            return;
        }
        self.dynamic_known = true;
        let review = cfg.value.review();
        for e in &review.errors {
            tracing::warn!("dynamic configuration: {e}; Patroni's default is used instead");
        }
        for w in &review.warnings {
            tracing::warn!("dynamic configuration: {w}");
        }
        self.unsupported = review.unsupported;
        let (timing, notes) = cfg.value.timing();
        for n in notes {
            tracing::warn!("dynamic configuration: {n}");
        }
        if timing != self.node.timing() {
            tracing::info!(
                "timings changed: ttl {:?}, loop_wait {:?}, retry_timeout {:?}",
                timing.ttl,
                timing.loop_wait,
                timing.retry_timeout
            );
            self.dcs.set_timing(timing);
            self.node.set_timing(timing);
        }
        self.dynamic = cfg.value.clone();
    }

    /// Notes who the members are: for their slots (`member_seen_at`) and,
    /// from a snapshot with `initialize`, for the race after the DCS lost
    /// the cluster's keys (`members_seen`).
    fn remember_members(&mut self, cluster: &Cluster) {
        let now = self.clock.now();
        for m in cluster
            .members
            .iter()
            .filter(|m| m.name != self.config.name)
        {
            self.member_seen_at.insert(files::slot_name(&m.name), now);
        }
        if cluster.initialize.is_some() {
            self.members_seen.clone_from(&cluster.members);
        }
    }

    /// One error line per cycle while the dynamic configuration sets keys
    /// pgha refuses (the cluster runs without what they ask for).
    fn report_unsupported(&self) {
        if self.unsupported.is_empty() {
            return;
        }
        let keys: Vec<String> = self.unsupported.iter().map(ToString::to_string).collect();
        tracing::error!(
            "the cluster's dynamic configuration asks for what pgha does not do, and the cluster runs \
             without it: {}; remove it with pghactl edit-config",
            keys.join("; ")
        );
    }

    /// The leader key is attached to no lease or session although this
    /// engine attaches every lock to one (see `ha::decide`, step 3b).
    fn leader_unowned(&self, cluster: &Cluster) -> bool {
        self.dcs.locks_have_owners() && cluster.leader.as_ref().is_some_and(|l| l.owner.is_none())
    }

    /// The members to ask in the leader race: the snapshot's, the last
    /// leader after an outage ([`HaNode::missing_leader_to_ask`]), and, when the
    /// DCS lost the cluster's keys under this node (no `initialize`, though
    /// this node saw it hold its data's system ID), the members of the last
    /// intact snapshot too. Their keys are gone for up to a loop, but a
    /// primary among them still runs and must be asked: without it, a
    /// replica would find nobody ahead and promote beside it.
    fn race_peers(&self, cluster: &Cluster) -> Vec<pgha_core::model::Member> {
        let mut members = cluster.members.clone();
        if let Some(l) = self.node.missing_leader_to_ask(self.clock.now(), cluster) {
            members.push(l.clone());
        }
        if cluster.initialize.is_none() && self.node.memory().belongs_to_cluster {
            for m in &self.members_seen {
                if cluster.member(&m.name).is_none() {
                    members.push(m.clone());
                }
            }
        }
        members
    }

    /// Keeps the cluster's dynamic configuration in the data directory
    /// (rewritten when it differs or the file is missing, e.g. after a
    /// clone).
    fn keep_dynamic_cache(&mut self, cluster: &Cluster) {
        let Some(cfg) = &cluster.config else { return };
        let data_dir = &self.config.postgresql.data_dir;
        if self.dynamic_cached.as_ref() == Some(&cfg.value)
            && data_dir.join(files::DYNAMIC_CACHE).exists()
        {
            return;
        }
        match files::write_dynamic_cache(data_dir, &cfg.value) {
            Ok(true) => self.dynamic_cached = Some(cfg.value.clone()),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!("cannot keep the dynamic configuration in the data directory: {e}")
            }
        }
    }

    /// What `decide` needs to know about PostgreSQL.
    fn local_view(&mut self, o: &Observed) -> LocalPostgres {
        let db = o.db.as_ref();
        let role = db.map(|d| {
            if d.in_recovery {
                PgRole::Replica
            } else {
                PgRole::Primary
            }
        });
        self.node
            .handle(self.clock.now(), Outcome::PostgresSeen { role });
        // A postmaster that is up but not answering yet is starting (or in
        // crash recovery), in the role its signal file says.
        let starting = (db.is_none() && o.postmaster.is_some()).then(|| {
            if self.pg.data_dir().join("standby.signal").exists() {
                PgRole::Replica
            } else {
                PgRole::Primary
            }
        });
        // A replica's timeline is what its WAL receiver received, else its
        // last restartpoint's: the latter lags (up to checkpoint_timeout)
        // behind a timeline it already replays, so a replica whose upstream
        // just died would look older than the cluster and stay out of the
        // race. The newest timeline seen for this data directory counts:
        // a data directory's timeline never goes back.
        let observed = db
            .and_then(|d| d.timeline)
            .or(o.controldata.as_ref().map(|c| c.timeline));
        let system_id = o.controldata.as_ref().map(|c| c.system_id.clone());
        let timeline = match (&system_id, observed, &self.timeline_seen) {
            (Some(id), Some(tl), Some((seen_id, seen))) if id == seen_id => Some(tl.max(*seen)),
            _ => observed,
        };
        self.timeline_seen = system_id.zip(timeline);
        LocalPostgres {
            data_dir: o.data_dir.clone(),
            running: db.is_some(),
            crashed: self.node.crashed(o.postmaster.is_some()),
            role,
            timeline,
            wal_position: db.and_then(|d| d.wal_position()),
            following: o.following.clone(),
            replication_state: db.and_then(|d| replication::state(d, None, None)),
            receiver_sender: db.and_then(replication::sender),
            configured_upstream: db.and_then(|d| d.configured_upstream.clone()),
            starting,
            replicate_from: self.replicate_from().map(String::from),
            archive_only: self.config.tags.nostream(),
        }
    }

    /// The member this node's `replicatefrom` tag names (not itself).
    pub(super) fn replicate_from(&self) -> Option<&str> {
        self.config
            .tags
            .replicatefrom()
            .filter(|from| *from != self.config.name)
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
            recovery: Vec::new(),
            archive_only: self.config.tags.nostream(),
        })
    }

    /// The upstream of a standby cluster's standby leader: the
    /// `standby_cluster` source, with its slot and recovery parameters.
    fn standby_source(&self) -> Result<Upstream, Failure> {
        let standby = self
            .dynamic
            .standby_cluster()
            .ok_or_else(|| Failure::Other("standby_cluster is no longer set".into()))?;
        Ok(Upstream {
            name: standby.source(),
            host: standby.host.clone().unwrap_or_default(),
            port: standby.port,
            slot: standby.primary_slot_name.clone(),
            recovery: standby.recovery_parameters(),
            archive_only: standby.host.is_none(),
        })
    }

    /// Calls `on_role_change` when PostgreSQL's role changed since the last cycle.
    fn notice_role_change(&mut self, o: &Observed) {
        let Some(db) = &o.db else { return };
        let role = if db.in_recovery { "replica" } else { "primary" };
        if self.last_role.as_deref().is_some_and(|r| r != role) {
            self.callbacks.fire("on_role_change", role);
        }
        self.last_role = Some(role.to_string());
    }

    fn publish(&mut self, cluster: Option<&Cluster>, observed: Observed, member: MemberData) {
        let failsafe_active = self.node.failsafe_active(self.clock.now())
            || self.failsafe.witness().is_some_and(|w| w.leader.is_some());
        if failsafe_active != self.failsafe_was_active {
            self.failsafe_was_active = failsafe_active;
            if failsafe_active {
                tracing::warn!("failsafe mode is active: {}", self.last_reason);
            } else {
                tracing::info!("failsafe mode is no longer active");
            }
        }
        // A primary in failsafe mode leads without a leader key (the DCS is
        // gone, or its key is being taken back): `/primary` must still
        // answer 200, or load balancers would take writes away from it.
        let holds_lock = self.holds_lock()
            && (cluster.is_some_and(|c| c.is_leader(&self.config.name))
                || self.node.failsafe_active(self.clock.now()));
        let status = NodeStatus {
            name: self.config.name.clone(),
            scope: self.config.scope().to_string(),
            cluster: cluster
                .map(|c| Arc::new(c.clone()))
                .or_else(|| self.status.borrow().cluster.clone()),
            dcs_last_seen: self.dcs_last_seen,
            observed: Some(observed),
            member,
            holds_lock,
            paused: self.dynamic.pause(),
            dynamic: self.dynamic.clone(),
            unsupported: self.unsupported.clone(),
            timing: self.node.timing(),
            last_cycle: Some(self.clock.now()),
            last_reason: self.last_reason.clone(),
            failsafe_active,
            fence_guard_up: matches!(self.guard.health(), GuardHealth::Up { .. }),
            lock_left: self
                .node
                .memory()
                .lock_deadline
                .filter(|_| holds_lock)
                .map(|d| d.saturating_sub(self.clock.now())),
            last_promotion: self.last_promotion,
        };
        self.status.send_replace(Arc::new(status));
    }

    /// A clean stop: PostgreSQL stops (a checkpoint first), then the lock is
    /// given up so a replica takes over at once instead of after `ttl`.
    async fn shut_down(&mut self) {
        if let Some(job) = self.job.take() {
            job.handle.abort();
        }
        if self.dynamic.pause() {
            // Maintenance mode: people are working on the database; leave it
            // running, and leave the lock to expire, as Patroni does.
            tracing::info!(
                "paused: PostgreSQL is left running and the leader lock is not released"
            );
            self.fence.disarm();
            self.guard.exit().await;
            return;
        }
        tracing::info!("shutting down: stopping PostgreSQL");
        let timeout = self.config.postgresql.pg_ctl_timeout;
        if let Err(e) = self.pg.stop(ShutdownMode::Fast, timeout).await {
            tracing::error!("stopping PostgreSQL failed: {e}");
        }
        self.fence.disarm();
        self.node.handle(self.clock.now(), Outcome::ShuttingDown);
        self.callbacks
            .fire("on_stop", self.last_role.as_deref().unwrap_or("replica"));
        let stopped = self.pg.observe().await;
        let member = self.member_data(&stopped, None);
        if let Err(e) = self.dcs.touch_member(&member).await {
            tracing::debug!("could not publish the stopped state: {e}");
        }
        if self.node.memory().lock_deadline.is_some() {
            match self.dcs.release_leader().await {
                Ok(()) | Err(DcsError::NotOwner { .. }) => {}
                Err(e) => tracing::warn!("could not release the leader lock: {e}"),
            }
        }
        self.guard.exit().await;
        tracing::info!("pgha stopped");
    }
}

/// How long to wait for a peer's `GET /patroni` during the leader race.
fn peer_timeout(t: Timing) -> Duration {
    (t.retry_timeout / 2).clamp(Duration::from_millis(500), Duration::from_secs(2))
}
