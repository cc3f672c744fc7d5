//! The simulated world: the nodes (PostgreSQL model, agent, fence guard),
//! the in-memory DCS, the network, the client, and the event queue that
//! moves true time.
//!
//! Everything happens at an event's instant, in the order the queue (true
//! time, then insertion order) gives; nothing else is a source of order,
//! so a seed replays exactly.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pgha_core::dcs::DcsError;
use pgha_core::dcs::memory::{MemoryDcs, MemoryStore};
use pgha_core::model::{DynamicConfig, KeyLayout};
use serde_json::{Value, json};

use crate::agent::Agent;
use crate::invariants::Violation;
use crate::postgres::Postgres;
use crate::rng::Rng;
use crate::scenario::{Mode, Scenario};
use crate::time::{NodeClock, TrueClock};

/// How often replication, the client and the DCS watch move.
pub const TICK: Duration = Duration::from_millis(100);

/// How long before the lock's end the fence guard stops a primary whose
/// agent went silent (pgha-node's `GUARD_MARGIN`).
pub const GUARD_MARGIN: Duration = Duration::from_millis(500);

/// How long the guard may be down before the node counts as unfenced
/// (pgha-node's `GUARD_GRACE`).
pub const GUARD_GRACE: Duration = Duration::from_secs(2);

/// The protections a simulation runs with. Each can be switched off to
/// show that the simulator finds what it guards against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protections {
    /// The in-process fence and the fence guard.
    pub fences: bool,
    /// `decide` is told the synchronous mode (off: it races as if
    /// asynchronous, while the leader still manages synchronous commit).
    pub sync_race: bool,
    /// A member that confirmed a primary in failsafe mode keeps its promise
    /// not to take the lock (off: it confirms, and races all the same).
    pub failsafe_promise: bool,
    /// A replica stops counting its not-streaming time when its upstream's
    /// member key is no longer rewritten (off: it counts for as long as
    /// the key says the upstream runs, however stale).
    pub silent_upstream: bool,
}

impl Default for Protections {
    fn default() -> Self {
        Protections {
            fences: true,
            sync_race: true,
            failsafe_promise: true,
            silent_upstream: true,
        }
    }
}

/// How a simulation runs.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Print every trace line as it happens (a replay).
    pub trace: bool,
    /// Keep the last trace lines for the report. A sweep runs without
    /// (formatting every decision costs a third of the time) and runs a
    /// failing seed again with them: it replays exactly.
    pub record: bool,
    pub protections: Protections,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            trace: false,
            record: true,
            protections: Protections::default(),
        }
    }
}

/// The agent process of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AgentState {
    Running,
    Frozen,
    Dead,
}

/// The fence guard process of a node.
#[derive(Clone, Debug, Default)]
pub(crate) struct Guard {
    pub alive: bool,
    /// The lock deadline (node clock) the agent last told it.
    pub deadline: Option<Duration>,
    /// Since when (node clock) it has been down while its agent ran.
    pub down_since: Option<Duration>,
    pub serial: u64,
}

/// One node's link to the DCS; counts, so overlapping faults heal in turn.
#[derive(Clone, Debug, Default)]
pub(crate) struct Link {
    pub down: u32,
    pub lossy: u32,
    pub latency: Duration,
}

pub(crate) struct Node {
    pub name: String,
    pub clock: NodeClock,
    pub pg: Postgres,
    pub agent: Option<Box<Agent>>,
    pub agent_state: AgentState,
    /// Changes whenever the agent starts or dies: events of an earlier
    /// incarnation are stale.
    pub incarnation: u64,
    pub guard: Guard,
    pub link: Link,
    pub host_up: bool,
    /// The host crashed for good ([`Scenario::leader_host_lost`]): it is
    /// not expected to rejoin.
    ///
    /// [`Scenario::leader_host_lost`]: crate::scenario::Scenario::leader_host_lost
    pub lost: bool,
    /// The next pg_rewind fails.
    pub rewind_fails: bool,
    /// Changes at every start, stop and promotion of PostgreSQL: a
    /// completion scheduled before is stale.
    pub pg_op: u64,
    /// The fence guard's own DCS client (a second client of the member).
    pub guard_dcs: Arc<MemoryDcs>,
}

