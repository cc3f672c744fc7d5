//! Injecting the faults of a schedule and healing them, and the
//! operators' requests (switchover, failover, maintenance mode).

use std::time::Duration;

use pgha_core::dcs::{Dcs, DcsExt};
use pgha_core::model::{DynamicConfig, Expect, Failover};
use serde_json::Value;

use crate::faults::Fault;
use crate::postgres::Process;
use crate::world::{AgentState, Event, Guard, Link, World, node_name, ready};

impl World {
    // --- faults

    pub(crate) fn apply(&mut self, k: usize, fault: &Fault) {
        let applied = self.inject(k, fault);
        self.trace(format!(
            "FAULT {fault}{}",
            if applied {
                ""
            } else {
                " (skipped: not applicable now)"
            }
        ));
    }

    /// The host of node `i` dies: PostgreSQL, agent and guard at once
    /// (false if it is down already).
    pub(crate) fn crash_host(&mut self, i: usize) -> bool {
        if !self.nodes[i].host_up {
            return false;
        }
        self.stop_pg(i);
        let n = &mut self.nodes[i];
        n.host_up = false;
        n.agent = None;
        n.agent_state = AgentState::Dead;
        n.incarnation += 1;
        n.guard = Guard {
            serial: n.guard.serial + 1,
            ..Guard::default()
        };
        true
    }

    /// Injects `fault`; false when it does not apply in this state.
    pub(crate) fn inject(&mut self, k: usize, fault: &Fault) -> bool {
        let t = self.t;
        match fault {
            Fault::HostCrash { node, down_for } => {
                if !self.crash_host(*node) {
                    return false;
                }
                self.schedule(t + *down_for, Event::Boot { node: *node });
            }
            Fault::AgentKill { node, down_for } => {
                let i = *node;
                if self.nodes[i].agent_state != AgentState::Running || !self.nodes[i].guard.alive {
                    return false;
                }
                self.agent_dies(i, "killed");
                self.schedule(t + *down_for, Event::AgentStart { node: i });
            }
            Fault::AgentFreeze { node, for_ } => {
                let i = *node;
                if self.nodes[i].agent_state != AgentState::Running || !self.nodes[i].guard.alive {
                    return false;
                }
                self.nodes[i].agent_state = AgentState::Frozen;
                let incarnation = self.nodes[i].incarnation;
                self.schedule(
                    t + *for_,
                    Event::Unfreeze {
                        node: i,
                        incarnation,
                    },
                );
            }
            Fault::GuardDeath { node, down_for } => {
                let i = *node;
                if self.nodes[i].agent_state != AgentState::Running || !self.nodes[i].guard.alive {
                    return false;
                }
                let now = self.local(i);
                let g = &mut self.nodes[i].guard;
                g.alive = false;
                g.deadline = None;
                g.down_since = Some(now);
                self.schedule(t + *down_for, Event::GuardStart { node: i });
            }
            Fault::PostgresCrash { node } => {
                if !self.nodes[*node].host_up || self.nodes[*node].pg.process == Process::Down {
                    return false;
                }
                self.stop_pg(*node);
            }
            Fault::SendersFrozen { node, for_ } => {
                self.nodes[*node].pg.senders_frozen = true;
                self.schedule(t + *for_, Event::Heal(k));
            }
            Fault::DcsLinkDown { node, for_ } => {
                self.nodes[*node].link.down += 1;
                self.schedule(t + *for_, Event::Heal(k));
            }
            Fault::DcsLinkLossy { node, for_ } => {
                self.nodes[*node].link.lossy += 1;
                self.schedule(t + *for_, Event::Heal(k));
            }
            Fault::DcsLinkSlow {
                node,
                latency,
                for_,
            } => {
                self.nodes[*node].link.latency = *latency;
                self.schedule(t + *for_, Event::Heal(k));
            }
            Fault::DcsOutage { for_ } => {
                self.dcs_outage += 1;
                self.schedule(t + *for_, Event::Heal(k));
            }
            Fault::Partition {
                side,
                dcs_cut,
                for_,
            } => {
                self.partition(side, *dcs_cut, true);
                self.schedule(t + *for_, Event::Heal(k));
            }
            Fault::Switchover { candidate } => return self.request_switchover(*candidate),
            Fault::Failover { candidate } => return self.request_failover(*candidate),
            Fault::Pause { for_ } => {
                if !self.set_pause(true) {
                    return false;
                }
                self.paused_by_fault = true;
                self.schedule(t + *for_, Event::Unpause);
            }
            Fault::RewindFails { node } => self.nodes[*node].rewind_fails = true,
            Fault::Restart { node, takes } => {
                let n = &mut self.nodes[*node];
                let Some(a) = n
                    .agent
                    .as_mut()
                    .filter(|_| n.agent_state == AgentState::Running)
                else {
                    return false;
                };
                a.restart_requested = Some(*takes);
            }
        }
        true
    }

