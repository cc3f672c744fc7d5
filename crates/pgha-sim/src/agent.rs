//! The simulated agent: the shell around the real [`HaNode`] state
//! machine, as `pgha-node`'s HA loop is, with the simulated PostgreSQL and
//! DCS links in place of processes and sockets.
//!
//! One cycle: reap a finished job, read the cluster, observe PostgreSQL,
//! ask the peers when the leader race needs them, [`HaNode::decide`],
//! carry the actions out (reporting every result to the state machine),
//! publish the member key, do the leader's duties (`status`, `history`,
//! synchronous replication through the real [`SyncKeeper`]), and sleep
//! until [`HaNode::poll_timeout`] or a change of the leader key. The
//! decisions, the HA memory and the synchronous-replication choices are
//! pgha-core's own code; this module is only the plumbing, kept as close
//! to `pgha-node::ha_loop` as a model allows (what it leaves out: slots,
//! callbacks, restarts and configuration reloads, the watchdog).

use std::time::Duration;

use pgha_core::dcs::Dcs;
use pgha_core::dcs::memory::MemoryDcs;
use pgha_core::ha::replication::{BROKEN_FIELD, published_state};
use pgha_core::ha::{
    ConfiguredUpstream, DataDir as HaDataDir, Decision, Endpoint, HaNode, Inputs, Job, JobResult,
    LocalPostgres, NodeSettings, Outcome, PeerSource, PeerStatus, PgRole, SyncKeeper, SyncMode,
    not_streaming_limit,
};
use pgha_core::model::{Cluster, DynamicConfig, MemberData, PgState, Role, Status, Tags, Timing};
use serde_json::Value;

use crate::postgres::{DataDir, Process};
use crate::world::{AgentState, Event, GUARD_GRACE, World, node_name};

mod execute;
mod leader;

/// Steps of synchronous-replication upkeep per cycle at most (as the HA
/// loop's).
const MAX_SYNC_STEPS: usize = 8;

/// One agent process's memory.
#[derive(Debug)]
pub(crate) struct Agent {
    pub node: HaNode,
    pub dcs: MemoryDcs,
    pub dynamic: DynamicConfig,
    pub sync: SyncKeeper,
    pub job: Option<RunningJob>,
    /// What the REST API answers (the last cycle's member data).
    pub last_member: Option<MemberData>,
    pub last_decision: Option<String>,
    /// The agent sleeps on a watch of the leader key.
    pub watching: bool,
    /// When (true time) the next cycle is due.
    pub next_wake: Duration,
    /// The deadline the in-process fence is armed with (node clock).
    pub fence_deadline: Option<Duration>,
    /// `POST /restart` was asked, and the start will take this long.
    pub restart_requested: Option<Duration>,
    last_status: Option<Status>,
}

#[derive(Clone, Debug)]
pub(crate) struct RunningJob {
    pub kind: Job,
    pub serial: u64,
    pub result: Option<JobResult>,
}

/// Why an action failed (the HA loop's `Failure`).
enum Failure {
    Lock { why: String, stale: bool },
    Exit(String),
    LostRace,
    Other,
}

impl Agent {
    pub fn new(dcs: MemoryDcs, bootstrap: DynamicConfig, timing: Timing) -> Self {
        Agent {
            node: HaNode::new(timing),
            dcs,
            dynamic: bootstrap,
            sync: SyncKeeper::default(),
            job: None,
            last_member: None,
            last_decision: None,
            watching: false,
            next_wake: Duration::ZERO,
            fence_deadline: None,
            restart_requested: None,
            last_status: None,
        }
    }
}

fn endpoint(i: usize) -> Endpoint {
    Endpoint::new(node_name(i), 5432)
}