#[derive(Clone, Debug)]
pub(crate) enum Event {
    Tick,
    Wake {
        node: usize,
        incarnation: u64,
    },
    PgReady {
        node: usize,
        op: u64,
    },
    PgPromoted {
        node: usize,
        op: u64,
        /// The lowest timeline it may take (above every one the cluster used).
        at_least: u64,
    },
    JobDone {
        node: usize,
        incarnation: u64,
        serial: u64,
    },
    Fence {
        node: usize,
        incarnation: u64,
        deadline: Duration,
    },
    GuardFence {
        node: usize,
        serial: u64,
        deadline: Duration,
    },
    Fault(usize),
    Heal(usize),
    HealAll,
    AgentStart {
        node: usize,
    },
    GuardStart {
        node: usize,
    },
    Unfreeze {
        node: usize,
        incarnation: u64,
    },
    Boot {
        node: usize,
    },
    Unpause,
}

#[derive(Debug)]
struct Scheduled {
    at: Duration,
    pub(crate) seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// What one schedule did.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub scenario: String,
    pub violation: Option<Violation>,
    /// The last trace lines (all of them in a replay).
    pub trace_tail: Vec<String>,
    /// Simulated time at the end.
    pub ended_at: Duration,
    /// How long after the last fault healed the cluster converged.
    pub converged_after: Option<Duration>,
    pub commits: u64,
    pub acknowledged: usize,
    pub events: u64,
}

/// The trace lines kept for a failure report outside a replay.
const TRACE_KEEP: usize = 300;

pub(crate) struct World {
    pub scenario: Scenario,
    pub options: Options,
    pub t: Duration,
    pub clock: TrueClock,
    pub store: MemoryStore,
    pub layout: KeyLayout,
    pub operator: MemoryDcs,
    pub nodes: Vec<Node>,
    /// `cut[i][j] > 0`: nodes i and j cannot reach each other.
    pub cut: Vec<Vec<u32>>,
    pub dcs_outage: u32,
    pub rng: Rng,
    queue: BinaryHeap<Reverse<Scheduled>>,
    pub(crate) seq: u64,
    pub next_commit: u64,
    pub next_marker: u64,
    pub acked: Vec<u64>,
    pub commits: u64,
    pub job_serial: u64,
    pub leader_rev: i64,
    pub bootstrap: DynamicConfig,
    /// Latency spent so far by the DCS calls of the cycle running now.
    pub cycle_latency: Duration,
    pub violation: Option<Violation>,
    pub(crate) trace: VecDeque<String>,
    pub(crate) healed_at: Option<Duration>,
    /// When the cluster was first seen converged (for a leader's host
    /// lost afterwards, see [`crate::scenario::Scenario::leader_host_lost`]).
    pub(crate) converged_since: Option<Duration>,
    /// The sync key last seen by the convergence check, and since when.
    pub(crate) sync_key_seen: Option<(String, Duration)>,
    pub(crate) converged_after: Option<Duration>,
    pub(crate) events: u64,
    pub(crate) paused_by_fault: bool,
}

/// Runs a future that cannot wait (the in-memory DCS answers at once when
/// no delay is injected into it, and the simulation injects delays
/// itself).
pub(crate) fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("an in-memory DCS call without injected delay waited"),
    }
}

/// The member name of node `i`.
pub fn node_name(i: usize) -> String {
    format!("node{}", i + 1)
}

