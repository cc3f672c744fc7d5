//! The processes of a node: its agent (killed, frozen, restarted), its
//! fence guard, the in-process fence, and the host itself.

use std::time::Duration;

use pgha_core::dcs::Dcs;
use pgha_core::ha::failsafe::Witness;
use pgha_core::ha::{FENCE_MARGIN, PgRole};

use crate::agent::Agent;
use crate::postgres::Process;
use crate::world::{AgentState, Event, GUARD_MARGIN, World};

impl World {
    // --- fences

    /// The agent holds the lock until `deadline` (its clock): arm the
    /// in-process fence and tell the guard (outside a cycle: the agent is
    /// in its node).
    pub fn arm(&mut self, i: usize, deadline: Duration) {
        if !self.options.protections.fences {
            return;
        }
        let incarnation = self.nodes[i].incarnation;
        let clock = self.nodes[i].clock;
        if let Some(a) = self.nodes[i].agent.as_mut() {
            a.fence_deadline = Some(deadline);
        }
        self.schedule(
            clock.global(deadline.saturating_sub(FENCE_MARGIN)),
            Event::Fence {
                node: i,
                incarnation,
                deadline,
            },
        );
        self.arm_guard(i, deadline);
    }

    /// Tells a running guard the lock deadline; it stops a writable
    /// PostgreSQL `GUARD_MARGIN` before it unless told a later one.
    pub fn arm_guard(&mut self, i: usize, deadline: Duration) {
        let clock = self.nodes[i].clock;
        let g = &mut self.nodes[i].guard;
        if !g.alive {
            return;
        }
        g.deadline = Some(deadline);
        let serial = g.serial;
        self.schedule(
            clock.global(deadline.saturating_sub(GUARD_MARGIN)),
            Event::GuardFence {
                node: i,
                serial,
                deadline,
            },
        );
    }

    pub(crate) fn fence(&mut self, i: usize, incarnation: u64, deadline: Duration) {
        let n = &self.nodes[i];
        if n.incarnation != incarnation
            || n.agent.as_ref().and_then(|a| a.fence_deadline) != Some(deadline)
        {
            return;
        }
        if n.agent_state == AgentState::Frozen {
            // The fence task is frozen with its process: it fires when
            // the process runs again (see `unfreeze`).
            return;
        }
        self.fence_now(i);
    }

    pub(crate) fn fence_now(&mut self, i: usize) {
        if self.nodes[i].pg.process != Process::Down {
            self.stop_pg(i);
            let name = self.nodes[i].name.clone();
            self.trace(format!(
                "{name}: FENCE: the lock was not renewed in time; PostgreSQL stopped"
            ));
        }
    }

    pub(crate) fn guard_fence(&mut self, i: usize, serial: u64, deadline: Duration) {
        let g = &self.nodes[i].guard;
        if !g.alive || g.serial != serial || g.deadline != Some(deadline) {
            return;
        }
        // Armed only while the lock is held: a standby may be promoting.
        if self.nodes[i].pg.process != Process::Down {
            self.stop_pg(i);
            let name = self.nodes[i].name.clone();
            self.trace(format!(
                "{name}: GUARD: the agent missed its lock deadline; PostgreSQL stopped"
            ));
        }
    }

    /// PostgreSQL may accept writes (no `standby.signal`): what the guard
    /// stops when the agent is gone without holding the lock.
    pub(crate) fn primary_like(&self, i: usize) -> bool {
        matches!(
            self.nodes[i].pg.process,
            Process::Up(PgRole::Primary) | Process::Starting(PgRole::Primary)
        )
    }

    /// Stops node `i`'s PostgreSQL at once.
    pub fn stop_pg(&mut self, i: usize) {
        self.nodes[i].pg.stop();
        self.nodes[i].pg_op += 1;
    }

    // --- processes

