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
use pgha_core::ha::failsafe::{self, Round, Witness};
use pgha_core::ha::replication::{BROKEN_FIELD, published_state};
use pgha_core::ha::{
    ConfiguredUpstream, DataDir as HaDataDir, Decision, Endpoint, HaNode, Inputs, Job, JobResult,
    LocalPostgres, NodeSettings, Outcome, PeerSource, PeerStatus, PgRole, SyncKeeper, SyncMode,
    not_streaming_limit, upstream_silence_limit,
};
use pgha_core::model::{
    Cluster, DynamicConfig, Failsafe, Member, MemberData, PgState, Role, Status, Tags, Timing,
};
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
    /// Failsafe mode: the promise this member gave a primary (its
    /// FailsafeGate), on its own clock.
    pub witness: Option<Witness>,
    /// It holds or takes the lock, or runs as primary: it confirms nobody.
    pub candidate: bool,
    /// The `failsafe` key as last read or written.
    pub failsafe_key: Option<Failsafe>,
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
            witness: None,
            candidate: false,
            failsafe_key: None,
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
        if let Some(c) = &cluster {
            a.failsafe_key = c.failsafe.as_ref().map(|f| f.value.clone());
        }
        let mut renew_failed: Option<String> = None;
        let mut round: Option<Round> = None;
        for _ in 0..3 {
            let local = self.local_view(i, &mut a);
            let settings = self.settings(i, &a);
            if (cluster.is_none() || renew_failed.is_some())
                && round.is_none()
                && a.node.failsafe_round_due(self.local(i), &settings, &local)
            {
                round = Some(self.failsafe_round(i, &mut a));
            }
            let witness = self.witness(i, &a);
            let inputs = self.inputs(i, &settings, cluster.as_ref(), &local, &[], None);
            let inputs = Inputs {
                failsafe_witness: witness.clone(),
                ..inputs
            };
            a.node.observe(self.local(i), &inputs);
            let peers = match &cluster {
                Some(c) if a.node.needs_peers(c, &local) => {
                    let extra = a.node.missing_leader_to_ask(self.local(i), c).cloned();
                    self.peers(i, c, extra)
                }
                _ => Vec::new(),
            };
            let inputs = Inputs {
                failsafe_round: round.as_ref(),
                failsafe_witness: witness,
                ..self.inputs(
                    i,
                    &settings,
                    cluster.as_ref(),
                    &local,
                    &peers,
                    renew_failed.clone(),
                )
            };
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
        a.candidate = self.nodes[i].pg.is_primary() || a.node.holds_lock(self.local(i));
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
            // Set by the caller, which has the agent's memory.
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
            can_clone_without_leader: false,
            new_cluster_refused: None,
            use_pg_rewind: true,
            remove_data_directory_on_rewind_failure: true,
            remove_data_directory_on_diverged_timelines: false,
            maximum_lag_on_failover: a.dynamic.maximum_lag_on_failover(),
            sync_mode: mode,
            primary_start_timeout: Duration::from_secs(a.dynamic.primary_start_timeout()),
            paused: a.dynamic.pause(),
            failsafe_mode: a.dynamic.failsafe_mode(),
            ttl: timing.ttl,
            not_streaming_limit: not_streaming_limit(timing),
            upstream_silence_limit: if self.options.protections.silent_upstream {
                upstream_silence_limit(timing)
            } else {
                Duration::MAX
            },
            standby_cluster: None,
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
            replicate_from: None,
            archive_only: false,
        }
    }

    /// The promise node `i`'s agent gave, while it binds (none when the
    /// simulation runs without that protection).
    pub(crate) fn witness(&self, i: usize, a: &Agent) -> Option<Witness> {
        let now = self.local(i);
        a.witness
            .clone()
            .filter(|w| w.until > now && self.options.protections.failsafe_promise)
    }

    /// The primary's confirmation round (pgha-node's `confirm_round`):
    /// `POST /failsafe` to every other member of the last known key. A
    /// member confirms when the network links the two nodes, its agent
    /// runs, has failsafe mode on and is no candidate itself; confirming,
    /// it promises not to take the lock for its ttl. A member that does
    /// not answer costs the round's timeout.
    fn failsafe_round(&mut self, i: usize, a: &mut Agent) -> Round {
        let me = self.nodes[i].name.clone();
        let timing = a.node.timing();
        let sent = self.local(i);
        let Some(key) = a.failsafe_key.clone() else {
            return Round {
                impossible: Some("no failsafe key was read".into()),
                ..Round::default()
            };
        };
        if !key.0.contains_key(&me) {
            return Round {
                impossible: Some("the failsafe key does not name me".into()),
                ..Round::default()
            };
        }
        let mut round = Round::default();
        let mut silent = false;
        for name in key.0.keys().filter(|n| **n != me) {
            round.asked.push(name.clone());
            let j = self.index_of(name);
            let reachable = j
                .filter(|&j| self.linked(i, j) && self.nodes[j].agent_state == AgentState::Running);
            let Some(j) = reachable else {
                silent = true;
                round.refused.push((name.clone(), "no answer".into()));
                continue;
            };
            let now_j = self.local(j);
            let Some(b) = self.nodes[j].agent.as_mut() else {
                silent = true;
                round.refused.push((name.clone(), "no answer".into()));
                continue;
            };
            if !b.dynamic.failsafe_mode() {
                round.refused.push((name.clone(), "502".into()));
            } else if b.candidate {
                round
                    .refused
                    .push((name.clone(), "Running as a leader".into()));
            } else {
                let until = now_j + b.node.timing().ttl;
                if b.witness.as_ref().is_none_or(|w| w.until < until) {
                    b.witness = Some(Witness {
                        leader: Some(me.clone()),
                        until,
                    });
                }
            }
        }
        if silent {
            self.cycle_latency += failsafe::round_timeout(timing, a.dynamic.failsafe_timeout());
        }
        if round.confirmed() {
            a.node.handle(
                self.local(i),
                Outcome::FailsafeConfirmed {
                    sent,
                    valid_for: failsafe::window(timing),
                },
            );
            if let Some(deadline) = a.node.memory().lock_deadline {
                self.arm_agent(i, a, deadline);
            }
        }
        if self.tracing() {
            self.trace(format!("{me}: failsafe round: {}", round.describe()));
        }
        round
    }

    /// The other members, as `GET /patroni` answers when reachable (the
    /// agent runs and the network links the two nodes: its last cycle's
    /// status with PostgreSQL's role and WAL position read now), else as
    /// their member keys say.
    fn peers(&self, i: usize, cluster: &Cluster, extra: Option<Member>) -> Vec<PeerStatus> {
        let me = &self.nodes[i].name;
        cluster
            .members
            .iter()
            .chain(extra.as_ref())
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
                    takes_lock_back: data.extra.get(failsafe::TAKEBACK_FIELD)
                        == Some(&Value::Bool(true)),
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
            _ if a.node.memory().start_failed.is_some() => PgState::StartFailed,
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
            replicate_from: None,
            archive_only: false,
        };
        data.replication_state = published_state(&local, cluster);
        let now = self.local(i);
        if a.node.memory().checkpoint_pending && a.node.holds_lock(now) {
            data.checkpoint_after_promote = Some(false);
        }
        if a.dynamic.pause() {
            data.pause = Some(true);
        }
        if a.node.takes_lock_back(&self.settings(i, a)) {
            data.extra
                .insert(failsafe::TAKEBACK_FIELD.into(), Value::Bool(true));
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