impl World {
    pub fn new(scenario: Scenario, options: Options) -> Self {
        let clock = TrueClock::default();
        let store = MemoryStore::with_clock(Arc::new(clock.clone()));
        store.set_revocation_delay(scenario.revocation_delay);
        let layout = KeyLayout::new("/service", &format!("sim-{}", scenario.seed));
        let timing = scenario.timing;
        let mut bootstrap = serde_json::Map::new();
        bootstrap.insert("ttl".into(), json!(timing.ttl.as_secs()));
        bootstrap.insert("loop_wait".into(), json!(timing.loop_wait.as_secs()));
        bootstrap.insert(
            "retry_timeout".into(),
            json!(timing.retry_timeout.as_secs()),
        );
        if scenario.failsafe {
            bootstrap.insert("failsafe_mode".into(), Value::Bool(true));
        }
        match scenario.mode {
            Mode::Async => {}
            Mode::On => {
                bootstrap.insert("synchronous_mode".into(), Value::Bool(true));
            }
            Mode::Strict => {
                bootstrap.insert("synchronous_mode".into(), Value::Bool(true));
                bootstrap.insert("synchronous_mode_strict".into(), Value::Bool(true));
            }
            Mode::Quorum => {
                bootstrap.insert("synchronous_mode".into(), json!("quorum"));
            }
        }
        let nodes = (0..scenario.nodes)
            .map(|i| Node {
                name: node_name(i),
                clock: scenario.clocks[i],
                pg: Postgres::empty(),
                agent: None,
                agent_state: AgentState::Dead,
                incarnation: 0,
                guard: Guard::default(),
                link: Link::default(),
                host_up: true,
                rewind_fails: false,
                lost: false,
                pg_op: 0,
                guard_dcs: Arc::new(store.client(layout.clone(), &node_name(i), timing)),
            })
            .collect();
        let operator = store.client(layout.clone(), "operator", timing);
        let n = scenario.nodes;
        let rng = Rng::new(scenario.seed ^ 0x005E_ED0F_FA17);
        World {
            options,
            t: Duration::ZERO,
            clock,
            store,
            layout,
            operator,
            nodes,
            cut: vec![vec![0; n]; n],
            dcs_outage: 0,
            rng,
            queue: BinaryHeap::new(),
            seq: 0,
            next_commit: 1,
            next_marker: 1 << 62,
            acked: Vec::new(),
            commits: 0,
            job_serial: 0,
            leader_rev: 0,
            bootstrap: DynamicConfig::from_map(bootstrap),
            cycle_latency: Duration::ZERO,
            violation: None,
            trace: VecDeque::new(),
            healed_at: None,
            converged_since: None,
            sync_key_seen: None,
            converged_after: None,
            events: 0,
            paused_by_fault: false,
            scenario,
        }
    }

