//! Stopping a PostgreSQL that may accept writes, at once and without
//! `pg_ctl` (which could hang, or be missing after a package upgrade):
//! SIGQUIT to the postmaster (PostgreSQL's immediate shutdown), then
//! SIGKILL to it and its children if it is still up shortly after.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

use crate::postgres::ctl::postmaster_pid;

/// How long the postmaster gets to exit after SIGQUIT before SIGKILL.
pub const QUIT_GRACE: Duration = Duration::from_millis(700);
/// How long a killed postmaster and its children get to disappear.
pub const KILL_GRACE: Duration = Duration::from_millis(1000);
const POLL: Duration = Duration::from_millis(10);

/// What was found, and done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// No postmaster runs for this data directory.
    NotRunning,
    /// It runs as a replica (`standby.signal` or `recovery.signal`): left
    /// alone, it accepts no writes.
    Replica(i32),
    /// It ran as a primary and is gone now.
    Stopped { pid: i32, killed: bool },
    /// It is still there after SIGQUIT and SIGKILL (another user's process,
    /// or stuck in the kernel).
    StillRunning(i32),
}

impl Stopped {
    /// PostgreSQL does not accept writes now.
    pub fn is_safe(&self) -> bool {
        !matches!(self, Stopped::StillRunning(_))
    }
}

/// The postmaster's pid if one runs for `data_dir` and it is not a replica.
pub fn writable_postmaster(data_dir: &Path) -> Result<Option<i32>, i32> {
    let Some(pid) = postmaster_pid(data_dir) else {
        return Ok(None);
    };
    if data_dir.join("standby.signal").exists() || data_dir.join("recovery.signal").exists() {
        return Err(pid);
    }
    Ok(Some(pid))
}

/// Which postmasters to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Only one that may accept writes (no `standby.signal`).
    Writable,
    /// Any: this node holds the leader lock, so a standby may be in the
    /// middle of a promotion (`standby.signal` is removed only once
    /// recovery ends, which can take seconds), about to accept writes.
    Any,
}

/// Stops the PostgreSQL of `data_dir` at once if `target` says so.
/// Bounded: returns within `QUIT_GRACE + KILL_GRACE` and a little.
pub async fn stop_now(data_dir: &Path, target: Target) -> Stopped {
    let pid = match (writable_postmaster(data_dir), target) {
        (Ok(None), _) => return Stopped::NotRunning,
        (Err(pid), Target::Writable) => return Stopped::Replica(pid),
        (Err(pid), Target::Any) | (Ok(Some(pid)), _) => pid,
    };
    let target = Pid::from_raw(pid);
    if let Err(e) = kill(target, Signal::SIGQUIT) {
        tracing::warn!("SIGQUIT to postmaster {pid}: {e}");
    }
    if gone(data_dir, pid, QUIT_GRACE).await {
        return Stopped::Stopped { pid, killed: false };
    }
    // Children first-listed, then the postmaster: once it is dead they are
    // reparented and could no longer be found by their parent's pid.
    let children = children_of(pid);
    tracing::warn!(
        "postmaster {pid} still runs {QUIT_GRACE:?} after SIGQUIT; SIGKILL to it and its {} children",
        children.len()
    );
    let _ = kill(target, Signal::SIGKILL);
    for c in children {
        let _ = kill(Pid::from_raw(c), Signal::SIGKILL);
    }
    if gone(data_dir, pid, KILL_GRACE).await {
        Stopped::Stopped { pid, killed: true }
    } else {
        Stopped::StillRunning(pid)
    }
}

/// Waits (bounded) until `pid` no longer runs as this data directory's postmaster.
async fn gone(data_dir: &Path, pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if postmaster_pid(data_dir) != Some(pid) && !alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A process that exists and is not a zombie.
fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}

/// The pids whose parent is `pid` (from `/proc/*/stat`).
pub fn children_of(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let child: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        // "pid (comm) S ppid ...": fields after the closing parenthesis.
        let (_, rest) = stat.rsplit_once(')')?;
        let ppid: i32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == pid).then_some(child)
    })
    .collect()
}
