//! Deterministic simulation of whole pgha clusters.
//!
//! A schedule runs 3–5 nodes in one thread on simulated time: each node's
//! real [`HaNode`](pgha_core::ha::HaNode) (so the real `decide` and HA
//! memory) and the real [`SyncKeeper`](pgha_core::ha::SyncKeeper), the
//! real in-memory DCS with ttl leases, a model of PostgreSQL (WAL,
//! timelines, promotion, pg_rewind, synchronous commit as PostgreSQL
//! counts it), the in-process fence and the fence guard, and a client
//! committing to whoever accepts writes. Faults are drawn from the seed
//! ([`faults::Fault`]): host, agent, guard and PostgreSQL deaths, frozen
//! agents and WAL senders, lost, slow or refused DCS calls, DCS outages,
//! partitions, clock-rate skew, switchovers, failovers, restarts and
//! maintenance mode.
//!
//! Invariants ([`invariants::Violation`]), checked after every event:
//! never two PostgreSQL servers accepting writes at once; in synchronous
//! modes, no node becomes a writable primary without every commit
//! acknowledged so far; after the last fault heals, one leader with every
//! member streaming from it within [`Scenario::convergence_bound`].
//!
//! Everything is a function of the seed: a failing seed replays exactly,
//! with every decision (rule and reason) and fault in its trace
//! (`scripts/simulate.sh --replay SEED`).

pub mod faults;
pub mod invariants;
pub mod postgres;
pub mod rng;
pub mod scenario;
pub mod time;

mod agent;
mod checks;
mod inject;
mod processes;
mod replication;
mod world;

pub use invariants::Violation;
pub use scenario::{Mode, Scenario};
pub use world::{Options, Protections, Report};

/// Runs the schedule of `seed`.
pub fn run_seed(seed: u64, options: Options) -> Report {
    world::World::new(Scenario::from_seed(seed), options).run()
}

/// Runs `scenario` (a seed's, possibly edited by a test).
pub fn run_scenario(scenario: Scenario, options: Options) -> Report {
    world::World::new(scenario, options).run()
}