    pub fn schedule(&mut self, at: Duration, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at: at.max(self.t),
            seq: self.seq,
            event,
        }));
    }

    pub fn tracing(&self) -> bool {
        self.options.trace || self.options.record
    }

    pub fn trace(&mut self, line: String) {
        if !self.tracing() {
            return;
        }
        let line = format!("{:>10.3} {line}", self.t.as_secs_f64());
        if self.options.trace {
            println!("{line}");
        }
        if self.trace.len() == TRACE_KEEP {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    /// Node `i`'s clock now.
    pub fn local(&self, i: usize) -> Duration {
        self.nodes[i].clock.local(self.t)
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.name.eq_ignore_ascii_case(name))
    }

    /// Whether nodes `i` and `j` reach each other.
    pub fn linked(&self, i: usize, j: usize) -> bool {
        i == j || (self.nodes[i].host_up && self.nodes[j].host_up && self.cut[i][j] == 0)
    }

    pub fn dcs_reachable(&self, i: usize) -> bool {
        self.dcs_outage == 0 && self.nodes[i].link.down == 0
    }

    /// One DCS call by node `i` over its link, with the link's faults: a
    /// refused link fails at once; a lossy one loses the request (no
    /// effect) or the reply (effect, but the caller sees a failure); a slow
    /// one takes its latency, and past `retry_timeout` times out, having
    /// reached the server or not. A cycle's calls all take effect at the
    /// instant the cycle runs, which is also the agent's clock reading for
    /// them (so a lease is never longer than the caller believes); their
    /// latency delays the agent's next cycle.
    pub fn call<'a, T, F>(
        &mut self,
        i: usize,
        dcs: &'a MemoryDcs,
        op: &'static str,
        f: impl FnOnce(&'a MemoryDcs) -> F,
    ) -> Result<T, DcsError>
    where
        F: Future<Output = Result<T, DcsError>>,
    {
        if !self.dcs_reachable(i) {
            return Err(DcsError::unreachable(op, "connection refused"));
        }
        let retry = self.scenario.timing.retry_timeout;
        let latency = self.nodes[i].link.latency;
        if self.nodes[i].link.lossy > 0 && self.rng.chance(0.3) {
            self.cycle_latency += retry;
            return Err(DcsError::unreachable(op, "request lost"));
        }
        let timed_out = latency >= retry;
        if timed_out && self.rng.chance(0.5) {
            self.cycle_latency += retry;
            return Err(DcsError::unreachable(op, "request timed out"));
        }
        let result = ready(f(dcs));
        if timed_out {
            self.cycle_latency += retry;
            return Err(DcsError::unreachable(
                op,
                "request timed out after it was sent",
            ));
        }
        self.cycle_latency += latency;
        if self.nodes[i].link.lossy > 0 && self.rng.chance(0.2) {
            return Err(DcsError::unreachable(op, "reply lost"));
        }
        result
    }

    /// Runs the schedule to its end: a violation, convergence after the
    /// last fault healed, or the convergence bound.
    pub fn run(mut self) -> Report {
        let start_spread = Duration::from_secs(2);
        for i in 0..self.nodes.len() {
            let at = self.rng.between(Duration::ZERO, start_spread);
            self.schedule(at, Event::AgentStart { node: i });
        }
        for k in 0..self.scenario.faults.len() {
            let at = self.scenario.faults[k].at;
            self.schedule(at, Event::Fault(k));
        }
        let until = self.scenario.faults_until;
        self.schedule(until, Event::HealAll);
        self.schedule(Duration::ZERO, Event::Tick);
        while let Some(Reverse(s)) = self.queue.pop() {
            // From the last heal, or from the loss of a leader's host.
            let healed_at = self.healed_at.unwrap_or(until);
            let deadline = healed_at + self.scenario.convergence_bound();
            if s.at > deadline {
                self.t = deadline;
                let state = self.describe();
                self.violation = Some(Violation::NoConvergence {
                    healed_at,
                    bound: self.scenario.convergence_bound(),
                    state,
                });
                break;
            }
            self.t = s.at;
            self.clock.set(self.t);
            self.events += 1;
            self.handle(s.event);
            if self.violation.is_none() {
                self.check_primaries();
            }
            if self.violation.is_some() || self.converged_after.is_some() {
                break;
            }
        }
        if let Some(v) = &self.violation {
            self.trace(format!("VIOLATION: {v}"));
        }
        Report {
            seed: self.scenario.seed,
            scenario: self.scenario.to_string(),
            violation: self.violation.clone(),
            trace_tail: self.trace.iter().cloned().collect(),
            ended_at: self.t,
            converged_after: self.converged_after,
            commits: self.commits,
            acknowledged: self.acked.len(),
            events: self.events,
        }
    }

    pub(crate) fn handle(&mut self, event: Event) {
        match event {
            Event::Tick => self.tick(),
            Event::Wake { node, incarnation } => {
                let n = &self.nodes[node];
                let due = n.incarnation == incarnation
                    && n.agent_state == AgentState::Running
                    && n.agent.as_ref().is_some_and(|a| a.next_wake == self.t);
                if due {
                    self.cycle(node);
                }
            }
            Event::PgReady { node, op } => self.pg_ready(node, op),
            Event::PgPromoted { node, op, at_least } => self.pg_promoted(node, op, at_least),
            Event::JobDone {
                node,
                incarnation,
                serial,
            } => self.job_done(node, incarnation, serial),
            Event::Fence {
                node,
                incarnation,
                deadline,
            } => self.fence(node, incarnation, deadline),
            Event::GuardFence {
                node,
                serial,
                deadline,
            } => self.guard_fence(node, serial, deadline),
            Event::Fault(k) => {
                let fault = self.scenario.faults[k].fault.clone();
                self.apply(k, &fault);
            }
            Event::Heal(k) => {
                let fault = self.scenario.faults[k].fault.clone();
                self.heal(&fault);
            }
            Event::HealAll => self.heal_all(),
            Event::AgentStart { node } => self.agent_start(node),
            Event::GuardStart { node } => self.guard_start(node),
            Event::Unfreeze { node, incarnation } => self.unfreeze(node, incarnation),
            Event::Boot { node } => self.boot(node),
            Event::Unpause => {
                if !self.set_pause(false) && self.paused_by_fault {
                    // The DCS is out: the operator tries again.
                    self.schedule(self.t + Duration::from_secs(5), Event::Unpause);
                }
            }
        }
    }
}
