//! The cluster as Patroni stores it: one typed struct per key under
//! `/<namespace>/<scope>/`, serialised exactly as Patroni 4 writes it.
//!
//! Reading is lenient where Patroni is lenient (`"30"` reads as 30), and
//! every struct keeps the fields it does not know, so a read-modify-write by
//! pgha never drops what another tool wrote.

pub mod cluster;
pub mod dynamic_config;
pub mod failover;
pub mod failsafe;
pub mod history;
pub mod keys;
pub mod lenient;
pub mod lsn;
pub mod member;
pub mod slots;
pub mod status;
pub mod sync;
pub mod value_error;
pub mod version;

pub use cluster::{Cluster, KeyProblem, LeaderLock, RawEntry};
pub use dynamic_config::{
    ConfigRefused, DynamicConfig, Review, StandbyCluster, Timing, Unsupported,
};
pub use failover::Failover;
pub use failsafe::Failsafe;
pub use history::{History, HistoryEntry};
pub use keys::{ClusterKey, KeyLayout};
pub use member::{Member, MemberData, PgState, Role, Tags};
pub use status::Status;
pub use sync::SyncState;
pub use value_error::ValueError;
pub use version::{Expect, Version, Versioned};

/// The Patroni version pgha announces in member keys and `GET /patroni`.
///
/// Patroni nodes and patronictl gate behaviour on the version a member
/// announces (replication slot handling for leaders older than 4.0, the
/// `checkpoint_after_promote` flag after 1.5.6). pgha speaks Patroni 4's
/// wire protocol, so it announces a 4.x version; its own version is in
/// [`PGHA_VERSION`] and in `GET /patroni` under `pgha_version`.
pub const PATRONI_COMPAT_VERSION: &str = "4.1.4";

/// pgha's own version.
pub const PGHA_VERSION: &str = env!("CARGO_PKG_VERSION");
