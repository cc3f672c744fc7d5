//! The invariants checked as the simulation runs (see
//! [`crate::invariants`] for what a break reports).

use pgha_core::dcs::Dcs;
use pgha_core::model::SyncState;

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
        let all_stream = self.nodes.iter().enumerate().all(|(i, n)| {
            i == p || n.lost || (n.pg.is_replica() && n.pg.streaming_from == Some(p))
        });
        if !all_stream {
            return;
        }
        let cluster = ready(self.operator.load()).ok();
        let holder = cluster
            .as_ref()
            .and_then(|c| c.leader_name().map(str::to_string));
        if holder.as_deref() != Some(self.nodes[p].name.as_str()) {
            return;
        }
        let sync_key = cluster
            .as_ref()
            .and_then(|c| c.sync.as_ref())
            .map(|k| k.value.clone());
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
        let name = self.nodes[p].name.clone();
        self.trace(format!(
            "converged: {name} leads, every member streams from it, {:.1?} after the last fault healed",
            self.t.saturating_sub(healed)
        ));
        if self.scenario.leader_host_lost && !self.nodes.iter().any(|n| n.lost) {
            // Then, once it has led a few cycles (so its last words, the
            // sync key and its member key after a pause, are written), the
            // leader's host is lost for good: the others must fail over
            // (however long the DCS keeps its keys) and converge again,
            // within the same bound.
            let since = *self.converged_since.get_or_insert(self.t);
            if self.t < since + 3 * self.scenario.timing.loop_wait
                || !self.sync_settled(p, sync_key)
            {
                return;
            }
            self.crash_host(p);
            self.nodes[p].lost = true;
            self.healed_at = Some(self.t);
            self.trace(format!("FAULT host of {name} lost for good"));
            return;
        }
        self.converged_after = Some(self.t.saturating_sub(healed));
    }

    /// In a synchronous mode, whether the sync key names `p` and some
    /// standbys and has not changed for two of `p`'s cycles: a leader
    /// that acknowledged commits alone (no synchronous standby yet, which
    /// `synchronous_mode` without `strict` allows) or is midway through
    /// changing its standbys can rightly leave nobody able to take over
    /// when it is lost, as in Patroni. Always true otherwise.
    fn sync_settled(&mut self, p: usize, key: Option<SyncState>) -> bool {
        if !self.scenario.mode.is_sync() {
            return true;
        }
        let Some(key) = key else { return false };
        let text = format!("{key:?}");
        let since = match &self.sync_key_seen {
            Some((seen, at)) if *seen == text => *at,
            _ => {
                self.sync_key_seen = Some((text, self.t));
                self.t
            }
        };
        key.leader.as_deref() == Some(self.nodes[p].name.as_str())
            && !key.standbys().is_empty()
            && self.t >= since + 2 * self.scenario.timing.loop_wait
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
                "; {}{}: PostgreSQL {:?}, lsn {}, timeline {}, follows {}, streams from {}, agent {:?}, last decision: {last}",
                n.name,
                if n.lost { " (host lost)" } else { "" },
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
