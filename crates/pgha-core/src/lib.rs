//! pgha-core: the parts of pgha that every deployment shares.
//!
//! - [`model`]: Patroni's key layout and values, typed.
//! - [`dcs`]: the [`Dcs`](dcs::Dcs) trait every engine implements (etcd,
//!   ZooKeeper, Consul, Kubernetes), its typed errors, and an in-memory
//!   implementation with a controllable clock and injectable faults.
//! - [`clock`]: time as the HA logic sees it, so tests can drive it.
//!
//! This crate does no I/O of its own beyond what a backend is handed; see
//! ARCHITECTURE.md for how the pieces fit and why there can never be two
//! primaries.

pub mod clock;
pub mod dcs;
pub mod ha;
pub mod model;

pub use dcs::{Dcs, DcsError};
pub use model::Cluster;
