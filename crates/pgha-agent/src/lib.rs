//! The pgha agent and CLI.
//!
//! The agent (`pgha CONFIG.yml`) runs beside one PostgreSQL: every cycle it
//! observes the DCS and PostgreSQL, asks `pgha_core::ha::decide` what to do,
//! does it, and publishes the node's status in the DCS and over REST.
//! `pghactl` reads the cluster from the DCS for people.

/// Patroni's YAML lives in its own crate.
pub use pgha_config as config;
pub mod ctl;
/// The DCS facade (builds the configured backend) lives in its own crate.
pub use pgha_dcs as dcs;
/// The node runtime (the HA loop, the fence and its guard) lives in its
/// own crate.
pub use pgha_node as node;
/// PostgreSQL control lives in its own crate; kept under this path for
/// the agent's modules.
pub use pgha_postgres as postgres;
/// The REST API server lives in its own crate.
pub use pgha_rest as rest;
pub mod run;
