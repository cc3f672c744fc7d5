//! The HA state machine, sans I/O.
//!
//! [`decide`] takes an [`Observation`] (the cluster snapshot, the local
//! PostgreSQL, the peers, the node's settings, what the node remembers,
//! the monotonic time) and returns a [`Decision`]: the [`Action`]s to carry
//! out and one line saying why. [`HaNode`] owns what the node remembers
//! and every change to it ([`Outcome`]s the shell reports). The agent
//! (crate `pgha-agent`) does the observing and the doing; this module only
//! decides and remembers, so every branch and every transition is
//! unit-tested without a database or a DCS.

pub mod action;
pub mod decide;
pub mod divergence;
pub mod failsafe;
pub mod node;
pub mod observation;
pub mod replication;
pub mod rule;
pub mod slots;
pub mod switchover;
pub mod sync;
#[cfg(test)]
pub(crate) mod world;

pub use action::{Action, Decision, NO_LEADER_SOURCE, StopMode};
pub use decide::{FENCE_MARGIN, RaceVerdict, decide, healthiest};
pub use node::{HaNode, JobResult, LockCall, Outcome};
pub use observation::{
    DataDir, HaMemory, Inputs, Job, LocalPostgres, NodeSettings, Observation, PeerSource,
    PeerStatus, PgRole,
};
pub use replication::{
    ConfiguredUpstream, Endpoint, StreamingWatch, not_streaming_limit, upstream_silence_limit,
};
pub use rule::Rule;
pub use sync::{SyncKeeper, SyncMode, SyncSettings, SyncStep};
