//! Test support for pgha. Not shipped; used by the crates' tests.
//!
//! - [`etcd`], [`zookeeper`]: start real servers from Debian's packages on
//!   free loopback ports, in a scratch directory, and kill them on drop.
//! - [`proxy`]: a TCP relay on loopback whose link a test can cut (black
//!   hole or refuse), so one client can be partitioned from a real server.
//! - [`conformance`]: the one DCS conformance suite every backend passes.
//! - [`memory`]: the in-memory store wired into that suite.
//! - [`postgres_teardown`]: ends a test's PostgreSQL servers and frees the
//!   shared memory killed servers leave on the machine.
//!
//! Every wait here is bounded in time; a server that does not come up fails
//! the test with its log's tail, never hangs it.

pub mod cluster;
pub mod conformance;
pub mod etcd;
pub mod faults;
pub mod memory;
pub mod netns;
pub mod patronictl;
pub mod pki;
pub mod ports;
pub mod postgres_teardown;
pub mod process;
pub mod proxy;
pub mod service_watchdog;
pub mod wait;
pub mod workdir;
pub mod zookeeper;

/// The levels `variable` asks for (`LEVEL` or `TARGET=LEVEL,...`), else
/// `info`.
pub fn log_filter(variable: &str) -> tracing_subscriber::filter::Targets {
    std::env::var(variable)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        })
}

/// Sends `tracing` output to the test harness (once per process), filtered
/// by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_test_writer()
            .finish()
            .with(log_filter("RUST_LOG"))
            .try_init();
    });
}
