//! Requests from the REST API to the HA loop.
//!
//! The REST handlers never act on PostgreSQL themselves: they send a
//! [`Command`] and (where Patroni's API answers after the fact) wait for the
//! loop's reply, bounded in time. All changes to PostgreSQL thus come from
//! one place, the loop, which also keeps the leader lock renewed meanwhile.

use std::time::Duration;

use tokio::sync::oneshot;

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
    /// hold: why.
    ConditionsNotMet(String),
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
    /// Re-read the configuration file and apply it (also on SIGHUP).
    Reload,
    /// Wipe and reclone this replica.
    Reinitialize {
        force: bool,
        from_leader: bool,
        reply: oneshot::Sender<ReinitializeAnswer>,
    },
    /// Run a cycle now (the DCS changed under us: a switchover, a config edit).
    Wakeup,
}

/// `15.3` → 150003, `15` → 150000: PostgreSQL's `server_version_num` form.
pub fn version_number(text: &str) -> Result<i32, String> {
    let mut parts = text.trim().split('.');
    let major: i32 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("{text:?} is not a PostgreSQL version"))?;
    let minor: i32 = match parts.next() {
        None => 0,
        Some(p) => p
            .parse()
            .map_err(|_| format!("{text:?} is not a PostgreSQL version"))?,
    };
    if parts.next().is_some() || !(10..=99).contains(&major) {
        return Err(format!(
            "{text:?} is not a PostgreSQL version (10 or later, like 15.3)"
        ));
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
