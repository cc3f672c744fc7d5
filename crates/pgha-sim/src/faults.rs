//! The faults a schedule injects, drawn from its seed.
//!
//! Stated bounds of the fault model:
//! - the agent and its fence guard never die or freeze *together*: an
//!   agent is killed or frozen only while its guard runs, and a guard dies
//!   only while its agent runs (both at once is issue 11's open hole, a
//!   host crash excepted, which takes PostgreSQL down with them);
//! - clocks run at rates within [`crate::time::MAX_SKEW_PPM`] of true time;
//! - disks keep what was written (no data loss on a node);
//! - operators write the `failover` key naming a member the `sync` key
//!   names when the cluster runs synchronously (a failover to an
//!   asynchronous member may lose commits by design, with a warning), and
//!   only when the cluster has no leader and no primary runs (nothing
//!   fences in maintenance mode: stopping the old primary first is the
//!   operator's part, as Patroni's documentation asks); with a leader,
//!   they ask for a switchover.

use std::fmt;
use std::time::Duration;

use pgha_core::model::Timing;

use crate::rng::Rng;

/// A fault at a time.
#[derive(Clone, Debug)]
pub struct Planned {
    pub at: Duration,
    pub fault: Fault,
}

/// One fault. Every fault with a duration heals by itself after it; all
/// heal at the end of the fault window at the latest.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// The node's host dies: PostgreSQL, agent and guard at once; it boots
    /// again after `down_for`.
    HostCrash { node: usize, down_for: Duration },
    /// `kill -9` of the agent; its guard fences; a service manager starts
    /// it again after `down_for`.
    AgentKill { node: usize, down_for: Duration },
    /// The agent's process stops (SIGSTOP, a stuck kernel call) for `for_`.
    AgentFreeze { node: usize, for_: Duration },
    /// The fence guard dies; the agent gets it running again after `down_for`.
    GuardDeath { node: usize, down_for: Duration },
    /// The postmaster dies; the agent decides what to do.
    PostgresCrash { node: usize },
    /// The node's WAL senders freeze: its standbys stay connected and get
    /// nothing.
    SendersFrozen { node: usize, for_: Duration },
    /// The node's link to the DCS refuses every request.
    DcsLinkDown { node: usize, for_: Duration },
    /// The node's DCS requests are lost, or their replies are (the
    /// request took effect but the caller cannot know).
    DcsLinkLossy { node: usize, for_: Duration },
    /// The node's DCS requests take `latency` (at or beyond
    /// `retry_timeout` they time out, having taken effect or not).
    DcsLinkSlow {
        node: usize,
        latency: Duration,
        for_: Duration,
    },
    /// The DCS answers nobody.
    DcsOutage { for_: Duration },
    /// `side` cannot reach the other nodes (replication, REST); with
    /// `dcs_cut`, not the DCS either (it stays with the other side).
    Partition {
        side: Vec<usize>,
        dcs_cut: bool,
        for_: Duration,
    },
    /// An operator asks for a switchover to `candidate`.
    Switchover { candidate: usize },
    /// An operator asks for a failover to `candidate`.
    Failover { candidate: usize },
    /// Maintenance mode for `for_`.
    Pause { for_: Duration },
    /// The node's next `pg_rewind` fails.
    RewindFails { node: usize },
    /// An operator asks the node to restart PostgreSQL (`POST /restart`),
    /// which then takes `takes` to start again.
    Restart { node: usize, takes: Duration },
}

