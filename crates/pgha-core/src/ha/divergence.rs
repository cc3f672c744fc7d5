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
use crate::model::Cluster;

/// How a replica's WAL left the cluster's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The replica's timeline.
    pub timeline: u64,
    /// Where the cluster's history says that timeline ended.
    pub ended_at: u64,
    /// The furthest WAL position the replica received or replayed.
    pub position: u64,
    /// The leader's timeline.
    pub leader_timeline: u64,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "my WAL reaches {} on timeline {}, which the cluster left at {} for timeline {}",
            crate::model::lsn::format(self.position),
            self.timeline,
            crate::model::lsn::format(self.ended_at),
            self.leader_timeline
        )
    }
}

/// Whether the local replica diverged from the leader's history: its
/// timeline is older than the leader's, the `history` key records where
/// that timeline ended, and the replica's WAL goes beyond that point.
/// `None` when it did not, or when the evidence is missing (no history
/// entry for the timeline, no position, the leader's timeline unknown):
/// nothing is ever repaired on a guess.
pub fn diverged(local: &LocalPostgres, cluster: &Cluster) -> Option<Divergence> {
    let timeline = local.timeline?;
    let position = local.wal_position?;
    let leader_timeline = cluster.leader_member()?.data.timeline?;
    if timeline >= leader_timeline {
        return None;
    }
    let ended_at = cluster
        .history
        .as_ref()?
        .value
        .0
        .iter()
        .find(|e| e.timeline == timeline)?
        .lsn;
    (position > ended_at).then_some(Divergence {
        timeline,
        ended_at,
        position,
        leader_timeline,
    })
}
