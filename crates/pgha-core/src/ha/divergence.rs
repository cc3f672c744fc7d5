//! A replica whose WAL went where the cluster's did not.
//!
//! When the leader changes, the new leader's timeline forks off the old
//! one at the position it had reached. A replica that received WAL of the
//! old timeline past that point (it was ahead of the node that won, or an
//! old primary kept writing) can never follow the new leader: PostgreSQL
//! refuses to switch to a timeline that forked off before its own position,
//! and the replica retries forever. The `history` key tells where each
//! timeline ended; comparing it with the replica's own timeline and
//! position shows the divergence, which only `pg_rewind` (or a new clone)
//! repairs.

use std::fmt;

use super::observation::LocalPostgres;
use crate::model::{Cluster, History, HistoryEntry};

/// How a replica's WAL left the cluster's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The replica's timeline.
    pub timeline: u64,
    /// Where the cluster's history says that timeline ended; `None` when
    /// the leader's history never passed through it (another member
    /// promoted to it, and the leader forked off an older timeline).
    pub ended_at: Option<u64>,
    /// The furthest WAL position the replica received or replayed.
    pub position: u64,
    /// The leader's timeline.
    pub leader_timeline: u64,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ended_at {
            Some(end) => write!(
                f,
                "my WAL reaches {} on timeline {}, which the cluster left at {} for timeline {}",
                crate::model::lsn::format(self.position),
                self.timeline,
                crate::model::lsn::format(end),
                self.leader_timeline
            ),
            None => write!(
                f,
                "my timeline {} is not in the history of the leader's timeline {} (another \
                 member promoted to it, and the leader forked off before it)",
                self.timeline, self.leader_timeline
            ),
        }
    }
}

/// Whether the local replica diverged from the leader's history: its
/// timeline is older than the leader's, and either the `history` key
/// records where that timeline ended and the replica's WAL goes beyond
/// that point, or the key is the leader's own lineage (its newest entry
/// names the leader as `new_leader`: see [`lineage`]), which lists every
/// timeline the leader's descends from, and the replica's is not one. `None` when it did not, or when
/// the evidence is missing (no history entry, no position, the leader's
/// timeline unknown): nothing is ever repaired on a guess.
pub fn diverged(local: &LocalPostgres, cluster: &Cluster) -> Option<Divergence> {
    let timeline = local.timeline?;
    let position = local.wal_position?;
    let leader = cluster.leader_member()?;
    let leader_timeline = leader.data.timeline?;
    if timeline >= leader_timeline {
        return None;
    }
    let history = &cluster.history.as_ref()?.value.0;
    if let Some(e) = history.iter().find(|e| e.timeline == timeline) {
        return (position > e.lsn).then_some(Divergence {
            timeline,
            ended_at: Some(e.lsn),
            position,
            leader_timeline,
        });
    }
    let newest = history.iter().max_by_key(|e| e.timeline)?;
    let leaders_lineage = newest
        .new_leader
        .as_deref()
        .is_some_and(|n| n.eq_ignore_ascii_case(&leader.name));
    leaders_lineage.then_some(Divergence {
        timeline,
        ended_at: None,
        position,
        leader_timeline,
    })
}

/// The lowest timeline a promotion may take so that it reuses no timeline
/// the cluster has seen: one past the newest in the `history` key, the
/// last leader's `status` and every member key. PostgreSQL picks one past the newest timeline history
/// file it can see, so two members promoting from the same timeline at
/// different times would otherwise both take the same number, and a
/// replica of one could then never follow the other (nor be seen to have
/// diverged): the agent makes PostgreSQL see placeholders up to this one.
pub fn next_timeline(cluster: &Cluster) -> u64 {
    let from_history = cluster
        .history
        .as_ref()
        .and_then(|h| h.value.0.iter().map(|e| e.timeline + 1).max());
    let from_members = cluster.members.iter().filter_map(|m| m.data.timeline).max();
    let from_status = cluster.status.as_ref().and_then(|s| s.value.timeline);
    from_history.max(from_members).max(from_status).unwrap_or(0) + 1
}

/// The `history` key a leader writes: its own lineage (`own`, the entries
/// of its timeline's history file, oldest first), the newest entry naming
/// it as `new_leader` (what [`diverged`] relies on), the other entries'
/// details kept from `known` where they match. `None` when `known`
/// already says the same (nothing to write).
pub fn lineage(known: Option<&History>, own: Vec<HistoryEntry>, me: &str) -> Option<History> {
    let mut entries = own;
    entries.sort_by_key(|e| e.timeline);
    let newest = entries.last().map(|e| e.timeline);
    for e in &mut entries {
        if let Some(k) = known.and_then(|k| {
            k.0.iter()
                .find(|k| k.timeline == e.timeline && k.lsn == e.lsn)
        }) {
            if k.reason != PROMOTION_ANNOUNCED {
                e.reason.clone_from(&k.reason);
            }
            e.timestamp = k.timestamp.clone().or(e.timestamp.take());
            e.new_leader = k.new_leader.clone().or(e.new_leader.take());
        }
        if Some(e.timeline) == newest {
            e.new_leader = Some(me.to_string());
        }
    }
    let same = known.is_some_and(|k| {
        k.0.len() == entries.len()
            && k.0.iter().zip(&entries).all(|(a, b)| {
                a.timeline == b.timeline && a.lsn == b.lsn && a.new_leader == b.new_leader
            })
    });
    (!same && !entries.is_empty()).then_some(History(entries))
}

