//! What must hold in every schedule, and how a break is reported.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use crate::postgres::DataDir;

/// A broken invariant: the schedule fails with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Two PostgreSQL servers accepted writes at the same instant.
    TwoPrimaries { at: Duration, nodes: Vec<String> },
    /// In a synchronous mode, a node became a writable primary without
    /// commits that had been acknowledged to the client.
    LostAcknowledged {
        at: Duration,
        node: String,
        missing: usize,
        acknowledged: usize,
        first_missing: u64,
    },
    /// After the last fault healed, the cluster did not get one leader
    /// with every member streaming from it within the bound.
    NoConvergence {
        healed_at: Duration,
        bound: Duration,
        state: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::TwoPrimaries { at, nodes } => write!(
                f,
                "split brain at {at:.3?}: {} accepted writes at the same time",
                nodes.join(" and ")
            ),
            Violation::LostAcknowledged {
                at,
                node,
                missing,
                acknowledged,
                first_missing,
            } => write!(
                f,
                "acknowledged commits lost at {at:.3?}: {node} became primary without {missing} of \
                 the {acknowledged} commits acknowledged so far (first: commit {first_missing})"
            ),
            Violation::NoConvergence {
                healed_at,
                bound,
                state,
            } => write!(
                f,
                "no convergence: every fault healed at {healed_at:.1?}, and {bound:.0?} later the \
                 cluster still had no single leader with every member streaming from it: {state}"
            ),
        }
    }
}

/// The acknowledged commits `data` lacks: (how many, the first).
pub fn missing_acknowledged(acked: &[u64], data: Option<&DataDir>) -> Option<(usize, u64)> {
    if acked.is_empty() {
        return None;
    }
    let have: HashSet<u64> = data
        .map(|d| d.wal.iter().map(|r| r.id).collect())
        .unwrap_or_default();
    let mut missing = acked.iter().filter(|id| !have.contains(id));
    let first = *missing.next()?;
    Some((1 + missing.count(), first))
}
