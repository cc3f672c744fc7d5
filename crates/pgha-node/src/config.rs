//! What a node is configured with: [`NodeConfig`], in pgha's own types.
//!
//! Nothing here knows Patroni's YAML: the `pgha` binary maps its file onto
//! these types (`pgha-config`'s job), and an embedding service fills them
//! from wherever its own configuration comes from. The settings of
//! PostgreSQL itself are pgha-postgres' [`PgSettings`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use pgha_core::model::{DynamicConfig, KeyLayout, Tags, Unsupported};
use pgha_postgres::settings::PgSettings;
use pgha_rest_client::{BasicAuth, ClientTls};

/// One node's configuration.
///
/// Invariant the node relies on: `postgresql.member` and
/// `postgresql.scope` equal `name` and `layout`'s scope, and
/// `postgresql.new_cluster` is set exactly when `bootstrap` is (the node
/// that may create the cluster knows how) — [`NodeConfig::check`] says
/// which does not hold.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// The member name: unique in the cluster, no `/`.
    pub name: String,
    /// Where the cluster's keys live in the DCS (namespace and scope).
    pub layout: KeyLayout,
    /// How PostgreSQL is run.
    pub postgresql: PgSettings,
    /// The HA behaviour around PostgreSQL (rewind, slots, callbacks).
    pub ha: PostgresqlHa,
    /// Published in the member key (`nofailover`, `clonefrom`, ...).
    pub tags: Tags,
    pub watchdog: WatchdogConfig,
    /// This node's REST API as published in its member key (`api_url`):
    /// how other members and pghactl reach it. The node serves nothing
    /// itself; whoever embeds it serves the API (or not).
    pub api_url: String,
    /// The dynamic configuration this node writes when it creates the
    /// cluster (`bootstrap.dcs`). `None`: this node never creates a
    /// cluster, it only joins one.
    pub bootstrap: Option<DynamicConfig>,
    /// Keys of the configuration pgha refuses: while any is set, this node
    /// never creates a new cluster (it would not be what was asked for).
    pub refused: Vec<Unsupported>,
    /// How to call other members' REST APIs.
    pub client_tls: ClientTls,
    /// The credentials for other members' unsafe REST calls (`POST
    /// /failsafe`): `restapi.authentication`, shared by the cluster's
    /// members as in Patroni.
    pub client_auth: Option<BasicAuth>,
}

impl NodeConfig {
    /// Node `name` of cluster `scope` (keys under `/service/<scope>/`),
    /// running PostgreSQL as `postgresql` says, reached by others at
    /// `api_url`, allowed to create the cluster with `bootstrap` as its
    /// dynamic configuration (initdb with default options unless
    /// `postgresql.new_cluster` says otherwise). `postgresql`'s member and
    /// scope are set to `name` and `scope`. The rest as Patroni defaults
    /// it; change the fields for anything else.
    pub fn new(
        name: &str,
        scope: &str,
        mut postgresql: PgSettings,
        api_url: &str,
        bootstrap: DynamicConfig,
    ) -> Self {
        postgresql.member = name.to_string();
        postgresql.scope = scope.to_string();
        postgresql.new_cluster.get_or_insert_with(Default::default);
        NodeConfig {
            name: name.to_string(),
            layout: KeyLayout::new("/service/", scope),
            postgresql,
            ha: PostgresqlHa::default(),
            tags: Tags::default(),
            watchdog: WatchdogConfig::default(),
            api_url: api_url.to_string(),
            bootstrap: Some(bootstrap),
            refused: Vec::new(),
            client_tls: ClientTls::default(),
            client_auth: None,
        }
    }

    /// The cluster's name.
    pub fn scope(&self) -> &str {
        self.layout.scope()
    }

    /// `postgres://host:port/postgres`, as published in the member key.
    pub fn conn_url(&self) -> String {
        format!("postgres://{}/postgres", self.postgresql.connect_address)
    }

    /// The timings to start with, before the cluster's are read.
    pub fn initial_timing(&self) -> pgha_core::model::Timing {
        self.bootstrap
            .as_ref()
            .map(|b| b.timing().0)
            .unwrap_or_default()
    }

