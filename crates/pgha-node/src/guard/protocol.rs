//! What the agent tells its guard, one JSON object per line on the guard's
//! standard input, and the clock deadlines are written on.
//!
//! Deadlines travel as raw `CLOCK_MONOTONIC` readings (nanoseconds). On
//! Linux that clock is one clock for the whole system, so the agent and
//! the guard read the same time, and a deadline means the same instant in
//! both processes. A *remaining duration* would not: it would be measured
//! from when the guard read the line, so any time the line spent in the
//! pipe, or the guard spent descheduled before reading it, would move the
//! guard's deadline *later* than the lock's, the unsafe direction.

use std::time::Duration;

use nix::time::{ClockId, clock_gettime};
use serde::{Deserialize, Serialize};

/// A message from the agent to its guard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToGuard {
    /// The agent's current state; every beat replaces the previous one.
    Beat(Beat),
    /// The agent stops gracefully (it has stopped PostgreSQL or leaves it
    /// running on purpose, as in maintenance mode): exit, touching nothing
    /// (once the postmaster it started, if one still runs, has exited).
    Exit,
    /// Start the postmaster as the guard's child, killed by the kernel
    /// when the guard dies (`pgha_postgres::launch`). Answered with
    /// [`FromGuard::Launched`] or [`FromGuard::LaunchFailed`].
    Launch(Launch),
}

/// The postmaster to start: `program args...`, output appended to
/// `log_file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    pub program: std::path::PathBuf,
    pub args: Vec<std::ffi::OsString>,
    pub log_file: std::path::PathBuf,
}

/// A message from the guard to its agent, one JSON object per line on the
/// guard's standard output (after the first line, [`READY`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromGuard {
    /// The watchdog's state changed.
    Watchdog(WatchdogReport),
    /// The postmaster of a [`ToGuard::Launch`] runs with this pid.
    Launched { pid: u32 },
    /// The postmaster of a [`ToGuard::Launch`] could not be started.
    LaunchFailed { why: String },
}

/// What the guard needs to know to fence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    /// Until when (raw `CLOCK_MONOTONIC`, ns) no other node can take the
    /// leader lock this member holds; `None` when it holds none.
    pub lock_until_ns: Option<u64>,
    /// Maintenance mode: no automatic action, so the guard touches nothing
    /// (PostgreSQL is left running and the lock left to expire, as when the
    /// agent stops while paused).
    pub paused: bool,
    /// The agent has read the cluster at least once, so `paused` is known.
    /// Until then the guard touches nothing when the agent dies: a primary
    /// left running during maintenance must survive an agent that crashes
    /// while starting.
    #[serde(default)]
    pub known: bool,
    /// The watchdog device to hold while the lock is held (`None`:
    /// `watchdog.mode: off`, or its timeout cannot fit the timings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog: Option<WatchdogWant>,
}

/// Which watchdog device, with which timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogWant {
    pub device: std::path::PathBuf,
    pub timeout_s: u32,
}

/// What the guard reports about the watchdog, one line on its standard
/// output each time it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchdogReport {
    /// Not held (no lock, paused, or mode off).
    Off,
    /// Running with this timeout, set by the driver.
    Active { timeout_s: u32 },
    /// Running, but the device took no timeout ioctl: its timeout is unknown.
    Unverified { why: String },
    /// Could not be activated.
    Failed { why: String },
}

/// The first line the guard writes on its standard output once it is
/// ready: `ready <pid>`.
pub const READY: &str = "ready";

/// The system-wide monotonic clock, in nanoseconds.
pub fn monotonic_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => {
            let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
            let nanos = u64::try_from(ts.tv_nsec()).unwrap_or(0);
            secs.saturating_mul(1_000_000_000).saturating_add(nanos)
        }
        // CLOCK_MONOTONIC always exists on Linux; 0 makes every deadline
        // look far away only if it did not, and then nothing is armed.
        Err(_) => 0,
    }
}

/// The raw monotonic reading `remaining` from now. The clock is read
/// *before* the caller computed `remaining`, so the result is never later
/// than the true deadline.
pub fn deadline_ns(clock_before: u64, remaining: Duration) -> u64 {
    clock_before.saturating_add(u64::try_from(remaining.as_nanos()).unwrap_or(u64::MAX))
}

/// How long until `deadline_ns` (zero once it passed).
pub fn until(deadline_ns: u64) -> Duration {
    Duration::from_nanos(deadline_ns.saturating_sub(monotonic_ns()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_json_line_each() {
        let beat = ToGuard::Beat(Beat {
            lock_until_ns: Some(5),
            paused: false,
            known: true,
            watchdog: None,
        });
        let text = serde_json::to_string(&beat).unwrap();
        assert_eq!(
            text,
            r#"{"beat":{"lock_until_ns":5,"paused":false,"known":true}}"#
        );
        assert_eq!(serde_json::from_str::<ToGuard>(&text).unwrap(), beat);
        assert_eq!(serde_json::to_string(&ToGuard::Exit).unwrap(), r#""exit""#);
        let launch = ToGuard::Launch(Launch {
            program: "/usr/lib/postgresql/15/bin/postgres".into(),
            args: vec!["-D".into(), "/data".into()],
            log_file: "/data/log/x.log".into(),
        });
        let text = serde_json::to_string(&launch).unwrap();
        assert!(!text.contains('\n'));
        assert_eq!(serde_json::from_str::<ToGuard>(&text).unwrap(), launch);
        for reply in [
            FromGuard::Launched { pid: 42 },
            FromGuard::LaunchFailed { why: "no".into() },
            FromGuard::Watchdog(WatchdogReport::Active { timeout_s: 4 }),
        ] {
            let text = serde_json::to_string(&reply).unwrap();
            assert_eq!(serde_json::from_str::<FromGuard>(&text).unwrap(), reply);
        }
    }

    #[test]
    fn the_clock_moves_forward_and_deadlines_count_down() {
        let a = monotonic_ns();
        let d = deadline_ns(a, Duration::from_secs(10));
        assert!(until(d) <= Duration::from_secs(10));
        assert!(until(d) > Duration::from_secs(9));
        assert_eq!(until(a), Duration::ZERO);
    }
}