    pub(crate) fn partition(&mut self, side: &[usize], dcs_cut: bool, on: bool) {
        let n = self.nodes.len();
        for &a in side {
            for b in (0..n).filter(|b| !side.contains(b)) {
                for (x, y) in [(a, b), (b, a)] {
                    let c = &mut self.cut[x][y];
                    *c = if on { *c + 1 } else { c.saturating_sub(1) };
                }
            }
            if dcs_cut {
                let d = &mut self.nodes[a].link.down;
                *d = if on { *d + 1 } else { d.saturating_sub(1) };
            }
        }
    }

    pub(crate) fn heal(&mut self, fault: &Fault) {
        match fault {
            Fault::SendersFrozen { node, .. } => self.nodes[*node].pg.senders_frozen = false,
            Fault::DcsLinkDown { node, .. } => {
                let d = &mut self.nodes[*node].link.down;
                *d = d.saturating_sub(1);
            }
            Fault::DcsLinkLossy { node, .. } => {
                let l = &mut self.nodes[*node].link.lossy;
                *l = l.saturating_sub(1);
            }
            Fault::DcsLinkSlow { node, .. } => self.nodes[*node].link.latency = Duration::ZERO,
            Fault::DcsOutage { .. } => self.dcs_outage = self.dcs_outage.saturating_sub(1),
            Fault::Partition { side, dcs_cut, .. } => self.partition(side, *dcs_cut, false),
            _ => return,
        }
        self.trace(format!("HEAL {fault}"));
    }

    /// The end of the fault window: everything heals, every process runs.
    pub(crate) fn heal_all(&mut self) {
        self.trace("HEAL everything: links, partitions, processes; maintenance mode off".into());
        self.dcs_outage = 0;
        for row in &mut self.cut {
            row.fill(0);
        }
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            n.link = Link::default();
            n.pg.senders_frozen = false;
            n.rewind_fails = false;
            if !n.host_up {
                self.boot(i);
            }
            match self.nodes[i].agent_state {
                AgentState::Dead => self.agent_start(i),
                AgentState::Frozen => {
                    let inc = self.nodes[i].incarnation;
                    self.unfreeze(i, inc);
                }
                AgentState::Running => {}
            }
            if !self.nodes[i].guard.alive {
                self.guard_start(i);
            }
        }
        if self.paused_by_fault {
            self.set_pause(false);
        }
        self.healed_at = Some(self.t);
    }

    // --- operators

    pub(crate) fn request_switchover(&mut self, candidate: usize) -> bool {
        if self.dcs_outage > 0 {
            return false;
        }
        let Ok(c) = ready(self.operator.load()) else {
            return false;
        };
        let Some(leader) = c.leader_name().map(str::to_string) else {
            return false;
        };
        let name = node_name(candidate);
        if leader == name || c.failover.is_some() {
            return false;
        }
        let f = Failover {
            leader: Some(leader),
            member: Some(name),
            ..Default::default()
        };
        ready(self.operator.write_failover(&f, Expect::Absent)).is_ok()
    }

    pub(crate) fn request_failover(&mut self, candidate: usize) -> bool {
        if self.dcs_outage > 0 {
            return false;
        }
        let Ok(c) = ready(self.operator.load()) else {
            return false;
        };
        let name = node_name(candidate);
        if c.failover.is_some() || c.leader_name() == Some(name.as_str()) {
            return false;
        }
        // In maintenance mode nothing fences: a failover is then the
        // operator's to make safe (stop the old primary first), so the
        // simulated operator does not ask for one.
        if c.config.as_ref().is_some_and(|cfg| cfg.value.pause()) {
            return false;
        }
        // A failover is for a cluster without a leader (with one, it asks
        // for a switchover), and only once the old primary is down (one
        // left running by maintenance mode is not fenced): as Patroni's
        // documentation asks.
        let stray = (0..self.nodes.len())
            .any(|j| j != candidate && self.nodes[j].host_up && self.nodes[j].pg.is_primary());
        if c.leader.is_some() || stray {
            return false;
        }
        // A careful operator fails over to a member the sync key names
        // (anything else is a documented, confirmed loss).
        if self.scenario.mode.is_sync()
            && !c.sync.as_ref().is_some_and(|s| s.value.is_standby(&name))
        {
            return false;
        }
        let f = Failover {
            member: Some(name),
            ..Default::default()
        };
        ready(self.operator.write_failover(&f, Expect::Absent)).is_ok()
    }

    /// Turns maintenance mode on or off as `pghactl pause/resume` would:
    /// a compare-and-set of the dynamic configuration.
    pub(crate) fn set_pause(&mut self, on: bool) -> bool {
        if self.dcs_outage > 0 {
            return false;
        }
        let Ok(c) = ready(self.operator.load()) else {
            return false;
        };
        let Some(cfg) = c.config else { return false };
        if cfg.value.pause() == on {
            return false;
        }
        let mut map = cfg.value.as_map().clone();
        if on {
            map.insert("pause".into(), Value::Bool(true));
        } else {
            map.remove("pause");
            self.paused_by_fault = false;
        }
        let written = ready(
            self.operator
                .write_config(&DynamicConfig::from_map(map), Expect::Version(cfg.version)),
        )
        .is_ok();
        if written && !on {
            self.trace("maintenance mode off".into());
        }
        written
    }
}