    /// Whether pg_rewind will be used, before the cluster says otherwise.
    pub fn initially_uses_rewind(&self) -> bool {
        self.ha
            .use_pg_rewind
            .unwrap_or_else(|| self.bootstrap.as_ref().is_some_and(|b| b.use_pg_rewind()))
    }

    /// Checks the invariants above.
    pub fn check(&self) -> Result<(), NodeConfigError> {
        let bad = |field: &'static str, why: String| Err(NodeConfigError { field, why });
        if self.name.is_empty() || self.name.contains('/') {
            return bad(
                "name",
                format!("{:?}: must be non-empty, without '/'", self.name),
            );
        }
        if self.postgresql.member != self.name {
            return bad(
                "postgresql.member",
                format!(
                    "{:?} is not the node's name {:?}",
                    self.postgresql.member, self.name
                ),
            );
        }
        if self.postgresql.scope != self.scope() {
            return bad(
                "postgresql.scope",
                format!(
                    "{:?} is not the layout's scope {:?}",
                    self.postgresql.scope,
                    self.scope()
                ),
            );
        }
        if self.bootstrap.is_some() != self.postgresql.new_cluster.is_some() {
            return bad(
                "postgresql.new_cluster",
                "must be set exactly when bootstrap is (the node that creates the cluster \
                 must know how)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// A [`NodeConfig`] whose parts contradict each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node configuration: {field}: {why}")]
pub struct NodeConfigError {
    pub field: &'static str,
    pub why: String,
}

/// The HA behaviour around PostgreSQL (how PostgreSQL itself is run is
/// [`PgSettings`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PostgresqlHa {
    /// Local override of the dynamic configuration's `postgresql.use_pg_rewind`.
    pub use_pg_rewind: Option<bool>,
    pub use_slots: Option<bool>,
    /// Local overrides of the dynamic configuration's flags of the same
    /// names (off when neither sets them).
    pub remove_data_directory_on_rewind_failure: Option<bool>,
    pub remove_data_directory_on_diverged_timelines: Option<bool>,
    /// `callbacks`: event name (`on_start`, ...) to script.
    pub callbacks: BTreeMap<String, String>,
    /// Run before a promotion; a non-zero exit vetoes it.
    pub pre_promote: Option<String>,
}

/// How much the node insists on a Linux watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogMode {
    Off,
    /// Used when it can be activated; ignored (with a log line) otherwise.
    Automatic,
    /// The node does not become primary unless it is active.
    Required,
}

/// The Linux watchdog the fence guard holds while this node leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogConfig {
    pub mode: WatchdogMode,
    pub device: PathBuf,
    /// Seconds; -1 means "timeout = ttl / 2".
    pub safety_margin: i64,
}

impl Default for WatchdogConfig {
    /// Patroni's defaults.
    fn default() -> Self {
        WatchdogConfig {
            mode: WatchdogMode::Automatic,
            device: PathBuf::from("/dev/watchdog"),
            safety_margin: 5,
        }
    }
}

/// What stops this node's PostgreSQL if its agent *and* fence guard freeze
/// together (nothing inside either can): a timer outside both. See
/// docs/fencing.md for which guarantees what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrozenNodeTimer {
    /// systemd's service watchdog (`WatchdogSec=`), pinged by the guard,
    /// short enough to kill the unit before the lock can pass.
    Systemd { period: Duration },
    /// The Linux watchdog, held by the guard while this node leads (its
    /// timeout is checked when it is activated).
    LinuxWatchdog { device: PathBuf },
    /// None that protects: why.
    Missing { why: String },
}