    pub(crate) fn agent_start(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if !n.host_up || n.agent_state != AgentState::Dead {
            return;
        }
        n.incarnation += 1;
        let dcs = self
            .store
            .client(self.layout.clone(), &n.name, self.scenario.timing);
        let mut agent = Agent::new(dcs, self.bootstrap.clone(), self.scenario.timing);
        // A restarted agent keeps the promise it may have given before
        // (pgha-node's FailsafeGate::new).
        if self.bootstrap.failsafe_mode() {
            agent.witness = Some(Witness {
                leader: None,
                until: n.clock.local(self.t) + self.scenario.timing.ttl,
            });
        }
        let n = &mut self.nodes[i];
        n.agent = Some(Box::new(agent));
        n.agent_state = AgentState::Running;
        n.guard.alive = true;
        n.guard.serial += 1;
        n.guard.deadline = None;
        n.guard.down_since = None;
        let name = n.name.clone();
        self.trace(format!("{name}: agent and fence guard start"));
        self.schedule_wake(i, self.t + Duration::from_millis(10));
    }

    /// The agent process is gone (killed, or it refused to go on): its
    /// guard, if it runs, stops a PostgreSQL that may accept writes, and
    /// while the lock it held is still within its lifetime, releases it
    /// by compare-and-set on the exact key it reads.
    pub fn agent_dies(&mut self, i: usize, why: &str) {
        let n = &mut self.nodes[i];
        n.agent = None;
        n.agent_state = AgentState::Dead;
        n.incarnation += 1;
        let name = n.name.clone();
        self.trace(format!("{name}: agent gone ({why})"));
        if !self.nodes[i].guard.alive {
            return;
        }
        let deadline = self.nodes[i].guard.deadline;
        self.nodes[i].guard.alive = false;
        if !self.options.protections.fences {
            return;
        }
        // Holding the lock, even a standby may be promoting: stop it too.
        if self.primary_like(i) || (deadline.is_some() && self.nodes[i].pg.process != Process::Down)
        {
            self.stop_pg(i);
            self.trace(format!("{name}: GUARD: agent gone; PostgreSQL stopped"));
        }
        let now = self.local(i);
        if deadline.is_some_and(|d| now < d) {
            let dcs = self.nodes[i].guard_dcs.clone();
            if let Ok(c) = self.call(i, &dcs, "load", |d| d.load())
                && let Some(lock) = c.leader.filter(|l| l.name == name)
                && self
                    .call(i, &dcs, "release_leader", |d| d.release_leader_at(&lock))
                    .is_ok()
            {
                self.trace(format!(
                    "{name}: GUARD: released the dead agent's leader key"
                ));
            }
            self.cycle_latency = Duration::ZERO;
        }
    }

    pub(crate) fn guard_start(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if !n.host_up || n.guard.alive || n.agent_state != AgentState::Running {
            return;
        }
        n.guard.alive = true;
        n.guard.serial += 1;
        n.guard.down_since = None;
        let deadline = n.agent.as_ref().and_then(|a| a.fence_deadline);
        let name = n.name.clone();
        self.trace(format!("{name}: fence guard running again"));
        if let Some(d) = deadline {
            self.arm(i, d);
        }
    }

    pub(crate) fn unfreeze(&mut self, i: usize, incarnation: u64) {
        let n = &mut self.nodes[i];
        if n.incarnation != incarnation || n.agent_state != AgentState::Frozen {
            return;
        }
        n.agent_state = AgentState::Running;
        let name = n.name.clone();
        self.trace(format!("{name}: agent runs again"));
        let now = self.local(i);
        let overdue = self.nodes[i]
            .agent
            .as_ref()
            .and_then(|a| a.fence_deadline)
            .is_some_and(|d| now + FENCE_MARGIN >= d);
        if overdue {
            self.fence_now(i);
        }
        if !self.nodes[i].guard.alive {
            self.guard_start(i);
        }
        self.schedule_wake(i, self.t);
    }

    pub(crate) fn boot(&mut self, i: usize) {
        if self.nodes[i].host_up || self.nodes[i].lost {
            return;
        }
        self.nodes[i].host_up = true;
        let name = self.nodes[i].name.clone();
        self.trace(format!("{name}: host boots"));
        self.agent_start(i);
    }
}
