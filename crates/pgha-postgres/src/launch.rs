//! Who starts the postmaster, and so who it dies with.
//!
//! `pg_ctl start` detaches the postmaster: it outlives every process pgha
//! runs. That is what a replica wants, and what splits the brain when a
//! primary's agent *and* its fence guard die together (`kill -9` of the
//! agent's process tree, `pkill -9 pgha`): nothing is left to stop it, and
//! it keeps acknowledging writes after a replica took over.
//!
//! A [`PostmasterLauncher`] starts it instead as a child of a process that
//! must outlive it for it to run: pgha-node's fence guard, which sets the
//! kernel's parent-death signal (SIGKILL) on it. When the guard dies, by
//! any signal, the postmaster is killed; its backends end at their next
//! wait (a session between two statements at once: PostgreSQL's own
//! postmaster-death check), so no client gets another commit acknowledged.
//! The launch then waits, as `pg_ctl start -w` does, for `postmaster.pid`
//! to name the launched process as ready (or as a standby).

use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use super::PgError;

/// How to start the postmaster: `program args...`, its standard output
/// and error appended to `log_file`, its standard input `/dev/null`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub log_file: PathBuf,
}

impl LaunchSpec {
    /// `postgres -D data_dir`, what `pg_ctl start -D data_dir` runs.
    pub fn postgres(bin_dir_program: &Path, data_dir: &Path, log_file: &Path) -> Self {
        LaunchSpec {
            program: bin_dir_program.to_path_buf(),
            args: vec!["-D".into(), data_dir.as_os_str().to_owned()],
            log_file: log_file.to_path_buf(),
        }
    }
}

/// Why a launcher did not start the postmaster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    /// The launcher cannot start anything now (the guard is down or
    /// restarting): the caller may start PostgreSQL another way, knowing
    /// it will not die with the guard.
    #[error("{0}")]
    Unavailable(String),
    /// The launcher tried and the program could not be run.
    #[error("{0}")]
    Failed(String),
}

/// The future a [`PostmasterLauncher`] returns: the launched pid.
pub type LaunchFuture<'a> = Pin<Box<dyn Future<Output = Result<u32, LaunchError>> + Send + 'a>>;

/// Starts the postmaster as a child of a process whose death must take
/// the postmaster with it (see the module's documentation).
pub trait PostmasterLauncher: Send + Sync + fmt::Debug {
    /// Starts `spec` and returns its pid at once (not waiting until it is
    /// ready).
    fn launch<'a>(&'a self, spec: &'a LaunchSpec) -> LaunchFuture<'a>;
}

/// The environment through which systemd's service manager hears from a
/// unit's processes (`sd_notify`), and its service watchdog's period.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// Removes systemd's notification variables from a command's environment:
/// a PostgreSQL built with systemd support (Debian's is) would otherwise
/// tell systemd `READY=1` and `STOPPING=1` on behalf of pgha's unit.
pub fn without_service_notification(cmd: &mut tokio::process::Command) {
    cmd.env_remove(NOTIFY_SOCKET)
        .env_remove(WATCHDOG_USEC)
        .env_remove(WATCHDOG_PID);
}

/// What `postmaster.pid` says of the server's state (its 8th line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PidFileStatus {
    Ready,
    Standby,
    Other,
}

/// The pid and status line of `data_dir`'s `postmaster.pid`.
fn pid_file(data_dir: &Path) -> Option<(i32, PidFileStatus)> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let status = match lines.nth(6).map(str::trim) {
        Some("ready") => PidFileStatus::Ready,
        Some("standby") => PidFileStatus::Standby,
        _ => PidFileStatus::Other,
    };
    Some((pid, status))
}

/// Waits until the postmaster `pid` says (in `postmaster.pid`) it accepts
/// connections or runs as a hot standby, as `pg_ctl start -w` does; fails
/// when it exits first, or after `timeout` (it may still be starting: a
/// long crash recovery).
pub(crate) async fn wait_ready(
    data_dir: &Path,
    pid: u32,
    timeout: Duration,
) -> Result<(), PgError> {
    let deadline = std::time::Instant::now() + timeout;
    let pid = i32::try_from(pid).unwrap_or(i32::MAX);
    loop {
        match pid_file(data_dir) {
            Some((p, PidFileStatus::Ready | PidFileStatus::Standby)) if p == pid => return Ok(()),
            _ if !running(pid) => {
                return Err(PgError::Failed {
                    program: "postgres".into(),
                    status: "exited".into(),
                    output: "the postmaster exited while starting".into(),
                });
            }
            _ => {}
        }
        if std::time::Instant::now() >= deadline {
            return Err(PgError::Timeout {
                what: "the postmaster's start".into(),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `pid` is a live process (a zombie, exited but not reaped yet,
/// is not).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pid_file(dir: &Path, pid: u32, status: &str) {
        std::fs::write(
            dir.join("postmaster.pid"),
            format!("{pid}\n/data\n1700000000\n5432\n/tmp\n*\n  1 2\n{status}\n"),
        )
        .unwrap();
    }

    #[tokio::test]
    async fn a_launch_is_ready_when_the_pid_file_names_it_ready_or_standby() {
        let tmp = tempfile::tempdir().unwrap();
        // This test's process plays the postmaster (it is alive).
        let me = std::process::id();
        for status in ["ready   ", "standby "] {
            write_pid_file(tmp.path(), me, status);
            wait_ready(tmp.path(), me, Duration::from_secs(2))
                .await
                .unwrap();
        }
        // Still starting: not ready within the bound.
        write_pid_file(tmp.path(), me, "starting");
        let e = wait_ready(tmp.path(), me, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(e, PgError::Timeout { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_launched_postmaster_that_exits_is_a_failed_start() {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let e = wait_ready(tmp.path(), pid, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, PgError::Failed { .. }), "{e}");
    }
}
