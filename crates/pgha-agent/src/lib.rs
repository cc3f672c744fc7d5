//! pgha's binaries and their wiring.
//!
//! `pgha CONFIG.yml` reads Patroni's YAML (`pgha-config`), builds the DCS
//! backend its cargo features include (`pgha-dcs`), runs the node
//! (`pgha-node`) and serves its REST API (`pgha-rest`): [`run`]; it logs as
//! `log:` says ([`logging`]).
//! `pg-fence-guard` is the node's fence guard (`pgha-node`'s
//! `guard::daemon`), started by the agent with a [`guard_command`].
//! `pghactl` is `pgha-ctl`'s command line. Everything else lives in those
//! crates; the paths below keep the end-to-end tests' imports short.

pub use pgha_config as config;
pub use pgha_ctl as ctl;
pub use pgha_dcs as dcs;
pub use pgha_node as node;
pub use pgha_postgres as postgres;
pub use pgha_rest as rest;
pub mod guard_command;
pub mod logging;
pub mod run;
