//! Requests to the HA loop, and its answers.
//!
//! Nobody outside the loop acts on PostgreSQL: a REST handler (or any
//! embedder) asks through the [`NodeHandle`](crate::NodeHandle), which sends
//! a [`Command`] and, where the answer comes after the fact, waits for the
//! loop's reply, bounded in time. All changes to PostgreSQL thus come from
//! one place, the loop, which also keeps the leader lock renewed meanwhile.

use std::time::Duration;

use tokio::sync::oneshot;

use crate::config::NodeConfig;

/// What `POST /restart` asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestartRequest {
    /// Restart at this time instead of now.
    pub schedule: Option<jiff::Timestamp>,
    /// `schedule` as the member key shows it: Python's isoformat in the
    /// offset the request gave, as Patroni stores it.
    pub schedule_text: Option<String>,
    /// Restart only if this node runs in this role (`primary`, `replica`).
    pub role: Option<String>,
    /// Restart only if the running PostgreSQL is older than this (`15.3`).
    pub postgres_version: Option<String>,
    /// How long to wait for PostgreSQL to come back.
    pub timeout: Option<Duration>,
    /// Restart only if a parameter change is pending a restart.
    pub restart_pending: bool,
}

/// The loop's answer to a restart request. The REST API turns it into
/// Patroni's status code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartAnswer {
    /// PostgreSQL was stopped and started again.
    Restarted,
    /// The restart will happen at the requested time.
    Scheduled,
    /// Another restart is already scheduled: nothing changed.
    AlreadyScheduled,
    /// PostgreSQL does not run: there is nothing to restart.
    NotRunning,
    /// The request's conditions (role, version, pending restart) do not
    /// hold: which.
    ConditionsNotMet(Unmet),
    /// A newer restart request replaced this one before it started.
    Superseded,
    /// The restart failed: why.
    Failed(String),
}

/// The loop's answer to a reinitialize request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReinitializeAnswer {
    /// The data directory is being wiped and cloned again.
    Started,
    /// The cluster has not been read from the DCS yet.
    ClusterUnknown,
    /// Nobody leads: there is nothing to clone from.
    NoLeader,
    /// This node leads: it must not wipe the cluster's primary.
    IsLeader,
    /// Another job runs (its name) and `force` was not given.
    Busy(&'static str),
    /// The source cannot be used: why.
    Impossible(String),
}

/// A request for the HA loop.
#[derive(Debug)]
pub enum Command {
    /// Restart PostgreSQL now (answered when done) or at `schedule`.
    Restart {
        request: RestartRequest,
        reply: oneshot::Sender<RestartAnswer>,
    },
    /// Drop a scheduled restart; answers whether there was one.
    CancelRestart { reply: oneshot::Sender<bool> },
    /// Adopt this configuration (what may change while running).
    Reload(Box<NodeConfig>),
    /// Wipe and reclone this replica.
    Reinitialize {
        force: bool,
        from_leader: bool,
        reply: oneshot::Sender<ReinitializeAnswer>,
    },
    /// Run a cycle now (the DCS changed under us: a switchover, a config edit).
    Wakeup,
}

/// Which condition of a restart request does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmet {
    #[error("this node is a {is}, the restart is for {wanted}")]
    Role { is: &'static str, wanted: String },
    #[error("PostgreSQL {running} is not older than {wanted}")]
    NotOlder { running: i32, wanted: String },
    #[error("no restart is pending")]
    NothingPending,
    #[error(transparent)]
    Version(#[from] NotAVersion),
}

/// A text that is not a PostgreSQL version pgha can compare.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a PostgreSQL version (10 or later, like 15.3)")]
pub struct NotAVersion(pub String);

/// `15.3` → 150003, `15` → 150000: PostgreSQL's `server_version_num` form.
pub fn version_number(text: &str) -> Result<i32, NotAVersion> {
    let bad = || NotAVersion(text.to_string());
    let mut parts = text.trim().split('.');
    let major: i32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let minor: i32 = match parts.next() {
        None => 0,
        Some(p) => p.parse().map_err(|_| bad())?,
    };
    if parts.next().is_some() || !(10..=99).contains(&major) {
        return Err(bad());
    }
    Ok(major * 10_000 + minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(version_number("15.3"), Ok(150003));
        assert_eq!(version_number("16"), Ok(160000));
        assert!(version_number("9.6").is_err());
        assert!(version_number("15.x").is_err());
        assert!(version_number("15.1.2").is_err());
    }
}