impl Fault {
    /// A fault drawn for a cluster of `nodes` with `timing`.
    pub fn draw(rng: &mut Rng, nodes: usize, timing: Timing) -> Fault {
        let node = rng.index(nodes);
        let ttl = timing.ttl;
        let short = |rng: &mut Rng| rng.between(Duration::from_millis(200), 2 * ttl);
        let long = |rng: &mut Rng| rng.between(Duration::from_secs(1), 3 * ttl);
        match rng.below(16) {
            0 | 1 => Fault::HostCrash {
                node,
                down_for: long(rng),
            },
            2 => Fault::AgentKill {
                node,
                down_for: short(rng),
            },
            3 => Fault::AgentFreeze {
                node,
                for_: short(rng),
            },
            4 => Fault::GuardDeath {
                node,
                down_for: rng.between(Duration::from_millis(50), Duration::from_secs(10)),
            },
            5 => Fault::PostgresCrash { node },
            6 => Fault::SendersFrozen {
                node,
                for_: short(rng),
            },
            7 => Fault::DcsLinkDown {
                node,
                for_: long(rng),
            },
            8 => Fault::DcsLinkLossy {
                node,
                for_: long(rng),
            },
            9 => Fault::DcsLinkSlow {
                node,
                latency: rng.between(Duration::from_millis(100), timing.retry_timeout * 3 / 2),
                for_: long(rng),
            },
            10 => Fault::DcsOutage { for_: long(rng) },
            11 | 12 => {
                let size = 1 + rng.index((nodes - 1) / 2 + usize::from(nodes.is_multiple_of(2)));
                let mut side: Vec<usize> = Vec::new();
                while side.len() < size.min(nodes - 1) {
                    let n = rng.index(nodes);
                    if !side.contains(&n) {
                        side.push(n);
                    }
                }
                side.sort_unstable();
                Fault::Partition {
                    side,
                    dcs_cut: rng.chance(0.5),
                    for_: long(rng),
                }
            }
            13 => {
                if rng.chance(0.5) {
                    Fault::Switchover { candidate: node }
                } else {
                    Fault::Failover { candidate: node }
                }
            }
            14 => Fault::Pause { for_: long(rng) },
            _ => Fault::RewindFails { node },
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |i: &usize| format!("node{}", i + 1);
        match self {
            Fault::HostCrash { node, down_for } => {
                write!(f, "host of {} crashes, down for {down_for:.1?}", n(node))
            }
            Fault::AgentKill { node, down_for } => {
                write!(
                    f,
                    "agent of {} killed, restarted after {down_for:.1?}",
                    n(node)
                )
            }
            Fault::AgentFreeze { node, for_ } => {
                write!(f, "agent of {} frozen for {for_:.1?}", n(node))
            }
            Fault::GuardDeath { node, down_for } => {
                write!(
                    f,
                    "fence guard of {} dies, back after {down_for:.1?}",
                    n(node)
                )
            }
            Fault::PostgresCrash { node } => write!(f, "PostgreSQL of {} crashes", n(node)),
            Fault::SendersFrozen { node, for_ } => {
                write!(f, "WAL senders of {} frozen for {for_:.1?}", n(node))
            }
            Fault::DcsLinkDown { node, for_ } => {
                write!(f, "{} cannot reach the DCS for {for_:.1?}", n(node))
            }
            Fault::DcsLinkLossy { node, for_ } => {
                write!(
                    f,
                    "{} loses DCS requests and replies for {for_:.1?}",
                    n(node)
                )
            }
            Fault::DcsLinkSlow {
                node,
                latency,
                for_,
            } => write!(
                f,
                "{}'s DCS requests take {latency:.1?} for {for_:.1?}",
                n(node)
            ),
            Fault::DcsOutage { for_ } => write!(f, "DCS outage for {for_:.1?}"),
            Fault::Partition {
                side,
                dcs_cut,
                for_,
            } => write!(
                f,
                "partition: {} cut off from the other nodes{} for {for_:.1?}",
                side.iter().map(n).collect::<Vec<_>>().join(", "),
                if *dcs_cut { " and the DCS" } else { "" }
            ),
            Fault::Switchover { candidate } => {
                write!(f, "switchover to {} requested", n(candidate))
            }
            Fault::Failover { candidate } => write!(f, "failover to {} requested", n(candidate)),
            Fault::Pause { for_ } => write!(f, "maintenance mode for {for_:.1?}"),
            Fault::RewindFails { node } => write!(f, "the next pg_rewind of {} fails", n(node)),
            Fault::Restart { node, .. } => {
                write!(f, "restart of {}'s PostgreSQL requested", n(node))
            }
        }
    }
}