impl FrozenNodeTimer {
    /// The timer this node has, with `watchdog` configured, these timings,
    /// and systemd's service watchdog as the environment describes it.
    pub fn of(
        watchdog: &WatchdogConfig,
        timing: pgha_core::model::Timing,
        service: Option<&crate::guard::service_watchdog::ServiceWatchdog>,
    ) -> Self {
        let systemd = service.map(|s| (s.period, s.protects(timing)));
        if let Some((period, Ok(()))) = &systemd {
            return FrozenNodeTimer::Systemd { period: *period };
        }
        if watchdog.mode != WatchdogMode::Off && watchdog.device.exists() {
            return FrozenNodeTimer::LinuxWatchdog {
                device: watchdog.device.clone(),
            };
        }
        let linux = match watchdog.mode {
            WatchdogMode::Off => "watchdog.mode is off".to_string(),
            _ => format!(
                "the watchdog device {} does not exist",
                watchdog.device.display()
            ),
        };
        let systemd = match systemd {
            Some((_, Err(why))) => why,
            _ => "no systemd service watchdog (WatchdogSec=, NotifyAccess=all)".into(),
        };
        FrozenNodeTimer::Missing {
            why: format!(
                "no timer outside pgha can stop this node ({linux}; {systemd}): if its agent and \
                 fence guard freeze together (SIGSTOP of both, a cgroup freeze), its PostgreSQL \
                 goes on accepting writes after its lock expired, beside a new primary. See \
                 docs/fencing.md"
            ),
        }
    }
}

impl fmt::Display for FrozenNodeTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrozenNodeTimer::Systemd { period } => write!(
                f,
                "a frozen agent and guard are stopped by systemd's service watchdog ({period:?})"
            ),
            FrozenNodeTimer::LinuxWatchdog { device } => write!(
                f,
                "a frozen agent and guard are stopped by the Linux watchdog {} while this node leads",
                device.display()
            ),
            FrozenNodeTimer::Missing { why } => f.write_str(why),
        }
    }
}

/// Why the watchdog cannot be used with these timings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchdogTimeoutError {
    #[error(
        "watchdog timeout {timeout_s} s (ttl {ttl_s} s - watchdog.safety_margin {safety_margin}) \
         must be at least loop_wait + retry_timeout + 1 s ({needed_s} s)"
    )]
    TooShort {
        timeout_s: i64,
        ttl_s: i64,
        safety_margin: i64,
        needed_s: i64,
    },
    #[error("watchdog timeout {0} s is too long")]
    TooLong(i64),
}

impl WatchdogConfig {
    /// The watchdog timeout for these timings: `ttl - safety_margin` (or
    /// `ttl / 2`), so that the host resets before the lock can expire. A
    /// keepalive comes with each renewal, at most `loop_wait +
    /// retry_timeout` apart, and the guard fences a silent agent one second
    /// before the watchdog would fire: a timeout shorter than that sum plus
    /// one second would have the guard stop a healthy primary.
    pub fn timeout(
        &self,
        ttl: Duration,
        loop_wait: Duration,
        retry_timeout: Duration,
    ) -> Result<u32, WatchdogTimeoutError> {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let ttl_s = secs(ttl);
        let timeout = if self.safety_margin == -1 {
            ttl_s / 2
        } else {
            ttl_s.saturating_sub(self.safety_margin)
        };
        let needed = secs(loop_wait)
            .saturating_add(secs(retry_timeout))
            .saturating_add(1);
        if timeout < needed {
            return Err(WatchdogTimeoutError::TooShort {
                timeout_s: timeout,
                ttl_s,
                safety_margin: self.safety_margin,
                needed_s: needed,
            });
        }
        u32::try_from(timeout).map_err(|_| WatchdogTimeoutError::TooLong(timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_timeout_ends_before_the_lock_and_after_the_next_keepalive() {
        let s = Duration::from_secs;
        let c = WatchdogConfig::default();
        assert_eq!(c.timeout(s(30), s(10), s(10)), Ok(25));
        assert!(c.timeout(s(5), s(1), s(2)).is_err(), "ttl 5 - 5 = 0");
        let half = WatchdogConfig {
            safety_margin: -1,
            ..c.clone()
        };
        assert_eq!(half.timeout(s(8), s(1), s(2)), Ok(4));
        assert!(
            half.timeout(s(5), s(1), s(2)).is_err(),
            "2 s: the guard would fence 1 s after each keepalive"
        );
        let one = WatchdogConfig {
            safety_margin: 1,
            ..c
        };
        assert_eq!(one.timeout(s(5), s(1), s(2)), Ok(4));
    }
}