/// The `reason` of a [`reservation`] entry: a promotion announced, not
/// known to have happened.
pub const PROMOTION_ANNOUNCED: &str = "pgha: promotion in progress";

/// The newest timeline the cluster is known to have reached: one past the
/// newest timeline the `history` key says ended (announced promotions that
/// may never have happened left out).
pub fn reached_timeline(cluster: &Cluster) -> Option<u64> {
    cluster.history.as_ref().and_then(|h| {
        h.value
            .0
            .iter()
            .filter(|e| e.reason != PROMOTION_ANNOUNCED)
            .map(|e| e.timeline + 1)
            .max()
    })
}

/// The `history` key a node writes just before it promotes from
/// `current` to a timeline of at least `taking`: what it knows, plus an
/// entry ending the timeline just below the one it takes (where its WAL
/// ends now), naming it as `new_leader`. So the DCS records every
/// promotion before it happens, and a node promoting later takes a
/// timeline past it ([`next_timeline`]) even if this one loses the lock
/// and the DCS before it can publish anything else. (After the promotion
/// the key becomes the new leader's exact [`lineage`].)
pub fn reservation(
    known: Option<&History>,
    current: u64,
    taking: u64,
    lsn: u64,
    me: &str,
) -> History {
    let timeline = current.max(taking.saturating_sub(1));
    let mut entries: Vec<HistoryEntry> = known
        .map(|h| {
            h.0.iter()
                .filter(|e| e.timeline != timeline)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    entries.push(HistoryEntry {
        timeline,
        lsn,
        reason: PROMOTION_ANNOUNCED.into(),
        timestamp: None,
        new_leader: Some(me.to_string()),
    });
    entries.sort_by_key(|e| e.timeline);
    History(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::world::World;

    fn entry(timeline: u64, lsn: u64, leader: &str) -> HistoryEntry {
        HistoryEntry {
            timeline,
            lsn,
            reason: String::new(),
            timestamp: None,
            new_leader: Some(leader.into()),
        }
    }

    #[test]
    fn a_promotion_takes_a_timeline_past_every_one_recorded() {
        let mut w = World::new("n2");
        assert_eq!(next_timeline(&w.cluster()), 2, "members on timeline 1");
        w.set("history", r#"[[1,100,"",null,"n1"],[3,200,"",null,"n1"]]"#);
        assert_eq!(next_timeline(&w.cluster()), 5);
    }

    #[test]
    fn the_key_becomes_the_leaders_lineage_and_says_so_once() {
        let known = History(vec![entry(1, 100, "n3"), entry(2, 300, "n3")]);
        let mine = vec![entry(1, 100, "x"), entry(3, 400, "x")];
        let h = lineage(Some(&known), mine, "n1").unwrap();
        let got: Vec<(u64, u64, Option<&str>)> =
            h.0.iter()
                .map(|e| (e.timeline, e.lsn, e.new_leader.as_deref()))
                .collect();
        // The shared entry keeps who wrote it; the newest names me.
        assert_eq!(got, [(1, 100, Some("n3")), (3, 400, Some("n1"))]);
        assert_eq!(lineage(Some(&h), h.0.clone(), "n1"), None);
    }

    #[test]
    fn a_replica_on_a_timeline_outside_the_leaders_lineage_diverged() {
        let mut w = World::new("n2");
        let mut leader: serde_json::Value =
            serde_json::from_str(&crate::ha::world::member_json("primary", "running", 5000))
                .unwrap();
        leader["timeline"] = serde_json::json!(4);
        w.set("members/n1", &leader.to_string());
        w.local.timeline = Some(2);
        // Lineage 1 -> 3 -> 4, written by n1: timeline 2 is not in it.
        w.set("history", r#"[[1,100,"",null,null],[3,300,"",null,"n1"]]"#);
        let d = diverged(&w.local, &w.cluster()).expect("diverged");
        assert_eq!(d.ended_at, None);
        assert!(d.to_string().contains("not in the history"), "{d}");
        // Written by another member: not the leader's lineage, no guess.
        w.set("history", r#"[[1,100,"",null,null],[3,300,"",null,"n3"]]"#);
        assert_eq!(diverged(&w.local, &w.cluster()), None);
    }

    #[test]
    fn a_reservation_records_the_timeline_left_before_promoting() {
        let known = History(vec![entry(1, 100, "n3"), entry(2, 300, "n3")]);
        let h = reservation(Some(&known), 2, 3, 250, "n1");
        let got: Vec<(u64, u64)> = h.0.iter().map(|e| (e.timeline, e.lsn)).collect();
        assert_eq!(got, [(1, 100), (2, 250)]);
        assert_eq!(h.0[1].new_leader.as_deref(), Some("n1"));
        // Taking timeline 5 from timeline 1: the key says 4 ended, so the
        // next promotion anywhere takes 6 or later.
        let h = reservation(Some(&known), 1, 5, 250, "n1");
        let got: Vec<u64> = h.0.iter().map(|e| e.timeline).collect();
        assert_eq!(got, [1, 2, 4]);
    }
}