impl World {
    /// One cycle of node `i`'s agent.
    pub(crate) fn cycle(&mut self, i: usize) {
        let Some(mut a) = self.nodes[i].agent.take() else {
            return;
        };
        self.cycle_latency = Duration::ZERO;
        a.node.begin_cycle(self.local(i));
        if let Some(result) = a.job.as_ref().and_then(|j| j.result)
            && let Some(job) = a.job.take()
        {
            a.node
                .handle(self.local(i), Outcome::JobEnded(job.kind, result));
        }
        let mut cluster = self.call(i, &a.dcs, "load", |d| d.load()).ok();
        if let Some(cfg) = cluster.as_ref().and_then(|c| c.config.as_ref())
            && cfg.value != a.dynamic
        {
            a.dynamic = cfg.value.clone();
        }
        let mut renew_failed: Option<String> = None;
        for _ in 0..3 {
            let local = self.local_view(i, &mut a);
            let settings = self.settings(i, &a);
            let inputs = self.inputs(i, &settings, cluster.as_ref(), &local, &[], None);
            a.node.observe(self.local(i), &inputs);
            let peers = match &cluster {
                Some(c) if a.node.needs_peers(c, &local) => self.peers(i, c),
                _ => Vec::new(),
            };
            let inputs = self.inputs(
                i,
                &settings,
                cluster.as_ref(),
                &local,
                &peers,
                renew_failed.clone(),
            );
            let d = a.node.decide(self.local(i), inputs);
            self.log_decision(i, &mut a, &d);
            if d.actions.is_empty() {
                break;
            }
            match self.execute(i, &mut a, &d.actions, cluster.as_ref()) {
                Ok(()) => break,
                Err(Failure::Lock { why, stale }) if renew_failed.is_none() => {
                    renew_failed = Some(why);
                    if stale && let Ok(fresh) = self.call(i, &a.dcs, "load", |d| d.load()) {
                        cluster = Some(fresh);
                    }
                }
                Err(Failure::Exit(reason)) => {
                    self.agent_dies(i, &format!("refused to go on: {reason}"));
                    self.schedule(
                        self.t + Duration::from_secs(5),
                        Event::AgentStart { node: i },
                    );
                    self.cycle_latency = Duration::ZERO;
                    return;
                }
                Err(_) => break,
            }
        }
        if a.job.is_none() && renew_failed.is_none() {
            self.start_requested_restart(i, &mut a);
        }
        let member = self.member_data(i, &a, cluster.as_ref());
        if let Some(c) = &cluster {
            let _ = self.call(i, &a.dcs, "touch_member", |d| d.touch_member(&member));
            if c.is_leader(&self.nodes[i].name) && a.node.holds_lock(self.local(i)) {
                self.leader_duties(i, &mut a, c);
            } else {
                a.sync.reset();
            }
        }
        if member.replication_state.as_deref() == Some("streaming") {
            a.node.handle(self.local(i), Outcome::StreamsFromLeader);
        }
        a.last_member = Some(member);
        let now = self.local(i);
        let wake_local = a.node.poll_timeout(now);
        a.watching = cluster.is_some() && !a.node.holds_lock(now);
        let earliest = self.t + self.cycle_latency + Duration::from_millis(10);
        let at = self.nodes[i].clock.global(wake_local).max(earliest);
        self.cycle_latency = Duration::ZERO;
        self.nodes[i].agent = Some(a);
        self.schedule_wake(i, at);
    }

    fn log_decision(&mut self, i: usize, a: &mut Agent, d: &Decision) {
        if !self.tracing() {
            return;
        }
        let actions: Vec<String> = d.actions.iter().map(ToString::to_string).collect();
        let line = if actions.is_empty() {
            format!("[{}] {}", d.rule, d.reason)
        } else {
            format!("[{}] {} [{}]", d.rule, d.reason, actions.join(", "))
        };
        if a.last_decision.as_deref() != Some(line.as_str()) || !actions.is_empty() {
            let name = self.nodes[i].name.clone();
            self.trace(format!("{name}: {line}"));
        }
        a.last_decision = Some(line);
    }

