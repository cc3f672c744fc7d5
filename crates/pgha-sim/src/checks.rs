//! The invariants checked as the simulation runs (see
//! [`crate::invariants`] for what a break reports).

use pgha_core::dcs::Dcs;

use crate::invariants::{Violation, missing_acknowledged};
use crate::world::{World, node_name, ready};

impl World {
    // --- invariants

    pub(crate) fn check_primaries(&mut self) {
        let primaries: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.host_up && n.pg.is_primary())
            .map(|n| n.name.clone())
            .collect();
        if primaries.len() > 1 {
            self.violation = Some(Violation::TwoPrimaries {
                at: self.t,
                nodes: primaries,
            });
        }
    }

    /// After the last fault healed: one primary holding the leader key,
    /// every other node a replica streaming from it.
    pub(crate) fn check_converged(&mut self) {
        let primaries: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].pg.is_primary())
            .collect();
        let [p] = primaries[..] else { return };
        let all_stream = self
            .nodes
            .iter()
            .enumerate()
            .all(|(i, n)| i == p || (n.pg.is_replica() && n.pg.streaming_from == Some(p)));
        if !all_stream {
            return;
        }
        let holder = ready(self.operator.load())
            .ok()
            .and_then(|c| c.leader_name().map(str::to_string));
        if holder.as_deref() != Some(self.nodes[p].name.as_str()) {
            return;
        }
        if self.scenario.mode.is_sync()
            && let Some((missing, first)) =
                missing_acknowledged(&self.acked, self.nodes[p].pg.data.as_ref())
        {
            self.violation = Some(Violation::LostAcknowledged {
                at: self.t,
                node: self.nodes[p].name.clone(),
                missing,
                acknowledged: self.acked.len(),
                first_missing: first,
            });
            return;
        }
        let healed = self.healed_at.unwrap_or(self.t);
        self.converged_after = Some(self.t.saturating_sub(healed));
        let name = self.nodes[p].name.clone();
        self.trace(format!(
            "converged: {name} leads, every member streams from it, {:.1?} after the last fault healed",
            self.t.saturating_sub(healed)
        ));
    }

    /// Every node's state, for a report.
    pub(crate) fn describe(&self) -> String {
        let holder = ready(self.operator.load())
            .ok()
            .and_then(|c| c.leader_name().map(str::to_string));
        let mut out = format!("leader key: {}", holder.as_deref().unwrap_or("none"));
        for n in &self.nodes {
            let last = n
                .agent
                .as_ref()
                .and_then(|a| a.last_decision.clone())
                .unwrap_or_default();
            out.push_str(&format!(
                "; {}: PostgreSQL {:?}, lsn {}, timeline {}, follows {}, streams from {}, agent {:?}, last decision: {last}",
                n.name,
                n.pg.process,
                n.pg.lsn(),
                n.pg.data.as_ref().map_or(0, |d| d.timeline()),
                n.pg.follows.map_or("nobody".into(), node_name),
                n.pg.streaming_from.map_or("nobody".into(), node_name),
                n.agent_state,
            ));
        }
        out
    }
}