    fn inputs<'a>(
        &self,
        i: usize,
        settings: &'a NodeSettings,
        cluster: Option<&'a Cluster>,
        local: &'a LocalPostgres,
        peers: &'a [PeerStatus],
        renew_failed: Option<String>,
    ) -> Inputs<'a> {
        let g = &self.nodes[i].guard;
        let unfenced = if g.alive || !self.options.protections.fences {
            None
        } else {
            g.down_since
                .filter(|since| self.local(i).saturating_sub(*since) >= GUARD_GRACE)
                .map(|_| "the fence guard is not running".to_string())
        };
        Inputs {
            settings,
            cluster,
            local,
            peers,
            renew_failed,
            wall_now: jiff::Timestamp::UNIX_EPOCH
                + jiff::SignedDuration::try_from(self.t).unwrap_or_default(),
            unfenced,
            leader_unowned: cluster
                .is_some_and(|c| c.leader.as_ref().is_some_and(|l| l.owner.is_none())),
            // Failsafe mode is not simulated yet.
            failsafe_round: None,
            failsafe_witness: None,
        }
    }

    fn settings(&self, i: usize, a: &Agent) -> NodeSettings {
        let timing = a.node.timing();
        let mode = if self.options.protections.sync_race {
            a.dynamic.sync_settings().mode
        } else {
            SyncMode::Off
        };
        NodeSettings {
            name: self.nodes[i].name.clone(),
            tags: Tags::default(),
            can_bootstrap: true,
            new_cluster_refused: None,
            use_pg_rewind: true,
            remove_data_directory_on_rewind_failure: true,
            remove_data_directory_on_diverged_timelines: false,
            maximum_lag_on_failover: a.dynamic.maximum_lag_on_failover(),
            sync_mode: mode,
            primary_start_timeout: Duration::from_secs(a.dynamic.primary_start_timeout()),
            paused: a.dynamic.pause(),
            failsafe_mode: false,
            ttl: timing.ttl,
            not_streaming_limit: not_streaming_limit(timing),
        }
    }

    /// What `decide` sees of the local PostgreSQL (the HA loop's
    /// `local_view`).
    fn local_view(&mut self, i: usize, a: &mut Agent) -> LocalPostgres {
        let pg = &self.nodes[i].pg;
        let role = match pg.process {
            Process::Up(r) => Some(r),
            _ => None,
        };
        let now = self.local(i);
        a.node.handle(now, Outcome::PostgresSeen { role });
        let data_dir = match &pg.data {
            Some(d) => HaDataDir::Initialized {
                system_id: d.system_id.to_string(),
                was_primary: d.was_primary,
                timeline: d.timeline(),
            },
            None => HaDataDir::Empty,
        };
        let replica = pg.is_replica();
        LocalPostgres {
            data_dir,
            running: role.is_some(),
            crashed: a.node.crashed(pg.process != Process::Down),
            role,
            timeline: pg.data.as_ref().map(DataDir::timeline),
            wal_position: pg
                .data
                .as_ref()
                .filter(|_| role.is_some())
                .map(DataDir::lsn),
            following: pg.follows.map(node_name),
            replication_state: pg
                .streaming_from
                .filter(|_| replica)
                .map(|_| "streaming".to_string()),
            receiver_sender: pg.streaming_from.filter(|_| replica).map(endpoint),
            configured_upstream: replica.then(|| {
                pg.follows.map_or(ConfiguredUpstream::Nowhere, |u| {
                    ConfiguredUpstream::At(endpoint(u))
                })
            }),
            starting: match pg.process {
                Process::Starting(r) => Some(r),
                _ => None,
            },
        }
    }

    /// The other members, as `GET /patroni` answers when reachable (the
    /// agent runs and the network links the two nodes: its last cycle's
    /// status with PostgreSQL's role and WAL position read now), else as
    /// their member keys say.
    fn peers(&self, i: usize, cluster: &Cluster) -> Vec<PeerStatus> {
        let me = &self.nodes[i].name;
        cluster
            .members
            .iter()
            .filter(|m| &m.name != me)
            .map(|m| {
                let rest = self.index_of(&m.name).and_then(|j| {
                    let n = &self.nodes[j];
                    let mut d = (n.agent_state == AgentState::Running && self.linked(i, j))
                        .then(|| n.agent.as_ref().and_then(|a| a.last_member.clone()))
                        .flatten()?;
                    if let (Process::Up(role), Some(data), true) =
                        (n.pg.process, &n.pg.data, d.is_running())
                    {
                        d.xlog_location = Some(data.lsn());
                        d.timeline = Some(data.timeline());
                        d.role = Some(match role {
                            PgRole::Primary => Role::Primary,
                            PgRole::Replica => Role::Replica,
                        });
                    }
                    Some(d)
                });
                let (data, source) = match &rest {
                    Some(d) => (d, PeerSource::Rest),
                    None => (&m.data, PeerSource::MemberKey),
                };
                PeerStatus {
                    name: m.name.clone(),
                    source,
                    is_primary: data.is_running()
                        && data.role.as_ref().is_some_and(Role::is_primary),
                    running: data.is_running(),
                    starting: data.state == Some(PgState::Starting),
                    wal_position: data.xlog_location,
                    timeline: data.timeline,
                    nofailover: data.tags.nofailover(),
                    failover_priority: data.tags.failover_priority(),
                    replication_broken: data.extra.get(BROKEN_FIELD) == Some(&Value::Bool(true)),
                }
            })
            .collect()
    }

    /// The member key (the HA loop's `member_data`).
    fn member_data(&self, i: usize, a: &Agent, cluster: Option<&Cluster>) -> MemberData {
        let pg = &self.nodes[i].pg;
        let name = &self.nodes[i].name;
        let state = match (&a.node.memory().job, pg.process) {
            (Some(Job::Bootstrap), _) => PgState::InitializingNewCluster,
            (Some(Job::Clone { .. } | Job::Reinitialize { .. }), _) => PgState::CreatingReplica,
            (_, Process::Up(_)) => PgState::Running,
            (_, Process::Starting(_)) => PgState::Starting,
            _ if a.node.memory().start_failed => PgState::StartFailed,
            _ if a.node.memory().expect_running => PgState::Crashed,
            _ => PgState::Stopped,
        };
        let role = match (pg.process, &pg.data) {
            (Process::Up(PgRole::Primary), _) => Role::Primary,
            (Process::Up(PgRole::Replica), _) => Role::Replica,
            (_, None) => Role::Uninitialized,
            _ if a.node.memory().demoted => Role::Demoted,
            (_, Some(d)) if d.was_primary => Role::Primary,
            _ => Role::Replica,
        };
        let mut data = MemberData {
            conn_url: Some(format!("postgres://{name}:5432/postgres")),
            api_url: Some(format!("http://{name}:8008/patroni")),
            state: Some(state),
            role: Some(role),
            ..Default::default()
        };
        if let Some(d) = &pg.data {
            data.xlog_location = Some(d.lsn());
            data.timeline = Some(d.timeline());
        }
        let local = LocalPostgres {
            data_dir: HaDataDir::Empty,
            running: pg.is_up(),
            crashed: false,
            role: match pg.process {
                Process::Up(r) => Some(r),
                _ => None,
            },
            timeline: None,
            wal_position: None,
            following: None,
            replication_state: pg
                .streaming_from
                .filter(|_| pg.is_replica())
                .map(|_| "streaming".into()),
            receiver_sender: pg.streaming_from.filter(|_| pg.is_replica()).map(endpoint),
            configured_upstream: None,
            starting: None,
        };
        data.replication_state = published_state(&local, cluster);
        let now = self.local(i);
        if a.node.memory().checkpoint_pending && a.node.holds_lock(now) {
            data.checkpoint_after_promote = Some(false);
        }
        if a.dynamic.pause() {
            data.pause = Some(true);
        }
        if data.replication_state.is_some()
            && a.node
                .memory()
                .streaming
                .broken(not_streaming_limit(a.node.timing()))
        {
            data.extra.insert(BROKEN_FIELD.into(), Value::Bool(true));
        }
        data
    }
}
